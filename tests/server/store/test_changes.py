"""The in-process change feed as data and behaviour, and the stores that publish to it.

:class:`LocalChangeFeed` stands in for MongoDB's change stream wherever there is no
replica set (SQLite, mongomock), so it must behave like one: a stream starts at "now" or
just after a resume token, delivers every later write once and in order, and says
"history lost" when it cannot. The stores must publish exactly the writes that committed:
a change that never reached the disk must never reach another pod's board.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mongomock_motor import AsyncMongoMockClient

from server.domain.admin import AdminAction
from server.domain.increments import IncrementPolicy
from server.domain.records import (
    Applied,
    BoardRow,
    Decision,
    IncrementCommand,
    RateLimited,
    RememberedKey,
    Replayed,
    UserRecord,
)
from server.store.changes import (
    Change,
    ChangeEvent,
    ChangeStream,
    FeedHistoryLost,
    FeedInterrupted,
    LocalChangeFeed,
    NoOtherWriters,
    Reload,
)
from server.store.mongo_changes import MongoChangeFeed
from server.store.mongodb import MongoStore
from server.store.port import ScoreStore, StoreError
from server.store.sqlite import SqliteStore
from tests.conftest import scaled
from tests.server.store.support import apply_one
from tests.server.store.test_contract import T0, UNLIMITED

pytestmark = pytest.mark.gen_test(timeout=scaled(10))


def change(user: str, score: int, v: int = 1, *, banned: bool = False) -> Change:
    return Change(BoardRow(user, user.title(), score, T0 + v, v), banned)


async def read_available(stream: ChangeStream, feed: LocalChangeFeed) -> list[ChangeEvent]:
    """What ``stream`` has to deliver right now ([] without waiting when it is caught up)."""
    if stream.resume_token == feed.position:
        return []
    return await asyncio.wait_for(stream.next_batch(), scaled(1))


async def settle() -> None:
    """Let every ready task run (a few loop turns)."""
    for _ in range(5):
        await asyncio.sleep(0)


# --- Change -------------------------------------------------------------------------------


def test_change_of_maps_a_user_record_to_its_board_row_and_ban_flag() -> None:
    record = UserRecord(
        user_id="u1",
        username="Ann",
        score=42,
        v=7,
        reached_ms=T0 + 3,
        recent_keys=(RememberedKey("k", 42, 7),),
        accepted_ms=(T0,),
        used_actions=(("jti", T0 + 60_000),),
        banned=True,
    )
    assert Change.of(record, 123) == Change(BoardRow("u1", "Ann", 42, T0 + 3, 7), True, 123)
    assert Change.of(record).written_ms is None
    assert Change.of(UserRecord("u2", "Bo", 1, 1, T0)).banned is False


# --- LocalChangeFeed ------------------------------------------------------------------------


def test_history_must_hold_at_least_one_event() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        LocalChangeFeed(history=0)
    with pytest.raises(ValueError):
        LocalChangeFeed(history=-5)
    LocalChangeFeed(history=1)  # the smallest history is fine


async def test_position_counts_every_event_ever_published() -> None:
    feed = LocalChangeFeed(history=2)
    assert feed.position == 0
    feed.publish([change("a", 1), change("b", 1)])
    feed.publish([])
    more: list[ChangeEvent] = [change("c", 1), Reload()]
    feed.publish(iter(more))  # any iterable, consumed once
    assert feed.position == 4


async def test_watch_from_none_starts_at_the_end_and_misses_earlier_events() -> None:
    feed = LocalChangeFeed()
    feed.publish([change("early", 1), change("early", 2, v=2)])
    stream = await feed.watch(None)
    tokens = [stream.resume_token]
    feed.publish([change("late", 3)])
    assert await stream.next_batch() == [change("late", 3)]
    tokens.append(stream.resume_token)
    assert tokens == [2, 3]


async def test_a_batch_is_everything_published_since_the_last_one_in_order() -> None:
    feed = LocalChangeFeed()
    stream = await feed.watch(None)
    events: list[ChangeEvent] = [change("a", 1), Reload(), change("b", 2), change("a", 3, v=2)]
    feed.publish(events[:2])
    feed.publish(events[2:])
    assert await stream.next_batch() == events
    feed.publish([change("c", 9)])
    assert await stream.next_batch() == [change("c", 9)]
    assert stream.resume_token == 5


async def test_resuming_from_a_token_continues_exactly_after_it() -> None:
    feed = LocalChangeFeed()
    first = await feed.watch(None)
    feed.publish([change("a", 1), change("b", 1)])
    assert await first.next_batch() == [change("a", 1), change("b", 1)]
    token = first.resume_token
    await first.close()
    feed.publish([change("c", 1)])
    feed.publish([change("d", 1)])
    resumed = await feed.watch(token)
    assert resumed.resume_token == token
    assert await resumed.next_batch() == [change("c", 1), change("d", 1)]  # no loss, no dup
    from_start = await feed.watch(0)
    assert len(await from_start.next_batch()) == 4


async def test_resuming_at_the_oldest_kept_boundary_works_and_one_older_is_lost() -> None:
    feed = LocalChangeFeed(history=3)
    feed.publish([change(f"u{i}", i) for i in range(1, 6)])  # positions 1..5; 3..5 kept
    stream = await feed.watch(2)  # just before the oldest kept event
    assert await stream.next_batch() == [change("u3", 3), change("u4", 4), change("u5", 5)]
    with pytest.raises(FeedHistoryLost):
        await feed.watch(1)  # event 2 is gone
    with pytest.raises(FeedHistoryLost):
        await feed.watch(0)
    caught_up = await feed.watch(5)
    feed.publish([change("u6", 6)])
    assert await caught_up.next_batch() == [change("u6", 6)]


@pytest.mark.parametrize("token", ["2", -1, 4, 1.0, b"\x01", (1,)])
async def test_an_unknown_resume_token_means_history_lost(token: object) -> None:
    feed = LocalChangeFeed()
    feed.publish([change("a", 1), change("b", 1), change("c", 1)])
    with pytest.raises(FeedHistoryLost) as raised:
        await feed.watch(token)
    assert raised.value.reason == "history_lost"


async def test_a_reader_more_than_history_behind_gets_history_lost() -> None:
    feed = LocalChangeFeed(history=2)
    slow = await feed.watch(None)
    just_in_time = await feed.watch(None)
    feed.publish([change("a", 1), change("b", 1)])
    assert await just_in_time.next_batch() == [change("a", 1), change("b", 1)]  # exactly 2
    feed.publish([change("c", 1)])  # slow is now 3 behind a history of 2
    with pytest.raises(FeedHistoryLost):
        await slow.next_batch()
    with pytest.raises(FeedHistoryLost):
        await slow.next_batch()  # stays lost: it must be reopened
    assert await just_in_time.next_batch() == [change("c", 1)]


async def test_a_reader_exactly_a_full_history_behind_gets_all_of_it_in_order() -> None:
    feed = LocalChangeFeed(history=5)
    feed.publish([change("old", 1)])  # before any reader: the deque is full and rolling
    exact, one_more = await feed.watch(None), await feed.watch(None)
    feed.publish([change(f"u{i}", i) for i in range(1, 4)])
    feed.publish([change("u4", 4), change("u5", 5)])  # both now 5 behind a history of 5
    assert await exact.next_batch() == [change(f"u{i}", i) for i in range(1, 6)]
    assert exact.resume_token == feed.position == 6
    feed.publish([change("u6", 6)])
    assert await exact.next_batch() == [change("u6", 6)]  # exactly the newest one
    with pytest.raises(FeedHistoryLost):
        await one_more.next_batch()  # 6 behind: u1 was dropped
    # The same bounds for a stream resumed from a token (u1 is at position 2).
    assert await (await feed.watch(2)).next_batch() == [change(f"u{i}", i) for i in range(2, 7)]
    with pytest.raises(FeedHistoryLost):
        await feed.watch(1)


async def test_a_waiting_reader_wakes_on_publish_and_not_on_an_empty_one() -> None:
    feed = LocalChangeFeed()
    stream = await feed.watch(None)
    waiting = asyncio.ensure_future(stream.next_batch())
    await settle()
    assert not waiting.done()
    feed.publish([])
    await settle()
    assert not waiting.done()
    feed.publish([change("a", 1)])
    assert await asyncio.wait_for(waiting, scaled(1)) == [change("a", 1)]


async def test_every_open_stream_gets_every_event() -> None:
    feed = LocalChangeFeed()
    streams = [await feed.watch(None) for _ in range(3)]
    waiting = [asyncio.ensure_future(s.next_batch()) for s in streams]
    await settle()
    feed.publish([change("a", 1)])
    results = await asyncio.wait_for(asyncio.gather(*waiting), scaled(1))
    assert results == [[change("a", 1)]] * 3


async def test_close_interrupts_the_stream_and_unregisters_it() -> None:
    feed = LocalChangeFeed()
    stream = await feed.watch(None)
    other = await feed.watch(None)
    waiting = asyncio.ensure_future(stream.next_batch())
    await settle()
    await stream.close()
    with pytest.raises(FeedInterrupted):
        await asyncio.wait_for(waiting, scaled(1))  # a waiting reader is woken to fail
    feed.publish([change("a", 1)])
    with pytest.raises(FeedInterrupted):
        await stream.next_batch()  # even with events to read
    await stream.close()  # idempotent
    assert feed._streams == {other}  # white-box: publish no longer wakes the closed stream
    assert await other.next_batch() == [change("a", 1)]


# --- SqliteStore publishing -------------------------------------------------------------


def cmd(
    user: str = "alice", amount: int = 1, *, now_ms: int = T0, key: str | None = None
) -> IncrementCommand:
    return IncrementCommand(user, user.title(), amount, now_ms, idempotency_key=key)


def applied(decision: Decision | BaseException) -> Applied:
    assert isinstance(decision, Applied), decision
    return decision


@pytest.fixture(params=["memory", "file"])
def sqlite_path(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return ":memory:" if request.param == "memory" else str(tmp_path / "scores.db")


@asynccontextmanager
async def opened(store: ScoreStore) -> AsyncIterator[ScoreStore]:
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_sqlite_without_a_feed_publishes_nothing_and_its_streams_stay_quiet() -> None:
    async with opened(SqliteStore(":memory:", UNLIMITED)) as store:
        assert isinstance(store.changes, NoOtherWriters)
        stream = await store.changes.watch(None)
        waiting = asyncio.ensure_future(stream.next_batch())
        applied(await apply_one(store, cmd("alice", 3)))
        await asyncio.sleep(0.01)
        assert not waiting.done()  # a lone store's own writes go to its board directly
        assert stream.resume_token is None
        await stream.close()
        with pytest.raises(FeedInterrupted):
            await waiting
    feed = LocalChangeFeed()
    assert SqliteStore(":memory:", UNLIMITED, feed=feed).changes is feed


async def test_sqlite_publishes_an_applied_increment_before_answering_it(
    sqlite_path: str,
) -> None:
    feed = LocalChangeFeed()
    async with opened(SqliteStore(sqlite_path, UNLIMITED, feed=feed)) as store:
        stream = await feed.watch(None)
        before_ms = time.time_ns() // 1_000_000
        first = applied(await apply_one(store, cmd("alice", 3)))
        # Published by the time the caller hears of it: nothing to wait for.
        assert feed.position == 1
        second = applied(await apply_one(store, cmd("alice", 4, now_ms=T0 + 1)))
        after_ms = time.time_ns() // 1_000_000
        events = await read_available(stream, feed)
    assert [(e.row, e.banned) for e in events if isinstance(e, Change)] == [
        (BoardRow("alice", "Alice", 3, T0, 1), False),
        (BoardRow("alice", "Alice", 7, T0 + 1, 2), False),
    ]
    assert [e.row for e in events if isinstance(e, Change)] == [
        Change.of(first.record).row,
        Change.of(second.record).row,
    ]
    for event in events:
        assert isinstance(event, Change) and event.written_ms is not None
        assert before_ms <= event.written_ms <= after_ms


async def test_sqlite_publishes_nothing_for_rate_limited_or_replayed_increments() -> None:
    feed = LocalChangeFeed()
    policy = IncrementPolicy(rate_limit_per_minute=1, idempotency_keys=8)
    async with opened(SqliteStore(":memory:", policy, feed=feed)) as store:
        applied(await apply_one(store, cmd("alice", 5, key="k1")))
        assert feed.position == 1
        assert await apply_one(store, cmd("alice", 5, now_ms=T0 + 1, key="k1")) == Replayed(5)
        limited = await apply_one(store, cmd("alice", 1, now_ms=T0 + 2, key="k2"))
        assert isinstance(limited, RateLimited)
        assert await store.top(10) == [BoardRow("alice", "Alice", 5, T0, 1)]
        assert await store.apply_admin("ghost", AdminAction.REMOVE.change(T0)) is None
        assert feed.position == 1  # only the one write


async def test_sqlite_publishes_admin_changes_with_the_ban_flag() -> None:
    feed = LocalChangeFeed()
    async with opened(SqliteStore(":memory:", UNLIMITED, feed=feed)) as store:
        applied(await apply_one(store, cmd("bob", 9)))
        stream = await feed.watch(None)
        await store.apply_admin("bob", AdminAction.REMOVE.change(T0 + 5))
        await store.apply_admin("bob", AdminAction.UNBAN.change(T0 + 6))
        events = await read_available(stream, feed)
    assert [(e.row, e.banned) for e in events if isinstance(e, Change)] == [
        (BoardRow("bob", "Bob", 0, T0 + 5, 2), True),
        (BoardRow("bob", "Bob", 0, T0 + 5, 3), False),
    ]


async def test_two_sqlite_stores_on_one_file_publish_into_one_feed(tmp_path: Path) -> None:
    feed = LocalChangeFeed()
    path = str(tmp_path / "shared.db")
    async with (
        opened(SqliteStore(path, UNLIMITED, feed=feed, synchronous="NORMAL")) as one,
        opened(SqliteStore(path, UNLIMITED, feed=feed, synchronous="NORMAL")) as two,
    ):
        stream = await feed.watch(None)
        applied(await apply_one(one, cmd("alice", 1)))
        applied(await apply_one(two, cmd("alice", 2, now_ms=T0 + 1)))
        applied(await apply_one(two, cmd("bob", 5, now_ms=T0 + 2)))
        await one.apply_admin("bob", AdminAction.RESET.change(T0 + 3))
        events = await read_available(stream, feed)
    written = [(e.row.user_id, e.row.score, e.row.v) for e in events if isinstance(e, Change)]
    assert written == [
        ("alice", 1, 1),
        ("alice", 3, 2),  # the second store wrote on top of the first one's row
        ("bob", 5, 1),
        ("bob", 0, 2),
    ]


class FailingAfterWriteStore(SqliteStore):
    """Fails a job after its write was made (and recorded for publishing), for one user:
    the savepoint must undo the write and the feed must never hear of it."""

    def _write(self, conn: sqlite3.Connection, record: UserRecord) -> None:
        super()._write(conn, record)
        if record.user_id == "mallory":
            raise RuntimeError("the disk filled up right after the write")


@asynccontextmanager
async def held_writer(store: SqliteStore) -> AsyncIterator[None]:
    """Hold the writer thread on a job (white-box: ``_call``), so everything queued
    meanwhile forms one batch; the writer is released on exit."""
    entered, release = threading.Event(), threading.Event()

    def hold(_conn: sqlite3.Connection) -> None:
        entered.set()
        release.wait(scaled(10))

    held = asyncio.ensure_future(store._call(hold))
    try:
        assert await asyncio.to_thread(entered.wait, scaled(5))
        yield
    finally:
        release.set()
        await held


async def test_sqlite_a_job_failing_in_a_batch_publishes_nothing_for_it_only() -> None:
    feed = LocalChangeFeed()
    store = FailingAfterWriteStore(":memory:", UNLIMITED, feed=feed)
    async with opened(store):
        stream = await feed.watch(None)
        async with held_writer(store):
            batch = [
                asyncio.ensure_future(apply_one(store, cmd("alice", 1))),
                asyncio.ensure_future(apply_one(store, cmd("mallory", 2))),
                asyncio.ensure_future(apply_one(store, cmd("bob", 3))),
            ]
            await settle()
            assert store._outbox == [] and not any(f.done() for f in batch)  # behind the held job
        results = await asyncio.gather(*batch, return_exceptions=True)
        assert applied(results[0]).new_score == 1
        assert isinstance(results[1], StoreError)
        assert applied(results[2]).new_score == 3
        events = await read_available(stream, feed)
        assert await store.get_score("mallory") is None
    assert [e.row.user_id for e in events if isinstance(e, Change)] == ["alice", "bob"]


async def test_sqlite_a_failed_first_write_of_mallory_is_never_published() -> None:
    # The same, for a job alone in its batch (the common case).
    feed = LocalChangeFeed()
    store = FailingAfterWriteStore(":memory:", UNLIMITED, feed=feed)
    async with opened(store):
        with pytest.raises(StoreError):
            await apply_one(store, cmd("mallory", 1))
        applied(await apply_one(store, cmd("alice", 1)))
        stream = await feed.watch(0)
        events = await read_available(stream, feed)
    assert [e.row.user_id for e in events if isinstance(e, Change)] == ["alice"]


async def test_sqlite_a_transaction_that_fails_as_a_whole_publishes_nothing() -> None:
    feed = LocalChangeFeed()
    store = SqliteStore(":memory:", UNLIMITED, feed=feed)

    def lose_the_transaction(conn: sqlite3.Connection) -> None:
        conn.execute("ROLLBACK")  # as a lost lock or I/O error would: the batch is gone

    async with opened(store):
        async with held_writer(store):
            batch = [
                asyncio.ensure_future(apply_one(store, cmd("alice", 1))),
                asyncio.ensure_future(store._call(lose_the_transaction)),
            ]
            await settle()
        results = await asyncio.gather(*batch, return_exceptions=True)
        assert all(isinstance(r, StoreError) for r in results), results
        assert await store.get_score("alice") is None
        assert feed.position == 0
        # The next batch publishes its own write only, nothing left over from the lost one.
        applied(await apply_one(store, cmd("bob", 2)))
        events = await read_available(await feed.watch(0), feed)
    assert [e.row.user_id for e in events if isinstance(e, Change)] == ["bob"]


# --- MongoStore publishing ------------------------------------------------------------------


class _YieldingCollection:
    """A mongomock-motor collection whose reads and writes yield first, as network I/O
    does, so two stores' compare-and-sets can interleave and conflict."""

    def __init__(self, target: Any) -> None:
        self._target = target
        self.conflicts = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name not in {"find_one", "insert_one", "update_one"}:
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0)
            result = await attr(*args, **kwargs)
            if name == "update_one" and result.matched_count == 0:
                self.conflicts += 1
            return result

        return call


