"""AMQP topic matching, against examples and against a regex reference."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from agentbus.topic import topic_matches


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        # exact
        ("order.created", "order.created", True),
        ("order.created", "order.cancelled", False),
        ("order.created", "order.created.v2", False),
        ("order", "order.created", False),
        # `*`: exactly one word, never none
        ("order.*", "order.created", True),
        ("order.*", "order", False),
        ("order.*", "order.created.v2", False),
        ("*.created", "order.created", True),
        ("*", "order", True),
        ("*", "order.created", False),
        ("*", "", False),
        ("*.*", "order.created", True),
        ("*.*", "order", False),
        # `#`: zero or more words
        ("#", "anything.at.all", True),
        ("#", "", True),
        ("order.#", "order", True),
        ("order.#", "order.created", True),
        ("order.#", "order.created.v2", True),
        ("order.#", "orders.created", False),
        ("#.created", "created", True),
        ("#.created", "order.created", True),
        ("#.created", "order.created.v2", False),
        ("a.#.b", "a.b", True),
        ("a.#.b", "a.x.b", True),
        ("a.#.b", "a.x.y.b", True),
        ("a.#.b", "a.x.y.c", False),
        ("a.#.b", "a", False),
        ("#.#", "a", True),
        ("#.*", "", False),
        ("#.*.#", "a.b.c", True),
        ("a.*.#", "a", False),
        ("a.*.#", "a.b", True),
        # words are whole: no partial or regex-like matching
        ("order.cre*", "order.created", False),
        ("order.c", "order.created", False),
        ("a.b", "a-b", False),
        ("a.b", "axb", False),
        # empty words between dots are words, as in RabbitMQ
        ("a.*", "a.", True),
        ("a.*.b", "a..b", True),
        ("", "", True),
        ("", "a", False),
    ],
)
def test_amqp_examples(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


def reference(pattern: str, key: str) -> bool:
    """A regex reading of AMQP topics: each word is matched with the dot before it.

    Putting a dot in front of every word makes `#` (any number of dotted words) and
    `*` (one dotted word) compose without special cases at the ends of the key.
    """
    words = pattern.split(".") if pattern else []
    regex = "".join(
        r"(?:\.[^.]*)*" if w == "#" else r"\.[^.]*" if w == "*" else re.escape("." + w)
        for w in words
    )
    dotted = "." + key if key else ""
    return re.fullmatch(regex, dotted) is not None


word = st.sampled_from(["a", "b", "order", ""])
keys = st.lists(word, max_size=6).map(".".join)
patterns = st.lists(st.sampled_from(["a", "b", "order", "*", "#", ""]), max_size=6).map(".".join)


@given(patterns, keys)
@example("#.#.a.#", "b.a")
@example("*.#.*", "a")
def test_matches_the_regex_reference(pattern: str, key: str) -> None:
    assert topic_matches(pattern, key) == reference(pattern, key)


@given(keys)
def test_a_key_matches_itself_and_hash(key: str) -> None:
    assert topic_matches(key, key)
    assert topic_matches("#", key)
