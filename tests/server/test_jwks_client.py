"""JwksClient: one issuer's JWKS, fetched through an injected ``fetch`` (no network) and a
fake clock: keys chosen by ``kid``, refetches for unknown ``kid``s shared and gated, failed
fetches keeping the last good keys, and the background task's start and stop."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from server.domain.errors import InvalidToken
from server.domain.key_sets import DEFAULT_LIFETIME_S
from server.domain.tokens import KeyNotLoaded
from server.jwks_client import Fetched, JwksClient
from tests.conftest import eventually, scaled

URL = "https://idp.example/.well-known/jwks.json"

gen_test = pytest.mark.gen_test(timeout=scaled(10))


@pytest.fixture(scope="module")
def rsa_private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_private() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def jwks(
    rsa_private: rsa.RSAPrivateKey, ec_private: ec.EllipticCurvePrivateKey
) -> dict[str, dict[str, Any]]:
    """Public JWKs by kid: "rsa" and "rsa-2" (RSA 2048, the same key), "ec" (P-256)."""
    rsa_jwk = RSAAlgorithm.to_jwk(rsa_private.public_key(), as_dict=True)
    ec_jwk = ECAlgorithm.to_jwk(ec_private.public_key(), as_dict=True)
    return {
        "rsa": {**rsa_jwk, "kid": "rsa", "use": "sig", "alg": "RS256"},
        "rsa-2": {**rsa_jwk, "kid": "rsa-2", "use": "sig"},
        "ec": {**ec_jwk, "kid": "ec", "use": "sig", "alg": "ES256"},
    }


class Clock:
    """Monotonic seconds that move only when a test moves them."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Provider:
    """The JWKS URL: its answers in order (the last one repeats; an exception is raised),
    the URLs fetched, and a gate that holds every fetch while it is closed."""

    def __init__(self, *answers: Fetched | Exception) -> None:
        self.answers = list(answers)
        self.urls: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.cancelled = 0

    def answer(self, *answers: Fetched | Exception) -> None:
        self.answers = list(answers)

    async def __call__(self, url: str) -> Fetched:
        self.urls.append(url)
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def key_set(
    jwks: dict[str, dict[str, Any]], *kids: str, cache_control: str | None = None
) -> Fetched:
    """A 200 answer holding the keys ``kids``."""
    body = json.dumps({"keys": [jwks[kid] for kid in kids]}).encode()
    return Fetched(200, body, cache_control)


def client_of(
    provider: Provider, clock: Clock | None = None, outcomes: list[str] | None = None
) -> JwksClient:
    return JwksClient(
        "idp",
        URL,
        count_fetch=(outcomes if outcomes is not None else []).append,
        fetch=provider,
        min_refetch_s=5.0,
        clock=clock or Clock(),
    )


def jwks_tasks() -> list[asyncio.Task[Any]]:
    """The client's tasks still pending (its loop's and its fetches')."""
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("jwks-") and not t.done()]


# --- keys by kid ---------------------------------------------------------------------------


@gen_test
async def test_key_for_picks_the_key_by_kid(
    jwks: dict[str, dict[str, Any]],
    rsa_private: rsa.RSAPrivateKey,
    ec_private: ec.EllipticCurvePrivateKey,
) -> None:
    client = client_of(Provider(key_set(jwks, "rsa", "ec")))
    assert await client.refetch("rsa")
    rsa_key = client.key_for("rsa", "RS256")
    ec_key = client.key_for("ec", "ES256")
    assert isinstance(rsa_key, rsa.RSAPublicKey)
    assert rsa_key.public_numbers() == rsa_private.public_key().public_numbers()
    assert isinstance(ec_key, ec.EllipticCurvePublicKey)
    assert ec_key.public_numbers() == ec_private.public_key().public_numbers()


@gen_test
async def test_key_for_refuses_an_alg_the_key_does_not_verify(
    jwks: dict[str, dict[str, Any]],
) -> None:
    client = client_of(Provider(key_set(jwks, "rsa", "rsa-2", "ec")))
    await client.refetch("rsa")
    for kid, alg in [("ec", "RS256"), ("rsa", "PS256"), ("rsa", "HS256"), ("rsa-2", "ES256")]:
        with pytest.raises(InvalidToken) as refused:
            client.key_for(kid, alg)
        assert not isinstance(refused.value, KeyNotLoaded)
        assert (refused.value.reason, refused.value.bearer_sent) == ("algorithm", True)
    assert client.key_for("rsa-2", "PS256") is not None  # no alg declared: RS*/PS* all fit


