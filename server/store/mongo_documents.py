"""A user's record as a MongoDB document, and the smallest update from one record to the next.

Pure: data in, data out. Every write is a compare-and-set on the version ``v`` whose update
``$set``\\ s only what changed: the scalar fields that differ and, in the three logs (rings
of slots, see :class:`~server.domain.records.UserRecord`), the slots that differ, by
numeric path (``"recent_keys.17"``). A slot's ``$set`` is written to the oplog as that one
array element, so a write costs the same in the oplog whether the user has 0 or 64 keys
remembered, 0 or 1,000 accepted updates, 0 or 1,024 spent actions. ``$push`` with
``$slice`` would not: once the array is full, trimming it from the front moves every
element, and MongoDB then logs the whole array (``PushNode::logUpdate``).

Documents written before the logs were rings (plain oldest-first lists of ``[key,
score]`` pairs, times and ``[jti, expires_ms]`` pairs) are read as rings as they are:
each list is a valid ring, its slots are reused in place by the next writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from server.domain.records import UserRecord, keys_from_stored

T = TypeVar("T")

_SCALARS = ("username", "score", "v", "reached_ms", "banned")


def to_record(doc: Mapping[str, Any]) -> UserRecord:
    """The record a ``users_scores`` document holds (any format this service wrote)."""
    return UserRecord(
        user_id=doc["_id"],
        username=doc["username"],
        score=doc["score"],
        v=doc["v"],
        reached_ms=doc["reached_ms"],
        recent_keys=keys_from_stored(doc.get("recent_keys", ())),
        accepted_ms=tuple(doc.get("accepted_ms", ())),
        used_actions=tuple((j, e) for j, e in doc.get("used_actions", ())),
        banned=bool(doc.get("banned", False)),
    )


def to_document(record: UserRecord) -> dict[str, Any]:
    """The whole document of ``record`` (to insert a new user)."""
    return {
        "_id": record.user_id,
        "username": record.username,
        "score": record.score,
        "v": record.v,
        "reached_ms": record.reached_ms,
        "recent_keys": [list(key) for key in record.recent_keys],
        "accepted_ms": list(record.accepted_ms),
        "used_actions": [list(pair) for pair in record.used_actions],
        "banned": record.banned,
    }


def update_of(before: UserRecord, after: UserRecord) -> dict[str, Any]:
    """The update document that turns the stored ``before`` into ``after``.

    ``before`` must be what the document holds (the caller filters the update on
    ``before.v``); the update then leaves exactly ``after`` in it. Its size grows with
    what changed, never with how much the logs hold.
    """
    changes: dict[str, Any] = {}
    for name in _SCALARS:
        value = getattr(after, name)
        if value != getattr(before, name):
            changes[name] = value
    _ring_changes("recent_keys", before.recent_keys, after.recent_keys, list, changes)
    _ring_changes("accepted_ms", before.accepted_ms, after.accepted_ms, _same, changes)
    _ring_changes("used_actions", before.used_actions, after.used_actions, list, changes)
    return {"$set": changes}


def _same(item: T) -> T:
    return item


def _ring_changes(
    name: str,
    before: tuple[T, ...],
    after: tuple[T, ...],
    encode: Callable[[T], Any],
    changes: dict[str, Any],
) -> None:
    if after is before:
        return
    if not before or len(after) < len(before):
        # Nothing to keep (and the field may be missing: a numeric path would then make
        # an object, not an array), or fewer slots than stored: the whole field, once.
        if after != before:
            changes[name] = [encode(item) for item in after]
        return
    for slot, item in enumerate(after):
        if slot >= len(before) or (item is not before[slot] and item != before[slot]):
            changes[f"{name}.{slot}"] = encode(item)
