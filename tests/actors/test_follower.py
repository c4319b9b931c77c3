"""FeedFollower: the change feed into a real LeaderboardActor (no server, no I/O).

The feed is either the in-process :class:`LocalChangeFeed` or a scripted fake whose
streams return given batches and raise given errors, so every recovery path runs in
milliseconds: resume from the token after an interruption, start anew and reload after a
lost history, retry in the background when the feed or the store is down.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest

import actors.follower as follower_module
from actors.follower import FeedFollower, backoff_delay
from actors.leaderboard import LeaderboardActor
from actors.ranks import LiveRanks
from server.domain.records import BoardRow
from server.store.changes import (
    RESTART_REASONS,
    Change,
    ChangeEvent,
    FeedHistoryLost,
    FeedInterrupted,
    FeedInvalidated,
    FeedNotResumable,
    LocalChangeFeed,
    Reload,
)
from server.store.port import StoreError
from server.support.metrics import Metrics
from tests.conftest import eventually, scaled

pytestmark = pytest.mark.gen_test(timeout=scaled(10))

TOP_N = 3
Rows = list[tuple[str, str, int]]


# --- fakes --------------------------------------------------------------------------------


class FakeStore:
    """The store as the leaderboard reads it: ``top(limit)`` over ``rows``.

    ``failures``: how many of the next ``top`` calls raise :class:`StoreError`. Every call
    is noted in ``log``, shared with the feed, to check what happened in which order.
    """

    def __init__(self, log: list[str], rows: list[BoardRow] | None = None) -> None:
        self.log = log
        self.rows = list(rows or [])
        self.top_calls = 0
        self.failures = 0
        self.ranked_calls = 0
        self.ranked_failures = 0  # how many of the next ranked_rows calls raise

    async def top(self, limit: int) -> list[BoardRow]:
        self.top_calls += 1
        self.log.append("top")
        if self.failures:
            self.failures -= 1
            raise StoreError("the store is unreachable")
        ranked = sorted(self.rows, key=lambda e: (-e.score, e.reached_ms, e.user_id))
        return ranked[:limit]

    async def ranked_rows(self, after_user_id: str | None, limit: int) -> list[BoardRow]:
        self.ranked_calls += 1
        if self.ranked_failures:
            self.ranked_failures -= 1
            raise StoreError("the store is unreachable")
        by_id = sorted(self.rows, key=lambda e: e.user_id)
        return [e for e in by_id if after_user_id is None or e.user_id > after_user_id][:limit]


# A scripted stream's step: a batch and the resume token after it, an error to raise, or
# an event to wait for before going on.
Step = tuple[list[ChangeEvent], object] | Exception | asyncio.Event


class ScriptedStream:
    """A change stream that plays its steps, then stays quiet (waits) until closed."""

    def __init__(self, token: object | None, *steps: Step) -> None:
        self._token = token
        self.steps: deque[Step] = deque(steps)
        self.closed = False

    @property
    def resume_token(self) -> object | None:
        return self._token

    async def next_batch(self) -> list[ChangeEvent]:
        while True:
            if self.closed:
                raise FeedInterrupted("closed")
            if not self.steps:
                await asyncio.Event().wait()  # quiet: until the follower is cancelled
            step = self.steps.popleft()
            if isinstance(step, asyncio.Event):
                await step.wait()
                continue
            if isinstance(step, Exception):
                raise step
            events, self._token = step
            return events

    async def close(self) -> None:
        self.closed = True


class ScriptedFeed:
    """Each ``watch`` returns the next scripted stream or raises the next scripted error;
    once the script is used up, a quiet stream at the token asked for."""

    def __init__(self, log: list[str], *opens: ScriptedStream | Exception) -> None:
        self.log = log
        self.opens: deque[ScriptedStream | Exception] = deque(opens)
        self.watched: list[object | None] = []
        self.streams: list[ScriptedStream] = []

    async def watch(self, resume_token: object | None) -> ScriptedStream:
        self.watched.append(resume_token)
        self.log.append(f"watch {resume_token}")
        item = self.opens.popleft() if self.opens else ScriptedStream(resume_token)
        if isinstance(item, Exception):
            raise item
        self.streams.append(item)
        return item


# --- helpers --------------------------------------------------------------------------------

_running: list[tuple[FeedFollower, LeaderboardActor]] = []


@pytest.fixture(autouse=True)
def _stop_everything(io_loop: Any) -> Iterator[None]:
    """Stop every follower and leaderboard a test started, even when it failed half-way."""
    yield
    running = list(_running)
    _running.clear()

    async def stop_all() -> None:
        for follower, board in running:
            await follower.stop()
            await board.kill()

    io_loop.run_sync(stop_all)


def entry(user: str, score: int, v: int = 1, username: str | None = None) -> BoardRow:
    return BoardRow(user, username or user.title(), score, 1_000 + v, v)


def change(
    user: str, score: int, v: int = 1, *, banned: bool = False, written_ms: int | None = None
) -> Change:
    return Change(entry(user, score, v), banned, written_ms)


def board_rows(board: LeaderboardActor) -> Rows:
    body = json.loads(board.view.top_scores.body)
    return [(r["user_id"], r["username"], r["score"]) for r in body["top_scores"]]


def rows_of(*entries: BoardRow) -> Rows:
    return [(e.user_id, e.username, e.score) for e in entries]


async def settle(seconds: float = 0.02) -> None:
    """Give the follower time to do anything more it would (wrongly) do."""
    await asyncio.sleep(seconds)


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"scoreboard_change_stream_{name}", labels) or 0.0


def restarts(metrics: Metrics, reason: str) -> float:
    return metric(metrics, "restarts_total", reason=reason)


def watching(metrics: Metrics) -> float:
    return metric(metrics, "watching")


def make(
    feed: Any, store: FakeStore, *, ranks: LiveRanks | None = None, **options: Any
) -> tuple[FeedFollower, LeaderboardActor, Metrics]:
    board = LeaderboardActor(store, TOP_N, 0.0)  # type: ignore[arg-type]
    metrics = Metrics()
    options = {"base_backoff_s": 0.001, "max_backoff_s": 0.004, **options}
    ranks = ranks if ranks is not None else LiveRanks(store)
    follower = FeedFollower(feed, board, metrics, ranks=ranks, **options)
    _running.append((follower, board))
    return follower, board, metrics


async def boot(follower: FeedFollower, board: LeaderboardActor) -> None:
    """What the service does: open the feed, load the board, start both."""
    await follower.open()
    await board.load()
    board.start()
    follower.start()


async def following(
    feed: Any, store: FakeStore, **options: Any
) -> tuple[FeedFollower, LeaderboardActor, Metrics]:
    follower, board, metrics = make(feed, store, **options)
    await boot(follower, board)
    return follower, board, metrics


# --- backoff_delay ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "draw", "expected"),
    [
        (0, 0.05, 5.0, 0.0, 0.0),  # a draw of 0: no wait at all
        (7, 0.05, 5.0, 0.0, 0.0),
        (0, 0.05, 5.0, 1.0, 0.05),
        (1, 0.05, 5.0, 1.0, 0.1),
        (2, 0.05, 5.0, 1.0, 0.2),
        (3, 0.05, 5.0, 0.5, 0.2),  # full jitter: the draw scales the whole window
        (6, 0.05, 5.0, 1.0, 3.2),
        (7, 0.05, 5.0, 1.0, 5.0),  # 6.4 capped
        (10_000, 0.05, 5.0, 0.25, 1.25),  # a huge attempt neither overflows nor passes the cap
    ],
)
def test_backoff_delay_is_full_jitter_doubling_up_to_a_cap(
    attempt: int, base: float, cap: float, draw: float, expected: float
) -> None:
    assert backoff_delay(attempt, base, cap, draw) == pytest.approx(expected)


# --- changes to the board -------------------------------------------------------------------


async def test_changes_from_the_feed_reach_the_leaderboard() -> None:
    feed = LocalChangeFeed()
    store = FakeStore([], [entry("old", 1)])
    _, board, metrics = await following(feed, store)
    assert watching(metrics) == 1
    feed.publish([change("alice", 5), change("bob", 7)])
    expected = rows_of(entry("bob", 7), entry("alice", 5), entry("old", 1))
    await eventually(lambda: board_rows(board) == expected, "both changes on the board")
    assert rows_of(*board.view.rows) == expected
    feed.publish([change("alice", 9, v=2)])
    expected = rows_of(entry("alice", 9), entry("bob", 7), entry("old", 1))
    await eventually(lambda: board_rows(board) == expected, "alice moved up")
    assert metric(metrics, "events_total") == 3
    assert store.top_calls == 1  # the load only


async def test_a_write_between_open_and_load_is_not_lost() -> None:
    feed = LocalChangeFeed()
    store = FakeStore([])
    follower, board, _ = make(feed, store)
    await follower.open()
    feed.publish([change("early", 4)])  # another pod's write the load below does not see
    await board.load()
    board.start()
    follower.start()
    await eventually(lambda: board_rows(board) == rows_of(entry("early", 4)), "early shown")


async def test_a_banned_change_takes_the_user_off_the_board() -> None:
    feed = LocalChangeFeed()
    store = FakeStore([], [entry("alice", 5), entry("bob", 7)])
    _, board, _ = await following(feed, store)
    feed.publish([change("bob", 0, v=2, banned=True)])
    await eventually(lambda: board_rows(board) == rows_of(entry("alice", 5)), "bob removed")
    feed.publish([change("bob", 8, v=1)])  # an older write arriving late: stays removed
    feed.publish([change("carol", 1)])
    expected = rows_of(entry("alice", 5), entry("carol", 1))
    await eventually(lambda: board_rows(board) == expected, "carol shown")


async def test_duplicate_and_stale_versions_are_ignored() -> None:
    feed = LocalChangeFeed()
    store = FakeStore([])
    _, board, _ = await following(feed, store)
    feed.publish([change("alice", 20, v=2)])
    await eventually(lambda: board.view.version == 1, "alice published")
    # The same version again (seen by this pod's own actor too) and an older one.
    feed.publish([Change(entry("alice", 99, v=2), False), change("alice", 10, v=1)])
    feed.publish([change("bob", 5)])  # a marker: once bob shows, the two above were handled
    expected = rows_of(entry("alice", 20, v=2), entry("bob", 5))
    await eventually(lambda: board_rows(board) == expected, "bob shown, alice unchanged")
    assert board.view.version == 2  # nothing published for the duplicates


# --- the rank index ---------------------------------------------------------------------------


async def boot_with_ranks(
    feed: Any, store: FakeStore
) -> tuple[FeedFollower, LeaderboardActor, Metrics, LiveRanks]:
    """What the service does: open the feed, load the rank index and the board, start."""
    ranks = LiveRanks(store)
    follower, board, metrics = make(feed, store, ranks=ranks)
    await follower.open()
    await ranks.load()
    await board.load()
    board.start()
    follower.start()
    return follower, board, metrics, ranks


def ranked(ranks: LiveRanks) -> list[str]:
    return [r.user_id for _, r in ranks.index.page(1, 100)]


async def test_changes_from_the_feed_reach_the_rank_index() -> None:
    feed = LocalChangeFeed()
    store = FakeStore([], [entry("old", 1)])
    *_, ranks = await boot_with_ranks(feed, store)
    assert ranked(ranks) == ["old"]
    feed.publish([change("alice", 5), change("bob", 7), change("carol", 3)])
    # Every player, not only the top 3 the board shows.
    await eventually(lambda: ranked(ranks), "all four ranked", until=lambda ids: len(ids) == 4)
    assert ranked(ranks) == ["bob", "alice", "carol", "old"]
    feed.publish([change("carol", 9, v=2)])
    await eventually(lambda: ranks.index.rank_of("carol"), "carol first", until=lambda r: r == 1)
    feed.publish([change("bob", 0, v=2, banned=True)])
    await eventually(lambda: "bob" not in ranks.index, "bob unranked")
    feed.publish([change("bob", 8, v=1), change("dan", 2)])  # an older write of bob, late
    await eventually(lambda: "dan" in ranks.index, "dan ranked")
    assert ranked(ranks) == ["carol", "alice", "dan", "old"]


async def test_a_lost_history_reloads_the_rank_index_from_the_store() -> None:
    log: list[str] = []
    gate = asyncio.Event()
    first = ScriptedStream("t0", ([change("alice", 5)], "t1"), gate, FeedHistoryLost("gone"))
    feed = ScriptedFeed(log, first)
    store = FakeStore(log)
    _, _, metrics, ranks = await boot_with_ranks(feed, store)
    await eventually(lambda: "alice" in ranks.index, "alice ranked from the feed")
    held = ranks.index
    # Writes the lost history held: only the store knows them now.
    store.rows = [entry("alice", 5), entry("dave", 50, v=4), entry("erin", 1, v=3)]
    gate.set()
    await eventually(lambda: ranks.index is not held, "a new index swapped in")
    assert ranked(ranks) == ["dave", "alice", "erin"]
    assert store.ranked_calls == 2  # the start's load and the reload
    assert restarts(metrics, "history_lost") == 1


async def test_a_failed_reload_of_the_rank_index_is_retried() -> None:
    log: list[str] = []
    gate = asyncio.Event()
    feed = ScriptedFeed(log, ScriptedStream("t0", gate, FeedHistoryLost("gone")))
    store = FakeStore(log, [entry("alice", 5)])
    _, _, metrics, ranks = await boot_with_ranks(feed, store)
    store.rows = [entry("alice", 5), entry("bob", 6)]
    store.ranked_failures = 2
    gate.set()
    await eventually(lambda: "bob" in ranks.index, "reloaded in the end")
    await settle()
    assert store.ranked_calls == 4  # the load, two failures, the reload
    assert restarts(metrics, "reload_failed") == 2
    assert ranked(ranks) == ["bob", "alice"]


async def test_a_reload_event_rereads_the_store() -> None:
    feed = LocalChangeFeed()
    store = FakeStore([], [entry("alice", 5), entry("gone", 9)])
    _, board, _ = await following(feed, store)
    store.rows = [entry("alice", 5)]  # "gone" was deleted: the feed says only "reload"
    feed.publish([Reload()])
    await eventually(lambda: board_rows(board) == rows_of(entry("alice", 5)), "reloaded")
    assert store.top_calls == 2


async def test_the_lag_gauge_follows_the_last_write_and_a_quiet_stream_is_not_behind() -> None:
    log: list[str] = []
    now_ms = 50_000
    more, quiet = asyncio.Event(), asyncio.Event()
    stream = ScriptedStream(
        "t0",
        ([change("a", 1, written_ms=48_500)], "t1"),
        more,
        # The lag is the last written event's: c's, not b's; d's time is unknown.
        (
            [
                change("b", 2, written_ms=49_000),
                change("c", 3, written_ms=49_900),
                change("d", 4),
                Reload(),
            ],
            "t2",
        ),
        quiet,
        ([], "t3"),
    )
    store = FakeStore(log)
    _, _, metrics = await following(ScriptedFeed(log, stream), store, clock_ms=lambda: now_ms)
    await eventually(lambda: metric(metrics, "lag_seconds") == 1.5, "lag of a")
    more.set()
    await eventually(lambda: metric(metrics, "lag_seconds") == pytest.approx(0.1), "lag of c")
    assert metric(metrics, "events_total") == 5
    quiet.set()
    await eventually(lambda: metric(metrics, "lag_seconds") == 0, "a quiet batch: no lag")
    assert metric(metrics, "events_total") == 5


# --- recovery ---------------------------------------------------------------------------------


async def test_an_interrupted_stream_resumes_from_the_last_token_without_a_reload() -> None:
    log: list[str] = []
    first = ScriptedStream(
        "t0",
        ([change("alice", 5)], "t1"),
        ([change("bob", 7)], "t2"),
        FeedInterrupted("connection reset"),
    )
    second = ScriptedStream("t2", ([change("carol", 3)], "t3"))
    feed = ScriptedFeed(log, first, second)
    store = FakeStore(log)
    _, board, metrics = await following(feed, store)
    expected = rows_of(entry("bob", 7), entry("alice", 5), entry("carol", 3))
    await eventually(lambda: board_rows(board) == expected, "all three shown")
    await settle()
    assert feed.watched == [None, "t2"]
    assert first.closed and not second.closed
    assert log == ["watch None", "top", "watch t2"]  # no reload
    assert restarts(metrics, "interrupted") == 1
    assert restarts(metrics, "history_lost") == 0
    assert watching(metrics) == 1


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (FeedHistoryLost("resume point gone"), "history_lost"),
        (FeedInvalidated("collection dropped"), "invalidated"),
        (FeedNotResumable("error 280: change stream fatal error"), "not_resumable"),
    ],
)
async def test_a_lost_history_reopens_from_now_and_then_reloads(
    error: FeedHistoryLost, reason: str
) -> None:
    log: list[str] = []
    gate = asyncio.Event()
    first = ScriptedStream("t0", ([change("alice", 5)], "t1"), gate, error)
    feed = ScriptedFeed(log, first)
    store = FakeStore(log)
    _, board, metrics = await following(feed, store)
    await eventually(lambda: board_rows(board) == rows_of(entry("alice", 5)), "alice shown")
    # Writes the lost history held: only the store knows them now.
    store.rows = [entry("alice", 5), entry("dave", 50, v=4)]
    gate.set()
    expected = rows_of(entry("dave", 50, v=4), entry("alice", 5))
    await eventually(lambda: board_rows(board) == expected, "the board reloaded")
    await settle()
    assert feed.watched == [None, None]  # not the stale token t1
    # Reloaded after the new stream opened, so no write falls between the two.
    assert log == ["watch None", "top", "watch None", "top"]
    assert first.closed
    assert restarts(metrics, reason) == 1
    assert restarts(metrics, "interrupted") == 0
    assert watching(metrics) == 1


async def test_after_a_lost_history_it_resumes_from_the_new_streams_tokens() -> None:
    log: list[str] = []
    first = ScriptedStream("t0", FeedHistoryLost("gone"))
    second = ScriptedStream("n0", ([change("a", 1)], "n1"), FeedInterrupted("reset"))
    feed = ScriptedFeed(log, first, second)
    await following(feed, FakeStore(log))
    await eventually(lambda: len(feed.watched) == 3, "third open")
    assert feed.watched == [None, None, "n1"]


async def test_a_stream_cut_before_its_first_batch_resumes_from_where_it_opened() -> None:
    log: list[str] = []
    feed = ScriptedFeed(log, ScriptedStream("t0", FeedInterrupted("cut at once")))
    _, _, metrics = await following(feed, FakeStore(log))
    await eventually(lambda: len(feed.watched) == 2, "reopened")
    assert feed.watched == [None, "t0"]  # not None: that would skip what came in between
    assert restarts(metrics, "interrupted") == 1


async def test_no_write_is_lost_when_the_local_stream_is_cut_before_it_was_read() -> None:
    feed = LocalChangeFeed()
    store = FakeStore([])
    follower, board, _ = make(feed, store)
    await follower.open()  # at position 0
    await board.load()
    board.start()
    feed.publish([change("alice", 5)])  # written before the follower read anything
    stream = follower._stream  # white-box: cut the stream before the follower reads it
    assert stream is not None
    await stream.close()
    follower.start()
    feed.publish([change("bob", 1)])
    expected = rows_of(entry("alice", 5), entry("bob", 1))
    await eventually(lambda: board_rows(board) == expected, "alice and bob shown")
    assert store.top_calls == 1  # resumed, not reloaded


async def test_a_feed_unreachable_at_open_is_retried_in_the_background_then_reloaded() -> None:
    log: list[str] = []
    feed = ScriptedFeed(
        log,
        FeedInterrupted("no primary"),
        FeedInterrupted("still no primary"),
        FeedHistoryLost("odd, but also retried"),
    )
    store = FakeStore(log, [entry("alice", 5)])
    follower, board, metrics = make(feed, store)
    await follower.open()  # not fatal
    assert watching(metrics) == 0
    await board.load()
    board.start()
    store.rows = [entry("alice", 5), entry("bob", 6)]  # written while the feed was down
    follower.start()
    await eventually(lambda: watching(metrics) == 1, "the stream opened")
    expected = rows_of(entry("bob", 6), entry("alice", 5))
    await eventually(lambda: board_rows(board) == expected, "reloaded once open")
    await settle()
    assert log == ["watch None", "top", "watch None", "watch None", "watch None", "top"]
    assert watching(metrics) == 1


async def test_a_failed_reload_is_retried_until_the_store_answers() -> None:
    log: list[str] = []
    gate = asyncio.Event()
    feed = ScriptedFeed(log, ScriptedStream("t0", gate, FeedHistoryLost("gone")))
    store = FakeStore(log, [entry("alice", 5)])
    _, board, metrics = await following(feed, store)
    store.rows = [entry("alice", 5), entry("bob", 6)]
    store.failures = 2
    gate.set()
    expected = rows_of(entry("bob", 6), entry("alice", 5))
    await eventually(lambda: board_rows(board) == expected, "reloaded in the end")
    await settle()
    assert store.top_calls == 4  # the load, two failures, the reload
    # The new stream is opened from now before the first reload, and kept while the
    # reload is retried: nothing falls between it and the load that finally succeeds.
    assert log == ["watch None", "top", "watch None", "top", "top", "top"]
    assert feed.streams[0].closed and not feed.streams[1].closed
    assert restarts(metrics, "history_lost") == 1
    assert restarts(metrics, "reload_failed") == 2
    assert watching(metrics) == 1


async def test_the_backoff_grows_with_each_failure_and_resets_after_a_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts: list[tuple[int, float, float, float]] = []

    def recorded(attempt: int, base_s: float, cap_s: float, draw: float) -> float:
        attempts.append((attempt, base_s, cap_s, draw))
        return 0.0

    monkeypatch.setattr(follower_module, "backoff_delay", recorded)
    log: list[str] = []
    feed = ScriptedFeed(
        log,
        ScriptedStream("t0", FeedInterrupted("1")),
        FeedInterrupted("2"),
        FeedInterrupted("3"),
        ScriptedStream("t0", ([change("a", 1)], "t1"), FeedInterrupted("4")),
    )
    await following(feed, FakeStore(log), base_backoff_s=0.5, max_backoff_s=8.0, draw=lambda: 0.25)
    await eventually(lambda: len(feed.watched) == 5, "five opens")
    # Three failures in a row, then a batch went through: back to the first delay.
    assert [a[0] for a in attempts] == [0, 1, 2, 0]
    assert {a[1:] for a in attempts} == {(0.5, 8.0, 0.25)}


class DownFeed(ScriptedFeed):
    """Plays its script, then cannot be reached until ``up`` is set."""

    def __init__(self, log: list[str], *opens: ScriptedStream | Exception) -> None:
        super().__init__(log, *opens)
        self.up = asyncio.Event()

    async def watch(self, resume_token: object | None) -> ScriptedStream:
        if not self.opens and not self.up.is_set():
            self.watched.append(resume_token)
            raise FeedInterrupted("no primary")
        return await super().watch(resume_token)


async def test_the_watching_gauge_is_zero_while_reconnecting() -> None:
    log: list[str] = []
    feed = DownFeed(log, ScriptedStream("t0", ([change("a", 1)], "t1"), FeedInterrupted("cut")))
    _, _, metrics = await following(feed, FakeStore(log))
    await eventually(lambda: len(feed.watched) >= 3, "retrying")
    assert watching(metrics) == 0
    feed.up.set()
    await eventually(lambda: watching(metrics) == 1, "open again")
    assert watching(metrics) == 1
    assert set(feed.watched[1:]) == {"t1"}  # every retry resumes from the same token


async def test_it_says_when_its_stream_was_last_open_for_readiness() -> None:
    log: list[str] = []
    now = [100.0]
    feed = DownFeed(log, ScriptedStream("t0", FeedInterrupted("cut")))
    follower, board, metrics = make(feed, FakeStore(log), clock_s=lambda: now[0])
    assert follower.live_at() is None  # never open
    await follower.open()
    assert follower.live_at() == 100.0  # open: live as of now
    now[0] = 105.0
    assert follower.live_at() == 105.0
    await follower.open()  # a second open (after a failed load) keeps the stream
    assert feed.watched == [None]
    await board.load()
    board.start()
    follower.start()
    await eventually(lambda: watching(metrics) == 0, "the stream was cut")
    now[0] = 130.0
    assert follower.live_at() == 105.0  # the last time it was open
    feed.up.set()
    await eventually(lambda: watching(metrics) == 1, "open again")
    assert follower.live_at() == 130.0


# --- lifecycle ---------------------------------------------------------------------------------


async def test_stop_cancels_the_follower_and_closes_the_stream() -> None:
    log: list[str] = []
    feed = ScriptedFeed(log)
    follower, board, metrics = await following(feed, FakeStore(log))
    await settle()
    assert watching(metrics) == 1
    stream = feed.streams[0]
    with pytest.raises(RuntimeError):
        follower.start()  # once only
    await follower.stop()
    assert stream.closed
    assert watching(metrics) == 0
    await follower.stop()  # idempotent
    await settle()
    assert feed.watched == [None]  # nothing reopened it
    assert board.running  # the leaderboard is not the follower's to stop


async def test_stop_ends_a_follower_waiting_to_reconnect() -> None:
    log: list[str] = []
    feed = DownFeed(log, FeedInterrupted("down at open"))
    follower, _, metrics = await following(feed, FakeStore(log), base_backoff_s=0.002)
    await eventually(lambda: len(feed.watched) >= 3, "retrying")
    await asyncio.wait_for(follower.stop(), scaled(1))
    opens = len(feed.watched)
    await settle()
    assert len(feed.watched) == opens
    assert watching(metrics) == 0


async def test_stop_before_start_closes_an_opened_stream() -> None:
    log: list[str] = []
    feed = ScriptedFeed(log)
    follower, _, metrics = make(feed, FakeStore(log))
    await follower.open()
    assert watching(metrics) == 1
    await follower.stop()
    assert feed.streams[0].closed
    assert watching(metrics) == 0


async def test_the_follower_ends_quietly_once_the_leaderboard_stopped() -> None:
    feed = LocalChangeFeed()
    follower, board, metrics = await following(feed, FakeStore([]))
    await board.stop()
    feed.publish([change("late", 1)])
    task = follower._task  # white-box: the follower's own task
    assert task is not None
    await asyncio.wait_for(asyncio.wait({task}), scaled(1))
    assert task.exception() is None
    await follower.stop()
    assert watching(metrics) == 0


# --- failures of the store and of the follower itself ---------------------------------------


async def test_a_reload_event_whose_reload_fails_is_retried() -> None:
    feed = LocalChangeFeed()
    store = FakeStore([], [entry("alice", 5), entry("gone", 9)])
    _, board, _ = await following(feed, store)
    store.rows = [entry("alice", 5)]
    store.failures = 1
    feed.publish([Reload()])
    await eventually(
        lambda: board_rows(board) == rows_of(entry("alice", 5)), "reloaded", timeout_s=0.3
    )


async def test_an_unexpected_error_restarts_the_follower_from_now_with_a_reload() -> None:
    class BadEventFeed:
        def __init__(self) -> None:
            self.watched: list[object | None] = []

        async def watch(self, resume_token: object | None) -> Any:
            self.watched.append(resume_token)
            return BadStream(len(self.watched))

    class BadStream:
        def __init__(self, number: int) -> None:
            self.number = number
            self.resume_token: object | None = f"token-{number}"

        async def next_batch(self) -> list[Any]:
            if self.number == 2:  # the first stream reopened: fine from now on
                await asyncio.sleep(3600)
            raise KeyError("score")  # e.g. a malformed change document

        async def close(self) -> None:
            pass

    feed = BadEventFeed()
    store = FakeStore([], [entry("alice", 5)])
    follower, board, metrics = await following(feed, store)
    store.rows = [entry("alice", 5), entry("bob", 7)]  # written while the follower was down
    await eventually(lambda: len(feed.watched) == 2, "reopened")
    assert feed.watched == [None, None]  # not resumed onto the same bad event
    await eventually(
        lambda: board_rows(board) == rows_of(entry("bob", 7), entry("alice", 5)), "reloaded"
    )
    assert restarts(metrics, "error") == 1
    await follower.stop()


async def test_the_follower_reports_each_write_and_each_reload() -> None:
    versions: list[tuple[str, int]] = []
    reloads: list[bool] = []
    feed = LocalChangeFeed()
    store = FakeStore([], [entry("alice", 5)])
    follower, _board, _ = await following(
        feed,
        store,
        on_version=lambda user, v: versions.append((user, v)),
        on_reload=lambda: reloads.append(True),
    )
    feed.publish([change("alice", 7, v=2), change("bob", 3, v=4, banned=True)])
    await eventually(lambda: len(versions) == 2, "both writes reported")
    assert versions == [("alice", 2), ("bob", 4)]
    assert reloads == []
    feed.publish([Reload()])
    await eventually(lambda: reloads == [True], "the reload reported")
    await follower.stop()


def test_every_restart_reason_is_named_in_the_metrics_help() -> None:
    """The reasons the follower counts (``exc.reason`` of the feed's errors, and its own)
    are all in RESTART_REASONS, which names them for dashboards and zero-initialisation."""
    help_text = Metrics().stream_restarts._documentation
    for reason in RESTART_REASONS:
        assert f"'{reason}'" in help_text, reason
    for error in (FeedHistoryLost, FeedInvalidated, FeedNotResumable):
        assert error.reason in RESTART_REASONS
