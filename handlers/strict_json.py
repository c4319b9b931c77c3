"""Strict JSON for request bodies: bounded nesting, no duplicate keys, and cheap when
the body is ordinary.

``json.loads`` (C, one linear pass) parses first: a body nesting deeper than its own
recursion limit raises ``RecursionError`` there, which is refused as too deep. The two
exact checks then run only when a cheap count over the bytes leaves a doubt: a body with
at most ``max_depth`` opening brackets cannot nest deeper (otherwise the depth is measured
on the parsed value, without recursion), and a body with no more ``:`` bytes than its
top-level object has keys cannot hold a duplicate (every member of every object has a
colon). An update body (``{"increment": 1}``) passes both counts. Nothing here scans the
text in Python or with a regular expression, so no body costs more than a few passes of C
over its bytes.
"""

from __future__ import annotations

import json
from typing import Any, Final

MAX_DEPTH: Final = 16
_MAX_KEY_SHOWN: Final = 40


class JsonRefused(ValueError):
    """The body is not JSON this server accepts; ``str()`` says why in one line."""


def loads_strict(body: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``body`` as ``json.loads`` does (UTF-8, or UTF-16/32 by detection), refusing
    nesting deeper than ``max_depth`` and an object with the same key twice.

    Raises:
        JsonRefused: the body is not valid JSON, nests too deep, or repeats a key.
    """
    try:
        data = json.loads(body)
    except RecursionError:
        raise JsonRefused(
            f"the JSON nests too deep; at most {max_depth} levels are allowed"
        ) from None
    except ValueError:  # UnicodeDecodeError included
        raise JsonRefused("the body is not valid JSON") from None
    # Every bracket of every encoding JSON allows holds the byte counted: never too low.
    if body.count(b"[") + body.count(b"{") > max_depth:
        depth = nesting_depth(data)
        if depth > max_depth:
            raise JsonRefused(
                f"the JSON nests {depth} levels deep; at most {max_depth} are allowed"
            )
    # Colons inside strings only make the count larger: then the exact check runs.
    if body.count(b":") > (len(data) if isinstance(data, dict) else 0):
        json.loads(body, object_pairs_hook=_unique_keys)
    return data


def nesting_depth(value: Any) -> int:
    """The deepest nesting of lists and dicts in ``value``, a parsed JSON value (0 for a
    scalar). It visits each value once, level by level, without recursion, so any depth
    is measured.
    """
    depth = 0
    level = [value]
    while True:
        below: list[Any] = []
        nested = False
        for item in level:
            if isinstance(item, list):
                below += item
                nested = True
            elif isinstance(item, dict):
                below += item.values()
                nested = True
        if not nested:
            return depth
        depth += 1
        level = below


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
