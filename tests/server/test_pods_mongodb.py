"""The multi-pod scenarios against a real MongoDB replica set, through its change stream.

Runs when ``SCOREBOARD_TEST_MONGODB_URI`` names a replica set (a single-node one is
enough: ``docs/deploy.md`` shows how to start one); reported as skipped otherwise. Each
pod gets its own ``AsyncMongoClient``, store and change stream, exactly as in production;
each test uses a database of its own and drops it afterwards.

Not run here: the lost-history scenario. A real oplog cannot be made to roll over on
demand; that recovery path runs on the in-process feed (``test_pods.py``), and the
mapping of MongoDB's error 286 to it is tested as data (``test_mongo_changes.py``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import replace

import pymongo
import pytest

from server.service import create_store
from server.settings import Settings
from server.store.port import ScoreStore
from tests.conftest import MONGODB_URI, NEEDS_MONGODB, scaled, settings_for
from tests.server import pods
from tests.server.pods import Cluster

pytestmark = NEEDS_MONGODB


def make_store(settings: Settings) -> ScoreStore:
    return create_store(settings)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    assert MONGODB_URI
    database = f"scoreboard_pods_{secrets.token_hex(4)}"
    settings = settings_for(mongodb_uri=MONGODB_URI, mongodb_db=database, rate_limit_per_minute=10)
    yield Cluster(settings, make_store)
    with pymongo.MongoClient(MONGODB_URI) as client:
        client.drop_database(database)


@pytest.mark.gen_test(timeout=scaled(60))
async def test_a_watcher_on_one_pod_sees_an_update_taken_by_another(cluster: Cluster) -> None:
    async with cluster:
        await pods.live_update_reaches_other_pods(cluster)


@pytest.mark.gen_test(timeout=scaled(60))
async def test_rate_limit_and_idempotency_hold_whichever_pod_takes_a_request(
    cluster: Cluster,
) -> None:
    async with cluster:
        await pods.limits_hold_across_pods(cluster)


@pytest.mark.gen_test(timeout=scaled(120))
async def test_every_pod_converges_to_the_store_after_random_load(cluster: Cluster) -> None:
    cluster.settings = replace(cluster.settings, rate_limit_per_minute=0)
    async with cluster:
        await pods.pods_converge_after_random_load(cluster)


@pytest.mark.gen_test(timeout=scaled(60))
async def test_a_pod_resumes_its_change_stream_after_an_interruption(cluster: Cluster) -> None:
    async with cluster:
        await pods.recovers_from_interruption(cluster)
