"""A client that floods pings and never reads the pongs (issue 11, finding 10): the server
keeps at most one pong queued for it, whatever the flood. Tornado does this from 6.6 on
(6.4 and 6.5 queued a pong and a Future per ping: 1.1 GB in 20 s); pyproject requires it.

Measured as the server's own buffer sizes, not its RSS and not the clock.
"""

from __future__ import annotations

import asyncio
import os
import struct
import tomllib
from pathlib import Path

import pytest
import tornado
from packaging.requirements import Requirement

from tests.conftest import eventually, scaled, serving
from tests.handlers.live.test_fanout import stuck_client, unsent

pytestmark = pytest.mark.gen_test(timeout=scaled(30))

ROOT = Path(__file__).resolve().parents[3]


def masked_ping(payload: bytes) -> bytes:
    """A client's ping frame (clients must mask, RFC 6455 5.3)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x89, 0x80 | len(payload)) + mask + masked


async def test_a_ping_flood_leaves_at_most_one_pong_queued() -> None:
    pings = 20_000
    ping = masked_ping(b"p" * 125)  # the largest control payload: the largest pongs
    async with serving() as client, stuck_client(client, "") as flooder:
        fanout = client.running.service.fanout
        await eventually(lambda: len(fanout) == 1, "the flooding client", timeout_s=5)
        [watcher] = fanout._seats
        connection = watcher.ws_connection  # type: ignore[attr-defined]
        stream = connection.stream
        loop = asyncio.get_running_loop()
        batch = ping * 500
        for _ in range(pings // 500):
            await loop.sock_sendall(flooder.sock, batch)
        # Every ping read by the server (it keeps reading; only the client does not).
        await eventually(
            lambda: connection._wire_bytes_in,
            "the server read every ping",
            until=lambda read: read >= pings * len(ping),
            timeout_s=20,
        )
        # 20,000 pongs of 127 bytes are 2.5 MB; the kernel took what it could, and the
        # server holds at most one more pong and the latest ping to answer.
        assert unsent(fanout, watcher) <= 2 * 127
        assert len(stream._write_futures) <= 1


def test_pyproject_requires_a_tornado_that_bounds_pongs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    [tornado_requirement] = [
        Requirement(r) for r in project["dependencies"] if Requirement(r).name == "tornado"
    ]
    allowed = tornado_requirement.specifier
    assert not allowed.contains("6.5.4")
    assert not allowed.contains("6.4.2")
    assert allowed.contains("6.6.0")
    assert tornado.version_info >= (6, 6)
