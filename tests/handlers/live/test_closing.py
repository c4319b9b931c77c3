"""No data after a close frame, whoever closes; a failing write harms no other watcher."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from actors.leaderboard import Publication
from handlers.live.fanout import Fanout
from handlers.live.outbox import Outbox
from handlers.tornado_internals import text_frame
from server.support.metrics import Metrics
from tests.conftest import make_token, scaled, serving
from tests.handlers.live.test_fanout import FakeStream


@pytest.mark.gen_test(timeout=scaled(20))
async def test_a_connection_closed_by_tornado_itself_gets_no_more_frames() -> None:
    async with serving() as client:
        ws = await client.websocket()
        await ws.read_message()  # the snapshot
        fanout = client.running.service.fanout
        (watcher,) = fanout._seats
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
    season = None

    def __init__(self, out: Any) -> None:
        self.out = out

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        pass


@pytest.mark.gen_test(timeout=scaled(10))
async def test_a_failing_write_is_logged_the_others_still_get_it_and_the_collector_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fanout = Fanout(None, Metrics(), max_buffer_bytes=1 << 20, slow_timeout_s=1)  # type: ignore[arg-type]
    broken, fine = Watcher(ExplodingStream()), Watcher(FakeStream(takes_all=True))
    fanout._seats = {broken: Outbox(broken, 0), fine: Outbox(fine, 0)}  # type: ignore[dict-item]
    publication = Publication("e", 1, (), '{"event":"update"}', '{"event":"delta"}')
    assert gc.isenabled()
    fanout.publish(publication)  # does not raise
    assert gc.isenabled()
    assert fine.out.sent == text_frame(publication.update)
    assert "writing to a WebSocket client failed" in caplog.text
