"""What model calls cost: the maintained price table of `genai-prices`, unless
configuration says otherwise.

`AGENTBUS_MODEL_PRICES` is JSON: `{"model": [input, output]}` in US dollars per
million tokens, and it wins for the models it lists (a negotiated rate, a
self-hosted model); a dated snapshot (`gpt-4o-mini-2024-07-18`) falls back to the
price of the longest listed name it starts with (`gpt-4o-mini`). Other models
are priced by `genai-prices`, with the provider when the adapter knows it; one
it does not know (an offline policy, a local model) costs 0.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from genai_prices import Usage as PricedUsage
from genai_prices import calc_price

from agentbus.environment import Environment, load_environment
from agentbus.errors import ConfigurationError

PRICES_VARIABLE = "AGENTBUS_MODEL_PRICES"


def price(
    model: str,
    input_tokens: int,
    output_tokens: int,
    provider: str | None = None,
    table: Mapping[str, tuple[float, float]] | None = None,
) -> float:
    """US dollars for a call of `model` (of `provider`, when known) with these token counts;
    `table` (`price_table()`, read at start) wins for the models it lists."""
    table = table or {}
    rates = table.get(model)
    if rates is None:
        prefixes = [name for name in table if model.startswith(name)]
        if prefixes:
            rates = table[max(prefixes, key=len)]
    if rates is not None:
        return (input_tokens * rates[0] + output_tokens * rates[1]) / 1e6
    return _listed_price(model, input_tokens, output_tokens, provider)


def _listed_price(model: str, input_tokens: int, output_tokens: int, provider: str | None) -> float:
    if not model or (input_tokens == 0 and output_tokens == 0):
        return 0.0
    try:
        found = calc_price(
            PricedUsage(input_tokens=input_tokens, output_tokens=output_tokens),
            model_ref=model,
            provider_id=provider,
        )
    except LookupError:
        return 0.0  # not a model the table lists: a local one, or a policy
    return float(found.total_price)


def price_table(environment: Environment | None = None) -> dict[str, tuple[float, float]]:
    """`AGENTBUS_MODEL_PRICES`, parsed: {model: (input, output) dollars per 1M tokens}."""
    raw = (environment or load_environment()).model_prices or ""
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