@gen_test
async def test_an_unknown_kid_is_not_loaded_as_an_unknown_key(
    jwks: dict[str, dict[str, Any]],
) -> None:
    client = client_of(Provider(key_set(jwks, "rsa")))
    await client.refetch("rsa")
    with pytest.raises(KeyNotLoaded) as refused:
        client.key_for("rotated", "RS256")
    assert refused.value.reason == "unknown_key"
    assert (refused.value.keys, refused.value.kid) == (client, "rotated")


def test_before_any_load_every_kid_is_keys_unavailable() -> None:
    client = client_of(Provider())
    with pytest.raises(KeyNotLoaded) as refused:
        client.key_for("rsa", "RS256")
    assert refused.value.reason == "keys_unavailable"
    assert (refused.value.keys, refused.value.kid) == (client, "rsa")
    assert not client.loaded


@gen_test
async def test_a_token_naming_no_kid_is_an_unknown_key(
    jwks: dict[str, dict[str, Any]],
) -> None:
    client = client_of(Provider(key_set(jwks, "rsa")))
    for _ in range(2):  # before and after a load
        with pytest.raises(InvalidToken) as refused:
            client.key_for(None, "RS256")
        assert not isinstance(refused.value, KeyNotLoaded)
        assert refused.value.reason == "unknown_key"
        await client.refetch("rsa")


# --- refetches for unknown kids ------------------------------------------------------------


@gen_test
async def test_many_concurrent_refetches_share_one_fetch(jwks: dict[str, dict[str, Any]]) -> None:
    provider = Provider(key_set(jwks, "rsa"))
    provider.gate.clear()
    client = client_of(provider)
    waiting = [asyncio.ensure_future(client.refetch(f"kid-{n}")) for n in range(20)]
    await eventually(lambda: provider.urls, "the fetch started")
    for _ in range(5):
        await asyncio.sleep(0)
    assert not any(task.done() for task in waiting)
    provider.gate.set()
    assert await asyncio.gather(*waiting) == [True] * 20
    assert provider.urls == [URL]
    assert client.loaded


@gen_test
async def test_a_second_refetch_within_the_interval_does_not_fetch(
    jwks: dict[str, dict[str, Any]],
) -> None:
    provider = Provider(key_set(jwks, "rsa"))
    clock = Clock(1000.0)
    client = client_of(provider, clock)
    assert await client.refetch("a")
    assert len(provider.urls) == 1
    clock.now = 1004.9
    assert not await client.refetch("b")
    assert not await client.refetch("c")
    assert len(provider.urls) == 1


@gen_test
async def test_a_refetch_after_the_interval_fetches_again(
    jwks: dict[str, dict[str, Any]],
) -> None:
    provider = Provider(key_set(jwks, "rsa"), key_set(jwks, "rsa", "ec"))
    clock = Clock(1000.0)
    client = client_of(provider, clock)
    assert await client.refetch("ec")
    with pytest.raises(KeyNotLoaded):
        client.key_for("ec", "ES256")
    clock.now = 1005.0
    assert await client.refetch("ec")
    assert len(provider.urls) == 2
    assert client.key_for("ec", "ES256") is not None


@gen_test
async def test_a_refetch_joins_a_background_fetch_under_way_without_using_the_gate(
    jwks: dict[str, dict[str, Any]],
) -> None:
    provider = Provider(key_set(jwks, "rsa"))
    provider.gate.clear()
    client = client_of(provider)
    client.start()
    try:
        await eventually(lambda: provider.urls, "the first fetch started")
        joined = asyncio.ensure_future(client.refetch("rsa"))
        await asyncio.sleep(0)
        provider.gate.set()
        assert await joined
        assert len(provider.urls) == 1
        assert await client.refetch("rotated")  # the gate is still open: it fetches
        assert len(provider.urls) == 2
    finally:
        await client.stop()


# --- failed fetches ------------------------------------------------------------------------

FAILURES = [
    pytest.param(Fetched(599, b"", None, "ConnectionRefusedError"), "unreachable", id="599"),
    pytest.param(OSError("connection reset"), "unreachable", id="raised"),
    pytest.param(Fetched(500, b'{"keys": []}', None), "http_error", id="500"),
    pytest.param(Fetched(404, b"", None), "http_error", id="404"),
    pytest.param(Fetched(304, b"", None), "http_error", id="304"),
    pytest.param(Fetched(200, b"<html>", None), "invalid", id="not-json"),
    pytest.param(Fetched(200, b'{"keys": []}', None), "invalid", id="no-keys"),
    pytest.param(
        Fetched(200, b'{"keys": [{"kty": "oct", "kid": "s", "k": "AAAA"}]}', None),
        "invalid",
        id="only-oct",
    ),
]


