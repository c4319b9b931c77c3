"""A pod loads its rank index from the store at start, and is not ready until it has."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.domain.increments import IncrementPolicy
from server.domain.records import BoardRow, IncrementCommand
from server.lifecycle import Server
from server.store.sqlite import SqliteStore
from tests.conftest import SECRET, Client, body_of, eventually, make_token, scaled, settings_for

pytestmark = pytest.mark.gen_test(timeout=scaled(20))

POLICY = IncrementPolicy(rate_limit_per_minute=0)


class GatedRanksStore(SqliteStore):
    """The embedded store whose pages for the rank index wait for :attr:`gate`."""

    def __init__(self, path: str) -> None:
        super().__init__(path, POLICY)
        self.gate = asyncio.Event()
        self.pages = 0

    async def ranked_rows(self, after_user_id: str | None, limit: int) -> list[BoardRow]:
        self.pages += 1
        await self.gate.wait()
        return await super().ranked_rows(after_user_id, limit)


async def seed(path: str, scores: dict[str, int]) -> None:
    store = SqliteStore(path, POLICY)
    await store.open()
    try:
        for user, amount in scores.items():
            await store.apply_increments([IncrementCommand(user, user, amount, 1_000)])
    finally:
        await store.close()


async def test_readyz_waits_for_the_rank_index_then_the_pod_ranks_what_the_store_holds(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "scores.db")
    await seed(path, {"ann": 5, "bob": 9, "cy": 7})
    store = GatedRanksStore(path)
    running = Server(settings_for(sqlite_path=path), SECRET, store=store)
    # The first attempt to reach the store includes the load: startup returns after it,
    # but the server listens (and answers /readyz) from before.
    startup = asyncio.ensure_future(running.startup(wait_for_store=False))
    try:
        await eventually(lambda: store.pages, "the load started")
        client = Client(running)
        readyz = await client.request("GET", "/readyz")
        assert readyz.code == 503
        assert body_of(readyz)["error"] == "not_ready"
        assert "ranks_loading" in body_of(readyz)["message"]
        update = await client.update(make_token("dan"), {"increment": 1})
        assert update.code == 503, update.body  # nothing served before the index is loaded
        assert not startup.done()
        store.gate.set()
        await startup
        assert (await client.request("GET", "/readyz")).code == 200
        ranks = running.service.ranks
        assert [r.user_id for _, r in ranks.page(1, 10)] == ["bob", "cy", "ann"]
        assert (await client.update(make_token("ann"), {"increment": 10})).code == 200
        assert running.service.ranks.rank_of("ann") == 1
    finally:
        store.gate.set()
        await asyncio.wait({startup})
        await running.shutdown()
