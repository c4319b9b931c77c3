"""LeaderboardActor against an in-memory store and fake subscribers (no server, no I/O)."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from actors.leaderboard import LeaderboardActor, Publication, ScoreChanged
from server.domain.deltas import Delta, apply_delta, looks_same, rows_json
from server.domain.records import BoardRow
from server.store.port import StoreError
from tests.conftest import scaled

pytestmark = pytest.mark.gen_test(timeout=scaled(10))

_actors: list[LeaderboardActor] = []


@pytest.fixture(autouse=True)
def _stop_actors(io_loop: Any) -> Iterator[None]:
    """Stop every actor a test started, even when the test failed half-way."""
    yield
    actors = list(_actors)
    _actors.clear()
    io_loop.run_sync(lambda: asyncio.gather(*(a.kill() for a in actors)))


Rows = list[tuple[str, str, int]]


def shown(rows: tuple[BoardRow, ...]) -> Rows:
    """What clients see of rows."""
    return [(r.user_id, r.username, r.score) for r in rows]


class FakeStore:
    """The store as the leaderboard sees it: ``top(limit)``, plus ``write`` for the tests.

    ``write`` changes a user's row like the real store does (a new version each write,
    ``reached_ms`` moves only when the score changes) and returns the row the user's
    actor would then send to the leaderboard.
    """

    def __init__(self) -> None:
        self.rows: dict[str, BoardRow] = {}
        self.top_calls: list[int] = []
        self.failures = 0  # the next calls of top() that raise StoreError
        self.gate: asyncio.Event | None = None  # top() waits for it when set by a test
        self.reading = asyncio.Event()  # set by each call of top()
        self._now_ms = 1_000

    async def top(self, limit: int) -> list[BoardRow]:
        self.top_calls.append(limit)
        self.reading.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise StoreError("the store is unreachable")
        return self.ranked()[:limit]

    def ranked(self) -> list[BoardRow]:
        return sorted(self.rows.values(), key=lambda r: (-r.score, r.reached_ms, r.user_id))

    def expected(self, n: int) -> Rows:
        return shown(tuple(self.ranked()[:n]))

    def write(self, user_id: str, score: int, username: str | None = None) -> BoardRow:
        self._now_ms += 1
        old = self.rows.get(user_id)
        reached = old.reached_ms if old is not None and old.score == score else self._now_ms
        row = BoardRow(
            user_id=user_id,
            username=username if username is not None else user_id,
            score=score,
            reached_ms=reached,
            v=(old.v + 1) if old is not None else 1,
        )
        self.rows[user_id] = row
        return row


class FakeSubscriber:
    """Collects every publication it is handed, with the time it was handed."""

    def __init__(self) -> None:
        self.publications: list[Publication] = []
        self.times: list[float] = []
        self.on_send: dict[int, Callable[[], object]] = {}  # run right after the n-th one
        self._arrived = asyncio.Event()

    def publish(self, publication: Publication) -> None:
        self.publications.append(publication)
        self.times.append(time.monotonic())
        self._arrived.set()
        hook = self.on_send.pop(len(self.publications), None)
        if hook is not None:
            hook()

    @property
    def payloads(self) -> list[str]:
        """The seed-format message of each publication."""
        return [p.update for p in self.publications]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.payloads]

    async def wait_for(self, count: int, timeout_s: float = 2.0) -> dict[str, Any]:
        """Wait until ``count`` publications arrived; return the last one's update, decoded."""
        async with asyncio.timeout(scaled(timeout_s)):
            while len(self.publications) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.messages[-1]


def assert_consistent(
    actor: LeaderboardActor, publications: list[Publication], loaded: tuple[BoardRow, ...] = ()
) -> None:
    """Every publication agrees with itself, with the one before, and with the history.

    Versions are consecutive from 1 in one epoch; the update message shows the rows; the
    delta applied to the previous rows (``loaded`` before the first) gives the rows; the
    history holds the same deltas.
    """
    view = actor.view
    previous = loaded
    for expected_version, publication in enumerate(publications, start=1):
        assert publication.epoch == view.epoch
        assert publication.version == expected_version
        update = json.loads(publication.update)
        assert update == {
            "event": "update",
            "epoch": view.epoch,
            "version": expected_version,
            "top_scores": rows_json(publication.rows),
        }
        delta = json.loads(publication.delta)
        assert (delta["event"], delta["epoch"], delta["version"]) == (
            "delta",
            view.epoch,
            expected_version,
        )
        assert not looks_same(publication.rows, previous)  # only visible changes go out
        assert shown(apply_delta(previous, delta_of(delta))) == shown(publication.rows)
        previous = publication.rows
    if publications:
        assert view.rows == publications[-1].rows
        assert view.version == publications[-1].version
        kept = view.history.since(0)
        if kept is not None:  # all versions still in the history
            assert kept == [p.delta for p in publications]


