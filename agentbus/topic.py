"""AMQP 0-9-1 topic matching, as a topic exchange routes.

Keys and patterns are dot-separated words. In a pattern, `*` stands for exactly one
word and `#` for zero or more. As in RabbitMQ, the empty string has zero words, and
an empty word between two dots is still a word.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["topic_matches"]


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether a binding `pattern` routes a message published with `routing_key`."""
    if "*" not in pattern and "#" not in pattern:
        return pattern == routing_key
    return _matches(pattern, routing_key)


def _words(text: str) -> list[str]:
    return text.split(".") if text else []


# The in-process broker asks the same few (binding, event type) pairs over and over.
@lru_cache(maxsize=8192)
def _matches(pattern: str, routing_key: str) -> bool:
    words = _words(routing_key)
    # reachable[i]: the pattern words seen so far can consume exactly words[:i].
    reachable = [True] + [False] * len(words)
    for part in _words(pattern):
        if part == "#":
            # Zero or more words: once a prefix is reachable, every longer one is.
            for i in range(1, len(reachable)):
                reachable[i] = reachable[i] or reachable[i - 1]
        else:
            step = [False] * len(reachable)
            for i, word in enumerate(words):
                step[i + 1] = reachable[i] and (part == "*" or part == word)
            reachable = step
    return reachable[-1]