class _YieldingDatabase:
    def __init__(self, target: Any) -> None:
        self._target = target
        self.collections: list[_YieldingCollection] = []

    def __getitem__(self, name: str) -> _YieldingCollection:
        collection = _YieldingCollection(self._target[name])
        self.collections.append(collection)
        return collection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


def mock_database() -> Any:
    return AsyncMongoMockClient()["scoreboard_test"]


async def test_mongo_store_without_a_feed_uses_the_change_stream() -> None:
    store = MongoStore(mock_database(), UNLIMITED)
    assert isinstance(store.changes, MongoChangeFeed)
    feed = LocalChangeFeed()
    assert MongoStore(mock_database(), UNLIMITED, feed=feed).changes is feed


async def test_mongo_store_publishes_its_writes_to_a_given_feed() -> None:
    feed = LocalChangeFeed()
    policy = IncrementPolicy(rate_limit_per_minute=2, idempotency_keys=8)
    async with opened(MongoStore(mock_database(), policy, feed=feed)) as store:
        stream = await feed.watch(None)
        before_ms = time.time_ns() // 1_000_000
        applied(await apply_one(store, cmd("alice", 3, key="k1")))  # insert
        applied(await apply_one(store, cmd("alice", 4, now_ms=T0 + 1)))  # update
        assert isinstance(await apply_one(store, cmd("alice", 3, key="k1")), Replayed)
        limited = await apply_one(store, cmd("alice", 1, now_ms=T0 + 2))
        assert isinstance(limited, RateLimited)
        await store.apply_admin("alice", AdminAction.REMOVE.change(T0 + 3))
        assert await store.apply_admin("ghost", AdminAction.RESET.change(T0 + 3)) is None
        after_ms = time.time_ns() // 1_000_000
        events = await read_available(stream, feed)
    assert [(e.row, e.banned) for e in events if isinstance(e, Change)] == [
        (BoardRow("alice", "Alice", 3, T0, 1), False),
        (BoardRow("alice", "Alice", 7, T0 + 1, 2), False),
        (BoardRow("alice", "Alice", 0, T0 + 3, 3), True),
    ]
    for event in events:
        assert isinstance(event, Change) and event.written_ms is not None
        assert before_ms <= event.written_ms <= after_ms


async def test_two_mongo_stores_racing_publish_each_write_once_and_no_lost_one() -> None:
    feed = LocalChangeFeed()
    database = _YieldingDatabase(mock_database())
    one = MongoStore(database, UNLIMITED, feed=feed)
    two = MongoStore(database, UNLIMITED, feed=feed)
    async with opened(one), opened(two):
        stream = await feed.watch(None)
        results = await asyncio.gather(
            *(
                apply_one(store, cmd("alice", 1, now_ms=T0 + i))
                for i in range(5)
                for store in (one, two)
            )
        )
        events = await read_available(stream, feed)
    assert all(isinstance(r, Applied) for r in results)
    assert sum(c.conflicts for c in database.collections) > 0  # the retry really ran
    # One event per stored write: versions 1..10, never one for a lost compare-and-set.
    versions = sorted(e.row.v for e in events if isinstance(e, Change))
    assert versions == list(range(1, 11))
    assert max((e.row.score, e.row.v) for e in events if isinstance(e, Change)) == (10, 10)