def delta_of(message: dict[str, Any]) -> Delta:
    """A decoded delta message back as a :class:`Delta`."""
    changed = tuple(
        (c["rank"], BoardRow(c["user_id"], c["username"], c["score"], 0, 0))
        for c in message["changed"]
    )
    return Delta(changed, tuple(message["removed"]))


def rows_of(message: dict[str, Any]) -> Rows:
    return [(r["user_id"], r["username"], r["score"]) for r in message["top_scores"]]


def body_rows(actor: LeaderboardActor) -> Rows:
    return rows_of(json.loads(actor.view.top_scores.body))


async def started(
    store: FakeStore, *, top_n: int = 3, interval_s: float = 0.0, subscribers: int = 1
) -> tuple[LeaderboardActor, list[FakeSubscriber]]:
    actor = LeaderboardActor(store, top_n, interval_s)  # type: ignore[arg-type]
    await actor.load()
    actor.start()
    _actors.append(actor)
    subs = [FakeSubscriber() for _ in range(subscribers)]
    for sub in subs:
        actor.subscribe(sub)
    return actor, subs


async def change(actor: LeaderboardActor, row: BoardRow) -> None:
    """Send a ScoreChanged and wait until the actor processed it."""
    await actor.ask(ScoreChanged(row))


async def test_load_fills_the_board_and_snapshot_from_the_store() -> None:
    store = FakeStore()
    for user, score in [("a", 5), ("b", 9), ("c", 7), ("d", 1)]:
        store.write(user, score)
    actor = LeaderboardActor(store, 3, 0.0)  # type: ignore[arg-type]
    assert not actor.view.loaded
    await actor.load()
    assert actor.view.loaded
    expected = [("b", "b", 9), ("c", "c", 7), ("a", "a", 5)]
    assert body_rows(actor) == expected
    assert shown(actor.view.rows) == expected
    snapshot = json.loads(actor.view.snapshot("new"))
    assert snapshot["event"] == "snapshot"
    assert snapshot["epoch"] == actor.view.epoch
    assert snapshot["version"] == 0
    assert snapshot["reason"] == "new"
    assert rows_of(snapshot) == expected
    actor.start()
    _actors.append(actor)
    await actor.stop()


async def test_interval_zero_publishes_each_visible_change_with_increasing_versions() -> None:
    store = FakeStore()
    actor, [sub] = await started(store, top_n=3)
    await change(actor, store.write("a", 5))
    assert len(sub.payloads) == 1  # published while the change was applied
    await change(actor, store.write("b", 7))
    await change(actor, store.write("a", 9, username="Alice"))
    messages = sub.messages
    assert [m["event"] for m in messages] == ["update"] * 3
    assert [m["version"] for m in messages] == [1, 2, 3]
    assert rows_of(messages[0]) == [("a", "a", 5)]
    assert rows_of(messages[1]) == [("b", "b", 7), ("a", "a", 5)]
    assert rows_of(messages[2]) == [("a", "Alice", 9), ("b", "b", 7)]
    assert actor.view.version == 3
    assert {m["epoch"] for m in messages} == {actor.view.epoch}
    assert_consistent(actor, sub.publications)
    # The snapshot for new watchers follows the last broadcast.
    snapshot = json.loads(actor.view.snapshot("new"))
    assert snapshot == {**messages[2], "event": "snapshot", "reason": "new"}
    resync = json.loads(actor.view.snapshot("resync"))
    assert resync == {**snapshot, "reason": "resync"}
    await actor.stop()


