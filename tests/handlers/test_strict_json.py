"""Strict JSON parsing of request bodies, as data: depth, duplicate keys, encodings."""

from __future__ import annotations

import json

import pytest

from handlers.strict_json import MAX_DEPTH, JsonRefused, loads_strict, nesting_depth


@pytest.mark.parametrize(
    "body",
    [
        b'{"increment": 1}',
        b'{"increment": 1, "action_token": "a.b.c"}',
        b"[]",
        b"7",
        b'"x"',
        b'{"a": {"b": [1, {"c": 2}]}, "d": {"b": 3}}',  # the same key in different objects
        b'{"colons: and [brackets{": "in strings: [[[[[[[[[[[[[[[[[[[[ {{{{"}',
        b'{"esc\\"aped": "quote \\" then [[[[[[[[[[[[[[[[[[[[[[["}',
        b"[" * MAX_DEPTH + b"]" * MAX_DEPTH,
        '{"increment": 1}'.encode("utf-16"),
        '{"increment": 1}'.encode("utf-32-le"),
    ],
)
def test_acceptable_json_parses_as_json_loads_does(body: bytes) -> None:
    assert loads_strict(body) == json.loads(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 3000, "nests 3000 levels deep; at most 16"),
        (b"[" * 17 + b"]" * 17, "nests 17 levels deep"),
        (b'{"a":' * 17 + b"1" + b"}" * 17, "nests 17 levels deep"),
        # A detected encoding is scanned decoded.
        (("[" * 40 + "]" * 40).encode("utf-16"), "nests 40 levels deep"),
        (b'{"increment": 1, "increment": 2}', "the key 'increment' appears twice"),
        (b'[{"a": {"b": 1, "b": 2}}]', "the key 'b' appears twice"),
        (b'{"' + b"k" * 100 + b'": 1, "' + b"k" * 100 + b'": 2}', "'" + "k" * 40 + "...'"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"", "not valid JSON"),
    ],
)
def test_unacceptable_json_is_refused_with_a_reason(body: bytes, message: str) -> None:
    with pytest.raises(JsonRefused) as refused:
        loads_strict(body)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_the_bound_is_a_parameter() -> None:
    assert loads_strict(b"[[1]]", max_depth=2) == [[1]]
    with pytest.raises(JsonRefused, match="nests 3 levels deep; at most 2"):
        loads_strict(b"[[[1]]]", max_depth=2)


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ("[]", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ('["[[[[", "]]]]"]', 1),
        ('["\\\\", [["\\"[["]]]', 3),
        ("]]][[", 0),  # a parser stops at the first ']': it never goes deeper
        ('"unterminated [[[', 3),  # overestimates invalid text, never underestimates
    ],
)
def test_nesting_depth_counts_brackets_outside_strings(text: str, depth: int) -> None:
    assert nesting_depth(text.encode()) == depth
