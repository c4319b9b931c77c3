"""The MongoDB adapter's deadlines, error classification and write sizes, on mongomock.

A wrapper makes chosen collection calls raise the errors the driver raises, so each step
of a compare-and-set (read, insert, update) can fail on purpose; the updates the adapter
sends are recorded to measure them. One test points a real client at a closed port: an
unreachable MongoDB, not a fake one.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

import bson
import pytest
from mongomock_motor import AsyncMongoMockClient
from pymongo.errors import (
    AutoReconnect,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from server.domain.increments import IncrementPolicy
from server.domain.records import Applied, IncrementCommand, Replayed, SpentAction
from server.service import create_store
from server.store.mongodb import MongoStore
from server.store.port import StoreError, StoreTimeout, StoreUnavailable
from tests.conftest import scaled, settings_for
from tests.server.store.support import apply_one

pytestmark = pytest.mark.gen_test(timeout=scaled(30))

T0 = 1_700_000_000_000
POLICY = IncrementPolicy(rate_limit_per_minute=1000, idempotency_keys=64, used_actions=1024)


class Collection:
    """A mongomock-motor collection whose calls can be made to fail, and that keeps the
    update documents it was sent."""

    def __init__(self, target: Any) -> None:
        self._target = target
        self.failures: dict[str, Exception] = {}
        self.updates: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name not in {"find_one", "insert_one", "update_one", "create_index", "find"}:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            failure = self.failures.get(name)
            if failure is not None:
                raise failure
            if name == "update_one":
                self.updates.append(args[1])
            return attr(*args, **kwargs)

        return call


class Database:
    def __init__(self) -> None:
        self._target = AsyncMongoMockClient()[f"test_{uuid.uuid4().hex}"]
        self.users = Collection(self._target["users_scores"])

    def __getitem__(self, name: str) -> Any:
        # The users' collection is the one these tests fake; the boards' are mongomock's.
        return self.users if name == "users_scores" else self._target[name]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


def keyed(i: int, now_ms: int = T0) -> IncrementCommand:
    return IncrementCommand(
        "alice",
        "Alice",
        1,
        now_ms + i,
        idempotency_key=f"{uuid.UUID(int=i)}",
        action=SpentAction(f"{uuid.UUID(int=10**6 + i)}", now_ms + 300_000),
        fingerprint="0123456789abcdef",
    )


async def test_each_write_sends_an_update_of_the_same_size_however_full_the_logs() -> None:
    """Through the adapter: 1,000 keyed, proven increments of one user (the key ring full
    after 64, 1,000 accepted times and spent actions held). Every update it sends stays
    under 300 bytes of BSON; the whole document it used to $set is over 80 KB."""
    db = Database()
    store = MongoStore(db, POLICY)
    await store.open()
    known = None
    for i in range(1_000):
        decision = (await store.apply_increments([keyed(i)], known))[0]
        assert isinstance(decision, Applied)
        known = decision.record
    sizes = [len(bson.encode(update)) for update in db.users.updates]
    assert len(sizes) == 999  # the first write inserted the document
    assert max(sizes) <= 300, max(sizes)
    document = await db.users.find_one({"_id": "alice"})
    assert len(bson.encode(document)) > 80_000  # what each write sent before
    assert len(document["recent_keys"]) == 64
    # The ring still answers the last 64 keys, and only them.
    assert await apply_one(store, replace(keyed(999), now_ms=T0 + 5_000)) == Replayed(1_000)
    later = T0 + 61_000  # the accepted times have left the window
    fresh = await apply_one(store, replace(keyed(935), now_ms=later, action=None))
    assert isinstance(fresh, Applied)  # key 935 was the 65th newest: forgotten


FAILURES = [
    # (the call that fails, the error, what the caller is told)
    ("find_one", ServerSelectionTimeoutError("no primary"), StoreUnavailable),
    ("find_one", NetworkTimeout("timed out"), StoreUnavailable),  # a read: nothing applied
    ("insert_one", NetworkTimeout("timed out"), StoreTimeout),
    # The driver's last retry may say "not primary" after an attempt that was sent.
    ("insert_one", NotPrimaryError("not primary"), StoreTimeout),
    ("update_one", OperationFailure("Authentication failed.", 18), StoreUnavailable),
    ("update_one", NetworkTimeout("timed out"), StoreTimeout),
    ("update_one", AutoReconnect("connection reset"), StoreTimeout),
    ("update_one", ServerSelectionTimeoutError("no primary"), StoreUnavailable),
    ("update_one", OperationFailure("not authorized", 13), StoreError),
]


@pytest.mark.parametrize(("call", "error", "expected"), FAILURES)
async def test_a_failing_step_of_an_increment_says_whether_it_may_have_applied(
    call: str, error: Exception, expected: type[StoreError]
) -> None:
    db = Database()
    store = MongoStore(db, POLICY)
    await store.open()
    if call == "update_one":
        applied = await apply_one(store, keyed(0))  # the user exists: updates follow
        assert isinstance(applied, Applied)
    db.users.failures[call] = error
    with pytest.raises(StoreError) as raised:
        await apply_one(store, keyed(1))
    assert type(raised.value) is expected
    assert raised.value.__cause__ is error


async def test_reads_and_open_say_unavailable_when_mongodb_cannot_be_reached() -> None:
    db = Database()
    store = MongoStore(db, POLICY)
    db.users.failures["create_index"] = ServerSelectionTimeoutError("connection refused")
    with pytest.raises(StoreUnavailable, match="cannot prepare MongoDB collection"):
        await store.open()
    db.users.failures.clear()
    await store.open()
    db.users.failures["find"] = AutoReconnect("connection reset")
    with pytest.raises(StoreUnavailable):
        await store.top(10)
    db.users.failures["find_one"] = NetworkTimeout("timed out")
    with pytest.raises(StoreUnavailable):
        await store.get_score("alice")
    with pytest.raises(StoreUnavailable):
        await store.rank("alice")
    db.users.failures["find_one"] = OperationFailure("not authorized", 13)
    with pytest.raises(StoreError) as raised:
        await store.get_score("alice")
    assert type(raised.value) is StoreError


async def test_the_client_has_the_store_deadline_and_an_unreachable_mongodb_is_unavailable() -> (
    None
):
    """A real client and a closed port (nothing listens on port 1): open() and writes fail
    with StoreUnavailable by the 2 s deadline (the driver's own server selection would
    wait 30 s, past the test's bound)."""
    settings = settings_for(
        mongodb_uri="mongodb://127.0.0.1:1/?directConnection=true", store_timeout_s=2.0
    )
    store = create_store(settings)
    assert isinstance(store, MongoStore)
    try:
        assert store._client.options.timeout == 2.0
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(store.open(), scaled(20))
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(apply_one(store, keyed(0)), scaled(20))
    finally:
        await store.close()
