"""UserActor and UserRegistry over a real in-memory SQLite store and a real leaderboard."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from actors.base import ActorStopped, MailboxFull
from actors.leaderboard import LeaderboardActor
from actors.user import AdminCommand, RegistryFull, UserActor, UserRegistry
from server.domain.admin import AdminAction, AdminChange
from server.domain.increments import IncrementPolicy
from server.domain.rank_index import RankIndex
from server.domain.records import (
    Applied,
    Banned,
    BoardRow,
    Decision,
    IncrementCommand,
    UserRecord,
)
from server.store.port import StoreError
from server.store.sqlite import SqliteStore
from tests.conftest import eventually, scaled

pytestmark = pytest.mark.gen_test(timeout=scaled(15))

POLICY = IncrementPolicy(rate_limit_per_minute=0, idempotency_keys=64)
T0 = 1_700_000_000_000


def cmd(user: str = "alice", amount: int = 1, *, key: str | None = None) -> IncrementCommand:
    return IncrementCommand(user, user.title(), amount, T0, key)


class GatedStore:
    """A real store whose ``apply_increments`` waits at a gate (open unless closed by a test)
    and says when a call reached it, so a test can hold an actor busy."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        # Every apply_increments call: its commands and the ``known`` record passed.
        self.calls: list[tuple[list[IncrementCommand], UserRecord | None]] = []
        # Call number -> the error that call raises after the real store applied it (an
        # answer lost on the way back: the caller cannot know the stored state).
        self.fail_after_write: dict[int, Exception] = {}
        self.admin_fails_after_write: Exception | None = None

    async def apply_increments(
        self, commands: list[IncrementCommand], known: UserRecord | None = None
    ) -> list[Decision]:
        number = len(self.calls)
        self.calls.append((list(commands), known))
        self.entered.set()
        await self.gate.wait()
        decisions = await self.inner.apply_increments(commands, known)
        if number in self.fail_after_write:
            raise self.fail_after_write[number]
        return decisions

    async def apply_admin(
        self, user_id: str, change: AdminChange, blank: UserRecord | None = None
    ) -> UserRecord | None:
        record = await self.inner.apply_admin(user_id, change, blank)
        if self.admin_fails_after_write is not None:
            raise self.admin_fails_after_write
        return record

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class System:
    sqlite: SqliteStore
    store: GatedStore
    leaderboard: LeaderboardActor
    registry: UserRegistry
    ranks: RankIndex

    def top_rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.leaderboard.view.top_scores.body)["top_scores"]
        return rows


@asynccontextmanager
async def running(
    *,
    idle_s: float = 60.0,
    mailbox_size: int = 0,
    clock: Callable[[], float] = time.monotonic,
    sweeper: bool = True,
    max_actors: int = 1_000_000,
    on_displaced: Callable[[], None] = lambda: None,
) -> AsyncIterator[System]:
    sqlite = SqliteStore(":memory:", POLICY)
    await sqlite.open()
    store = GatedStore(sqlite)
    leaderboard = LeaderboardActor(store, top_n=10, broadcast_interval_s=0)
    ranks = RankIndex()
    registry = UserRegistry(
        store,
        leaderboard,
        ranks=ranks,
        mailbox_size=mailbox_size,
        idle_s=idle_s,
        max_actors=max_actors,
        on_displaced=on_displaced,
        clock=clock,
    )
    try:
        await leaderboard.load()
        leaderboard.start()
        if sweeper:
            registry.start()
        yield System(sqlite, store, leaderboard, registry, ranks)
    finally:
        store.gate.set()
        await registry.stop()
        await leaderboard.stop()
        await sqlite.close()


def score(decision: Decision) -> int:
    assert isinstance(decision, Applied), decision
    return decision.new_score


async def test_actor_for_returns_the_same_actor_for_the_same_user() -> None:
    async with running() as s:
        alice = s.registry.actor_for("alice")
        assert isinstance(alice, UserActor)
        assert alice.running
        assert s.registry.actor_for("alice") is alice
        bob = s.registry.actor_for("bob")
        assert bob is not alice
        assert len(s.registry) == 2
        assert score(await alice.ask(cmd("alice", 2))) == 2
        assert s.registry.actor_for("alice") is alice


