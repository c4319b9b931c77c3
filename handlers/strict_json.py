"""Strict JSON for request bodies: bounded nesting, no duplicate keys, and cheap when
the body is ordinary.

``json.loads`` recurses once per nesting level (a few KiB of ``[`` raise
``RecursionError``) and lets the last of two equal keys win silently. Both checks here are
exact, but run only when a cheap count over the bytes leaves a doubt: a body with at most
``max_depth`` opening brackets cannot nest deeper, and a body with no more ``:`` bytes than
its top-level object has keys cannot hold a duplicate (every member of every object has a
colon). An update body (``{"increment": 1}``) passes both counts.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

MAX_DEPTH: Final = 16
_MAX_KEY_SHOWN: Final = 40
# A JSON string (escapes included) and a bracket, in the decoded text.
_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET: Final = re.compile(r"[\[\]{}]")


class JsonRefused(ValueError):
    """The body is not JSON this server accepts; ``str()`` says why in one line."""


def loads_strict(body: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``body`` as ``json.loads`` does (UTF-8, or UTF-16/32 by detection), refusing
    nesting deeper than ``max_depth`` and an object with the same key twice.

    Raises:
        JsonRefused: the body is not valid JSON, nests too deep, or repeats a key.
    """
    if body.count(b"[") + body.count(b"{") > max_depth:
        depth = nesting_depth(body)
        if depth > max_depth:
            raise JsonRefused(
                f"the JSON nests {depth} levels deep; at most {max_depth} are allowed"
            )
    try:
        data = json.loads(body)
    except ValueError:  # UnicodeDecodeError included
        raise JsonRefused("the body is not valid JSON") from None
    # Colons inside strings only make the count larger: then the exact check runs.
    if body.count(b":") > (len(data) if isinstance(data, dict) else 0):
        json.loads(body, object_pairs_hook=_unique_keys)
    return data


def nesting_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in ``body`` (0 for a scalar), counting only
    brackets outside strings. For text that is not JSON it may overestimate, never under.

    Raises:
        JsonRefused: the body is not in an encoding JSON allows.
    """
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")
    except UnicodeDecodeError:
        raise JsonRefused("the body is not valid JSON") from None
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub('""', text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` refusing an object that names a key twice."""
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                shown = key if len(key) <= _MAX_KEY_SHOWN else key[:_MAX_KEY_SHOWN] + "..."
                raise JsonRefused(f"the key {shown!r} appears twice in one JSON object")
            seen.add(key)
    return found
