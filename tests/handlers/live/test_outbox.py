"""The outbox on a real Tornado stream: one Future per chunk, never one per frame; frames
never overtake nor interleave, Tornado's own frames included; what is dropped is never sent."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from tornado.iostream import IOStream

from handlers.live.outbox import CHUNK_BYTES, Outbox
from handlers.tornado_internals import text_frame
from tests.conftest import scaled
from tests.handlers.live.test_fanout import parse_frames

pytestmark = pytest.mark.gen_test(timeout=scaled(10))


class Peer:
    """The other end of the connection: reads only when told to."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received = b""

    async def read(self, size: int) -> None:
        loop = asyncio.get_running_loop()
        target = len(self.received) + size
        while len(self.received) < target:
            chunk = await loop.sock_recv(self.sock, target - len(self.received))
            assert chunk, "closed"
            self.received += chunk


class Watcher:
    wants_delta = True
    season = None

    def __init__(self, stream: IOStream) -> None:
        self.out: IOStream | None = stream

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        self.out = None


@asynccontextmanager
async def connection() -> AsyncIterator[tuple[IOStream, Outbox, Peer]]:
    ours, theirs = socket.socketpair()
    # Small kernel buffers, so a peer that does not read backs the stream up at once.
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    theirs.setblocking(False)
    stream = IOStream(ours)
    try:
        yield stream, Outbox(Watcher(stream), 0), Peer(theirs)
    finally:
        stream.close()
        theirs.close()


def frames_of(count: int, size: int) -> list[bytes]:
    return [text_frame(f"{i:06d}".ljust(size, "x")) for i in range(count)]


async def test_a_peer_that_stops_reading_costs_one_future_and_one_chunk_of_copies() -> None:
    async with connection() as (stream, outbox, peer):
        frames = frames_of(2000, 200)  # 400 KB: far more than the kernel takes
        for frame in frames:
            assert outbox.push(stream, frame)
            assert len(stream._write_futures) <= 1
            assert len(stream._write_buffer) <= CHUNK_BYTES + len(frame)
        total = sum(map(len, frames))
        assert outbox.unsent(stream) > total - 64 * 1024  # the kernel took little
        # The frames waiting in the outbox are the shared ones, not copies.
        assert outbox.frames is not None
        assert all(
            a is b for a, b in zip(outbox.frames, frames[-len(outbox.frames) :], strict=True)
        )
        await peer.read(total)
        parsed, rest = parse_frames(peer.received)
        assert rest == b""
        assert [payload for _, payload in parsed] == [frame[4:] for frame in frames]
        await asyncio.sleep(0)
        assert outbox.unsent(stream) == 0
        assert outbox.frames is None  # caught up: direct writes again


async def test_tornados_own_frames_land_between_whole_frames() -> None:
    async with connection() as (stream, outbox, peer):
        frames = frames_of(1000, 300)
        ping = b"\x89\x00"  # what Tornado writes for a keepalive ping
        for i, frame in enumerate(frames):
            outbox.push(stream, frame)
            if i % 100 == 50:
                stream.write(ping)
        total = sum(map(len, frames)) + 10 * len(ping)
        await peer.read(total)
        parsed, rest = parse_frames(peer.received)
        assert rest == b""
        assert sum(1 for opcode, _ in parsed if opcode == 0x9) == 10
        texts = [payload for opcode, payload in parsed if opcode == 0x1]
        assert texts == [frame[4:] for frame in frames]


async def test_dropped_frames_are_never_sent_and_a_close_frame_follows_the_chunk_in_flight() -> (
    None
):
    async with connection() as (stream, outbox, peer):
        frames = frames_of(2000, 200)
        for frame in frames:
            outbox.push(stream, frame)
        in_flight = len(stream._write_buffer)
        assert in_flight <= CHUNK_BYTES + len(frames[0])
        outbox.drop()
        assert outbox.unsent(stream) == in_flight
        close = b"\x88\x02\x03\xf5"  # 1013
        stream.write(close)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(scaled(5)):
            while not peer.received.endswith(close):
                peer.received += await loop.sock_recv(peer.sock, 65536)
        parsed, rest = parse_frames(peer.received)
        assert rest == b""
        assert parsed[-1] == (0x8, b"\x03\xf5")
        texts = [payload for _, payload in parsed[:-1]]
        assert texts == [frame[4:] for frame in frames[: len(texts)]]  # a prefix, whole
        assert len(peer.received) < CHUNK_BYTES + 64 * 1024  # not behind the whole queue
        # The outbox hands over nothing more, now or once its chunk is sent.
        await asyncio.sleep(0.05)
        assert outbox.unsent(stream) == 0


async def test_unsent_counts_what_the_socket_has_not_taken() -> None:
    # Outbox.unsent reads a private attribute of Tornado's IOStream: fail loudly if it changes.
    async with connection() as (stream, outbox, peer):
        assert outbox.unsent(stream) == 0
        size = 4 << 20  # more than any kernel buffer takes
        outbox.push(stream, b"x" * size)
        assert 0 < outbox.unsent(stream) <= size
        await peer.read(size)
        await asyncio.sleep(0)
        assert outbox.unsent(stream) == 0


async def test_a_closed_stream_takes_nothing() -> None:
    async with connection() as (stream, outbox, _peer):
        stream.close()
        assert not outbox.push(stream, b"late")
        assert outbox.unsent(stream) == 0
