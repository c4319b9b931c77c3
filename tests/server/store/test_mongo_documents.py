"""The MongoDB document of a record and the update between two records, as data.

Every write sets only what changed, by field and by log slot, so its update document (and
the oplog entry it becomes) is the same size whatever the logs hold. Updates are applied
to documents with mongomock (a pure in-memory implementation of the update operators) to
check that the document then holds exactly the new record.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import bson
import mongomock
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.admin import AdminAction
from server.domain.increments import IncrementPolicy, decide
from server.domain.records import (
    Applied,
    IncrementCommand,
    RememberedKey,
    SpentAction,
    UserRecord,
    keys_from_stored,
)
from server.store.mongo_documents import to_document, to_record, update_of

T0 = 1_700_000_000_000
FINGERPRINT = "0123456789abcdef"
BIG = IncrementPolicy(rate_limit_per_minute=1000, idempotency_keys=64, used_actions=1024)


def collection() -> Any:
    return mongomock.MongoClient()["scoreboard"]["users_scores"]


def written(before: UserRecord, after: UserRecord) -> UserRecord:
    """Store ``before``, apply ``update_of(before, after)`` filtered on its version, read back."""
    users = collection()
    users.insert_one(to_document(before))
    result = users.update_one({"_id": before.user_id, "v": before.v}, update_of(before, after))
    assert result.matched_count == 1
    return to_record(users.find_one({"_id": before.user_id}))


def holding(keys: int, accepted: int, used: int) -> UserRecord:
    """A user whose logs hold that many live entries (keys of 36 characters, as UUIDs)."""
    return UserRecord(
        "user-123",
        "Player One",
        score=123_456,
        v=keys + 5,
        reached_ms=T0 - 1,
        recent_keys=tuple(
            RememberedKey(str(uuid.UUID(int=i)), 1_000 + i, i + 1, FINGERPRINT) for i in range(keys)
        ),
        accepted_ms=tuple(T0 - 50_000 + i for i in range(accepted)),
        used_actions=tuple((str(uuid.UUID(int=10**6 + i)), T0 + 300_000) for i in range(used)),
    )


def keyed_action(now_ms: int = T0) -> IncrementCommand:
    return IncrementCommand(
        "user-123",
        "Player One",
        5,
        now_ms,
        idempotency_key=str(uuid.UUID(int=2**100)),
        action=SpentAction(str(uuid.UUID(int=2**101)), now_ms + 300_000),
        fingerprint=FINGERPRINT,
    )


# --- sizes --------------------------------------------------------------------------------


def test_an_update_document_is_the_same_size_however_full_the_logs_are() -> None:
    """One keyed, proven, rate-limited increment (idempotency key, action jti, accepted
    time: the three logs all grow). Measured: 255-273 bytes of BSON from an empty user to
    one holding 64 keys, 999 accepted updates and 1,023 spent actions, whose whole
    document (what every write ``$set`` before) is 85,321 bytes."""
    sizes = {}
    whole = {}
    for held in [(0, 0, 0), (1, 1, 1), (32, 500, 500), (63, 998, 1022), (64, 999, 1023)]:
        before = holding(*held)
        decision = decide(before, keyed_action(), BIG)
        assert isinstance(decision, Applied)
        update = update_of(before, decision.record)
        sizes[held] = len(bson.encode(update))
        document = to_document(decision.record)
        del document["_id"]
        whole[held] = len(bson.encode({"$set": document}))
        assert written(before, decision.record) == decision.record
    assert max(sizes.values()) <= 300, sizes
    assert max(sizes.values()) - min(sizes.values()) <= 20, sizes
    assert whole[(64, 999, 1023)] > 80_000, whole  # the whole document, as before


def test_a_full_key_ring_overwrites_one_slot_in_place() -> None:
    before = holding(64, 0, 0)
    decision = decide(before, replace(keyed_action(), action=None), BIG)
    assert isinstance(decision, Applied)
    changes = update_of(before, decision.record)["$set"]
    # The oldest key's slot (seq 1, slot 0): not a shift of the other 63.
    assert set(changes) == {"recent_keys.0", "accepted_ms", "score", "v", "reached_ms"}
    assert changes["recent_keys.0"] == [str(uuid.UUID(int=2**100)), 123_461, 70, FINGERPRINT]


def test_expired_slots_are_reused_in_place() -> None:
    now = T0 + 10_000
    before = replace(holding(0, 5, 0), used_actions=(("old", T0), ("live", now + 5)))
    # At ``now`` the first accepted times have left the window and "old" has expired.
    cmd = IncrementCommand("user-123", "Player One", 1, now, action=SpentAction("new", now + 1))
    decision = decide(before, cmd, BIG)
    assert isinstance(decision, Applied)
    changes = update_of(before, decision.record)["$set"]
    assert changes == {
        "accepted_ms.0": now,
        "used_actions.0": ["new", now + 1],
        "score": before.score + 1,
        "v": before.v + 1,
        "reached_ms": now,
    }


def test_only_the_scalars_that_changed_are_set() -> None:
    before = holding(3, 3, 3)
    reset = AdminAction.RESET.change(T0)(before)
    assert update_of(before, reset) == {"$set": {"score": 0, "v": before.v + 1, "reached_ms": T0}}
    renamed = replace(before, username="New Name", v=before.v + 1)
    assert update_of(before, renamed) == {"$set": {"username": "New Name", "v": before.v + 1}}


def test_a_shrinking_log_is_set_whole_once() -> None:
    """The rate limit turned off empties the log of accepted times: one small $set."""
    before = holding(0, 4, 0)
    off = IncrementPolicy(rate_limit_per_minute=0)
    decision = decide(before, IncrementCommand("user-123", "Player One", 1, T0), off)
    assert isinstance(decision, Applied)
    assert update_of(before, decision.record)["$set"]["accepted_ms"] == []
    assert written(before, decision.record) == decision.record


# --- documents the previous version wrote --------------------------------------------------


def legacy_document() -> dict[str, Any]:
    """A document as the previous version wrote it: plain lists, every write whole."""
    return {
        "_id": "old-user",
        "username": "Old",
        "score": 12,
        "v": 3,
        "reached_ms": T0 - 10_000,
        "recent_keys": [["k1", 5], ["k2", 9], ["k3", 12]],
        "accepted_ms": [T0 - 70_000, T0 - 30_000],
        "used_actions": [["j1", T0 + 5_000]],
        "banned": False,
    }


def test_a_document_of_the_previous_version_is_read_as_rings() -> None:
    record = to_record(legacy_document())
    assert [(k.key, k.score, k.fingerprint) for k in record.recent_keys] == [
        ("k1", 5, None),
        ("k2", 9, None),
        ("k3", 12, None),
    ]
    assert [k.seq for k in record.recent_keys] == sorted(k.seq for k in record.recent_keys)
    assert all(k.seq < 0 for k in record.recent_keys)  # older than any key stored from now on
    assert record.accepted_ms == (T0 - 70_000, T0 - 30_000)
    assert record.used_actions == (("j1", T0 + 5_000),)


def test_a_document_of_the_previous_version_is_updated_slot_by_slot() -> None:
    """No conversion step: its lists are rings already; the next writes reuse their slots,
    and the legacy pairs left in place still read back the same."""
    users = collection()
    users.insert_one(legacy_document())
    policy = IncrementPolicy(rate_limit_per_minute=10, idempotency_keys=3)
    before = to_record(users.find_one({"_id": "old-user"}))
    cmd = IncrementCommand("old-user", "Old", 1, T0, "k4", fingerprint=FINGERPRINT)
    decision = decide(before, cmd, policy)
    assert isinstance(decision, Applied)
    changes = update_of(before, decision.record)["$set"]
    assert set(changes) == {"recent_keys.0", "accepted_ms.0", "score", "v", "reached_ms"}
    users.update_one({"_id": "old-user", "v": before.v}, update_of(before, decision.record))
    stored = users.find_one({"_id": "old-user"})
    assert stored["recent_keys"] == [["k4", 13, 4, FINGERPRINT], ["k2", 9], ["k3", 12]]
    assert to_record(stored) == decision.record
    assert keys_from_stored(stored["recent_keys"]) == decision.record.recent_keys


def test_a_document_without_a_log_field_gets_an_array_not_an_object() -> None:
    """Documents from before spent actions were stored have no ``used_actions``: a slot
    path there would create an object, so a first entry sets the whole array."""
    document = legacy_document()
    del document["used_actions"]
    users = collection()
    users.insert_one(document)
    before = to_record(document)
    cmd = IncrementCommand("old-user", "Old", 1, T0, action=SpentAction("j9", T0 + 1_000))
    decision = decide(before, cmd, IncrementPolicy(rate_limit_per_minute=0))
    assert isinstance(decision, Applied)
    users.update_one({"_id": "old-user", "v": before.v}, update_of(before, decision.record))
    assert users.find_one({"_id": "old-user"})["used_actions"] == [["j9", T0 + 1_000]]


# --- any sequence of writes ----------------------------------------------------------------

steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("increment"),
            st.integers(0, 40_000),  # gap, ms
            st.sampled_from(["a", "b", "c", "d", None]),
            st.one_of(st.none(), st.sampled_from("wxyz")),
            st.sampled_from(["Ann", "Anne"]),
        ),
        st.tuples(st.just("admin"), st.sampled_from(list(AdminAction))),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(steps=steps, legacy=st.booleans())
def test_every_update_leaves_exactly_the_new_record_in_the_document(
    steps: list[tuple[Any, ...]], legacy: bool
) -> None:
    """Increments and admin changes in any order, from a new user or a document of the
    previous version: after each compare-and-set update the document reads back as the
    record decided on, and no update holds more than a few changed slots."""
    policy = IncrementPolicy(rate_limit_per_minute=3, idempotency_keys=3, used_actions=2)
    users = collection()
    record: UserRecord | None = None
    if legacy:
        users.insert_one(legacy_document() | {"_id": "u1"})
        record = to_record(users.find_one({"_id": "u1"}))
    now = T0
    for step in steps:
        if step[0] == "admin":
            if record is None:
                continue
            new = step[1].change(now)(record)
        else:
            _, gap, key, jti, name = step
            now += gap
            action = None if jti is None else SpentAction(jti, now + 30_000)
            decision = decide(record, IncrementCommand("u1", name, 1, now, key, action), policy)
            if not isinstance(decision, Applied):
                continue
            new = decision.record
        if record is None:
            users.insert_one(to_document(new))
        else:
            update = update_of(record, new)
            assert len(update["$set"]) <= 9  # 5 scalars, a slot (or small log) per log
            result = users.update_one({"_id": "u1", "v": record.v}, update)
            assert result.matched_count == 1
        record = new
        assert to_record(users.find_one({"_id": "u1"})) == record
