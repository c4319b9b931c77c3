"""The store port's contract: one suite that every adapter must pass.

Backends: SQLite on a file, SQLite ``:memory:``, :class:`MongoStore` over mongomock-motor,
and :class:`MongoStore` over a real MongoDB when ``SCOREBOARD_TEST_MONGODB_URI`` is set.

mongomock-motor's "async" calls never yield to the event loop, so concurrent increments
could never interleave and the compare-and-set retry would go untested. The mongomock
backend therefore wraps the collection so each call first yields, as real I/O does, and
counts the write conflicts it sees, so the tests can check the retry really ran.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import bson
import pymongo
import pymongo.errors
import pytest
from mongomock_motor import AsyncMongoMockClient
from pymongo.errors import DuplicateKeyError

from server.domain.admin import AdminAction
from server.domain.increments import IncrementPolicy
from server.domain.records import (
    ActionReplayed,
    Applied,
    Banned,
    BoardRow,
    Decision,
    IncrementCommand,
    KeyReused,
    RateLimited,
    RememberedKey,
    Replayed,
    SpentAction,
    StoredUser,
    UserRecord,
)
from server.store.changes import FeedHistoryLost, LocalChangeFeed
from server.store.mongo_changes import MongoChangeFeed
from server.store.mongodb import COLLECTION, MongoStore
from server.store.port import ScoreStore, StoreError, StoreTimeout, StoreUnavailable
from server.store.sqlite import SqliteStore
from tests.conftest import MONGODB_URI, NEEDS_MONGODB, scaled
from tests.server.store.support import apply_one

pytestmark = pytest.mark.gen_test(timeout=scaled(20))


UNLIMITED = IncrementPolicy(rate_limit_per_minute=0, idempotency_keys=64)
T0 = 1_700_000_000_000  # a fixed "now" in ms; tests pass time in through now_ms


def cmd(
    user: str = "alice",
    amount: int = 1,
    *,
    now_ms: int = T0,
    key: str | None = None,
    username: str | None = None,
) -> IncrementCommand:
    return IncrementCommand(
        user_id=user,
        username=username if username is not None else user.title(),
        amount=amount,
        now_ms=now_ms,
        idempotency_key=key,
    )


def applied(decision: Decision | BaseException) -> Applied:
    assert isinstance(decision, Applied), decision
    return decision


# --- backends --------------------------------------------------------------------------


@dataclass
class MongoStats:
    """What the interleaving wrapper saw: lost compare-and-sets, duplicate inserts, and
    the calls (round trips) of each kind."""

    conflicts: int = 0
    duplicate_keys: int = 0
    calls: Counter[str] = field(default_factory=Counter)


class _YieldingCollection:
    """Wraps a mongomock-motor collection: every write/read the store uses yields first."""

    def __init__(self, target: Any, stats: MongoStats) -> None:
        self._target = target
        self._stats = stats

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name not in {"find_one", "insert_one", "update_one"}:
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            self._stats.calls[name] += 1
            await asyncio.sleep(0)  # let other tasks run, as a network round trip would
            try:
                result = await attr(*args, **kwargs)
            except DuplicateKeyError:
                self._stats.duplicate_keys += 1
                raise
            if name == "update_one" and result.matched_count == 0:
                self._stats.conflicts += 1
            return result

        return call


class _YieldingDatabase:
    def __init__(self, target: Any, stats: MongoStats) -> None:
        self._target = target
        self._stats = stats

    def __getitem__(self, name: str) -> _YieldingCollection:
        return _YieldingCollection(self._target[name], self._stats)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


@dataclass
class Backend:
    """Builds stores of one kind; every store built by one Backend shares the same data
    (except ``:memory:`` SQLite, which cannot be shared)."""

    kind: str
    tmp_path: Path
    db_name: str = field(default_factory=lambda: f"scoreboard_test_{uuid.uuid4().hex}")
    stats: MongoStats = field(default_factory=MongoStats)
    _mock_db: Any = None

    @property
    def is_mongo(self) -> bool:
        return self.kind in {"mongomock", "mongodb"}

    def build(
        self, policy: IncrementPolicy = UNLIMITED, *, feed: LocalChangeFeed | None = None
    ) -> ScoreStore:
        if self.kind == "sqlite-file":
            return SqliteStore(
                str(self.tmp_path / "scores.db"), policy, synchronous="NORMAL", feed=feed
            )
        if self.kind == "sqlite-memory":
            return SqliteStore(":memory:", policy)
        if self.kind == "mongomock":
            if self._mock_db is None:
                self._mock_db = AsyncMongoMockClient()[self.db_name]
            return MongoStore(_YieldingDatabase(self._mock_db, self.stats), policy, feed=feed)
        assert self.kind == "mongodb" and MONGODB_URI
        # As in production (server.service.create_store): a deadline on every operation.
        client: pymongo.AsyncMongoClient[dict[str, Any]] = pymongo.AsyncMongoClient(
            MONGODB_URI, w="majority", timeoutMS=int(scaled(5) * 1000)
        )
        return MongoStore(client[self.db_name], policy, client=client, timeout_s=scaled(5))

    @asynccontextmanager
    async def opened(self, policy: IncrementPolicy = UNLIMITED) -> AsyncIterator[ScoreStore]:
        store = self.build(policy)
        try:
            await store.open()
            yield store
        finally:
            await store.close()

    def drop(self) -> None:
        if self.kind == "mongodb" and MONGODB_URI:
            client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(MONGODB_URI)
            with client:
                client.drop_database(self.db_name)


@pytest.fixture(
    params=[
        pytest.param("sqlite-file"),
        pytest.param("sqlite-memory"),
        pytest.param("mongomock"),
        pytest.param("mongodb", marks=NEEDS_MONGODB),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(request.param, tmp_path)
    yield b
    b.drop()


@pytest.fixture(params=[pytest.param("mongomock"), pytest.param("mongodb", marks=NEEDS_MONGODB)])
def mongo_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(request.param, tmp_path)
    yield b
    b.drop()


@pytest.fixture(params=[pytest.param("mongodb", marks=NEEDS_MONGODB)])
def real_mongodb(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(request.param, tmp_path)
    yield b
    b.drop()


@pytest.fixture(params=["sqlite-file", "sqlite-memory"])
def sqlite_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend(request.param, tmp_path)


async def apply_until_decided(store: ScoreStore, command: IncrementCommand) -> tuple[Decision, int]:
    """Apply ``command``, retrying on :class:`StoreError` as a client would (same key).

    Returns the decision and how many StoreErrors it took.
    """
    errors = 0
    while True:
        try:
            return await apply_one(store, command), errors
        except StoreError:
            errors += 1
            assert errors < 500, "the store never accepted the increment"


# --- lifecycle -------------------------------------------------------------------------


async def test_open_ping_close_and_close_is_idempotent(backend: Backend) -> None:
    store = backend.build()
    try:
        await store.open()
        assert await store.ping() is True
    finally:
        await store.close()
    await store.close()  # a second close is a no-op, not an error


async def test_calls_after_close_raise_store_error(backend: Backend) -> None:
    store = backend.build()
    await store.open()
    applied(await apply_one(store, cmd("alice")))
    await store.close()
    with pytest.raises(StoreError):
        await apply_one(store, cmd("alice"))
    with pytest.raises(StoreError):
        await store.top(10)
    with pytest.raises(StoreError):
        await store.get_score("alice")
    assert await store.ping() is False


# --- increments ------------------------------------------------------------------------


async def test_first_increment_creates_the_record_with_username(backend: Backend) -> None:
    async with backend.opened() as store:
        assert await store.get_score("alice") is None
        first = applied(await apply_one(store, cmd("alice", 3, username="Alice A.")))
        assert first.new_score == 3
        assert first.record.user_id == "alice"
        assert first.record.username == "Alice A."
        assert first.record.v == 1
        assert first.record.reached_ms == T0
        assert await store.get_score("alice") == BoardRow("alice", "Alice A.", 3, T0, 1)


async def test_increments_add_up_and_the_version_grows_by_one_per_write(
    backend: Backend,
) -> None:
    async with backend.opened() as store:
        amounts = [1, 5, 2, 100, 7]
        total = 0
        for i, amount in enumerate(amounts, start=1):
            total += amount
            result = applied(await apply_one(store, cmd("bob", amount, now_ms=T0 + i)))
            assert result.new_score == total
            assert result.record.v == i
            assert result.record.reached_ms == T0 + i
        # The latest username wins; other users are untouched.
        applied(await apply_one(store, cmd("bob", 1, now_ms=T0 + 9, username="Bobby")))
        applied(await apply_one(store, cmd("carol", 4, now_ms=T0 + 10)))
        assert await store.get_score("bob") == BoardRow("bob", "Bobby", total + 1, T0 + 9, 6)
        assert await store.get_score("carol") == BoardRow("carol", "Carol", 4, T0 + 10, 1)


async def test_get_score_of_a_missing_user_is_none(backend: Backend) -> None:
    async with backend.opened() as store:
        assert await store.get_score("nobody") is None
        applied(await apply_one(store, cmd("somebody")))
        assert await store.get_score("nobody") is None
        assert await store.get_score("") is None


# --- idempotency -----------------------------------------------------------------------


async def test_a_seen_key_replays_the_first_score_and_stores_nothing(backend: Backend) -> None:
    async with backend.opened() as store:
        first = applied(await apply_one(store, cmd("alice", 5, key="k1")))
        assert first.new_score == 5
        applied(await apply_one(store, cmd("alice", 2, now_ms=T0 + 1, key="k2")))
        before = await store.get_score("alice")
        assert before == BoardRow("alice", "Alice", 7, T0 + 1, 2)

        # Same key, even with another amount, time and username: the first answer, no write.
        again = await apply_one(
            store, cmd("alice", 50, now_ms=T0 + 2, key="k1", username="Renamed")
        )
        assert again == Replayed(new_score=5)
        assert await apply_one(store, cmd("alice", 1, now_ms=T0 + 3, key="k2")) == Replayed(
            new_score=7
        )
        assert await store.get_score("alice") == before

        # Keys are per user: another user's "k1" is a new update.
        assert applied(await apply_one(store, cmd("bob", 3, key="k1"))).new_score == 3


async def test_at_least_the_last_64_keys_are_remembered(backend: Backend) -> None:
    async with backend.opened() as store:
        for i in range(65):
            result = applied(await apply_one(store, cmd("alice", 1, now_ms=T0 + i, key=f"k{i}")))
            assert result.new_score == i + 1
        after = await store.get_score("alice")
        assert after is not None
        assert after.score == 65
        assert after.v == 65
        for i in range(1, 65):  # the last 64 keys
            decision = await apply_one(store, cmd("alice", 1, now_ms=T0 + 100, key=f"k{i}"))
            assert decision == Replayed(new_score=i + 1), i
        assert await store.get_score("alice") == after


async def test_a_replay_is_answered_even_when_rate_limited(backend: Backend) -> None:
    policy = IncrementPolicy(rate_limit_per_minute=1, idempotency_keys=64)
    async with backend.opened(policy) as store:
        applied(await apply_one(store, cmd("alice", 4, key="once")))
        assert isinstance(await apply_one(store, cmd("alice", 1, now_ms=T0 + 1)), RateLimited)
        replay = await apply_one(store, cmd("alice", 4, now_ms=T0 + 2, key="once"))
        assert replay == Replayed(new_score=4)


async def test_a_key_reused_with_another_request_is_refused_and_stored_nothing(
    backend: Backend,
) -> None:
    async with backend.opened() as store:
        first = replace(cmd("alice", 5, key="k"), fingerprint="f-five")
        applied(await apply_one(store, first))
        other = replace(first, amount=7, now_ms=T0 + 1, fingerprint="f-seven")
        assert await apply_one(store, other) == KeyReused()
        assert await apply_one(store, replace(first, now_ms=T0 + 2)) == Replayed(5)
        assert await store.get_score("alice") == BoardRow("alice", "Alice", 5, T0, 1)
    if backend.kind != "sqlite-memory":  # the fingerprint was stored, not only remembered
        async with backend.opened() as reopened:
            assert await apply_one(reopened, other) == KeyReused()


async def store_as_the_previous_version(store: ScoreStore, user: str) -> None:
    """Write ``user``'s record as the previous version stored it: plain lists, keys as
    ``[key, score]`` pairs without seq or fingerprint."""
    keys = [[f"old-{i}", i + 1] for i in range(3)]
    accepted = [T0 - 61_000, T0 - 30_000, T0 - 20_000]  # the first one out of the window
    used = [["jti-old", T0 + 60_000]]
    if isinstance(store, SqliteStore):
        row = (user, user.title(), 3, 3, T0 - 20_000, *map(json.dumps, (keys, accepted, used)))
        await store._call(
            lambda conn: conn.execute(
                "INSERT INTO users_scores (user_id, username, score, v, reached_ms, "
                "recent_keys, accepted_ms, used_actions) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        )
        return
    assert isinstance(store, MongoStore)
    document = {"_id": user, "username": user.title(), "score": 3, "v": 3, "banned": False}
    document |= {"reached_ms": T0 - 20_000, "recent_keys": keys, "accepted_ms": accepted}
    await store._users.insert_one(document | {"used_actions": used})


async def test_a_record_stored_by_the_previous_version_is_read_and_extended(
    backend: Backend,
) -> None:
    policy = IncrementPolicy(rate_limit_per_minute=3, idempotency_keys=3)
    async with backend.opened(policy) as store:
        await store_as_the_previous_version(store, "old")
        # Its keys replay (they carry no fingerprint: any request matches them)...
        keyed = replace(cmd("old", 9, key="old-1"), fingerprint="f")
        assert await apply_one(store, keyed) == Replayed(2)
        # ...its spent action and its rate-limit log still count...
        spent = replace(cmd("old", 1), action=SpentAction("jti-old", T0 + 60_000))
        assert await apply_one(store, spent) == ActionReplayed()
        # (two of the three accepted times are in the window: one more fits)
        new = applied(await apply_one(store, replace(keyed, idempotency_key="new-1")))
        assert (new.new_score, new.record.v) == (12, 4)
        assert await apply_one(store, cmd("old", 1, now_ms=T0 + 1)) == RateLimited(30)
        # New keys have fingerprints, and push out the oldest old keys first.
        reused = replace(keyed, idempotency_key="new-1", now_ms=T0 + 2, fingerprint="g")
        assert await apply_one(store, reused) == KeyReused()
        assert await apply_one(store, cmd("old", 1, now_ms=T0 + 2, key="old-0")) == (
            RateLimited(30)  # forgotten: a new update (refused by the rate limit)
        )
        assert await apply_one(store, cmd("old", 1, now_ms=T0 + 2, key="old-2")) == (Replayed(3))
        assert await store.get_score("old") == BoardRow("old", "Old", 12, T0, 4)


# --- rate limit ------------------------------------------------------------------------


async def test_rate_limit_within_60_s_then_allowed_after_the_window(backend: Backend) -> None:
    policy = IncrementPolicy(rate_limit_per_minute=3, idempotency_keys=64)
    async with backend.opened(policy) as store:
        for i, at in enumerate((0, 1_000, 2_000), start=1):
            assert applied(await apply_one(store, cmd("alice", now_ms=T0 + at))).new_score == i
        limited = BoardRow("alice", "Alice", 3, T0 + 2_000, 3)

        assert await apply_one(store, cmd("alice", now_ms=T0 + 3_000)) == RateLimited(57)
        # A rate-limited update stores nothing (and does not count as accepted).
        assert await store.get_score("alice") == limited
        assert await apply_one(store, cmd("alice", now_ms=T0 + 59_999)) == RateLimited(1)
        assert await store.get_score("alice") == limited
        # Other users have their own window.
        assert applied(await apply_one(store, cmd("bob", now_ms=T0 + 3_000))).new_score == 1

        # At +60 s the first update has left the window: exactly one more fits.
        assert applied(await apply_one(store, cmd("alice", now_ms=T0 + 60_000))).new_score == 4
        assert await apply_one(store, cmd("alice", now_ms=T0 + 60_500)) == RateLimited(1)
        assert applied(await apply_one(store, cmd("alice", now_ms=T0 + 61_000))).new_score == 5
        assert await store.get_score("alice") == BoardRow("alice", "Alice", 5, T0 + 61_000, 5)


# --- ranking ---------------------------------------------------------------------------


async def test_top_orders_by_score_then_earliest_reached_then_user_id(backend: Backend) -> None:
    async with backend.opened() as store:
        assert await store.top(10) == []
        # (user, amount, now_ms); inserted in a scrambled order on purpose.
        for user, amount, at in [
            ("erin", 1, 10),
            ("carl", 5, 50),
            ("anna", 5, 100),
            ("dave", 7, 200),
            ("bert", 5, 50),
        ]:
            applied(await apply_one(store, cmd(user, amount, now_ms=T0 + at)))
        expected = [
            BoardRow("dave", "Dave", 7, T0 + 200, 1),
            BoardRow("bert", "Bert", 5, T0 + 50, 1),
            BoardRow("carl", "Carl", 5, T0 + 50, 1),
            BoardRow("anna", "Anna", 5, T0 + 100, 1),
            BoardRow("erin", "Erin", 1, T0 + 10, 1),
        ]
        assert await store.top(10) == expected
        assert await store.top(5) == expected
        assert await store.top(3) == expected[:3]
        assert await store.top(1) == expected[:1]

        # Reaching a score later ranks below whoever reached it first.
        applied(await apply_one(store, cmd("erin", 6, now_ms=T0 + 300)))
        assert [r.user_id for r in await store.top(3)] == ["dave", "erin", "bert"]
        applied(await apply_one(store, cmd("anna", 2, now_ms=T0 + 400)))
        assert [r.user_id for r in await store.top(3)] == ["dave", "erin", "anna"]


# --- concurrency -----------------------------------------------------------------------


async def test_concurrent_increments_for_one_user_lose_no_update(backend: Backend) -> None:
    async with backend.opened() as store:
        results = await asyncio.gather(
            *(
                apply_until_decided(store, cmd("hot", 1, now_ms=T0 + i, key=f"k{i}"))
                for i in range(50)
            )
        )
        decisions = [applied(d) for d, _ in results]  # StoreError means nothing applied
        # Each write saw the one before it: scores and versions are exactly 1..50.
        assert sorted(d.new_score for d in decisions) == list(range(1, 51))
        assert sorted(d.record.v for d in decisions) == list(range(1, 51))
        final = await store.get_score("hot")
        assert final is not None
        assert (final.score, final.v) == (50, 50)
        errors = sum(e for _, e in results)
        if not backend.is_mongo:
            assert errors == 0  # SQLite serializes writes: never a contention error
        if backend.kind == "mongomock":
            assert backend.stats.conflicts > 0  # the compare-and-set retry really ran


async def test_concurrent_increments_for_many_users_lose_no_update(backend: Backend) -> None:
    async with backend.opened() as store:
        users = [f"user{n:02d}" for n in range(10)]
        commands = [
            cmd(user, amount, now_ms=T0 + i, key=f"{user}-{i}")
            for i, amount in enumerate((1, 2, 3, 4, 5))
            for user in users
        ]
        results = await asyncio.gather(*(apply_until_decided(store, c) for c in commands))
        assert all(isinstance(d, Applied) for d, _ in results)
        if not backend.is_mongo:
            assert sum(e for _, e in results) == 0
        for user in users:
            row = await store.get_score(user)
            assert row is not None
            assert (row.score, row.v) == (15, 5), user
        assert len(await store.top(100)) == 10


async def test_two_mongo_stores_on_one_database_lose_no_update(mongo_backend: Backend) -> None:
    """Two pods, each serializing its own writes (as its user actor does), one hot user."""
    async with mongo_backend.opened() as pod_a, mongo_backend.opened() as pod_b:

        async def pod(store: ScoreStore, name: str) -> list[Decision]:
            # A client retries a StoreError with the same key; the port says nothing applied.
            answers = []
            for i in range(30):
                command = cmd("hot", 1, now_ms=T0 + i, key=f"{name}{i}")
                answers.append((await apply_until_decided(store, command))[0])
            return answers

        a, b = await asyncio.gather(pod(pod_a, "a"), pod(pod_b, "b"))
        decisions = [applied(d) for d in a + b]
        assert sorted(d.new_score for d in decisions) == list(range(1, 61))
        # Each pod's own answers grow, since its writes are serialized.
        for answers in (a, b):
            scores = [applied(d).new_score for d in answers]
            assert scores == sorted(scores)
        final = await pod_a.get_score("hot")
        assert final is not None
        assert (final.score, final.v) == (60, 60)
        assert await pod_b.get_score("hot") == final
        if mongo_backend.kind == "mongomock":
            # The pods raced (on creating the user, or on `v`): the retry path ran. How
            # often they collide after that depends on scheduling, so only "at all" is checked.
            assert mongo_backend.stats.duplicate_keys + mongo_backend.stats.conflicts >= 1


async def test_two_mongo_stores_creating_one_user_at_once(mongo_backend: Backend) -> None:
    async with mongo_backend.opened() as pod_a, mongo_backend.opened() as pod_b:
        first, second = await asyncio.gather(
            apply_one(pod_a, cmd("new", 2, key="a")),
            apply_one(pod_b, cmd("new", 3, key="b")),
        )
        assert sorted([applied(first).new_score, applied(second).new_score]) == [2, 5]
        assert sorted([applied(first).record.v, applied(second).record.v]) == [1, 2]
        assert await pod_a.get_score("new") == BoardRow("new", "New", 5, T0, 2)
        if mongo_backend.kind == "mongomock":
            assert mongo_backend.stats.duplicate_keys == 1


# --- SQLite only -----------------------------------------------------------------------


async def test_sqlite_file_survives_close_and_reopen(tmp_path: Path) -> None:
    backend = Backend("sqlite-file", tmp_path)
    policy = IncrementPolicy(rate_limit_per_minute=2, idempotency_keys=64)
    async with backend.opened(policy) as store:
        applied(await apply_one(store, cmd("alice", 5, key="k1")))
        applied(await apply_one(store, cmd("alice", 2, now_ms=T0 + 1, key="k2")))
        applied(await apply_one(store, cmd("bob", 9, now_ms=T0 + 2)))
    async with backend.opened(policy) as store:
        assert await store.top(10) == [
            BoardRow("bob", "Bob", 9, T0 + 2, 1),
            BoardRow("alice", "Alice", 7, T0 + 1, 2),
        ]
        # The idempotency keys and the rate-limit log came back too.
        assert await apply_one(store, cmd("alice", 1, now_ms=T0 + 5, key="k1")) == Replayed(5)
        assert await apply_one(store, cmd("alice", 1, now_ms=T0 + 5)) == RateLimited(60)
        applied(await apply_one(store, cmd("alice", 1, now_ms=T0 + 60_000)))
    async with backend.opened(policy) as store:
        assert await store.get_score("alice") == BoardRow("alice", "Alice", 8, T0 + 60_000, 3)


async def test_sqlite_a_call_made_just_before_close_is_still_committed(tmp_path: Path) -> None:
    backend = Backend("sqlite-file", tmp_path)
    store = backend.build()
    await store.open()
    # The call reaches the store's outbox; close() runs before the loop hands it over.
    late = asyncio.ensure_future(apply_one(store, cmd("alice", 4)))
    await asyncio.sleep(0)
    await store.close()
    assert applied(await asyncio.wait_for(late, scaled(5))).new_score == 4
    async with backend.opened() as reopened:
        assert await reopened.get_score("alice") == BoardRow("alice", "Alice", 4, T0, 1)


async def test_sqlite_open_on_a_bad_path_raises_store_error(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "missing-dir" / "scores.db"), UNLIMITED)
    with pytest.raises(StoreError):
        await store.open()
    await store.close()


async def test_sqlite_calls_after_a_failed_open_raise_instead_of_hanging(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "missing-dir" / "scores.db"), UNLIMITED)
    with pytest.raises(StoreError):
        await store.open()
    try:
        with pytest.raises(StoreError):
            await asyncio.wait_for(store.top(10), scaled(1))
        assert await asyncio.wait_for(store.ping(), scaled(1)) is False
    finally:
        await store.close()


async def test_sqlite_a_failing_job_does_not_undo_the_rest_of_its_batch(
    sqlite_backend: Backend,
) -> None:
    """White-box: holds the writer thread (``_call``) so the next jobs form one batch."""
    async with sqlite_backend.opened() as opened:
        store = opened
        assert isinstance(store, SqliteStore)
        applied(await apply_one(store, cmd("alice", 10)))

        entered, release = threading.Event(), threading.Event()

        def hold(_conn: sqlite3.Connection) -> None:
            entered.set()
            release.wait(scaled(10))

        def write_then_fail(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE users_scores SET score = 999 WHERE user_id = 'alice'")
            raise RuntimeError("a job failing after it wrote")

        too_big = 2**63  # the new score cannot be stored as a SQLite INTEGER: the job fails
        held = asyncio.ensure_future(store._call(hold))
        batch: list[asyncio.Future[Any]] = []
        try:
            assert await asyncio.to_thread(entered.wait, scaled(5))
            batch = [
                asyncio.ensure_future(apply_one(store, cmd("alice", 1, now_ms=T0 + 1))),
                asyncio.ensure_future(apply_one(store, cmd("alice", too_big, now_ms=T0 + 2))),
                asyncio.ensure_future(store._call(write_then_fail)),
                asyncio.ensure_future(apply_one(store, cmd("alice", 2, now_ms=T0 + 3))),
                asyncio.ensure_future(apply_one(store, cmd("bob", too_big, now_ms=T0 + 4))),
                asyncio.ensure_future(apply_one(store, cmd("carol", 3, now_ms=T0 + 5))),
            ]
            for _ in range(10):
                await asyncio.sleep(0)
            assert store._outbox == [] and not any(f.done() for f in batch)  # behind the held job
        finally:
            release.set()
            await held
            results = await asyncio.gather(*batch, return_exceptions=True)

        assert applied(results[0]).new_score == 11
        assert isinstance(results[1], StoreError)
        assert isinstance(results[2], StoreError)
        assert applied(results[3]).new_score == 13  # the failed jobs' writes were undone
        assert isinstance(results[4], StoreError)
        assert applied(results[5]).new_score == 3
        assert await store.get_score("alice") == BoardRow("alice", "Alice", 13, T0 + 3, 3)
        assert await store.get_score("bob") is None
        assert await store.get_score("carol") == BoardRow("carol", "Carol", 3, T0 + 5, 1)


# --- admin actions ----------------------------------------------------------------------


async def test_rank_counts_the_users_ahead(backend: Backend) -> None:
    async with backend.opened() as store:
        for user, amount, at in [("a", 5, 10), ("b", 7, 20), ("c", 5, 5), ("d", 1, 1)]:
            applied(await apply_one(store, cmd(user, amount, now_ms=T0 + at)))
        assert [await store.rank(u) for u in ("b", "c", "a", "d")] == [1, 2, 3, 4]
        assert await store.rank("nobody") is None


async def test_admin_changes_are_atomic_writes_and_removal_takes_a_user_off(
    backend: Backend,
) -> None:
    async with backend.opened() as store:
        for user, amount in [("a", 9), ("b", 5), ("c", 3)]:
            applied(await apply_one(store, cmd(user, amount)))
        assert await store.apply_admin("ghost", AdminAction.RESET.change(T0)) is None
        reset = await store.apply_admin("a", AdminAction.RESET.change(T0 + 1))
        assert reset is not None and (reset.score, reset.v, reset.banned) == (0, 2, False)
        removed = await store.apply_admin("b", AdminAction.REMOVE.change(T0 + 2))
        assert removed is not None and (removed.score, removed.v, removed.banned) == (0, 2, True)
        assert [r.user_id for r in await store.top(10)] == ["c", "a"]
        assert await store.rank("b") is None
        assert await store.get_user("b") == StoredUser(BoardRow("b", "B", 0, T0 + 2, 2), True)
        assert await store.get_user("a") == StoredUser(BoardRow("a", "A", 0, T0 + 1, 2), False)
        assert await store.get_user("ghost") is None
        assert isinstance(await apply_one(store, cmd("b", 1, now_ms=T0 + 3)), Banned)
        lifted = await store.apply_admin("b", AdminAction.UNBAN.change(T0 + 4))
        assert lifted is not None and (lifted.banned, lifted.v) == (False, 3)
        assert applied(await apply_one(store, cmd("b", 4, now_ms=T0 + 5))).new_score == 4
        assert [r.user_id for r in await store.top(10)] == ["b", "c", "a"]


async def test_ranked_rows_pages_every_ranked_user_by_user_id(backend: Backend) -> None:
    """The rank index's load: keyset pages in user id order, banned users left out, each
    row as the board has it (score, reached, version)."""
    async with backend.opened() as store:
        assert await store.ranked_rows(None, 10) == []
        users = [f"u{i:02d}" for i in range(7)]
        for i, user in enumerate(reversed(users)):  # inserted out of id order on purpose
            applied(await apply_one(store, cmd(user, 10 + i, now_ms=T0 + i)))
        applied(await apply_one(store, cmd("u03", 5, now_ms=T0 + 50)))  # v2
        assert await store.apply_admin("u05", AdminAction.REMOVE.change(T0 + 60)) is not None

        pages: list[list[BoardRow]] = []
        after: str | None = None
        while True:
            page = await store.ranked_rows(after, 2)
            pages.append(page)
            if len(page) < 2:
                break
            after = page[-1].user_id
        assert [[r.user_id for r in page] for page in pages] == [
            ["u00", "u01"],
            ["u02", "u03"],
            ["u04", "u06"],
            [],
        ]
        rows = {r.user_id: r for page in pages for r in page}
        assert rows["u03"] == BoardRow("u03", "U03", 13 + 5, T0 + 50, 2)
        assert rows["u06"] == BoardRow("u06", "U06", 10, T0, 1)
        # The same rows as the board's own order, all of them.
        assert sorted(rows.values(), key=lambda r: (-r.score, r.reached_ms, r.user_id)) == (
            await store.top(100)
        )
        assert await store.ranked_rows("u04", 100) == [rows["u06"]]
        assert await store.ranked_rows("u06", 100) == []
        assert await store.ranked_rows(None, 0) == []


# --- apply_increments: a batch in one write, and the caller's last-seen record -----------------
#
# A user actor hands its queued increments over together, with the record it last saw
# (``known``). The store may decide on ``known`` and write with a compare-and-set on its
# version; whatever ``known`` is (current, stale, refused, made up), the answers and the
# stored state must be those of deciding on the real stored record.


def _anonymous(decision: Decision) -> Decision:
    """A decision with the user's identity blanked, to compare two users' histories."""
    if isinstance(decision, Applied):
        return Applied(replace(decision.record, user_id="", username=""))
    return decision


def _batch_for(user: str) -> list[IncrementCommand]:
    return [
        cmd(user, 5, now_ms=T0, key="a"),
        cmd(user, 2, now_ms=T0 + 1),
        cmd(user, 9, now_ms=T0 + 2, key="a"),  # a key repeated inside the batch
        cmd(user, 3, now_ms=T0 + 3, key="b"),
        cmd(user, 1, now_ms=T0 + 4),  # over the limit of 3
        cmd(user, 1, now_ms=T0 + 5, key="b"),  # a replay is answered even then
    ]


async def test_apply_increments_decides_like_one_by_one_in_one_write(backend: Backend) -> None:
    policy = IncrementPolicy(rate_limit_per_minute=3, idempotency_keys=64)
    async with backend.opened(policy) as store:
        together = await store.apply_increments(_batch_for("batched"))
        if backend.kind == "mongomock":  # one read, one write for the six commands
            assert backend.stats.calls == {"find_one": 1, "insert_one": 1}
        one_by_one = [await apply_one(store, c) for c in _batch_for("single")]
        assert [_anonymous(d) for d in together] == [_anonymous(d) for d in one_by_one]
        assert [type(d) for d in together] == [
            Applied,
            Applied,
            Replayed,
            Applied,
            RateLimited,
            Replayed,
        ]
        assert [applied(together[i]).new_score for i in (0, 1, 3)] == [5, 7, 10]
        assert [applied(together[i]).record.v for i in (0, 1, 3)] == [1, 2, 3]
        assert together[2] == Replayed(new_score=5)
        assert together[5] == Replayed(new_score=10)
        assert await store.get_score("batched") == BoardRow("batched", "Batched", 10, T0 + 3, 3)
        # The one write stored the keys and the rate-limit log of every applied command.
        assert await apply_one(store, cmd("batched", 7, now_ms=T0 + 9, key="a")) == Replayed(5)
        assert await apply_one(store, cmd("batched", 7, now_ms=T0 + 9)) == RateLimited(60)
        later = applied(await apply_one(store, cmd("batched", 1, now_ms=T0 + 60_000)))
        assert (later.new_score, later.record.v) == (11, 4)


async def test_apply_increments_that_apply_nothing_write_nothing(backend: Backend) -> None:
    async with backend.opened() as store:
        applied(await apply_one(store, cmd("alice", 4, key="k")))
        before = await store.get_score("alice")
        decisions = await store.apply_increments(
            [cmd("alice", 1, now_ms=T0 + 1, key="k"), cmd("alice", 2, now_ms=T0 + 2, key="k")]
        )
        assert decisions == [Replayed(4), Replayed(4)]
        assert await store.get_score("alice") == before


async def test_apply_increments_with_the_current_known_record(backend: Backend) -> None:
    async with backend.opened() as store:
        known = applied(await apply_one(store, cmd("alice", 3, key="a"))).record
        decisions = await store.apply_increments(
            [cmd("alice", 2, now_ms=T0 + 1), cmd("alice", 1, now_ms=T0 + 2, key="a")], known
        )
        assert applied(decisions[0]).record == replace(
            known, score=5, v=2, reached_ms=T0 + 1, recent_keys=(RememberedKey("a", 3, 1),)
        )
        assert decisions[1] == Replayed(3)
        assert await store.get_score("alice") == BoardRow("alice", "Alice", 5, T0 + 1, 2)
        # Chained, as a user actor does: each answer's record is the next call's known.
        known = applied(decisions[0]).record
        nxt = await store.apply_increments([cmd("alice", 10, now_ms=T0 + 3)], known)
        assert (applied(nxt[0]).new_score, applied(nxt[0]).record.v) == (15, 3)
        assert await store.get_score("alice") == BoardRow("alice", "Alice", 15, T0 + 3, 3)


async def test_a_stale_known_record_loses_no_update(backend: Backend) -> None:
    async with backend.opened() as store:
        stale = applied(await apply_one(store, cmd("alice", 3))).record
        # Another writer (another pod, or an admin) wrote after the caller's last look.
        applied(await apply_one(store, cmd("alice", 4, now_ms=T0 + 1, key="other")))
        decisions = await store.apply_increments(
            [cmd("alice", 2, now_ms=T0 + 2), cmd("alice", 1, now_ms=T0 + 3, key="other")], stale
        )
        assert (applied(decisions[0]).new_score, applied(decisions[0]).record.v) == (9, 3)
        assert decisions[1] == Replayed(7)  # the key only the fresh record holds
        assert await store.get_score("alice") == BoardRow("alice", "Alice", 9, T0 + 2, 3)


async def test_a_stale_known_record_does_not_undo_an_admin_reset(backend: Backend) -> None:
    async with backend.opened() as store:
        stale = applied(await apply_one(store, cmd("alice", 50))).record
        reset = await store.apply_admin("alice", AdminAction.RESET.change(T0 + 1))
        assert reset is not None and (reset.score, reset.v) == (0, 2)
        decisions = await store.apply_increments([cmd("alice", 2, now_ms=T0 + 2)], stale)
        assert (applied(decisions[0]).new_score, applied(decisions[0]).record.v) == (2, 3)
        assert await store.get_score("alice") == BoardRow("alice", "Alice", 2, T0 + 2, 3)


async def test_a_known_record_stale_through_another_store_object(backend: Backend) -> None:
    """Two pods (two store objects) on one database: each one's known goes stale when the
    other writes, and neither loses the other's update."""
    if backend.kind == "sqlite-memory":
        pytest.skip(":memory: SQLite cannot be shared by two stores")
    async with backend.opened() as pod_a, backend.opened() as pod_b:
        known_a = applied(await apply_one(pod_a, cmd("alice", 1))).record
        known_b = applied((await pod_b.apply_increments([cmd("alice", 10)]))[0]).record
        assert (known_b.score, known_b.v) == (11, 2)
        first = applied((await pod_a.apply_increments([cmd("alice", 100)], known_a))[0])
        assert (first.new_score, first.record.v) == (111, 3)
        second = applied((await pod_b.apply_increments([cmd("alice", 1000)], known_b))[0])
        assert (second.new_score, second.record.v) == (1111, 4)
        assert await pod_a.get_score("alice") == BoardRow("alice", "Alice", 1111, T0, 4)


