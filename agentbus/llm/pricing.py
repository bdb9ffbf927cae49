"""What model calls cost, from a price table in configuration.

`AGENTBUS_MODEL_PRICES` is JSON: `{"model": [input, output]}` in US dollars per
million tokens. A model missing from the table costs 0 (an offline policy, a
local model); a dated snapshot (`gpt-4o-mini-2024-07-18`) falls back to the
price of the longest listed name it starts with (`gpt-4o-mini`).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache

from agentbus.errors import ConfigurationError

PRICES_VARIABLE = "AGENTBUS_MODEL_PRICES"


def price(model: str, input_tokens: int, output_tokens: int) -> float:
    """US dollars for a call of `model` with these token counts."""
    table = _table(os.environ.get(PRICES_VARIABLE, ""))
    rates = table.get(model)
    if rates is None:
        prefixes = [name for name in table if model.startswith(name)]
        rates = table[max(prefixes, key=len)] if prefixes else (0.0, 0.0)
    return (input_tokens * rates[0] + output_tokens * rates[1]) / 1e6


@lru_cache(maxsize=4)
def _table(raw: str) -> dict[str, tuple[float, float]]:
    if not raw.strip():
        return {}
    try:
        loaded = json.loads(raw)
        return {str(name): (float(rates[0]), float(rates[1])) for name, rates in loaded.items()}
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        raise ConfigurationError(
            f'{PRICES_VARIABLE} must be JSON like {{"model": [input, output]}} '
            "in dollars per 1M tokens"
        ) from None
