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
from actors.user import UserActor, UserRegistry
from server.store.increments import IncrementPolicy
from server.store.records import Applied, Decision, IncrementCommand, RankedScore, UserRecord
from server.store.sqlite import SqliteStore
from tests.conftest import scaled

pytestmark = pytest.mark.gen_test(timeout=scaled(15))

POLICY = IncrementPolicy(rate_limit_per_minute=0, idempotency_keys=64)
T0 = 1_700_000_000_000


def cmd(user: str = "alice", amount: int = 1, *, key: str | None = None) -> IncrementCommand:
    return IncrementCommand(user, user.title(), amount, T0, key)


class GatedStore:
    """A real store whose ``apply_increment`` waits at a gate (open unless closed by a test)
    and says when a call reached it, so a test can hold an actor busy."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def apply_increment(self, command: IncrementCommand) -> Decision:
        self.entered.set()
        await self.gate.wait()
        return await self.inner.apply_increment(command)

    async def apply_increments(
        self, commands: list[IncrementCommand], known: UserRecord | None = None
    ) -> list[Decision]:
        self.entered.set()
        await self.gate.wait()
        return await self.inner.apply_increments(commands, known)

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

    def top_rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.leaderboard.top_scores_body)["top_scores"]
        return rows


@asynccontextmanager
async def running(
    *,
    idle_s: float = 60.0,
    mailbox_size: int = 0,
    clock: Callable[[], float] = time.monotonic,
    sweeper: bool = True,
) -> AsyncIterator[System]:
    sqlite = SqliteStore(":memory:", POLICY)
    await sqlite.open()
    store = GatedStore(sqlite)
    leaderboard = LeaderboardActor(store, top_n=10, broadcast_interval_s=0)
    registry = UserRegistry(
        store, leaderboard, mailbox_size=mailbox_size, idle_s=idle_s, clock=clock
    )
    try:
        await leaderboard.load()
        leaderboard.start()
        if sweeper:
            registry.start()
        yield System(sqlite, store, leaderboard, registry)
    finally:
        store.gate.set()
        await registry.stop()
        await leaderboard.stop()
        await sqlite.close()


async def eventually(predicate: Callable[[], bool], timeout_s: float = 2.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout_s`` (scaled) passed; return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scaled(timeout_s)
    while not predicate():
        if loop.time() > deadline:
            return predicate()
        await asyncio.sleep(0.005)
    return True


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
        assert await eventually(lambda: s.top_rows() == expected), s.top_rows()
        alice = s.registry.actor_for("alice")
        assert score(await alice.ask(cmd("alice", 4, key="k"))) == 9
        expected = [expected[1] | {"score": 9}, expected[0]]
        assert await eventually(lambda: s.top_rows() == expected), s.top_rows()
        # A replayed key answers the first result and changes nothing.
        assert (await alice.ask(cmd("alice", 4, key="k"))).new_score == 9
        assert await s.sqlite.get_score("alice") == RankedScore("alice", "Alice", 9, T0, 2)


async def test_idle_actors_are_evicted_and_recreated_on_the_next_request() -> None:
    async with running(idle_s=0.05) as s:
        first = s.registry.actor_for("alice")
        assert score(await first.ask(cmd("alice", 3))) == 3
        assert await eventually(lambda: len(s.registry) == 0), "the idle actor was not evicted"
        assert await eventually(lambda: not first.running), "the evicted actor did not stop"
        with pytest.raises(ActorStopped):
            first.ask(cmd("alice"))

        again = s.registry.actor_for("alice")
        assert again is not first
        assert again.running
        assert score(await again.ask(cmd("alice", 4))) == 7
        assert await eventually(
            lambda: s.top_rows() == [{"user_id": "alice", "username": "Alice", "score": 7}]
        )


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
        assert await eventually(lambda: len(s.registry) == 0)


async def test_evict_idle_skips_busy_and_queued_actors_by_the_clock() -> None:
    clock = FakeClock()
    async with running(idle_s=10, clock=clock, sweeper=False) as s:
        actor = s.registry.actor_for("alice")
        s.store.gate.clear()
        first = actor.ask(cmd("alice"))  # queued, not yet taken
        clock.now += 100
        assert actor.idle_since(clock.now) == 0
        assert s.registry.evict_idle() == 0
        await asyncio.wait_for(s.store.entered.wait(), scaled(2))  # now busy in the store
        clock.now += 100
        assert s.registry.evict_idle() == 0
        s.store.gate.set()
        assert score(await first) == 1

        clock.now += 9  # idle, but not long enough
        assert s.registry.evict_idle() == 0
        assert s.registry.actor_for("alice") is actor
        clock.now += 1
        assert s.registry.evict_idle() == 1
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