async def test_a_key_replayed_only_in_the_stale_known_is_applied(backend: Backend) -> None:
    """On the stale known the command is a replay (nothing to write): that proves nothing,
    so the store reads the fresh record, where the key has been forgotten."""
    policy = IncrementPolicy(rate_limit_per_minute=0, idempotency_keys=1)
    async with backend.opened(policy) as store:
        stale = applied(await apply_one(store, cmd("alice", 3, key="k"))).record
        assert stale.recent_keys == (RememberedKey("k", 3, 1),)
        applied(await apply_one(store, cmd("alice", 4, now_ms=T0 + 1, key="newer")))
        decisions = await store.apply_increments([cmd("alice", 2, now_ms=T0 + 2, key="k")], stale)
        assert (applied(decisions[0]).new_score, applied(decisions[0]).record.v) == (9, 3)
        assert await store.get_score("alice") == BoardRow("alice", "Alice", 9, T0 + 2, 3)


async def test_refused_on_the_known_record_but_not_on_the_stored_one(backend: Backend) -> None:
    policy = IncrementPolicy(rate_limit_per_minute=2, idempotency_keys=64)
    async with backend.opened(policy) as store:
        # Banned in the caller's view, unbanned since: the update is applied.
        applied(await apply_one(store, cmd("alice", 5)))
        banned = await store.apply_admin("alice", AdminAction.REMOVE.change(T0 + 1))
        assert banned is not None and banned.banned
        await store.apply_admin("alice", AdminAction.UNBAN.change(T0 + 2))
        decisions = await store.apply_increments([cmd("alice", 2, now_ms=T0 + 3)], banned)
        assert (applied(decisions[0]).new_score, applied(decisions[0]).record.v) == (2, 4)

        # Rate limited in the (made-up, stale) caller's view, not in the stored record.
        fresh = applied(await apply_one(store, cmd("bob", 1, now_ms=T0))).record
        limited = replace(fresh, accepted_ms=(T0 + 1, T0 + 2))
        assert isinstance((await store.apply_increments([cmd("bob", 1)], limited))[0], Applied)
        # ...and the other way round: the stored record is limited, the known is not.
        refused = await store.apply_increments([cmd("bob", 1, now_ms=T0 + 5)], fresh)
        assert refused == [RateLimited(60)]
        assert await store.get_score("bob") == BoardRow("bob", "Bob", 2, T0, 2)