async def test_no_publish_when_only_rows_beyond_top_n_change() -> None:
    store = FakeStore()
    actor, [sub] = await started(store, top_n=2)
    await change(actor, store.write("a", 50))
    await change(actor, store.write("b", 40))
    assert len(sub.payloads) == 2
    body = actor.view.top_scores.body
    snapshot = actor.view.snapshot("new")
    assert actor.view.snapshot("new") is snapshot  # encoded once per version and reason
    await change(actor, store.write("c", 1))  # 3rd: not shown
    await change(actor, store.write("c", 30))  # still 3rd
    await change(actor, store.write("b", 40, username="Bob"))  # a visible change
    assert len(sub.payloads) == 3
    assert rows_of(sub.messages[-1]) == [("a", "a", 50), ("b", "Bob", 40)]
    assert actor.view.version == 3
    await change(actor, store.write("c", 35))
    assert len(sub.payloads) == 3
    assert actor.view.version == 3
    assert actor.view.snapshot("new") != snapshot
    assert json.loads(actor.view.snapshot("new"))["version"] == 3
    assert body != actor.view.top_scores.body
    await actor.stop()
    assert len(sub.payloads) == 3  # nothing pending either


async def test_stale_or_duplicate_events_change_nothing() -> None:
    store = FakeStore()
    actor, [sub] = await started(store, top_n=2)
    first = store.write("a", 10)
    second = store.write("a", 20)
    await change(actor, second)
    await change(actor, first)  # older version, arriving late
    await change(actor, second)  # the same event twice
    assert len(sub.payloads) == 1
    assert body_rows(actor) == [("a", "a", 20)]
    await actor.stop()


async def test_interval_coalesces_a_burst_and_publishes_at_once_after_a_quiet_period() -> None:
    interval = scaled(0.3)
    store = FakeStore()
    actor, [sub] = await started(store, top_n=3, interval_s=interval)

    # The first change after a quiet period goes out at once, not after the interval.
    start = time.monotonic()
    await change(actor, store.write("a", 1))
    first = await sub.wait_for(1)
    assert sub.times[0] - start < interval / 3
    assert first["version"] == 1 and rows_of(first) == [("a", "a", 1)]

    # A burst right after it: one publish, with the final state, one interval after the first.
    for score in range(2, 22):
        await change(actor, store.write("a", score))
        await change(actor, store.write("b", score + 1))
    assert len(sub.payloads) == 1  # nothing before the interval is over
    second = await sub.wait_for(2)
    assert second["version"] == 2
    assert rows_of(second) == store.expected(3) == [("b", "b", 22), ("a", "a", 21)]
    assert sub.times[1] - sub.times[0] >= interval - 0.005
    assert body_rows(actor) == rows_of(second)

    # Quiet: nothing more comes.
    await asyncio.sleep(interval * 1.5)
    assert len(sub.payloads) == 2

    # After the quiet period, the next change is published at once again.
    start = time.monotonic()
    await change(actor, store.write("c", 100))
    third = await sub.wait_for(3)
    assert sub.times[2] - start < interval / 3
    assert third["version"] == 3 and rows_of(third)[0] == ("c", "c", 100)
    await actor.stop()
    assert len(sub.payloads) == 3


async def test_changes_racing_the_timer_still_get_at_most_one_publish_per_interval() -> None:
    interval = scaled(0.3)
    store = FakeStore()
    actor, [sub] = await started(store, top_n=5, interval_s=interval)
    loop = asyncio.get_running_loop()
    await change(actor, store.write("a", 1))
    await sub.wait_for(1)  # the first change: at once
    await change(actor, store.write("b", 2))  # within the interval: waits for the timer
    timer = actor._timer
    assert timer is not None
    # A change told (as an HTTP handler would) in the loop iteration in which the timer
    # fires, just before it: it is queued ahead of the timer's publish message.
    loop.call_at(timer.when() - 0.001, actor.tell, ScoreChanged(store.write("c", 3)))
    # Another change right after that publish.
    sub.on_send[2] = lambda: actor.tell(ScoreChanged(store.write("d", 4)))
    # Hold the loop until both callbacks are due, so they run in one iteration, in order.
    time.sleep(max(0.0, timer.when() - loop.time()) + 0.01)  # noqa: ASYNC251
    await sub.wait_for(3)
    await asyncio.sleep(interval * 1.5)
    assert rows_of(sub.messages[-1]) == store.expected(5)
    gaps = [later - earlier for earlier, later in itertools.pairwise(sub.times)]
    assert all(gap >= interval - 0.005 for gap in gaps), f"publish gaps {gaps}, interval {interval}"
    await actor.stop()