@gen_test
@pytest.mark.parametrize(("failure", "outcome"), FAILURES)
async def test_a_failed_fetch_keeps_the_last_good_keys_and_is_counted(
    jwks: dict[str, dict[str, Any]], failure: Fetched | Exception, outcome: str
) -> None:
    provider = Provider(key_set(jwks, "rsa"))
    clock = Clock(1000.0)
    outcomes: list[str] = []
    client = client_of(provider, clock, outcomes)
    await client.refetch("rsa")
    held = client.key_set
    provider.answer(failure)
    clock.now = 1010.0
    assert await client.refetch("rotated")  # a fetch ended, though it failed
    assert len(provider.urls) == 2
    assert client.key_set is held
    assert client.fetched_at == 1000.0
    assert client.age_s() == 10.0
    assert client.key_for("rsa", "RS256") is not None
    assert outcomes == ["ok", outcome]


@gen_test
@pytest.mark.parametrize(("failure", "outcome"), FAILURES)
async def test_a_failed_first_fetch_loads_nothing_and_is_counted(
    failure: Fetched | Exception, outcome: str
) -> None:
    outcomes: list[str] = []
    client = client_of(Provider(failure), outcomes=outcomes)
    assert await client.refetch("rsa")
    assert not client.loaded
    assert client.age_s() == -1.0
    assert len(client) == 0
    assert outcomes == [outcome]
    with pytest.raises(KeyNotLoaded) as refused:
        client.key_for("rsa", "RS256")
    assert refused.value.reason == "keys_unavailable"


@gen_test
async def test_a_body_nesting_thousands_deep_counts_as_invalid_and_keeps_the_keys(
    jwks: dict[str, dict[str, Any]],
) -> None:
    # json.loads raises RecursionError, not ValueError, on such a body: it must be an
    # "invalid" answer like any other, not an exception out of the fetch (which would end
    # the background task that keeps the keys current).
    provider = Provider(key_set(jwks, "rsa"))
    outcomes: list[str] = []
    clock = Clock(1000.0)
    client = client_of(provider, clock, outcomes)
    await client.refetch("rsa")
    held = client.key_set
    provider.answer(Fetched(200, b"[" * 3000, None))
    clock.now = 1010.0
    assert await client.refetch("rotated")
    assert client.key_set is held
    assert outcomes == ["ok", "invalid"]


@gen_test
async def test_the_background_task_retries_a_failed_first_fetch(
    jwks: dict[str, dict[str, Any]],
) -> None:
    provider = Provider(Fetched(503, b"", None), key_set(jwks, "rsa"))
    outcomes: list[str] = []
    client = client_of(provider, outcomes=outcomes)
    client.start()
    try:
        await asyncio.wait_for(client.wait_loaded(), scaled(5))  # after a 0.5 to 1 s backoff
        assert outcomes == ["http_error", "ok"]
        assert client.key_for("rsa", "RS256") is not None
    finally:
        await client.stop()


# --- a new set -----------------------------------------------------------------------------


@gen_test
async def test_a_set_that_drops_a_kid_calls_on_withdrawn(jwks: dict[str, dict[str, Any]]) -> None:
    provider = Provider(
        key_set(jwks, "rsa"),
        key_set(jwks, "rsa", "ec"),  # a key added: nothing withdrawn
        key_set(jwks, "ec"),  # "rsa" withdrawn
        Fetched(500, b"", None),  # a failure withdraws nothing
        key_set(jwks, "ec"),
    )
    clock = Clock(1000.0)
    client = client_of(provider, clock)
    withdrawn: list[float] = []
    client.on_withdrawn = lambda: withdrawn.append(clock.now)
    for n in range(5):
        clock.now = 1000.0 + 10 * n
        assert await client.refetch("x")
        assert withdrawn == ([] if n < 2 else [1020.0])
    assert set(client.key_set.keys if client.key_set else ()) == {"ec"}
    with pytest.raises(KeyNotLoaded):
        client.key_for("rsa", "RS256")


