"""No data after a close frame, whoever closes; the collector comes back after a publish."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from actors.leaderboard import Publication
from handlers.fanout import Fanout
from tests.conftest import make_token, scaled, serving


@pytest.mark.gen_test(timeout=scaled(20))
async def test_a_connection_closed_by_tornado_itself_gets_no_more_frames() -> None:
    async with serving() as client:
        ws = await client.websocket()
        await ws.read_message()  # the snapshot
        fanout = client.running.service.fanout
        (watcher,) = fanout._watchers
        assert watcher.out is not None
        # What Tornado does on a ping timeout: close at the protocol level, not the handler.
        watcher.ws_connection.close(reason="ping timed out")
        assert watcher.out is None
        await client.update(make_token("after-close"))
        frames = []
        while (message := await asyncio.wait_for(ws.read_message(), scaled(5))) is not None:
            frames.append(message)
        assert frames == []  # only the close frame came, no update after it
        ws.close()


class ExplodingStream:
    _write_buffer = b""

    def write(self, data: bytes) -> Any:
        raise RuntimeError("boom")


class Watcher:
    wants_delta = False
    out = ExplodingStream()

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        pass


def test_publish_turns_the_garbage_collector_back_on_even_when_a_write_fails() -> None:
    fanout = Fanout.__new__(Fanout)
    fanout._watchers = {Watcher()}  # type: ignore[arg-type]
    fanout._lagging = {}
    fanout._max_buffer = 1 << 20
    fanout._clock = lambda: 0.0
    publication = Publication("e", 1, (), '{"event":"update"}', '{"event":"delta"}')
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        fanout.publish(publication)
    assert gc.isenabled()