async def test_a_change_undone_within_the_interval_is_not_published() -> None:
    interval = scaled(0.2)
    store = FakeStore()
    actor, [sub] = await started(store, top_n=2, interval_s=interval)
    await change(actor, store.write("a", 10))
    await sub.wait_for(1)
    await change(actor, store.write("a", 10, username="Renamed"))
    await change(actor, store.write("a", 10, username="a"))  # back to what was published
    await asyncio.sleep(interval * 2)
    assert len(sub.payloads) == 1
    assert actor.view.version == 1
    await actor.stop()
    assert len(sub.payloads) == 1


async def test_stop_publishes_pending_changes_and_cancels_the_timer() -> None:
    interval = scaled(30)
    store = FakeStore()
    actor, [sub] = await started(store, top_n=2, interval_s=interval)
    await change(actor, store.write("a", 1))
    await sub.wait_for(1)
    await change(actor, store.write("b", 2))  # within the interval: waits for the timer
    timer = actor._timer
    assert timer is not None
    assert len(sub.payloads) == 1
    start = time.monotonic()
    await actor.stop()
    assert time.monotonic() - start < scaled(1)
    assert timer.cancelled()
    assert actor._timer is None
    assert len(sub.payloads) == 2
    last = sub.messages[-1]
    assert last["version"] == 2
    assert rows_of(last) == [("b", "b", 2), ("a", "a", 1)]


async def test_refill_from_the_store_when_members_fall_out() -> None:
    # top_n=2 keeps 12 rows; 15 users, so 3 are outside the cache.
    store = FakeStore()
    for i in range(15):
        store.write(f"u{i:02d}", 100 - i)
    actor, [sub] = await started(store, top_n=2)
    assert store.top_calls == [12]
    loaded = actor.view.rows
    # An admin resets the leaders one after another: each falls out of the cache.
    for i in range(14):
        await change(actor, store.write(f"u{i:02d}", 0))
        expected = store.expected(2)
        assert body_rows(actor) == expected, f"after resetting u{i:02d}"
        assert rows_of(sub.messages[-1]) == expected
    # Resetting 11 of 12 cached rows left one: the cache was refilled from the store.
    assert len(store.top_calls) >= 2
    assert body_rows(actor) == [("u14", "u14", 86), ("u00", "u00", 0)]
    versions = [m["version"] for m in sub.messages]
    assert versions == list(range(1, len(versions) + 1))
    assert_consistent(actor, sub.publications, loaded)
    await actor.stop()


async def test_a_failed_refill_is_retried_on_the_next_change() -> None:
    store = FakeStore()
    for i in range(13):
        store.write(f"u{i:02d}", 100 - i)
    actor, [sub] = await started(store, top_n=2)  # 12 of 13 rows cached
    for i in range(10):  # two rows left in the cache: no refill yet
        await change(actor, store.write(f"u{i:02d}", 0))
    assert len(store.top_calls) == 1
    store.failures = 1
    await change(actor, store.write("u10", 0))  # one row left: the refill fails
    assert len(store.top_calls) == 2
    assert actor.running
    await change(actor, store.write("u11", 89, username="Eleven"))  # the next change retries
    assert len(store.top_calls) == 3
    expected = [("u11", "Eleven", 89), ("u12", "u12", 88)]
    assert store.expected(2) == expected
    assert body_rows(actor) == expected
    assert rows_of(sub.messages[-1]) == expected
    await actor.stop()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_increments_and_resets_keep_the_top_n_right(seed: int) -> None:
    rng = random.Random(seed)
    store = FakeStore()
    for i in range(25):
        store.write(f"p{i:02d}", rng.randrange(0, 50))
    actor, [sub] = await started(store, top_n=3)
    loaded = actor.view.rows
    assert shown(loaded) == store.expected(3)
    for step in range(400):
        if rng.random() < 0.5:
            # A reset or a penalty, mostly of a leader (which then falls out of the cache).
            leader = rng.choice(store.ranked()[:6])
            user, score = leader.user_id, rng.randrange(0, max(1, leader.score))
        else:
            user = f"p{rng.randrange(30):02d}"
            old = store.rows.get(user)
            score = (old.score if old is not None else 0) + rng.randrange(1, 20)
        await change(actor, store.write(user, score))
        assert body_rows(actor) == store.expected(3), f"step {step}"
        if sub.payloads:
            assert rows_of(sub.messages[-1]) == store.expected(3), f"step {step}"
    assert len(store.top_calls) >= 4, "the sequence should have needed refills"
    assert_consistent(actor, sub.publications, loaded)
    await actor.stop()


