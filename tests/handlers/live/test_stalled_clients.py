"""Clients that stop reading (issue 11, finding 7): each costs the server at most its byte
bound plus a small constant, is noticed once its bound and a capped kernel buffer are
full, and when closed finds the close frame behind at most one chunk, not its whole queue.

Memory is counted with ``tracemalloc`` (every allocation of this process, the server's
buffers included), never with RSS or the clock.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
import tracemalloc
from collections.abc import Callable
from contextlib import AsyncExitStack

import pytest

from actors.leaderboard import Publication
from handlers.live.fanout import TRY_AGAIN_LATER, Fanout
from handlers.live.outbox import CHUNK_BYTES
from tests.conftest import Client, eventually, scaled, serving
from tests.handlers.live.test_fanout import StuckClient, parse_frames, stuck_client, unsent

pytestmark = pytest.mark.gen_test(timeout=scaled(40))

# About a top-10 update's size.
PAYLOAD = '{"event":"update","top_scores":[' + ",".join(['{"user_id":"u","score":1}'] * 12) + "]}"


class Publisher:
    """Publications straight into the fan-out, as the leaderboard hands them over."""

    def __init__(self, client: Client) -> None:
        self.fanout: Fanout = client.running.service.fanout
        self.board = client.running.service.leaderboard
        self.version = self.board.view.version
        self.published_bytes = 0

    async def until(self, condition: Callable[[], bool], most: int = 200_000) -> None:
        """Publish until ``condition`` holds (at most ``most`` more), yielding to the event
        loop now and then."""
        stop = self.version + most
        while not condition():
            assert self.version < stop, "the condition never held"
            self.version += 1
            epoch = self.board.view.epoch
            self.fanout.publish(Publication(epoch, self.version, (), PAYLOAD, PAYLOAD))
            self.published_bytes += len(PAYLOAD) + 4
            if self.version % 16 == 0:
                await asyncio.sleep(0)


def all_lagging(fanout: Fanout) -> bool:
    return all(seat.lagging for seat in fanout._seats.values())


async def test_stalled_clients_hold_at_most_their_bound_plus_a_constant() -> None:
    clients, bound, constant = 20, 32 * 1024, 4 * 1024
    async with (
        serving(ws_max_buffer_bytes=bound, ws_slow_client_timeout_s=600) as client,
        AsyncExitStack() as stack,
    ):
        publisher = Publisher(client)
        fanout = publisher.fanout
        for _ in range(clients):
            await stack.enter_async_context(stuck_client(client, ""))
        await eventually(lambda: len(fanout) == clients, "every stalled client", timeout_s=5)
        watchers = list(fanout._seats)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            await publisher.until(lambda: all_lagging(fanout))
            more = publisher.version + 500  # and more, while they stay stalled
            await publisher.until(lambda: publisher.version >= more)
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert held <= clients * (bound + constant), (
            f"{held / clients:.0f} bytes per stalled client"
        )
        for watcher in watchers:
            assert unsent(fanout, watcher) <= bound
            stream = watcher.out
            assert stream is not None
            assert len(stream._write_futures) <= 2  # a chunk (and maybe a ping), not a frame each


async def test_a_stalled_client_is_noticed_once_its_bound_and_a_capped_kernel_buffer_fill() -> None:
    bound, send_buffer = 64 * 1024, 16 * 1024
    async with (
        serving(
            ws_max_buffer_bytes=bound,
            ws_send_buffer_bytes=send_buffer,
            ws_slow_client_timeout_s=600,
        ) as client,
        stuck_client(client, "") as stuck,
    ):
        publisher = Publisher(client)
        await eventually(lambda: len(publisher.fanout) == 1, "the stalled client", timeout_s=5)
        [watcher] = publisher.fanout._seats
        stream = watcher.out
        assert stream is not None
        await publisher.until(lambda: all_lagging(publisher.fanout))
        # Past its bound, what the kernels hold (both small here) is all it took: with
        # the kernel's autotuning it took megabytes more before anything was noticed.
        assert publisher.published_bytes <= bound + 2 * send_buffer + 2 * rcvbuf(stuck) + 4096
        # Linux doubles the value asked for (its bookkeeping counts overhead too).
        assert stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) <= 2 * send_buffer


def rcvbuf(stuck: StuckClient) -> int:
    return stuck.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


async def test_close_frame_behind_one_chunk_and_a_silent_client_cut_off() -> None:
    bound = 512 * 1024
    async with (
        serving(ws_max_buffer_bytes=bound, ws_slow_client_timeout_s=0.3) as client,
        stuck_client(client, "") as reads_late,
        stuck_client(client, ""),  # never reads
    ):
        publisher = Publisher(client)
        fanout = publisher.fanout
        await eventually(lambda: len(fanout) == 2, "the stalled clients", timeout_s=5)
        await publisher.until(lambda: all_lagging(fanout))
        slow_closes = "scoreboard_ws_slow_closes_total"
        registry = client.running.service.metrics.registry
        await eventually(
            lambda: registry.get_sample_value(slow_closes) == 2, "slow closes", timeout_s=5
        )
        # Reading at last, it finds the close frame (1013) behind at most one chunk and
        # what the kernels held, not behind the half megabyte it had queued.
        frames = await reads_late.read_until_close_frame(5)
        assert frames[-1][0] == 0x8
        assert struct.unpack("!H", frames[-1][1][:2])[0] == TRY_AGAIN_LATER
        before_close = len(reads_late.received)
        kernel = 2 * client.running.service.settings.ws_send_buffer_bytes + 2 * rcvbuf(reads_late)
        assert before_close <= CHUNK_BYTES + kernel + 4096 < bound
        parsed, _ = parse_frames(reads_late.received)
        assert all(opcode == 0x1 for opcode, _ in parsed[:-1])
        # The other never answers the close: Tornado aborts it after 5 s, and its memory goes.
        await eventually(lambda: len(fanout) == 0, "the connection to be aborted", timeout_s=10)