async def test_an_applied_increment_reaches_the_leaderboard() -> None:
    async with running() as s:
        assert s.top_rows() == []
        assert score(await s.registry.actor_for("alice").ask(cmd("alice", 5))) == 5
        assert score(await s.registry.actor_for("bob").ask(cmd("bob", 7))) == 7
        expected = [
            {"user_id": "bob", "username": "Bob", "score": 7},
            {"user_id": "alice", "username": "Alice", "score": 5},
        ]
        await eventually(
            s.top_rows, "the board shows the scores", until=lambda rows: rows == expected
        )
        alice = s.registry.actor_for("alice")
        assert score(await alice.ask(cmd("alice", 4, key="k"))) == 9
        expected = [expected[1] | {"score": 9}, expected[0]]
        await eventually(
            s.top_rows, "the board shows the scores", until=lambda rows: rows == expected
        )
        # A replayed key answers the first result and changes nothing.
        assert (await alice.ask(cmd("alice", 4, key="k"))).new_score == 9
        assert await s.sqlite.get_score("alice") == BoardRow("alice", "Alice", 9, T0, 2)


async def test_idle_actors_are_evicted_and_recreated_on_the_next_request() -> None:
    async with running(idle_s=0.05) as s:
        first = s.registry.actor_for("alice")
        assert score(await first.ask(cmd("alice", 3))) == 3
        await eventually(lambda: len(s.registry) == 0, "the idle actor evicted")
        await eventually(lambda: not first.running, "the evicted actor stopped")
        with pytest.raises(ActorStopped):
            first.ask(cmd("alice"))

        again = s.registry.actor_for("alice")
        assert again is not first
        assert again.running
        assert score(await again.ask(cmd("alice", 4))) == 7
        alice_at_7 = [{"user_id": "alice", "username": "Alice", "score": 7}]
        await eventually(s.top_rows, "alice at 7", until=lambda rows: rows == alice_at_7)


async def test_an_actor_with_work_in_progress_or_queued_is_never_evicted() -> None:
    async with running(idle_s=0.05) as s:
        actor = s.registry.actor_for("alice")
        s.store.gate.clear()
        in_progress = actor.ask(cmd("alice", 1))
        queued = [actor.ask(cmd("alice", 1)) for _ in range(3)]
        await asyncio.wait_for(s.store.entered.wait(), scaled(2))
        await asyncio.sleep(scaled(0.3))  # many sweeps, each far past idle_s
        assert s.registry.actor_for("alice") is actor
        assert len(s.registry) == 1
        assert actor.running
        assert not in_progress.done()

        s.store.gate.set()
        assert [score(await f) for f in (in_progress, *queued)] == [1, 2, 3, 4]
        # Once idle it goes, as usual.
        await eventually(lambda: len(s.registry) == 0, "the idle actor evicted")


async def test_a_sweep_skips_busy_and_queued_actors_by_the_clock() -> None:
    clock = FakeClock()
    async with running(idle_s=10, clock=clock, sweeper=False) as s:
        actor = s.registry.actor_for("alice")
        s.store.gate.clear()
        first = actor.ask(cmd("alice"))  # queued, not yet taken
        clock.now += 100
        assert actor.idle_since(clock.now) == 0
        assert await s.registry.sweep() == 0
        await asyncio.wait_for(s.store.entered.wait(), scaled(2))  # now busy in the store
        clock.now += 100
        assert await s.registry.sweep() == 0
        s.store.gate.set()
        assert score(await first) == 1

        clock.now += 9  # idle, but not long enough
        assert await s.registry.sweep() == 0
        assert s.registry.actor_for("alice") is actor
        clock.now += 1
        assert await s.registry.sweep() == 1
        assert len(s.registry) == 0
        assert s.registry.actor_for("alice") is not actor