async def test_a_known_record_of_a_user_the_store_does_not_have(backend: Backend) -> None:
    """A made-up (or deleted) known: no write may silently land on a missing row; the
    answer is that of a new user."""
    async with backend.opened() as store:
        ghost = UserRecord(
            "ghost", "Ghost", score=50, v=7, reached_ms=T0, recent_keys=(RememberedKey("k", 50, 7),)
        )
        decisions = await store.apply_increments([cmd("ghost", 2, now_ms=T0 + 1, key="k")], ghost)
        keys = (RememberedKey("k", 2, 1),)
        assert applied(decisions[0]).record == UserRecord(
            "ghost", "Ghost", score=2, v=1, reached_ms=T0 + 1, recent_keys=keys
        )
        assert await store.get_score("ghost") == BoardRow("ghost", "Ghost", 2, T0 + 1, 1)
        # A made-up v of 0 neither.
        fresh = replace(ghost, user_id="nobody", v=0)
        decisions = await store.apply_increments([cmd("nobody", 3)], fresh)
        assert (applied(decisions[0]).new_score, applied(decisions[0]).record.v) == (3, 1)
        assert await store.get_score("nobody") == BoardRow("nobody", "Nobody", 3, T0, 1)


async def test_concurrent_batches_with_known_records_lose_no_update(backend: Backend) -> None:
    """Several callers, each chaining its own known record, on one hot user: every known
    but the last writer's is stale; scores and versions are still exactly 1..n."""
    async with backend.opened() as store:

        async def caller(name: str) -> list[int]:
            known: UserRecord | None = None
            scores = []
            for i in range(10):
                command = cmd("hot", 1, now_ms=T0 + i, key=f"{name}{i}")
                while True:
                    try:
                        decision = (await store.apply_increments([command], known))[0]
                        break
                    except StoreError:  # contention: nothing applied, retry
                        known = None
                known = applied(decision).record
                scores.append(known.score)
            return scores

        results = await asyncio.gather(*(caller(n) for n in "abcd"))
        assert sorted(s for scores in results for s in scores) == list(range(1, 41))
        final = await store.get_score("hot")
        assert final is not None and (final.score, final.v) == (40, 40)


