"""Several app instances ("pods") on one shared store, and the scenarios they must pass.

Each pod is a real server on its own port, with its own store object, actors and change
feed follower; they share only the database (one SQLite file, one mongomock database, or
one real MongoDB replica set) and, in process, the change feed. ``test_pods.py`` runs the
scenarios on the embedded store and mongomock; ``test_pods_mongodb.py`` on a real replica
set.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from server.domain.rank_index import RankIndex
from server.settings import Settings
from server.store.changes import ChangeEvent, ChangeFeed, ChangeStream, FeedInterrupted
from server.store.port import ScoreStore
from tests.conftest import Client, eventually, make_token, scaled, serving

StoreFactory = Callable[[Settings], ScoreStore]
Rows = list[dict[str, Any]]


class PausableFeed:
    """Wraps a pod's change feed; :meth:`pause` cuts it like a network outage would."""

    def __init__(self, inner: ChangeFeed) -> None:
        self.inner = inner
        self.paused = False
        self._streams: set[_PausableStream] = set()

    async def watch(self, resume_token: object | None) -> ChangeStream:
        if self.paused:
            raise FeedInterrupted("cut by the test")
        stream = _PausableStream(self, await self.inner.watch(resume_token))
        self._streams.add(stream)
        return stream

    def pause(self) -> None:
        self.paused = True
        for stream in tuple(self._streams):
            stream.cut.set()

    def resume(self) -> None:
        self.paused = False


