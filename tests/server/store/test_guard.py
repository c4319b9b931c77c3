"""GuardedStore around a fake adapter: writes refused while the store is known to be
down, reads never refused, the probe closing and opening the way."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from server.domain.admin import AdminAction
from server.domain.records import Applied, BoardRow, IncrementCommand, UserRecord
from server.store.breaker import BreakerState
from server.store.changes import NoOtherWriters
from server.store.guard import GuardedStore
from server.store.port import StoreError, StoreTimeout, StoreUnavailable
from tests.conftest import eventually, scaled
from tests.server.store.support import apply_one

pytestmark = pytest.mark.gen_test(timeout=scaled(10))

INTERVAL = 1.0
CMD = IncrementCommand("u1", "U1", 1, 0, None)
RECORD = UserRecord("u1", "U1", 1, 1, 0)


class Adapter:
    """A store whose every call answers ``answer`` (raised if it is an exception)."""

    def __init__(self) -> None:
        self.changes = NoOtherWriters()
        self.answer: Any = None
        self.healthy = True
        self.calls: list[str] = []

    async def _do(self, name: str, result: Any) -> Any:
        self.calls.append(name)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return result

    async def open(self) -> None:
        self.calls.append("open")

    async def close(self) -> None:
        self.calls.append("close")

    async def ping(self) -> bool:
        self.calls.append("ping")
        return self.healthy

    async def apply_increments(self, cmds: list[IncrementCommand], known: Any = None) -> Any:
        return await self._do("write", [Applied(RECORD)])

    async def apply_admin(self, user_id: str, change: Any, blank: Any = None) -> Any:
        return await self._do("admin", RECORD)

    async def top(self, limit: int) -> Any:
        return await self._do("top", [BoardRow("u1", "U1", 1, 0, 1)])

    async def rank(self, user_id: str) -> Any:
        return await self._do("rank", 1)

    async def get_score(self, user_id: str) -> Any:
        return await self._do("get_score", None)

    async def get_user(self, user_id: str) -> Any:
        return await self._do("get_user", None)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def guarded() -> tuple[GuardedStore, Adapter, Clock]:
    adapter, clock = Adapter(), Clock()
    return GuardedStore(adapter, probe_interval_s=INTERVAL, clock=clock), adapter, clock


async def test_writes_are_refused_until_the_first_probe_passes_and_reads_are_not() -> None:
    store, adapter, _ = guarded()
    assert store.refusing()
    with pytest.raises(StoreUnavailable):
        await apply_one(store, CMD)
    assert await store.top(10)  # the board can load before the store took a write
    assert adapter.calls == ["top"]
    assert store.ok_at() is None
    assert await store.probe()
    assert not store.refusing()
    assert await apply_one(store, CMD) == Applied(RECORD)
    assert store.ok_at() == 100.0


async def test_an_unavailable_store_opens_the_breaker_and_later_writes_fail_at_once() -> None:
    store, adapter, clock = guarded()
    await store.probe()
    adapter.answer = StoreUnavailable("no primary")
    with pytest.raises(StoreUnavailable):
        await store.apply_increments([CMD])
    assert store.refusing()
    assert store.retry_after_s() == 1
    adapter.calls.clear()
    for _ in range(3):
        with pytest.raises(StoreUnavailable):
            await store.apply_admin("u1", AdminAction.RESET.change(0))
    assert adapter.calls == []  # none reached the adapter
    # Past the open time one trial goes; its success closes the breaker.
    clock.now += INTERVAL
    adapter.answer = None
    assert not store.refusing()
    assert await store.apply_admin("u1", AdminAction.RESET.change(0)) == RECORD
    assert store.breaker.closed


@pytest.mark.parametrize(
    ("error", "state"),
    [
        (StoreUnavailable("down"), BreakerState.OPEN),
        (StoreTimeout("slow"), BreakerState.OPEN),  # abandoned: the next call may try
        (StoreError("a bug"), BreakerState.CLOSED),  # it answered: not the outage
    ],
)
async def test_how_a_trial_ends_decides_the_next_state(
    error: StoreError, state: BreakerState
) -> None:
    store, adapter, clock = guarded()
    await store.probe()
    adapter.answer = StoreUnavailable("down")
    with pytest.raises(StoreUnavailable):
        await store.apply_increments([CMD])
    clock.now += INTERVAL
    adapter.answer = error
    with pytest.raises(type(error)):
        await store.apply_increments([CMD])
    assert store.breaker.state is state


async def test_a_trial_cancelled_midway_lets_the_next_call_try() -> None:
    store, adapter, clock = guarded()
    await store.probe()
    adapter.answer = StoreUnavailable("down")
    with pytest.raises(StoreUnavailable):
        await store.apply_increments([CMD])
    clock.now += INTERVAL
    adapter.answer = None
    gate = asyncio.Event()
    adapter._do = lambda name, result: gate.wait()  # type: ignore[method-assign,assignment]
    trial = asyncio.ensure_future(store.apply_increments([CMD]))
    await asyncio.sleep(0)
    assert store.breaker.state is BreakerState.HALF_OPEN
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert store.breaker.admit(clock.now)


async def test_an_unavailable_read_opens_the_breaker_too() -> None:
    store, adapter, _ = guarded()
    await store.probe()
    adapter.answer = StoreUnavailable("no primary")
    for read in (store.top(10), store.rank("u1"), store.get_score("u1")):
        with pytest.raises(StoreUnavailable):
            await read
    assert store.refusing()


async def test_the_probe_closes_and_opens_the_way_and_says_since_when_it_passes() -> None:
    store, adapter, clock = guarded()
    await store.probe()
    adapter.healthy = False
    clock.now = 105.0
    assert not await store.probe()
    assert store.refusing()
    assert store.ok_at() == 100.0  # the last pass
    adapter.healthy = True
    clock.now = 106.0
    assert await store.probe()
    assert not store.refusing()
    clock.now = 107.0
    assert store.ok_at() == 107.0  # passing: well as of now


async def test_the_background_probe_runs_until_close() -> None:
    adapter = Adapter()
    store = GuardedStore(adapter, probe_interval_s=0.01)
    await store.open()
    store.start_probing()
    with pytest.raises(RuntimeError):
        store.start_probing()
    await eventually(lambda: adapter.calls.count("ping") >= 3, "three probes")
    assert store.breaker.closed
    await store.close()
    pings = adapter.calls.count("ping")
    await asyncio.sleep(0.05)
    assert adapter.calls.count("ping") == pings
    assert adapter.calls[0] == "open" and adapter.calls[-1] == "close"
    assert store.changes is adapter.changes
