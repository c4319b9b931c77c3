"""write_now: the direct socket path never overtakes bytes Tornado already queued."""

from __future__ import annotations

import asyncio
import socket

import pytest
from tornado.iostream import IOStream

from handlers.fanout import unsent_bytes, write_now
from tests.conftest import scaled


@pytest.mark.gen_test(timeout=scaled(10))
async def test_a_frame_goes_after_what_is_queued_and_straight_out_when_nothing_is() -> None:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    stream = IOStream(ours)
    try:
        # Queue bytes on the stream without flushing them, as a partial earlier write would.
        stream._connecting = True
        stream.write(b"queued-")
        stream._connecting = False
        assert unsent_bytes(stream) == len(b"queued-")
        assert write_now(stream, b"next")  # must not overtake "queued-"
        loop = asyncio.get_running_loop()
        received = b""
        while len(received) < len(b"queued-next"):
            received += await loop.sock_recv(theirs, 64)
        assert received == b"queued-next"
        # Nothing queued now: the frame goes straight to the socket, nothing is buffered.
        assert write_now(stream, b"direct")
        assert unsent_bytes(stream) == 0
        assert await loop.sock_recv(theirs, 64) == b"direct"
    finally:
        stream.close()
        theirs.close()


@pytest.mark.gen_test(timeout=scaled(10))
async def test_writing_to_a_closed_stream_reports_false() -> None:
    ours, theirs = socket.socketpair()
    stream = IOStream(ours)
    theirs.close()
    stream.close()
    assert not write_now(stream, b"late")