class _PausableStream:
    def __init__(self, feed: PausableFeed, inner: ChangeStream) -> None:
        self._feed = feed
        self._inner = inner
        self.cut = asyncio.Event()

    @property
    def resume_token(self) -> object | None:
        return self._inner.resume_token

    async def next_batch(self) -> list[ChangeEvent]:
        if self.cut.is_set():
            raise FeedInterrupted("cut by the test")
        batch = asyncio.ensure_future(self._inner.next_batch())
        cut = asyncio.ensure_future(self.cut.wait())
        try:
            await asyncio.wait({batch, cut}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (batch, cut):
                task.cancel()
        if batch.done() and not batch.cancelled():
            return batch.result()
        raise FeedInterrupted("cut by the test")

    async def close(self) -> None:
        self._feed._streams.discard(self)
        await self._inner.close()


@dataclass
class Pod:
    client: Client
    store: ScoreStore
    feed: PausableFeed

    def restarts(self, reason: str) -> float:
        value = self.client.running.service.metrics.registry.get_sample_value(
            "scoreboard_change_stream_restarts_total", {"reason": reason}
        )
        return value or 0.0


@dataclass
class Cluster:
    """Pods on one shared store; :meth:`add_pod` starts one more."""

    settings: Settings
    make_store: StoreFactory
    pods: list[Pod] = field(default_factory=list)
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def add_pod(self) -> Pod:
        store = self.make_store(self.settings)
        feed = PausableFeed(store.changes)
        store.changes = feed  # type: ignore[misc]  # the follower reads the wrapped feed
        client = await self._stack.enter_async_context(serving(self.settings, store=store))
        pod = Pod(client, store, feed)
        self.pods.append(pod)
        return pod

    async def start(self, count: int) -> list[Pod]:
        return [await self.add_pod() for _ in range(count)]

    async def __aenter__(self) -> Cluster:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def truth(self, n: int = 10) -> Rows:
        """The top ``n`` as the store has it: what every pod must converge to."""
        ranked = await self.pods[0].store.top(n)
        return [{"user_id": r.user_id, "username": r.username, "score": r.score} for r in ranked]


async def converged(cluster: Cluster, timeout_s: float = 5.0) -> Rows:
    """Wait until every pod serves the store's top 10; return it."""
    truth = await cluster.truth()

    async def tops() -> list[Rows]:
        return [await pod.client.top() for pod in cluster.pods]

    await eventually(
        tops,
        f"every pod serves {truth}",
        until=lambda served: all(top == truth for top in served),
        timeout_s=timeout_s,
    )
    return truth


def ranks(pod: Pod) -> RankIndex:
    """The pod's rank index as it is now."""
    return pod.client.running.service.ranks


async def ranks_converged(cluster: Cluster, timeout_s: float = 5.0) -> list[str]:
    """Wait until every pod's rank index holds the store's whole board, in its order;
    return the user ids in that order."""
    truth = [row.user_id for row in await cluster.pods[0].store.top(1_000_000)]

    def orders() -> list[list[str]]:
        return [[r.user_id for _, r in ranks(pod).page(1, len(truth) + 1)] for pod in cluster.pods]

    await eventually(
        orders,
        f"every pod ranks {truth}",
        until=lambda held: all(order == truth for order in held),
        timeout_s=timeout_s,
    )
    return truth


async def ban(pod: Pod, user: str) -> int:
    """Remove and ban ``user`` through pod ``pod``'s admin route."""
    response = await pod.client.request(
        "DELETE", f"/api/users/{user}", None, {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    return response.code


ADMIN_TOKEN = make_token("ops", scope="scores:admin", ttl_s=3600)


async def update(pod: Pod, user: str, amount: int = 1, key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key else None
    response = await pod.client.update(make_token(user), {"increment": amount}, headers=headers)
    return response.code, json.loads(response.body)


# --- the scenarios ---------------------------------------------------------------------


async def live_update_reaches_other_pods(cluster: Cluster) -> None:
    """A watcher on pod C sees, within 1 s, an update that pod A accepted."""
    a, _b, c = await cluster.start(3)
    socket = await c.client.websocket()
    try:
        snapshot = json.loads(await socket.read_message())
        assert snapshot["event"] == "snapshot"
        started = time.monotonic()
        code, _ = await update(a, "alice", 7)
        assert code == 200
        while True:
            message = await asyncio.wait_for(socket.read_message(), scaled(1.0))
            assert message is not None, "pod C closed the stream"
            rows = json.loads(message)["top_scores"]
            if any(row["user_id"] == "alice" and row["score"] == 7 for row in rows):
                break
        assert time.monotonic() - started < scaled(1.0)
    finally:
        socket.close()


async def limits_hold_across_pods(cluster: Cluster) -> None:
    """10 updates per minute in total, and one idempotency key, whichever pod takes them."""
    pods = await cluster.start(3)
    results = await asyncio.gather(*(update(pods[i % 3], "rita") for i in range(15)))
    codes = sorted(code for code, _ in results)
    assert codes == [200] * 10 + [429] * 5, codes
    assert max(body["new_score"] for code, body in results if code == 200) == 10

    answers = await asyncio.gather(*(update(pod, "ivan", 5, key="once") for pod in pods))
    answers += [await update(pod, "ivan", 5, key="once") for pod in pods]
    assert {code for code, _ in answers} == {200}
    assert {body["new_score"] for _, body in answers} == {5}
    truth = await converged(cluster)
    assert {"user_id": "ivan", "username": "ivan", "score": 5} in truth


async def pods_converge_after_random_load(cluster: Cluster, updates: int = 240) -> None:
    """Concurrent updates of 40 users on random pods: every pod ends with the store's top."""
    pods = await cluster.start(3)
    rng = random.Random(5)
    jobs = [
        (rng.choice(pods), f"user-{rng.randrange(40)}", rng.randint(1, 50)) for _ in range(updates)
    ]
    for start in range(0, len(jobs), 24):
        results = await asyncio.gather(*(update(*job) for job in jobs[start : start + 24]))
        assert {code for code, _ in results} == {200}
    truth = await converged(cluster)
    assert len(truth) == 10
    late = await cluster.add_pod()
    assert await late.client.top() == truth, "a pod started after the load"


async def recovers_from_interruption(cluster: Cluster) -> None:
    """A pod whose stream breaks resumes from its token and misses nothing."""
    a, b, _c = await cluster.start(3)
    b.feed.pause()
    for i in range(5):
        assert (await update(a, f"gap-{i}", 10 + i))[0] == 200
    b.feed.resume()
    await converged(cluster)
    assert b.restarts("interrupted") >= 1
    assert b.restarts("history_lost") == 0


async def recovers_from_history_loss(cluster: Cluster, writes: int) -> None:
    """A pod that was away longer than the feed's history reloads the top K and catches up."""
    a, b, _c = await cluster.start(3)
    b.feed.pause()
    for i in range(writes):
        assert (await update(a, f"away-{i}", 1 + i))[0] == 200
    b.feed.resume()
    truth = await converged(cluster)
    assert truth[0] == {
        "user_id": f"away-{writes - 1}",
        "username": f"away-{writes - 1}",
        "score": writes,
    }
    assert b.restarts("history_lost") >= 1


async def a_write_moves_the_rank_on_other_pods(cluster: Cluster) -> None:
    """A write on pod A moves the rank pod B answers within 1 s; a ban on pod B takes the
    player out of both pods' rank index."""
    a, b = await cluster.start(2)
    for user, amount in [("ann", 30), ("bob", 20), ("cy", 10)]:
        assert (await update(a, user, amount))[0] == 200
    await ranks_converged(cluster)
    assert ranks(b).rank_of("cy") == 3
    started = time.monotonic()
    assert (await update(a, "cy", 25))[0] == 200  # 35: first
    await eventually(lambda: ranks(b).rank_of("cy"), "cy first on pod B", until=lambda r: r == 1)
    assert time.monotonic() - started < scaled(1.0)
    assert ranks(a).rank_of("cy") == 1  # the writing pod: at once, from its own write
    assert ranks(b).get("cy") == await b.store.get_score("cy")
    assert len(ranks(b)) == 3

    assert await ban(b, "ann") == 200
    for pod in (a, b):
        await eventually(lambda pod=pod: "ann" not in ranks(pod), "ann unranked", timeout_s=1.0)
    assert [ranks(pod).rank_of("bob") for pod in (a, b)] == [2, 2]
    assert await ranks_converged(cluster) == ["cy", "bob"]


async def a_late_pod_loads_the_ranks(cluster: Cluster) -> None:
    """A pod started after the writes (and a ban) loads every ranked player from the store."""
    a, b = await cluster.start(2)
    for i in range(30):
        assert (await update((a, b)[i % 2], f"p{i:02d}", 1 + (i * 7) % 13))[0] == 200
    assert await ban(a, "p03") == 200
    truth = await ranks_converged(cluster)
    assert len(truth) == 29 and "p03" not in truth
    late = await cluster.add_pod()
    assert [r.user_id for _, r in ranks(late).page(1, 100)] == truth
    assert (await update(late, "p03", 5))[0] == 403  # still banned
    assert (await update(late, "p00", 100))[0] == 200
    assert await ranks_converged(cluster) == ["p00", *(u for u in truth if u != "p00")]