async def test_top_scores_body_is_encoded_once_per_change() -> None:
    store = FakeStore()
    store.write("a", 3, username="Ann")
    actor, _ = await started(store, top_n=2)
    body = actor.view.top_scores.body
    assert json.loads(body) == {
        "top_scores": [{"user_id": "a", "username": "Ann", "score": 3}],
    }
    assert isinstance(body, bytes)
    assert actor.view.top_scores.body is body  # the same object between changes
    await change(actor, store.write("b", 9))
    changed = actor.view.top_scores.body
    assert changed is not body
    assert json.loads(changed) == {
        "top_scores": [
            {"user_id": "b", "username": "b", "score": 9},
            {"user_id": "a", "username": "Ann", "score": 3},
        ],
    }
    assert actor.view.top_scores.body is changed
    await change(actor, store.write("c", 1))  # beyond top 2: the body stays
    assert actor.view.top_scores.body is changed
    await actor.stop()


async def test_each_publish_hands_every_subscriber_the_same_publication() -> None:
    store = FakeStore()
    actor, subs = await started(store, top_n=3, subscribers=3)
    await change(actor, store.write("a", 1))
    await change(actor, store.write("b", 2))
    for sub in subs:
        assert len(sub.publications) == 2
    for i in range(2):
        publication = subs[0].publications[i]
        assert isinstance(publication.update, str)
        assert isinstance(publication.delta, str)
        # One object, so each message is encoded once per publish, not per subscriber.
        assert all(sub.publications[i] is publication for sub in subs)
    second = subs[0].publications[1]
    assert (second.epoch, second.version) == (actor.view.epoch, 2)
    assert shown(second.rows) == [("b", "b", 2), ("a", "a", 1)]
    assert json.loads(second.update) == {
        "event": "update",
        "epoch": actor.view.epoch,
        "version": 2,
        "top_scores": [
            {"user_id": "b", "username": "b", "score": 2},
            {"user_id": "a", "username": "a", "score": 1},
        ],
    }
    # b entered at rank 1 and pushed a to rank 2: both rows changed, nobody left.
    assert json.loads(second.delta) == {
        "event": "delta",
        "epoch": actor.view.epoch,
        "version": 2,
        "changed": [
            {"rank": 1, "user_id": "b", "username": "b", "score": 2},
            {"rank": 2, "user_id": "a", "username": "a", "score": 1},
        ],
        "removed": [],
    }
    assert_consistent(actor, subs[0].publications)
    await actor.stop()


async def test_a_delta_names_the_users_who_left_the_top_n() -> None:
    store = FakeStore()
    actor, [sub] = await started(store, top_n=2)
    await change(actor, store.write("a", 10))
    await change(actor, store.write("b", 5))
    await change(actor, store.write("c", 20))  # c first, a second, b out
    delta = json.loads(sub.publications[-1].delta)
    assert delta["changed"] == [
        {"rank": 1, "user_id": "c", "username": "c", "score": 20},
        {"rank": 2, "user_id": "a", "username": "a", "score": 10},
    ]
    assert delta["removed"] == ["b"]
    await change(actor, store.write("c", 21))  # only c's score: one changed row
    delta = json.loads(sub.publications[-1].delta)
    assert delta["changed"] == [{"rank": 1, "user_id": "c", "username": "c", "score": 21}]
    assert delta["removed"] == []
    assert_consistent(actor, sub.publications)
    await actor.stop()


