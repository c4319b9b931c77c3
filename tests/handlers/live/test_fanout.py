"""The fan-out: frames built once, slow clients skipped, resynced when drained, or closed;
a broadcast written in steps that yield to the event loop."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from actors.leaderboard import LeaderboardActor, ScoreChanged
from handlers.live.fanout import TRY_AGAIN_LATER, Fanout
from handlers.tornado_internals import text_frame
from server.domain.deltas import Since
from server.domain.records import BoardRow
from server.support.metrics import Metrics
from tests.conftest import Client, eventually, make_token, scaled, serving
from tests.handlers.live.test_resume import Board, connected, settle
from tests.handlers.live.test_socket import metrics_text, receive

pytestmark = pytest.mark.gen_test(timeout=scaled(20))


# --- frames ----------------------------------------------------------------------------------


def parse_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Server frames (unmasked) in ``data``: ``[(opcode, payload)]`` and the incomplete rest."""
    frames = []
    while len(data) >= 2:
        first, second = data[0], data[1]
        assert first & 0x80, "every frame is final"
        assert not second & 0x80, "server frames are not masked"
        length, offset = second & 0x7F, 2
        if length == 126:
            if len(data) < 4:
                break
            (length,) = struct.unpack("!H", data[2:4])
            offset = 4
        elif length == 127:
            if len(data) < 10:
                break
            (length,) = struct.unpack("!Q", data[2:10])
            offset = 10
        if len(data) < offset + length:
            break
        frames.append((first & 0x0F, data[offset : offset + length]))
        data = data[offset + length :]
    return frames, data


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frame_lengths(size: int) -> None:
    payload = "x" * size
    frame = text_frame(payload)
    assert frame == text_frame(payload.encode())
    assert parse_frames(frame) == ([(0x1, payload.encode())], b"")
    header = 2 if size < 126 else 4 if size <= 0xFFFF else 10
    assert len(frame) == header + size  # the shortest length encoding (RFC 6455 5.2)


def test_text_frame_of_utf8() -> None:
    assert parse_frames(text_frame("Zoë 李")) == ([(0x1, "Zoë 李".encode())], b"")


# --- a real client that stops reading ----------------------------------------------------------


class StuckClient:
    """A WebSocket client on a raw socket with a tiny receive buffer, that reads nothing
    after the upgrade until told to."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received = b""

    async def read_until_close_frame(self, timeout_s: float) -> list[tuple[int, bytes]]:
        """Read everything up to the server's close frame; return the frames."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(scaled(timeout_s)):
            while True:
                frames, _ = parse_frames(self.received)
                if frames and frames[-1][0] == 0x8:
                    return frames
                chunk = await loop.sock_recv(self.sock, 65536)
                assert chunk, "closed without a close frame"
                self.received += chunk


@asynccontextmanager
async def stuck_client(client: Client, query: str) -> AsyncIterator[StuckClient]:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Before connecting, so the TCP window it announces stays small.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", client.running.port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws/scoreboard{query} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{client.running.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        head = b""
        async with asyncio.timeout(scaled(2)):
            while b"\r\n\r\n" not in head:
                chunk = await loop.sock_recv(sock, 1)  # byte by byte: leave the frames unread
                assert chunk, "closed during the upgrade"
                head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        yield StuckClient(sock)
    finally:
        sock.close()