async def test_stop_drains_every_queued_increment_into_the_store() -> None:
    async with running() as s:
        users = [f"user{n}" for n in range(5)]
        asks: dict[str, list[asyncio.Future[Any]]] = {u: [] for u in users}
        for i in range(40):
            for u in users:
                asks[u].append(s.registry.actor_for(u).ask(cmd(u, 1 + i % 3)))
        every = [f for fs in asks.values() for f in fs]
        assert sum(not f.done() for f in every) == len(every)

        await s.registry.stop()

        assert all(f.done() for f in every)
        expected_total = sum(1 + i % 3 for i in range(40))
        for u in users:
            scores = [score(f.result()) for f in asks[u]]
            assert scores[-1] == expected_total
            assert scores == sorted(scores)  # in order, one at a time
            row = await s.sqlite.get_score(u)
            assert row is not None
            assert (row.score, row.v) == (expected_total, 40)
        assert len(s.registry) == 0


async def test_after_stop_a_new_user_is_refused() -> None:
    async with running() as s:
        alice = s.registry.actor_for("alice")
        assert score(await alice.ask(cmd("alice"))) == 1
        await s.registry.stop()
        assert not alice.running
        with pytest.raises(ActorStopped):
            s.registry.actor_for("bob")
        with pytest.raises(ActorStopped):
            s.registry.actor_for("alice")


async def test_a_full_mailbox_refuses_at_once() -> None:
    async with running(mailbox_size=2) as s:
        actor = s.registry.actor_for("alice")
        s.store.gate.clear()
        in_progress = actor.ask(cmd("alice"))
        await asyncio.wait_for(s.store.entered.wait(), scaled(2))
        queued = [actor.ask(cmd("alice")), actor.ask(cmd("alice"))]
        with pytest.raises(MailboxFull):
            actor.ask(cmd("alice"))
        assert s.registry.mailbox_depth() == 2
        s.store.gate.set()
        assert [score(await f) for f in (in_progress, *queued)] == [1, 2, 3]


async def test_kill_all_fails_pending_asks_with_actor_stopped() -> None:
    async with running() as s:
        actor = s.registry.actor_for("alice")
        other = s.registry.actor_for("bob")
        s.store.gate.clear()
        in_progress = actor.ask(cmd("alice"))
        await asyncio.wait_for(s.store.entered.wait(), scaled(2))
        pending = [in_progress, *(actor.ask(cmd("alice")) for _ in range(3))]
        pending.append(other.ask(cmd("bob")))

        await s.registry.kill_all()

        results = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(r, ActorStopped) for r in results), results
        assert not actor.running
        assert not other.running
        assert len(s.registry) == 0
        with pytest.raises(ActorStopped):
            s.registry.actor_for("carol")
        s.store.gate.set()
        assert await s.sqlite.get_score("alice") is None


# --- batched increments and the known record ----------------------------------------------