async def test_the_snapshot_shows_the_published_version_not_pending_changes() -> None:
    interval = scaled(30)
    store = FakeStore()
    actor, [sub] = await started(store, top_n=2, interval_s=interval)
    await change(actor, store.write("a", 1))
    await sub.wait_for(1)
    await change(actor, store.write("b", 2))  # waits for the timer
    # The snapshot a watcher joining now gets must be version 1's board: the next
    # publication (version 2) will carry the change as a delta from version 1.
    snapshot = json.loads(actor.view.snapshot("new"))
    assert snapshot["version"] == 1
    assert rows_of(snapshot) == [("a", "a", 1)]
    assert shown(actor.view.rows) == [("a", "a", 1)]
    # GET /api/top-scores shows the latest state at once.
    assert body_rows(actor) == [("b", "b", 2), ("a", "a", 1)]
    await actor.stop()  # publishes the pending change
    assert json.loads(actor.view.snapshot("new"))["version"] == 2
    assert_consistent(actor, sub.publications)


async def test_the_history_keeps_the_last_deltas_and_each_actor_has_its_own_epoch() -> None:
    store = FakeStore()
    actor = LeaderboardActor(store, 3, 0.0, history_size=2)  # type: ignore[arg-type]
    await actor.load()
    actor.start()
    _actors.append(actor)
    sub = FakeSubscriber()
    actor.subscribe(sub)
    for score in range(1, 5):
        await change(actor, store.write("a", score))
    assert actor.view.version == 4
    assert actor.view.history.since(2) == [sub.publications[2].delta, sub.publications[3].delta]
    assert actor.view.history.since(1) is None  # version 2 is no longer kept
    other = LeaderboardActor(store, 3, 0.0)  # type: ignore[arg-type]
    assert other.view.epoch != actor.view.epoch
    await actor.stop()


async def test_unsubscribed_watchers_get_nothing_more() -> None:
    store = FakeStore()
    actor, [stays, leaves] = await started(store, top_n=3, subscribers=2)
    await change(actor, store.write("a", 1))
    actor.unsubscribe(leaves)
    assert actor.subscribers == frozenset({stays})
    await change(actor, store.write("b", 2))
    assert len(stays.payloads) == 2
    assert len(leaves.payloads) == 1
    await actor.stop()


async def test_each_change_replaces_the_view_and_old_views_stay_as_they_were() -> None:
    store = FakeStore()
    store.write("a", 5)
    actor, [sub] = await started(store, top_n=2, interval_s=scaled(30))
    loaded = actor.view
    body = loaded.top_scores.body
    await change(actor, store.write("b", 9))  # the first change after a quiet period: out
    await sub.wait_for(1)
    published = actor.view
    assert published is not loaded
    assert published.version == 1
    await change(actor, store.write("c", 20))  # within the interval: not published yet
    pending = actor.view
    assert pending.version == 1
    assert shown(pending.top_scores.rows) == [("c", "c", 20), ("b", "b", 9)]
    await change(actor, store.write("z", 1))  # the cache changed, the top 2 did not
    assert actor.view is not pending
    assert actor.view.top_scores is pending.top_scores  # its answer is not encoded again
    await actor.stop()  # publishes the pending change
    assert actor.view.version == 2
    # Every view a reader took still answers what it answered then.
    assert (loaded.version, shown(loaded.rows)) == (0, [("a", "a", 5)])
    assert loaded.top_scores.body is body
    assert json.loads(loaded.snapshot("new"))["version"] == 0
    assert (published.version, pending.version) == (1, 1)
    assert published.history.since(0) == [sub.publications[0].delta]
    assert shown(pending.rows) == [("b", "b", 9), ("a", "a", 5)]


async def test_every_change_is_wanted_while_a_refill_reads_the_store() -> None:
    store = FakeStore()
    for i in range(13):
        store.write(f"u{i:02d}", 100 - i)
    actor, _ = await started(store, top_n=2)  # 12 of 13 rows cached
    for i in range(10):  # two rows left in the cache: no refill yet
        await change(actor, store.write(f"u{i:02d}", 0))
    outsider = BoardRow("x", "x", 50, 5_000, 1)  # below the last cached row (89)
    assert not actor.view.wants(outsider)
    store.gate = asyncio.Event()
    store.reading.clear()
    actor.tell(ScoreChanged(store.write("u10", 0)))  # one row left: a refill
    async with asyncio.timeout(scaled(2)):
        await store.reading.wait()
    # The refill may have read the store before the outsider's write: it must be told.
    assert actor.view.wants(outsider)
    store.gate.set()
    await actor.ask(ScoreChanged(store.write("x", 50)))
    assert body_rows(actor) == store.expected(2)
    await actor.stop()