async def test_mongo_known_fast_path_costs_one_round_trip(tmp_path: Path) -> None:
    backend = Backend("mongomock", tmp_path)
    async with backend.opened() as store:
        calls = backend.stats.calls
        known = applied(await apply_one(store, cmd("alice", 1, key="k"))).record
        assert calls == {"find_one": 1, "insert_one": 1}

        calls.clear()  # a current known: the compare-and-set update alone, no read
        known = applied((await store.apply_increments([cmd("alice", 1)], known))[0]).record
        assert known.score == 2
        assert calls == {"update_one": 1}
        assert backend.stats.conflicts == 0

        calls.clear()  # a stale known: the update matches nothing, then a read and the real one
        stale = replace(known, v=1, score=1)
        decision = (await store.apply_increments([cmd("alice", 1)], stale))[0]
        assert applied(decision).new_score == 3
        assert calls == {"update_one": 2, "find_one": 1}
        assert backend.stats.conflicts == 1

        calls.clear()  # nothing to write on the known (a replay): one read to confirm it
        known = applied(decision).record
        assert await store.apply_increments([cmd("alice", 5, key="k")], known) == [Replayed(1)]
        assert calls == {"find_one": 1}


async def test_sqlite_known_fast_path_reads_nothing(sqlite_backend: Backend) -> None:
    """White-box: counts the statements the writer runs (``sqlite3`` trace callback)."""
    async with sqlite_backend.opened() as opened:
        store = opened
        assert isinstance(store, SqliteStore)
        statements: list[str] = []
        await store._call(lambda conn: conn.set_trace_callback(statements.append))

        def selects() -> list[str]:
            found = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
            statements.clear()
            return found

        batch = await store.apply_increments([cmd("bob", 1), cmd("bob", 2), cmd("bob", 3)])
        assert applied(batch[-1]).new_score == 6
        writes = [s for s in statements if s.lstrip().upper().startswith(("INSERT", "UPDATE"))]
        assert len(writes) == 1  # three commands, one write
        assert len(selects()) == 1

        known = applied(await apply_one(store, cmd("alice", 1))).record
        assert len(selects()) == 1  # no known: read, then write
        known = applied((await store.apply_increments([cmd("alice", 2)], known))[0]).record
        assert selects() == []  # the known was current: the compare-and-set update alone
        assert known.score == 3
        stale = replace(known, v=1, score=1)
        decision = (await store.apply_increments([cmd("alice", 4)], stale))[0]
        assert applied(decision).new_score == 7
        assert len(selects()) == 1  # stale: the update matched nothing, so it read
        await store._call(lambda conn: conn.set_trace_callback(None))


