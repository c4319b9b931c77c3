"""Three app instances on one embedded store behave like pods on one MongoDB.

Each scenario (``tests/server/pods.py``) runs on one SQLite file shared by every pod's own
store object, and on one mongomock database; the in-process change feed carries each
pod's writes to the others, as MongoDB's change stream does between real pods.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from mongomock_motor import AsyncMongoMockClient

from server.domain.increments import IncrementPolicy
from server.settings import Settings
from server.store.changes import LocalChangeFeed
from server.store.mongodb import MongoStore
from server.store.port import ScoreStore
from server.store.sqlite import SqliteStore
from tests.conftest import settings_for
from tests.server import pods
from tests.server.pods import Cluster

HISTORY = 16  # events the in-process feed remembers: small, so a pod can fall behind it


@pytest.fixture(params=["sqlite", "mongomock"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Cluster:
    feed = LocalChangeFeed(history=HISTORY)
    settings = settings_for(sqlite_path=str(tmp_path / "scores.db"), rate_limit_per_minute=10)
    if request.param == "sqlite":

        def make_store(settings: Settings) -> ScoreStore:
            policy = IncrementPolicy(rate_limit_per_minute=settings.rate_limit_per_minute)
            path, synchronous = settings.sqlite_path, settings.sqlite_synchronous
            return SqliteStore(path, policy, synchronous=synchronous, feed=feed)

    else:
        database = AsyncMongoMockClient()["pods"]

        def make_store(settings: Settings) -> ScoreStore:
            policy = IncrementPolicy(rate_limit_per_minute=settings.rate_limit_per_minute)
            return MongoStore(database, policy, feed=feed)

    return Cluster(settings, make_store)


@pytest.mark.gen_test(timeout=30)
async def test_a_watcher_on_one_pod_sees_an_update_taken_by_another(cluster: Cluster) -> None:
    async with cluster:
        await pods.live_update_reaches_other_pods(cluster)


@pytest.mark.gen_test(timeout=30)
async def test_rate_limit_and_idempotency_hold_whichever_pod_takes_a_request(
    cluster: Cluster,
) -> None:
    async with cluster:
        await pods.limits_hold_across_pods(cluster)


@pytest.mark.gen_test(timeout=60)
async def test_every_pod_converges_to_the_store_after_random_load(cluster: Cluster) -> None:
    cluster.settings = replace(cluster.settings, rate_limit_per_minute=0)
    async with cluster:
        await pods.pods_converge_after_random_load(cluster)


@pytest.mark.gen_test(timeout=30)
async def test_a_pod_resumes_its_feed_after_an_interruption(cluster: Cluster) -> None:
    async with cluster:
        await pods.recovers_from_interruption(cluster)


@pytest.mark.gen_test(timeout=30)
async def test_a_pod_reloads_after_its_feed_history_was_lost(cluster: Cluster) -> None:
    async with cluster:
        await pods.recovers_from_history_loss(cluster, writes=HISTORY * 2)


@pytest.mark.gen_test(timeout=30)
async def test_a_write_on_one_pod_moves_the_rank_another_pod_answers(cluster: Cluster) -> None:
    async with cluster:
        await pods.a_write_moves_the_rank_on_other_pods(cluster)


@pytest.mark.gen_test(timeout=30)
async def test_a_pod_started_after_the_writes_loads_their_ranks(cluster: Cluster) -> None:
    async with cluster:
        await pods.a_late_pod_loads_the_ranks(cluster)


@pytest.mark.gen_test(timeout=30)
async def test_a_pod_whose_feed_lost_its_history_reloads_its_ranks(cluster: Cluster) -> None:
    """Pod B missed writes its feed no longer holds: only a reload from the store can
    rank them there."""
    async with cluster:
        await pods.recovers_from_history_loss(cluster, writes=HISTORY * 2)
        truth = await pods.ranks_converged(cluster)
        assert len(truth) == HISTORY * 2


@pytest.mark.gen_test(timeout=30)
async def test_a_pod_drops_its_record_of_a_user_another_pod_wrote(cluster: Cluster) -> None:
    """The service wires its follower to its user actors: a write seen on the feed makes
    the actor that holds an older record read afresh instead of failing a write."""
    async with cluster:
        a, b = await cluster.start(2)
        assert (await pods.update(a, "dora", 3))[0] == 200
        actor = a.client.running.service.users.actor_for("dora")
        assert actor._known is not None and actor._known.v == 1
        assert (await pods.update(b, "dora", 4))[0] == 200  # v2, written by pod b
        await pods.converged(cluster)  # pod a has seen v2 on its feed
        assert actor._known is None


@pytest.mark.gen_test(timeout=30)
async def test_updates_of_one_user_on_two_pods_count_exactly_once(cluster: Cluster) -> None:
    """Two pods write one user in turn and at once: each answer counts every update the
    other pod applied before it, and a key retried on the other pod is never applied twice."""
    cluster.settings = replace(cluster.settings, rate_limit_per_minute=0)

    async def new_score(pod: pods.Pod, amount: int, key: str | None = None) -> int:
        code, body = await pods.update(pod, "dora", amount, key)
        assert code == 200, body
        score: int = body["new_score"]
        return score

    async with cluster:
        a, b = await cluster.start(2)
        assert await new_score(a, 3) == 3
        assert await new_score(b, 4) == 7
        assert await new_score(a, 5) == 12  # counts pod b's write
        keys = [f"k{i}" for i in range(10)]
        first = await asyncio.gather(*(new_score((a, b)[i % 2], 1, k) for i, k in enumerate(keys)))
        assert sorted(first) == list(range(13, 23))
        again = await asyncio.gather(*(new_score((b, a)[i % 2], 1, k) for i, k in enumerate(keys)))
        assert again == first  # each key's own answer, from the other pod
        truth = await pods.converged(cluster)
        assert {"user_id": "dora", "username": "dora", "score": 22} in truth
