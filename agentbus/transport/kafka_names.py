"""Topic and consumer-group names on Kafka, and AMQP binding patterns as topic regexes.

One topic per event type, named as the type; a service's consumer group is named as
its queue; a prefix goes before both, so that several shops or test runs share one
cluster without reading each other's records.
"""

from __future__ import annotations

import re

DEAD_LETTER_SUFFIX = ".dlq"
# A compacted topic that keeps each declared queue's bindings, as a broker keeps an AMQP
# queue's: another process can consume or measure a queue it did not declare.
QUEUES_TOPIC = "_agentbus.queues"


def is_pattern(binding: str) -> bool:
    return "*" in binding or "#" in binding


def word_regex(pattern: str) -> str:
    """A regex for the topic names an AMQP topic pattern binds (`*` one word, `#` zero or
    more). Words are taken as non-empty: an event type never has an empty word."""
    words: list[str] = []
    for word in pattern.split("."):
        if word == "#" and words and words[-1] == "#":
            continue  # `#.#` binds what `#` binds
        words.append(word)
    if words == ["#"]:
        return ".*"
    out = ""
    started = False
    for word in words:
        if word == "#":
            # Zero or more words: before the first word each is followed by a dot,
            # after it each is preceded by one.
            out += r"(?:\.[^.]+)*" if started else r"(?:[^.]+\.)*"
            continue
        piece = "[^.]+" if word == "*" else re.escape(word)
        out += rf"\.{piece}" if started else piece
        started = True
    return out


def subscription_regex(prefix: str, bindings: tuple[str, ...]) -> str:
    """One regex for every binding of a queue, under the prefix. Dead-letter topics and the
    queue registry are never an event type, so a wide pattern such as `#` reads neither."""
    alternatives = "|".join(f"(?:{word_regex(binding)})" for binding in bindings)
    dead = re.escape(DEAD_LETTER_SUFFIX)
    registry = re.escape(QUEUES_TOPIC)
    return rf"^{re.escape(prefix)}(?!.*{dead}$)(?!{registry}$)(?:{alternatives})$"