# --- a real replica set only: the oplog, deadlines, the change stream -----------------------


def proven_keyed(i: int) -> IncrementCommand:
    """An increment that grows all three logs: a key, a spent action, an accepted time."""
    return replace(
        cmd("alice", 1, now_ms=T0 + i, key=f"{uuid.UUID(int=i)}"),
        action=SpentAction(f"{uuid.UUID(int=10**6 + i)}", T0 + 300_000),
        fingerprint="0123456789abcdef",
    )


async def test_mongodb_oplog_entries_stay_small_however_full_the_logs(
    real_mongodb: Backend,
) -> None:
    """Each write's oplog entry holds the changed slots, not the user's whole logs: after
    64 keys, 300 accepted times and 300 spent actions, the last entries are as small as
    the first (the whole document is over 20 KB)."""
    policy = IncrementPolicy(rate_limit_per_minute=1000, idempotency_keys=64, used_actions=1024)
    async with real_mongodb.opened(policy) as store:
        known = None
        for i in range(300):
            decision = (await store.apply_increments([proven_keyed(i)], known))[0]
            known = applied(decision).record
    assert MONGODB_URI
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(MONGODB_URI)
    with client:
        namespace = f"{real_mongodb.db_name}.{COLLECTION}"
        entries = list(
            client["local"]["oplog.rs"]
            .find({"ns": namespace, "op": "u", "o2._id": "alice"})
            .sort("$natural", -1)
            .limit(100)
        )
        document = client[real_mongodb.db_name][COLLECTION].find_one({"_id": "alice"})
    assert len(entries) == 100 and document is not None
    assert max(len(bson.encode(entry["o"])) for entry in entries) < 1_000
    # The whole entry, with its namespace, times and session fields: what docs/deploy.md
    # counts per write to size the oplog's resume window.
    assert max(len(bson.encode(entry)) for entry in entries) < 1_500
    assert len(bson.encode(document)) > 20_000


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        # The update reaches the primary and waits past the deadline.
        ({"blockConnection": True, "blockTimeMS": 8_000}, StoreTimeout),
        # Applied on the primary, the majority's acknowledgement timed out.
        (
            {"writeConcernError": {"code": 64, "errmsg": "waiting for replication timed out"}},
            StoreTimeout,
        ),
        # Refused by a primary that stepped down, on every retry until the deadline: nothing
        # applied, but the driver's last error cannot say no earlier attempt was sent, so
        # the caller hears "unknown" unless the driver labelled it NoWritesPerformed.
        ({"errorCode": 10107}, (StoreTimeout, StoreUnavailable)),
    ],
    ids=["blocked", "majority-timeout", "not-primary"],
)
async def test_mongodb_a_failed_write_says_whether_it_may_have_applied(
    real_mongodb: Backend,
    failure: dict[str, Any],
    expected: type[StoreError] | tuple[type[StoreError], ...],
) -> None:
    """With the server's failCommand fail point on every ``update`` (needs
    ``enableTestCommands``; skipped otherwise), until the deadline; a retry with the same
    key then learns the outcome, applied once at most."""
    assert MONGODB_URI
    async with real_mongodb.opened() as store:
        applied(await apply_one(store, cmd("alice", 1, key="first")))
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(MONGODB_URI)
        with client:
            try:
                client.admin.command(
                    "configureFailPoint",
                    "failCommand",
                    mode="alwaysOn",
                    data={"failCommands": ["update"], **failure},
                )
            except pymongo.errors.OperationFailure as exc:
                pytest.skip(f"the server has no failCommand fail point: {exc}")
            try:
                with pytest.raises(StoreError) as raised:
                    await apply_one(store, cmd("alice", 5, now_ms=T0 + 1, key="second"))
            finally:
                client.admin.command("configureFailPoint", "failCommand", mode="off")
        assert isinstance(raised.value, expected)
        retry = await apply_one(store, cmd("alice", 5, now_ms=T0 + 2, key="second"))
        assert isinstance(retry, Applied | Replayed) and retry.new_score == 6


