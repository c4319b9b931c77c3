"""A cap on open WebSockets per client address (issue 11): 429 ``too_many_connections``
before the upgrade, counted through trusted proxies, freed when a connection closes."""

from __future__ import annotations

import pytest

from handlers.live.addresses import OpenPerAddress
from tests.conftest import Client, body_of, eventually, scaled, serving
from tests.handlers.live.test_resume import connected, refused
from tests.handlers.live.test_socket import metrics_text, receive

pytestmark = pytest.mark.gen_test(timeout=scaled(20))


def test_open_per_address_counts_and_forgets() -> None:
    open_ = OpenPerAddress(2)
    assert not open_.full("a")
    open_.opened("a")
    open_.opened("a")
    open_.opened("b")
    assert open_.full("a") and not open_.full("b")
    assert len(open_) == 2
    open_.closed("a")
    assert not open_.full("a")
    open_.opened("b")  # b had one open: two now
    assert open_.full("b")
    open_.closed("a")
    open_.closed("b")
    open_.closed("b")
    assert len(open_) == 0  # an address with nothing open costs nothing


def test_no_limit_is_never_full() -> None:
    open_ = OpenPerAddress(0)
    for _ in range(1000):
        open_.opened("a")
    assert not open_.full("a")


async def wait_until_none_open(client: Client) -> None:
    addresses = client.running.service.ws_addresses
    await eventually(
        lambda: len(addresses),
        "no address with a WebSocket open",
        until=lambda open_: open_ == 0,
        timeout_s=5,
    )


async def test_an_address_at_its_limit_gets_429_until_one_of_its_connections_closes() -> None:
    async with serving(ws_max_per_address=2) as client:
        async with connected(client) as first, connected(client, "?format=delta") as second:
            await receive(first)
            await receive(second)
            answer = await refused(client)
            assert answer.code == 429
            assert body_of(answer)["error"] == "too_many_connections"
            assert answer.headers["Retry-After"] == "10"
            text = await metrics_text(client)
            assert "scoreboard_ws_address_refusals_total 1.0" in text
        await wait_until_none_open(client)
        async with connected(client) as again:
            assert (await receive(again))["event"] == "snapshot"


async def test_the_limit_counts_the_address_a_trusted_proxy_forwards() -> None:
    async with serving(ws_max_per_address=1, trusted_proxies=("127.0.0.1/32",)) as client:
        alice = {"X-Forwarded-For": "203.0.113.7"}
        bob = {"X-Forwarded-For": "198.51.100.9"}
        async with connected(client, headers=alice) as one, connected(client, headers=bob) as two:
            await receive(one)
            await receive(two)
            assert (await refused(client, headers=alice)).code == 429
            assert (await refused(client, headers=bob)).code == 429
        await wait_until_none_open(client)
        async with connected(client, headers=alice) as again:
            await receive(again)