def counter(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics")


LONG = "L" * 100  # long names: a board of 40 rows is about 6 KB
TOP_N = 40
BOUND = 16384


async def test_a_client_that_stops_reading_is_skipped_bounded_and_closed() -> None:
    async with serving(
        top_n=TOP_N,
        rate_limit_per_minute=0,
        max_increment=1_000_000,
        ws_max_buffer_bytes=BOUND,
        ws_slow_client_timeout_s=0.5,
        # Loopback TCP would let the sender's kernel buffer grow to megabytes; the
        # server caps it, so what the client does not take piles up where it can see it.
        ws_send_buffer_bytes=4096,
    ) as client:
        service = client.running.service
        tokens = [make_token(f"user-{i:02d}", name=f"{LONG} {i:02d}") for i in range(TOP_N)]
        scores = {i: TOP_N - i for i in range(TOP_N)}
        await asyncio.gather(*(client.update(tokens[i], {"increment": scores[i]}) for i in scores))
        await eventually(lambda: len(service.leaderboard.view.rows) == TOP_N, "the board")

        def overtake() -> tuple[str, int]:
            """The last user jumps to the top: every row moves, the delta is the whole board."""
            last = min(scores, key=lambda u: scores[u])
            increment = max(scores.values()) - scores[last] + 1
            scores[last] += increment
            return tokens[last], increment

        async with stuck_client(client, "?format=delta") as stuck:
            await eventually(lambda: len(service.fanout) == 1, "the stuck watcher")
            [watcher] = service.fanout._seats
            async with connected(client, "?format=delta") as reader:
                board = Board()
                board.apply(await receive(reader))
                worst = 0
                latencies: list[float] = []
                while not service.fanout._lagging or len(latencies) < 30:
                    assert len(latencies) < 300, "the stuck client was never skipped"
                    token, increment = overtake()
                    started = time.monotonic()
                    response = await client.update(token, {"increment": increment})
                    assert response.code == 200
                    board.apply(await receive(reader))  # the next version, at once
                    latencies.append(time.monotonic() - started)
                    worst = max(worst, unsent(service.fanout, watcher))
                assert board.rows == await client.top()
                # Its unsent bytes filled up to the bound and never passed it.
                assert BOUND // 2 < worst <= BOUND
                # The reader got every version promptly, whatever the stuck client did.
                assert max(latencies) < scaled(0.5), latencies
                text = await metrics_text(client)
                assert counter(text, "scoreboard_ws_skipped_total") >= 1

                # Lagging past the timeout: closed with 1013.
                await assert_closed_as_too_slow(client, stuck, board)
                assert watcher.out is None
                stuck.sock.close()
                await eventually(lambda: len(service.fanout) == 1, "the fan-out to drop it")
                # The reader is still served.
                token, increment = overtake()
                await client.update(token, {"increment": increment})
                await settle(reader, board, client)


async def assert_closed_as_too_slow(client: Client, stuck: StuckClient, board: Board) -> None:
    """The stuck client is closed (1013) and, reading at last, finds a prefix of ``board``'s
    stream then the close frame."""
    service = client.running.service
    slow_closes = "scoreboard_ws_slow_closes_total"
    await eventually(
        lambda: service.metrics.registry.get_sample_value(slow_closes) == 1,
        "the slow close",
        timeout_s=3,
    )
    text = await metrics_text(client)
    assert counter(text, "scoreboard_ws_slow_closes_total") == 1
    assert counter(text, "scoreboard_ws_resyncs_total") == 0
    # Reading now, it finds what was sent before it stalled, then the close frame.
    frames = await stuck.read_until_close_frame(2)
    assert [opcode for opcode, _ in frames[:-1]] == [0x1] * (len(frames) - 1)
    assert struct.unpack("!H", frames[-1][1][:2])[0] == TRY_AGAIN_LATER
    # ... a consistent prefix of the stream: the snapshot, then deltas in order.
    stuck_board = Board()
    for _, payload in frames[:-1]:
        stuck_board.apply(json.loads(payload))
    assert stuck_board.events == board.events[: len(stuck_board.events)]
    assert len(stuck_board.events) < len(board.events)


# --- the fan-out driven directly, with fake connections ------------------------------------------


class FakeStream:
    """An IOStream as the fan-out sees it: ``write`` queues bytes in ``_write_buffer`` and
    returns a future resolved once the "socket" took them, which it does when
    :meth:`drain` is called (at once if ``takes_all``)."""

    def __init__(self, *, takes_all: bool = False) -> None:
        self._write_buffer = bytearray()
        self.sent = b""
        self.writes = 0
        self.takes_all = takes_all
        self._written = 0
        self._futures: deque[tuple[int, asyncio.Future[None]]] = deque()

    def write(self, data: bytes | memoryview) -> asyncio.Future[None]:
        self.writes += 1
        self._write_buffer += data
        self._written += len(data)
        future = asyncio.get_running_loop().create_future()
        self._futures.append((self._written, future))
        if self.takes_all:
            self.drain()
        return future

    def drain(self, size: int | None = None) -> None:
        buffer = self._write_buffer
        size = len(buffer) if size is None else min(size, len(buffer))
        self.sent += bytes(buffer[:size])
        del buffer[:size]
        done = self._written - len(buffer)
        while self._futures and self._futures[0][0] <= done:
            self._futures.popleft()[1].set_result(None)

    def messages(self) -> list[dict[str, Any]]:
        frames, rest = parse_frames(self.sent)
        assert rest == b""
        assert all(opcode == 0x1 for opcode, _ in frames)
        return [json.loads(payload) for _, payload in frames]


class FakeWatcher:
    """A ScoreboardSocket as the fan-out sees it."""

    def __init__(self, *, wants_delta: bool = True, takes_all: bool = False) -> None:
        self.wants_delta = wants_delta
        self.season: str | None = None
        self.stream = FakeStream(takes_all=takes_all)
        self.out: Any = self.stream  # the protocol says IOStream; the fan-out needs only this
        self.closed: list[tuple[int | None, str | None]] = []

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        self.out = None  # as ScoreboardSocket.close; on_close comes later
        self.closed.append((code, reason))


async def drain(watcher: FakeWatcher, size: int | None = None) -> None:
    """The client reads ``size`` more bytes (all there are when None) as they come: the
    fan-out hands a connection its queued frames a chunk at a time, once the last is sent."""
    left = size
    for _ in range(10_000):
        await asyncio.sleep(0)  # the outbox hands over its next chunk
        buffer = watcher.stream._write_buffer
        if not buffer or left == 0:
            return
        take = len(buffer) if left is None else min(left, len(buffer))
        watcher.stream.drain(take)
        if left is not None:
            left -= take
    raise AssertionError("the outbox kept handing over")


def lagging(fanout: Fanout, watcher: FakeWatcher) -> bool:
    return fanout._seats[watcher].lagging  # type: ignore[index]


def unsent(fanout: Fanout, watcher: Any) -> int:
    """Bytes written to ``watcher`` that its socket has not taken yet (0 once closing)."""
    seat = fanout._seats.get(watcher)
    stream = watcher.out
    return 0 if seat is None or stream is None else seat.unsent(stream)


class EmptyStore:
    async def top(self, limit: int) -> list[BoardRow]:
        return []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@asynccontextmanager
async def fan_out(clock: Clock, bound: int, top_n: int = 20) -> AsyncIterator[tuple[Fanout, Any]]:
    """A started leaderboard (interval 0) and a fan-out subscribed to it, without a sweeper."""
    leaderboard = LeaderboardActor(EmptyStore(), top_n, 0.0)  # type: ignore[arg-type]
    await leaderboard.load()
    leaderboard.start()
    metrics = Metrics()
    fanout = Fanout(leaderboard, metrics, max_buffer_bytes=bound, slow_timeout_s=5.0, clock=clock)
    leaderboard.subscribe(fanout)
    try:
        yield fanout, leaderboard
    finally:
        await leaderboard.stop()


class Scores:
    """Score changes as user actors would send them."""

    def __init__(self, leaderboard: LeaderboardActor) -> None:
        self.leaderboard = leaderboard
        self.rows: dict[str, BoardRow] = {}
        self.now_ms = 0

    async def set(self, user_id: str, score: int) -> None:
        self.now_ms += 1
        old = self.rows.get(user_id)
        row = BoardRow(
            user_id, f"{user_id} " + "n" * 60, score, self.now_ms, (old.v + 1) if old else 1
        )
        self.rows[user_id] = row
        await self.leaderboard.ask(ScoreChanged(row))


def metric(fanout: Fanout, name: str) -> float:
    value = fanout._metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


async def test_a_skipped_watcher_is_resynced_with_a_snapshot_once_drained(clock: Clock) -> None:
    bound = 4096
    async with fan_out(clock, bound) as (fanout, leaderboard):
        scores = Scores(leaderboard)
        keeps_up, falls_behind = FakeWatcher(), FakeWatcher()
        seed = FakeWatcher(wants_delta=False)
        for watcher in (keeps_up, falls_behind, seed):
            fanout.join(watcher, None)
        assert len(fanout) == 3
        # About 80 bytes a row: a few changes fill falls_behind's buffer past the bound.
        step = 0
        while not lagging(fanout, falls_behind):
            step += 1
            assert step < 100
            await scores.set(f"u{step:02d}", step)
            await drain(keeps_up)
            await drain(seed)
            assert unsent(fanout, falls_behind) <= bound
        skipped_at = leaderboard.view.version
        assert metric(fanout, "scoreboard_ws_skipped_total") == 1
        # Skipped while lagging: its queue does not grow, the others go on.
        before = unsent(fanout, falls_behind)
        for extra in range(3):
            await scores.set(f"x{extra}", 1000 + extra)
        assert unsent(fanout, falls_behind) == before
        # Drained a little: still above half the bound, still lagging, no snapshot yet.
        await drain(falls_behind, before - bound // 2 - 1)
        fanout.check_lagging()
        assert lagging(fanout, falls_behind)
        assert unsent(fanout, falls_behind) == bound // 2 + 1
        # Drained to half the bound: a snapshot of the current version, reason resync.
        await drain(falls_behind, 1)
        fanout.check_lagging()
        assert not lagging(fanout, falls_behind)
        assert metric(fanout, "scoreboard_ws_resyncs_total") == 1
        for watcher in (keeps_up, falls_behind, seed):
            await drain(watcher)
        await scores.set("after", 5000)  # ... and the live deltas follow it
        assert not lagging(fanout, falls_behind)
        for watcher in (keeps_up, falls_behind, seed):
            await drain(watcher)
        received = falls_behind.stream.messages()
        resync = [m for m in received if m["event"] == "snapshot" and m["reason"] == "resync"]
        assert len(resync) == 1
        assert resync[0]["version"] == leaderboard.view.version - 1 > skipped_at
        assert received[-1] == {
            **received[-1],
            "event": "delta",
            "version": leaderboard.view.version,
        }
        # Applied like a client: each watcher ends with the board.
        expected = [
            {"user_id": r.user_id, "username": r.username, "score": r.score}
            for r in leaderboard.view.rows
        ]
        for watcher in (keeps_up, falls_behind, seed):
            board = Board()
            for message in watcher.stream.messages():
                board.apply(message)
            assert board.rows == expected
            assert board.version == leaderboard.view.version
        # The ones that kept up saw every version, and no resync.
        versions = [m["version"] for m in keeps_up.stream.messages()]
        assert versions == list(range(leaderboard.view.version + 1))
        assert [m["event"] for m in seed.stream.messages()][1:] == [
            "update"
        ] * leaderboard.view.version
        assert not keeps_up.closed and not falls_behind.closed


async def test_a_watcher_lagging_past_the_timeout_is_closed_1013(clock: Clock) -> None:
    async with fan_out(clock, 2048) as (fanout, leaderboard):
        scores = Scores(leaderboard)
        stuck, fine = FakeWatcher(), FakeWatcher()
        fanout.join(stuck, None)
        fanout.join(fine, None)
        step = 0
        while not lagging(fanout, stuck):
            step += 1
            await scores.set(f"u{step:02d}", step)
            await drain(fine)
        clock.now += 4.9  # within the timeout (5 s): kept
        fanout.check_lagging()
        assert stuck.closed == []
        clock.now += 0.2
        fanout.check_lagging()
        assert stuck.closed == [(TRY_AGAIN_LATER, "client too slow")]
        assert stuck.out is None
        assert metric(fanout, "scoreboard_ws_slow_closes_total") == 1
        # What waited in its outbox is dropped: the close frame (written by Tornado to the
        # stream) follows what the stream already has, not the whole queue.
        assert len(stuck.stream._write_buffer) < 2048
        assert not fanout._seats[stuck].frames  # type: ignore[index]
        # Until its connection is gone it gets nothing more; then it is forgotten.
        await scores.set("late", 1000)
        fanout.check_lagging()
        assert stuck.closed == [(TRY_AGAIN_LATER, "client too slow")]
        fanout.leave(stuck)
        assert len(fanout) == 1
        assert metric(fanout, "scoreboard_websocket_connections") == 1
        assert not fine.closed
        await drain(fine)
        assert fine.stream.messages()[-1]["version"] == leaderboard.view.version


async def test_a_watcher_drained_before_the_timeout_is_not_closed(clock: Clock) -> None:
    async with fan_out(clock, 2048) as (fanout, leaderboard):
        scores = Scores(leaderboard)
        watcher = FakeWatcher()
        fanout.join(watcher, None)
        step = 0
        while not lagging(fanout, watcher):
            step += 1
            await scores.set(f"u{step:02d}", step)
        clock.now += 4
        await drain(watcher)
        fanout.check_lagging()  # drained: resynced
        clock.now += 10
        fanout.check_lagging()
        assert watcher.closed == []
        await drain(watcher)
        assert watcher.stream.messages()[-1]["reason"] == "resync"


async def test_a_resuming_watcher_gets_the_missed_deltas_before_any_new_one(clock: Clock) -> None:
    async with fan_out(clock, 1 << 20) as (fanout, leaderboard):
        scores = Scores(leaderboard)
        for i in range(5):
            await scores.set(f"u{i}", i + 1)
        watcher = FakeWatcher()
        fanout.join(watcher, Since(leaderboard.view.epoch, 2))
        await scores.set("u9", 100)
        await drain(watcher)
        messages = watcher.stream.messages()
        assert [(m["event"], m["version"]) for m in messages] == [
            ("resumed", 2),
            ("delta", 3),
            ("delta", 4),
            ("delta", 5),
            ("delta", 6),
        ]
        assert messages[0]["missed"] == 3


async def test_a_message_bigger_than_the_bound_still_reaches_a_client_that_keeps_up(
    clock: Clock,
) -> None:
    bound = 1024  # the least the setting allows
    async with fan_out(clock, bound) as (fanout, leaderboard):
        scores = Scores(leaderboard)
        watcher = FakeWatcher(wants_delta=False)
        fanout.join(watcher, None)
        for i in range(20):  # 20 rows of ~80 bytes: every update is over 1 KiB
            await scores.set(f"u{i:02d}", i + 1)
            await drain(watcher)
            fanout.check_lagging()
        versions = [m["version"] for m in watcher.stream.messages() if m["event"] == "update"]
        assert versions == list(range(1, 21))


def test_parse_frames_keeps_an_incomplete_frame() -> None:
    frames, rest = parse_frames(text_frame("a") + text_frame("bb")[:2])
    assert frames == [(0x1, b"a")]
    assert rest == text_frame("bb")[:2]