@gen_test
async def test_the_lifetime_follows_the_answers_cache_control(
    jwks: dict[str, dict[str, Any]],
) -> None:
    provider = Provider(key_set(jwks, "rsa", cache_control="public, max-age=120"))
    clock = Clock(1000.0)
    client = client_of(provider, clock)
    await client.refetch("rsa")
    assert client.lifetime_s == 120.0
    provider.answer(key_set(jwks, "rsa"))
    clock.now = 1010.0
    await client.refetch("rsa")
    assert client.lifetime_s == DEFAULT_LIFETIME_S


@gen_test
async def test_the_age_counts_from_when_the_fetch_began(jwks: dict[str, dict[str, Any]]) -> None:
    provider = Provider(key_set(jwks, "rsa", "ec"))
    provider.gate.clear()
    clock = Clock(1000.0)
    client = client_of(provider, clock)
    assert client.age_s() == -1.0
    assert len(client) == 0
    fetching = asyncio.ensure_future(client.refetch("rsa"))
    await eventually(lambda: provider.urls, "the fetch started")
    clock.now = 1003.0
    provider.gate.set()
    await fetching
    assert client.fetched_at == 1000.0
    assert client.age_s() == 3.0
    clock.now = 1030.0
    assert client.age_s() == 30.0
    assert len(client) == 2


# --- start and stop ------------------------------------------------------------------------


@gen_test
async def test_start_loads_the_set_and_wait_loaded_returns(
    jwks: dict[str, dict[str, Any]],
) -> None:
    provider = Provider(key_set(jwks, "rsa", "ec"))
    outcomes: list[str] = []
    client = client_of(provider, outcomes=outcomes)
    assert not client.loaded
    client.start()
    try:
        await asyncio.wait_for(client.wait_loaded(), scaled(5))
        assert client.loaded
        assert len(client) == 2
        assert outcomes == ["ok"]
        client.start()  # a second start starts nothing more
        for _ in range(5):
            await asyncio.sleep(0)
        assert provider.urls == [URL]
        assert len(jwks_tasks()) == 1  # the loop, asleep until the refresh
    finally:
        await client.stop()
    assert jwks_tasks() == []


@gen_test
async def test_stop_cancels_the_background_task_and_a_fetch_in_flight() -> None:
    provider = Provider(Fetched(500, b"", None))
    provider.gate.clear()  # the fetch never ends by itself
    client = client_of(provider)
    client.start()
    await eventually(lambda: provider.urls, "the first fetch started")
    assert len(jwks_tasks()) == 2
    await asyncio.wait_for(client.stop(), scaled(5))
    assert provider.cancelled == 1
    assert jwks_tasks() == []
    assert not client.loaded


@gen_test
async def test_stop_cancels_a_refetch_in_flight(jwks: dict[str, dict[str, Any]]) -> None:
    provider = Provider(key_set(jwks, "rsa"))
    provider.gate.clear()
    client = client_of(provider)
    waiting = asyncio.ensure_future(client.refetch("rsa"))
    await eventually(lambda: provider.urls, "the fetch started")
    await asyncio.wait_for(client.stop(), scaled(5))
    await asyncio.gather(waiting, return_exceptions=True)
    assert provider.cancelled == 1
    assert jwks_tasks() == []
    assert not client.loaded


@gen_test
async def test_stop_before_start_does_nothing() -> None:
    client = client_of(Provider(Fetched(500, b"", None)))
    await client.stop()
    assert jwks_tasks() == []


@gen_test
async def test_a_stopped_client_fetches_nothing_more(jwks: dict[str, dict[str, Any]]) -> None:
    provider = Provider(key_set(jwks, "rsa"))
    client = client_of(provider)
    await client.stop()
    assert await client.refetch("rsa") is False  # a late request during shutdown
    client.start()
    assert provider.urls == []
    assert jwks_tasks() == []


@gen_test
async def test_a_key_replaced_under_its_kid_calls_on_withdrawn(
    jwks: dict[str, dict[str, Any]],
) -> None:
    provider = Provider(key_set(jwks, "rsa"))
    clock = Clock()
    client = client_of(provider, clock)
    withdrawn: list[bool] = []
    client.on_withdrawn = lambda: withdrawn.append(True)
    assert await client.refetch("rsa")
    # The same kid, another key behind it (the EC key's JWK published as "rsa").
    provider.answer(
        Fetched(200, json.dumps({"keys": [{**jwks["ec"], "kid": "rsa"}]}).encode(), None)
    )
    clock.now += 10
    assert await client.refetch("other")
    assert withdrawn == [True]
    # The same set again: nothing withdrawn.
    clock.now += 10
    assert await client.refetch("other")
    assert withdrawn == [True]