def tells_to_the_board(s: System, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every message user actors tell the leaderboard from now on (still delivered)."""
    told: list[Any] = []
    tell = s.leaderboard.tell

    def spy(change: Any) -> None:
        told.append(change)
        tell(change)

    monkeypatch.setattr(s.leaderboard, "tell", spy)
    return told


def record_of(decision: Decision) -> UserRecord:
    assert isinstance(decision, Applied), decision
    return decision.record


async def test_increments_queued_behind_a_slow_one_go_to_the_store_in_one_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running() as s:
        told = tells_to_the_board(s, monkeypatch)
        actor = s.registry.actor_for("alice")
        s.store.gate.clear()
        first = actor.ask(cmd("alice", 1))
        await asyncio.wait_for(s.store.entered.wait(), scaled(2))
        queued = [actor.ask(cmd("alice", 1)) for _ in range(5)]
        assert actor.depth == 5
        s.store.gate.set()
        # Each ask has its own answer, as if applied one by one.
        assert [score(await f) for f in (first, *queued)] == [1, 2, 3, 4, 5, 6]
        assert [record_of(f.result()).v for f in queued] == [2, 3, 4, 5, 6]
        assert [len(commands) for commands, _ in s.store.calls] == [1, 5]
        assert await s.sqlite.get_score("alice") == BoardRow("alice", "Alice", 6, T0, 6)
        # The board is told the state after each store call (the last of a batch), only.
        assert [change.row.score for change in told] == [1, 6]
        expected = [{"user_id": "alice", "username": "Alice", "score": 6}]
        await eventually(
            s.top_rows, "the board shows the scores", until=lambda rows: rows == expected
        )


async def test_a_batch_answers_replays_and_refusals_per_request() -> None:
    async with running() as s:
        actor = s.registry.actor_for("alice")
        s.store.gate.clear()
        first = actor.ask(cmd("alice", 5, key="a"))
        await asyncio.wait_for(s.store.entered.wait(), scaled(2))
        queued = [
            actor.ask(cmd("alice", 2)),
            actor.ask(cmd("alice", 9, key="a")),  # a retry of the first: its answer
            actor.ask(cmd("alice", 3, key="b")),
            actor.ask(cmd("alice", 9, key="b")),  # a retry inside the same batch
        ]
        s.store.gate.set()
        answers = [await f for f in (first, *queued)]
        assert [a.new_score for a in answers] == [5, 7, 5, 10, 10]
        assert [type(a).__name__ for a in answers] == [
            "Applied",
            "Applied",
            "Replayed",
            "Applied",
            "Replayed",
        ]
        assert [len(commands) for commands, _ in s.store.calls] == [1, 4]
        assert await s.sqlite.get_score("alice") == BoardRow("alice", "Alice", 10, T0, 3)


async def test_the_record_last_written_is_passed_as_known_to_the_next_call() -> None:
    async with running() as s:
        actor = s.registry.actor_for("alice")
        s.store.gate.clear()
        first = actor.ask(cmd("alice", 1))
        await asyncio.wait_for(s.store.entered.wait(), scaled(2))
        queued = [actor.ask(cmd("alice", 2)) for _ in range(3)]
        s.store.gate.set()
        await asyncio.gather(first, *queued)
        after_batch = record_of(queued[-1].result())
        assert score(await actor.ask(cmd("alice", 10))) == 17

        knowns = [known for _, known in s.store.calls]
        assert knowns == [None, record_of(first.result()), after_batch]
        assert after_batch.v == 4 and after_batch.score == 7
        # The known record is the stored one, so the store could decide without reading.
        stored = await s.sqlite.get_score("alice")
        assert stored == BoardRow("alice", "Alice", 17, T0, 5)


async def test_after_a_store_error_the_next_call_passes_no_known_record() -> None:
    async with running() as s:
        actor = s.registry.actor_for("alice")
        assert score(await actor.ask(cmd("alice", 1))) == 1
        # The write lands but its answer is lost: the actor cannot know the stored state.
        s.store.fail_after_write[1] = StoreError("connection lost")
        with pytest.raises(StoreError):
            await actor.ask(cmd("alice", 1))
        assert score(await actor.ask(cmd("alice", 1))) == 3  # nothing lost, nothing doubled
        assert score(await actor.ask(cmd("alice", 1))) == 4
        knowns = [known for _, known in s.store.calls]
        assert knowns[0] is None
        assert knowns[1] is not None and knowns[1].v == 1
        assert knowns[2] is None  # unknown again after the failure
        assert knowns[3] is not None and (knowns[3].v, knowns[3].score) == (3, 3)


async def test_a_store_error_fails_every_ask_of_its_batch_and_the_actor_goes_on() -> None:
    async with running() as s:
        actor = s.registry.actor_for("alice")
        s.store.fail_after_write[1] = StoreError("disk I/O error")  # the batch's call
        s.store.gate.clear()
        held = actor.ask(cmd("alice", 1))
        await asyncio.wait_for(s.store.entered.wait(), scaled(2))
        failing = [actor.ask(cmd("alice", 1)) for _ in range(3)]
        s.store.gate.set()
        assert score(await held) == 1
        results = await asyncio.gather(*failing, return_exceptions=True)
        assert all(isinstance(r, StoreError) for r in results), results
        assert [len(commands) for commands, _ in s.store.calls] == [1, 3]
        assert actor.running
        assert score(await actor.ask(cmd("alice", 1))) == 5  # the failed batch did land
        assert s.store.calls[-1][1] is None  # and its record is not taken as known


async def test_after_an_admin_action_the_known_record_is_the_admins() -> None:
    async with running() as s:
        actor = s.registry.actor_for("alice")
        assert score(await actor.ask(cmd("alice", 50))) == 50
        reset = await actor.ask(AdminCommand(AdminAction.RESET, T0 + 1))
        assert isinstance(reset, UserRecord) and (reset.score, reset.v) == (0, 2)
        assert score(await actor.ask(cmd("alice", 2))) == 2  # not 52: the reset holds
        assert s.store.calls[-1][1] == reset

        removed = await actor.ask(AdminCommand(AdminAction.REMOVE, T0 + 2))
        assert isinstance(removed, UserRecord) and removed.banned
        assert isinstance(await actor.ask(cmd("alice", 1)), Banned)
        assert s.store.calls[-1][1] == removed
        lifted = await actor.ask(AdminCommand(AdminAction.UNBAN, T0 + 3))
        assert score(await actor.ask(cmd("alice", 3))) == 3
        assert s.store.calls[-1][1] == lifted

        # An admin action on a user the store does not have: nothing is known.
        ghost = s.registry.actor_for("ghost")
        assert await ghost.ask(AdminCommand(AdminAction.RESET, T0)) is None
        assert score(await ghost.ask(cmd("ghost", 4))) == 4
        assert s.store.calls[-1][1] is None


async def test_after_a_failed_admin_action_the_next_call_passes_no_known_record() -> None:
    async with running() as s:
        actor = s.registry.actor_for("alice")
        assert score(await actor.ask(cmd("alice", 50))) == 50
        s.store.admin_fails_after_write = StoreError("connection lost")
        with pytest.raises(StoreError):
            await actor.ask(AdminCommand(AdminAction.RESET, T0 + 1))
        s.store.admin_fails_after_write = None
        assert score(await actor.ask(cmd("alice", 2))) == 2  # the reset did land
        assert s.store.calls[-1][1] is None


async def test_a_newer_write_seen_on_the_feed_drops_the_known_record() -> None:
    async with running() as s:
        actor = s.registry.actor_for("alice")
        await actor.ask(cmd("alice", 1))  # known: v1
        s.registry.saw_version("alice", 1)  # its own write coming back: still good
        await actor.ask(cmd("alice", 1))
        assert s.store.calls[-1][1] is not None and s.store.calls[-1][1].v == 1
        s.registry.saw_version("alice", 5)  # another pod wrote v5: v2 is stale
        s.registry.saw_version("nobody", 9)  # no actor: nothing to do
        await actor.ask(cmd("alice", 1))
        assert s.store.calls[-1][1] is None
        s.registry.forget_known()  # the feed lost track: read afresh
        await actor.ask(cmd("alice", 1))
        assert s.store.calls[-1][1] is None


async def test_the_board_is_not_told_of_users_who_stay_outside_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running() as s:
        told = tells_to_the_board(s, monkeypatch)
        capacity = 10 + max(10, 10)  # the top 10 plus headroom, as the board keeps
        for i in range(capacity + 1):  # one more than the cache holds: now incomplete
            user = f"u{i:02d}"
            assert score(await s.registry.actor_for(user).ask(cmd(user, 100 - i))) == 100 - i
        await eventually(s.top_rows, "ten rows", until=lambda rows: len(rows) == 10)
        assert len(told) == capacity + 1  # the cache held everyone until then: all told
        told.clear()
        # An outsider below the last cached row: not told, and the board is unchanged.
        before = s.top_rows()
        assert score(await s.registry.actor_for("low").ask(cmd("low", 1))) == 1
        assert told == []
        await asyncio.sleep(0.05)
        assert s.top_rows() == before
        # A member and an outsider climbing into the board are told.
        assert score(await s.registry.actor_for("u05").ask(cmd("u05", 1))) == 96
        assert score(await s.registry.actor_for("low").ask(cmd("low", 500))) == 501
        assert [change.row.user_id for change in told] == ["u05", "low"]
        # Both shown: low on top, u05 level with u04 at 96, and u09 off the board.
        scores = [501, 100, 99, 98, 97, 96, 96, 94, 93, 92]
        rows = await eventually(
            s.top_rows,
            "both told changes shown",
            until=lambda rows: [r["score"] for r in rows] == scores,
        )
        assert rows[0] == {"user_id": "low", "username": "Low", "score": 501}
        assert {row["user_id"] for row in rows[5:7]} == {"u04", "u05"}


async def test_every_applied_write_reaches_the_rank_index_even_outside_the_board() -> None:
    async with running() as s:
        for i in range(25):  # more than the board keeps: most stay outside it
            user = f"u{i:02d}"
            assert score(await s.registry.actor_for(user).ask(cmd(user, 100 - i))) == 100 - i
        assert len(s.ranks) == 25  # synchronous: ranked once the ask answered
        assert s.ranks.rank_of("u24") == 25
        # A batch of queued increments: the index holds the batch's last state.
        s.store.gate.clear()
        actor = s.registry.actor_for("u24")
        first = asyncio.ensure_future(actor.ask(cmd("u24", 1)))
        await s.store.entered.wait()
        rest = [asyncio.ensure_future(actor.ask(cmd("u24", 50))) for _ in range(2)]
        await asyncio.sleep(0)
        s.store.gate.set()
        assert [score(d) for d in await asyncio.gather(first, *rest)] == [77, 127, 177]
        assert s.ranks.get("u24") == await s.sqlite.get_score("u24")
        assert s.ranks.rank_of("u24") == 1
        # Admin actions: a reset moves the player down, a removal takes them off, an
        # unban brings them back (at score 0).
        await actor.ask(AdminCommand(AdminAction.RESET, T0 + 1))
        assert s.ranks.rank_of("u24") == 25
        await s.registry.actor_for("u00").ask(AdminCommand(AdminAction.REMOVE, T0 + 2))
        assert "u00" not in s.ranks and len(s.ranks) == 24
        await s.registry.actor_for("u00").ask(AdminCommand(AdminAction.UNBAN, T0 + 3))
        assert s.ranks.rank_of("u00") == 25  # score 0, reached after u24's reset


async def test_while_a_failed_refill_is_owed_every_update_is_told_and_retries_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running() as s:
        capacity = 10 + max(10, 10)  # the top 10 plus headroom, as the board keeps
        for i in range(capacity + 10):
            user = f"u{i:02d}"
            await s.registry.actor_for(user).ask(cmd(user, 100 - i))
        await eventually(lambda: s.top_rows()[0]["user_id"] == "u00", "u00 on top")
        # The store cannot list the top while the admins remove eleven of the cached users:
        # the board is left short, and its refill fails.
        real_top = s.store.top

        async def unavailable(limit: int) -> Any:
            raise StoreError("the store is down")

        monkeypatch.setattr(s.store, "top", unavailable)
        for i in range(11):
            user = f"u{i:02d}"
            await s.registry.actor_for(user).ask(AdminCommand(AdminAction.REMOVE, T0 + 1))
        await eventually(
            s.top_rows, "the board short", until=lambda rows: len(rows) == capacity - 11
        )
        assert len(s.top_rows()) < 10
        # The store is back. A user far below the board updates: that retries the refill.
        monkeypatch.setattr(s.store, "top", real_top)
        told = tells_to_the_board(s, monkeypatch)
        assert score(await s.registry.actor_for("u29").ask(cmd("u29", 1))) == 72
        assert len(told) == 1
        expected = [f"u{i:02d}" for i in range(11, 21)]
        await eventually(
            s.top_rows, "refilled", until=lambda rows: [r["user_id"] for r in rows] == expected
        )


# --- a cap on live actors (issue 11, finding 9) --------------------------------------------


async def test_a_full_registry_displaces_the_least_recently_used_idle_actor() -> None:
    displaced: list[None] = []
    async with running(max_actors=3, on_displaced=lambda: displaced.append(None)) as s:
        actors = {u: s.registry.actor_for(u) for u in ("alice", "bob", "carol")}
        for user, actor in actors.items():
            await actor.ask(cmd(user))
        assert s.registry.actor_for("alice") is actors["alice"]  # alice: used again
        dave = s.registry.actor_for("dave")
        assert len(s.registry) == 3
        assert len(displaced) == 1
        # bob was the least recently used: stopped, and a new actor if he comes back.
        await eventually(lambda: not actors["bob"].running, "bob's actor stopped")
        assert s.registry.actor_for("alice") is actors["alice"]
        assert s.registry.actor_for("carol") is actors["carol"]
        assert s.registry.actor_for("dave") is dave
        assert score(await dave.ask(cmd("dave"))) == 1
        # bob's score was kept by the store, not by his actor.
        again = s.registry.actor_for("bob")
        assert again is not actors["bob"]
        assert score(await again.ask(cmd("bob"))) == 2
        assert len(s.registry) == 3


async def test_busy_actors_are_passed_over_and_a_registry_of_busy_ones_refuses() -> None:
    async with running(max_actors=2) as s:
        alice, bob = s.registry.actor_for("alice"), s.registry.actor_for("bob")
        await bob.ask(cmd("bob"))
        s.store.gate.clear()
        in_progress = alice.ask(cmd("alice"))  # alice is the least recently used, and busy
        await asyncio.wait_for(s.store.entered.wait(), scaled(2))
        carol = s.registry.actor_for("carol")  # bob, idle, makes room
        await eventually(lambda: not bob.running, "bob's actor stopped")
        assert alice.running
        queued = carol.ask(cmd("carol"))
        # Now every actor is busy (alice in the store, carol queued behind the gate).
        with pytest.raises(RegistryFull):
            s.registry.actor_for("dave")
        assert len(s.registry) == 2
        s.store.gate.set()
        assert score(await in_progress) == 1
        assert score(await queued) == 1
        dave = s.registry.actor_for("dave")  # idle ones again: room
        assert score(await dave.ask(cmd("dave"))) == 1
        assert len(s.registry) == 2


async def test_a_sweep_evicts_a_slice_at_a_time_and_spares_what_was_used_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("actors.user._SWEEP_SLICE", 10)
    clock = FakeClock()
    async with running(idle_s=10, clock=clock, sweeper=False) as s:
        actors = [s.registry.actor_for(f"u{i:02d}") for i in range(35)]
        for actor in actors:
            await actor.ask(cmd(actor.user_id))
        clock.now += 11  # every one idle long enough
        seen: list[int] = []

        async def watch() -> None:
            while True:
                seen.append(len(s.registry))
                if len(seen) == 2:  # the first slice went: the last user comes back
                    await s.registry.actor_for("u34").ask(cmd("u34"))
                await asyncio.sleep(0)

        watcher = asyncio.ensure_future(watch())
        try:
            assert await s.registry.sweep() == 34
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        assert 25 in seen and 15 in seen  # the loop ran between slices
        assert s.registry.actor_for("u34") is actors[34]  # used meanwhile: kept
        assert len(s.registry) == 1


async def test_each_call_builds_on_what_the_store_holds_whoever_wrote_it() -> None:
    """Another writer (a pod on the same database, an admin) writes the user between two
    asks of its actor: the actor's next answer counts that write, and replays its key."""
    async with running() as s:
        actor = s.registry.actor_for("alice")
        assert score(await actor.ask(cmd("alice", 1, key="a"))) == 1
        # Behind the actor's back, as another pod would: the store alone, twice.
        assert score((await s.sqlite.apply_increments([cmd("alice", 10, key="b")]))[0]) == 11
        assert score((await s.sqlite.apply_increments([cmd("alice", 5)]))[0]) == 16
        assert score(await actor.ask(cmd("alice", 100))) == 116
        replay = await actor.ask(cmd("alice", 7, key="b"))  # the other writer's key
        assert not isinstance(replay, Applied) and replay.new_score == 11
        reset = await s.sqlite.apply_admin("alice", AdminAction.RESET.change(T0 + 1))
        assert reset is not None and reset.score == 0
        assert score(await actor.ask(cmd("alice", 2))) == 2  # not 118: the reset holds
        assert await s.sqlite.get_score("alice") == BoardRow("alice", "Alice", 2, T0, 6)