async def test_mongodb_an_unusable_resume_token_means_reload_not_retry(
    real_mongodb: Backend,
) -> None:
    """A resume token the server cannot use (error 260, 280, ...): resuming from it again
    would fail forever, so the feed says to start from now and reload."""
    async with real_mongodb.opened() as store:
        assert isinstance(store, MongoStore)
        feed = MongoChangeFeed(store._users)
        with pytest.raises(FeedHistoryLost) as raised:
            stream = await feed.watch({"_data": "not a resume token"})
            try:
                await stream.next_batch()
            finally:
                await stream.close()
        assert raised.value.reason in {"history_lost", "not_resumable"}


async def test_two_stores_on_one_database_apply_each_update_exactly_once(
    backend: Backend,
) -> None:
    """Two pods (two store objects) on one database write one user in turn and at once:
    each answer counts every update the other applied, and a key retried on the other
    store is answered, never applied twice."""
    if backend.kind == "sqlite-memory":
        pytest.skip(":memory: SQLite cannot be shared by two stores")
    async with backend.opened() as pod_a, backend.opened() as pod_b:

        async def new_score(store: ScoreStore, command: IncrementCommand) -> int:
            for _ in range(500):
                try:
                    decision = (await store.apply_increments([command]))[0]
                except StoreError:  # contention: nothing applied, retry with the same key
                    continue
                assert isinstance(decision, Applied | Replayed), decision
                return decision.new_score
            raise AssertionError("the store never took the increment")

        assert await new_score(pod_a, cmd("alice", 1)) == 1
        assert await new_score(pod_b, cmd("alice", 10)) == 11
        assert await new_score(pod_a, cmd("alice", 100)) == 111  # counts pod b's write
        reset = await pod_b.apply_admin("alice", AdminAction.RESET.change(T0 + 1))
        assert reset is not None and (reset.score, reset.v) == (0, 4)
        assert await new_score(pod_a, cmd("alice", 2, now_ms=T0 + 2)) == 2  # the reset holds

        # (the store taking the key first, the other store, the command)
        sent = [
            ((pod_a, pod_b)[i % 2], (pod_b, pod_a)[i % 2], cmd("alice", 1, key=f"k{i}"))
            for i in range(40)
        ]
        first = await asyncio.gather(*(new_score(one, c) for one, _, c in sent))
        assert sorted(first) == list(range(3, 43))
        again = await asyncio.gather(*(new_score(other, c) for _, other, c in sent))
        assert again == first  # each key's own answer, from the other store
        final = await pod_b.get_score("alice")
        assert final is not None and (final.score, final.v) == (42, 45)
