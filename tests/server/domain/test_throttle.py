"""Failed-auth throttling and the client address behind trusted proxies."""

from __future__ import annotations

import pytest

from server.domain.throttle import FailedAuthThrottle, client_address, parse_networks
from tests.conftest import body_of, make_token, scaled, serving

PROXIES = parse_networks(["10.0.0.0/8", "192.0.2.7"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.5", "198.51.100.1", "203.0.113.5"),  # untrusted peer: header ignored
        ("10.1.2.3", "198.51.100.1", "198.51.100.1"),
        ("10.1.2.3", "6.6.6.6, 198.51.100.1, 192.0.2.7", "198.51.100.1"),  # right-most untrusted
        ("10.1.2.3", "10.9.9.9", "10.1.2.3"),  # only proxies: the peer
        ("10.1.2.3", "not-an-ip", "10.1.2.3"),
        ("10.1.2.3", None, "10.1.2.3"),
    ],
)
def test_client_address(peer: str, forwarded: str | None, expected: str) -> None:
    assert client_address(peer, forwarded, PROXIES) == expected


def test_no_trusted_proxies_means_the_peer() -> None:
    assert client_address("10.1.2.3", "198.51.100.1", ()) == "10.1.2.3"


def test_the_limit_applies_over_a_sliding_minute_per_address() -> None:
    throttle = FailedAuthThrottle(3)
    for t in (0.0, 1.0, 2.0):
        assert throttle.retry_after("a", t) is None
        throttle.failed("a", t)
    assert throttle.retry_after("a", 3.0) == 57
    assert throttle.retry_after("b", 3.0) is None
    assert throttle.retry_after("a", 60.5) is None  # the first failure left the window


def test_zero_turns_it_off_and_memory_is_bounded() -> None:
    off = FailedAuthThrottle(0)
    for _ in range(10):
        off.failed("a", 0.0)
    assert off.retry_after("a", 0.0) is None
    small = FailedAuthThrottle(1, max_addresses=2)
    for address in ("a", "b", "c"):
        small.failed(address, 0.0)
    assert small.retry_after("a", 1.0) is None  # forgotten: the oldest went first
    assert small.retry_after("c", 1.0) is not None


@pytest.mark.gen_test(timeout=scaled(30))
async def test_a_flood_of_bad_tokens_is_refused_before_any_token_is_checked() -> None:
    async with serving(auth_failures_per_minute=3) as client:
        for _ in range(3):
            assert (await client.update("bad.token.here")).code == 401
        refused = await client.update(make_token("honest"))  # even a good token now
        assert refused.code == 429
        assert body_of(refused)["error"] == "auth_throttled"
        assert int(refused.headers["Retry-After"]) >= 1


@pytest.mark.gen_test(timeout=scaled(30))
async def test_forwarded_addresses_count_separately_behind_a_trusted_proxy() -> None:
    async with serving(auth_failures_per_minute=1, trusted_proxies=("127.0.0.1",)) as client:
        first = {"X-Forwarded-For": "198.51.100.1"}
        second = {"X-Forwarded-For": "198.51.100.2"}
        assert (await client.update("bad", headers=first)).code == 401
        assert (await client.update("bad", headers=first)).code == 429
        ok = await client.update(make_token("other"), headers=second)
        assert ok.code == 200


def test_ipv6_failures_count_per_slash_64() -> None:
    throttle = FailedAuthThrottle(2)
    throttle.failed("2001:db8::1", 0.0)
    throttle.failed("2001:db8::ffff:2", 0.0)  # same /64, another address
    assert throttle.retry_after("2001:db8::abcd", 1.0) is not None
    assert throttle.retry_after("2001:db8:0:1::1", 1.0) is None  # another /64


@pytest.mark.gen_test(timeout=scaled(30))
async def test_forwarded_headers_from_untrusted_peers_change_nothing() -> None:
    async with serving(auth_failures_per_minute=2) as client:
        for i in range(2):
            spoof = {"X-Forwarded-For": f"198.51.100.{i}"}
            assert (await client.update("bad", headers=spoof)).code == 401
        spoof = {"X-Forwarded-For": "198.51.100.99"}
        assert (await client.update("bad", headers=spoof)).code == 429
