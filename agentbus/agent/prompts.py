"""Versioned prompt templates, read from files: never inline strings.

A prompt lives at `prompts/<name>/<version>.txt`. Its first line may carry
`# description`; `$placeholders` are filled with `string.Template`. Data from
events is passed only through `quote()`, which fences it as JSON so the model
sees it as data, never as instructions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from agentbus.errors import ConfigurationError

FENCE = "<<<DATA"
END_FENCE = "DATA>>>"


@dataclass(frozen=True)
class Prompt:
    name: str
    version: str
    text: str

    @property
    def id(self) -> str:
        """What suggestions record as `prompt_version`."""
        return f"{self.name}/{self.version}"

    @classmethod
    def load(cls, root: Path, name: str, version: str) -> Prompt:
        path = root / name / f"{version}.txt"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"prompt {name}/{version} not found at {path}") from exc
        return cls(name, version, text)

    def render(self, **values: str) -> str:
        try:
            return Template(self.text).substitute(values)
        except (KeyError, ValueError) as exc:
            raise ConfigurationError(f"prompt {self.id}: {exc}") from None


def quote(value: Any) -> str:
    """Fence data as JSON. Fence markers inside the data cannot close the fence early."""
    # Compact: fewer tokens, and the C encoder (an indent makes json fall back to Python).
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str, separators=(",", ":"))
    text = text.replace(FENCE, "<<DATA").replace(END_FENCE, "DATA>>")
    return f"{FENCE}\n{text}\n{END_FENCE}"
