"""Strict JSON parsing of request bodies, as data: depth, duplicate keys, encodings, and
the work a hostile body can cause."""

from __future__ import annotations

import json
import sys
from types import FrameType
from typing import Any

import pytest

from handlers import strict_json
from handlers.scores import MAX_BODY_BYTES
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
        (b"[" * 3000, "nests too deep; at most 16 levels"),  # beyond json's recursion limit
        (b"[" * 17 + b"]" * 17, "nests 17 levels deep"),
        (b"[" * 500 + b"]" * 500, "at most 16"),  # measured, or json's recursion limit
        (b"[" * 2048 + b"]" * 2048, "at most 16"),
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
    ("value", "depth"),
    [
        (1, 0),
        ("[[[[", 0),
        ([], 1),
        ({}, 1),
        ({"a": [1, {"b": []}]}, 4),
        ([[1, [2, [3]]], {"x": {"y": {"z": {}}}}], 5),  # the deepest branch counts
        ([[]] * 1000, 2),
    ],
)
def test_nesting_depth_of_a_parsed_value(value: Any, depth: int) -> None:
    assert nesting_depth(value) == depth


def test_nesting_depth_measures_any_depth_without_recursion() -> None:
    value: list[Any] = []
    for _ in range(100_000):  # far beyond the interpreter's recursion limit
        value = [value]
    assert nesting_depth(value) == 100_001


# --- hostile bodies: the work does not grow with what the body repeats -------------------


def calls_made(body: bytes) -> tuple[list[str], str]:
    """The functions (Python and C) that strict_json's own code calls while handling
    ``body``, by qualified name, and the outcome (the refusal's reason, or "parsed")."""
    names: list[str] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        caller = frame if event == "c_call" else frame.f_back
        if caller is None or caller.f_code.co_filename != strict_json.__file__:
            return
        if event == "c_call":
            names.append(arg.__qualname__)
        elif event == "call":
            names.append(frame.f_code.co_qualname)

    sys.setprofile(profile)
    try:
        loads_strict(body)
        outcome = "parsed"
    except JsonRefused as refused:
        outcome = str(refused)
    finally:
        sys.setprofile(None)
    return names, outcome


def hostile(prefix: bytes, unit: bytes, suffix: bytes, size: int) -> bytes:
    """``unit`` repeated between ``prefix`` and ``suffix``, to at most ``size`` bytes."""
    return prefix + unit * ((size - len(prefix) - len(suffix)) // len(unit)) + suffix


@pytest.mark.parametrize(
    ("prefix", "unit", "suffix", "outcome"),
    [
        # 17 '[' then '"\' repeated: a string that never closes, from every quote
        (b"[" * 17, b'"\\', b"", "not valid JSON"),
        (b'"', b"\\\\", b'"', "parsed"),  # many backslashes
        (b'{"a": "', b'\\"', b'"}', "parsed"),  # a long string of quotes
        (b"[" * 17 + b'"', b'\\"', b'"' + b"]" * 17, "nests 17 levels deep"),
        (b'["', b'x\\":[{', b'"]', "parsed"),  # brackets and colons in a string
        (b"", b"[", b"", "nests too deep"),
        (b'{"a": ' * 17 + b'"', b'\\"', b'"' + b"}" * 17, "nests 17 levels deep"),
    ],
    ids=["unclosed", "backslashes", "quotes", "deep-quotes", "brackets", "open", "objects"],
)
def test_a_hostile_body_costs_the_same_calls_at_any_length(
    prefix: bytes, unit: bytes, suffix: bytes, outcome: str
) -> None:
    """The text is scanned only by C passes of known linear cost (bytes.count, json's
    scanner), never by a regular expression (one that backtracked from every quote made a
    4 KiB body cost 50 ms), and the Python-level work does not grow with the body."""
    half_calls, half_outcome = calls_made(hostile(prefix, unit, suffix, MAX_BODY_BYTES // 2))
    full_calls, full_outcome = calls_made(hostile(prefix, unit, suffix, MAX_BODY_BYTES))
    assert outcome in half_outcome and outcome in full_outcome
    assert half_calls == full_calls
    assert not [name for name in full_calls if name.startswith("Pattern.")]
