"""Identity providers end to end: a real server checks tokens against JWKS documents that a
loopback provider serves (tests/server/identity_provider.py), with real RSA, EC P-256 and
Ed25519 keys made here: rotation, unknown-``kid`` storms, a provider down and back, keys
refused, several issuers, and tokens shaped as Firebase, Auth0, Cognito and Keycloak
issue them."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jwt
import pytest

from server.domain.key_sets import refresh_delay
from server.signing_keys import ASYMMETRIC_ALGORITHMS
from tests.conftest import Client, body_of, eventually, scaled, serving, settings_for
from tests.server.identity_provider import (
    IdentityProvider,
    SigningKey,
    claims,
    ec_key,
    ed25519_key,
    rsa_key,
)

pytestmark = pytest.mark.gen_test(timeout=scaled(30))

ISS = "https://idp.example/"
AUD = "scoreboard-api"


@asynccontextmanager
async def provider_running() -> AsyncIterator[IdentityProvider]:
    provider = IdentityProvider()
    provider.start()
    try:
        yield provider
    finally:
        await provider.stop()


def jwks_settings(url: str, **overrides: Any) -> Any:
    """A server that takes the tokens of one JWKS issuer (the single-key settings)."""
    return settings_for(
        jwt_secret=None,
        jwt_jwks_url=url,
        jwt_algorithms=ASYMMETRIC_ALGORITHMS,
        jwt_issuer=ISS,
        jwt_audience=AUD,
        **overrides,
    )


async def keys_loaded(client: Client) -> None:
    service = client.running.service
    async with asyncio.timeout(scaled(5)):
        for key_set in service.key_sets:
            await key_set.wait_loaded()


def refused(client: Client, reason: str) -> float:
    registry = client.running.service.metrics.registry
    value = registry.get_sample_value("scoreboard_tokens_refused_total", {"reason": reason})
    return value or 0.0


def fetches(client: Client, outcome: str, issuer: str = "default") -> float:
    registry = client.running.service.metrics.registry
    labels = {"issuer": issuer, "outcome": outcome}
    return registry.get_sample_value("scoreboard_jwks_fetches_total", labels) or 0.0


async def update(client: Client, token: str, increment: int = 1) -> tuple[int, Any]:
    response = await client.update(token, {"increment": increment})
    return response.code, body_of(response)


async def player_of(client: Client, token: str) -> str:
    """The player id a (valid, scored) token names, as the server reads it."""
    response = await client.request(
        "GET", "/api/players/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.code == 200, response.body
    user_id: str = body_of(response)["user_id"]
    return user_id


def token_of(key: SigningKey, sub: str, **more: Any) -> str:
    return key.sign(claims(sub, iss=ISS, aud=AUD, **more))


# --- one JWKS issuer ---------------------------------------------------------------------


async def test_a_token_signed_by_a_published_key_is_accepted_and_names_its_player() -> None:
    key = rsa_key("rsa-1")
    async with provider_running() as provider:
        provider.publish(key)
        async with serving(jwks_settings(provider.url())) as client:
            await keys_loaded(client)
            code, body = await update(client, token_of(key, "alice", name="Alice"), 3)
            assert (code, body["new_score"]) == (200, 3)
            assert (await client.top())[0]["username"] == "Alice"
            assert provider.fetches["idp"] == 1


async def test_a_rotation_mid_run_refuses_no_valid_token_and_retires_the_old_key() -> None:
    old, new = rsa_key("2026-11", index=0), rsa_key("2026-12", index=1)
    async with provider_running() as provider:
        provider.publish(old)
        async with serving(jwks_settings(provider.url())) as client:
            await keys_loaded(client)
            alice_old = token_of(old, "alice")
            assert (await update(client, alice_old))[0] == 200
            # The provider rotates: the old kid retired, the new one published, and from
            # now on every token is signed with it. The first one is not refused.
            provider.publish(new)
            for player in ("alice", "bob", "carol"):
                code, body = await update(client, token_of(new, player))
                assert code == 200, body
            assert provider.fetches["idp"] == 2  # one refetch, for the first new token
            # The retired key signs nothing any more, not even a token seen before (the
            # verifier had remembered it as valid until its exp).
            assert (await update(client, alice_old))[0] == 401
            assert (await update(client, token_of(old, "dave")))[0] == 401
            assert refused(client, "unknown_key") == 2


async def test_a_key_replaced_under_its_kid_no_longer_verifies_tokens_seen_before() -> None:
    first, replacement = rsa_key("k1", index=0), rsa_key("k1", index=1)  # one kid, two keys
    other = ec_key("k2")
    async with provider_running() as provider:
        provider.publish(first)
        async with serving(jwks_settings(provider.url())) as client:
            await keys_loaded(client)
            seen = token_of(first, "alice")
            assert (await update(client, seen))[0] == 200
            # The provider replaces the key behind k1 (and adds k2, whose first token
            # has the set fetched again).
            provider.publish(replacement, other)
            assert (await update(client, token_of(other, "bob")))[0] == 200
            assert (await update(client, seen))[0] == 401
            assert refused(client, "signature") == 1
            assert (await update(client, token_of(replacement, "carol")))[0] == 200


async def test_an_unknown_kid_storm_makes_at_most_one_refetch_per_interval() -> None:
    key = ec_key("ec-1")
    async with provider_running() as provider:
        provider.publish(key)
        # (Every refusal counts against the address: the throttle would answer 429 first.)
        settings = jwks_settings(provider.url(), auth_failures_per_minute=0)
        async with serving(settings) as client:
            await keys_loaded(client)
            gate = client.running.service.key_sets[0].refetch_gate
            gate.interval_s = scaled(1.0)
            made_up = [key.sign(claims(f"p{i}", iss=ISS, aud=AUD), kid=f"x{i}") for i in range(60)]
            answers = await asyncio.gather(*(update(client, t) for t in made_up[:30]))
            assert {code for code, _ in answers} == {401}
            assert {body["error"] for _, body in answers} == {"invalid_token"}
            assert provider.fetches["idp"] == 2  # the load, and one refetch for 30 kids
            await asyncio.sleep(gate.interval_s)
            await asyncio.gather(*(update(client, t) for t in made_up[30:]))
            assert provider.fetches["idp"] == 3  # one more, an interval later
            # Meanwhile real tokens passed as ever.
            assert (await update(client, token_of(key, "alice")))[0] == 200


async def test_the_provider_down_keeps_the_last_good_keys_and_it_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = ed25519_key("ed-1"), ed25519_key("ed-2")
    async with provider_running() as provider:
        provider.publish(first)
        async with serving(jwks_settings(provider.url())) as client:
            await keys_loaded(client)
            gate = client.running.service.key_sets[0].refetch_gate
            gate.interval_s = scaled(0.5)
            provider.down = True
            caplog.set_level(logging.WARNING, logger="server.jwks_client")
            # A new key the provider cannot serve: refused, the fetch counted as failed...
            provider.publish(first, second)
            assert (await update(client, token_of(second, "bob")))[0] == 401
            assert fetches(client, "http_error") == 1
            assert "keeping the last good keys" in caplog.text
            # ...while tokens of the keys held still pass, new ones included.
            assert (await update(client, token_of(first, "alice")))[0] == 200
            assert (await client.request("GET", "/readyz")).code == 200
            # Back up: the next token of the new key has it fetched.
            provider.down = False
            await asyncio.sleep(gate.interval_s)
            assert (await update(client, token_of(second, "bob")))[0] == 200
            assert fetches(client, "ok") == 2
        for record in caplog.records:  # no key or token material in any line
            text = record.getMessage() + json.dumps(record.__dict__, default=str)
            assert first.jwk()["x"] not in text and "eyJ" not in text


async def test_a_provider_unreachable_at_start_keeps_the_pod_unready_until_keys_load() -> None:
    key = rsa_key("rsa-1")
    provider = IdentityProvider()
    provider.start()
    url = provider.url()
    await provider.stop()  # nothing listens: connections are refused
    async with serving(jwks_settings(url)) as client:
        ready = await client.request("GET", "/readyz")
        assert ready.code == 503
        assert "signing keys" in body_of(ready)["message"]
        code, body = await update(client, token_of(key, "alice"))
        assert (code, body["error"]) == (401, "invalid_token")
        assert refused(client, "keys_unavailable") >= 1
        await eventually(lambda: asyncio.sleep(0, fetches(client, "unreachable")), "a failed fetch")
        provider.publish(key)
        provider.restart_on_same_port()
        try:
            await keys_loaded(client)  # the background retry (1 s, then 2 s...) finds it
            assert (await client.request("GET", "/readyz")).code == 200
            assert (await update(client, token_of(key, "alice")))[0] == 200
        finally:
            await provider.stop()


async def test_the_key_set_lives_by_its_cache_control_and_refreshes_before_it_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = ec_key("ec-1"), ec_key("ec-2")
    refresh_after: list[float] = []

    def refresh_soon(lifetime_s: float) -> float:
        refresh_after.append(refresh_delay(lifetime_s))
        return 0.05  # at once, rather than at 80 % of the lifetime

    monkeypatch.setattr("server.jwks_client.refresh_delay", refresh_soon)
    async with provider_running() as provider:
        provider.cache_control = "public, max-age=120, must-revalidate"
        provider.publish(first)
        async with serving(jwks_settings(provider.url())) as client:
            await keys_loaded(client)
            key_set = client.running.service.key_sets[0]
            assert key_set.lifetime_s == 120
            provider.cache_control = "max-age=5"  # below the floor: raised to 60 s
            provider.publish(first, second)
            await eventually(
                lambda: asyncio.sleep(0, len(key_set)), "the refreshed set", until=lambda n: n == 2
            )
            assert key_set.lifetime_s == 60
            assert refresh_after[0] == 96  # 80 % of the 120 s the provider allowed
            fetched = provider.fetches["idp"]
            assert (await update(client, token_of(second, "bo")))[0] == 200
            assert provider.fetches["idp"] in (fetched, fetched + 1)  # no refetch was needed


# --- keys refused ------------------------------------------------------------------------


async def test_a_symmetric_key_in_a_jwks_signs_nothing() -> None:
    key = rsa_key("rsa-1")
    secret = "a-secret-anyone-who-reads-the-jwks-would-know"
    oct_jwk = {"kty": "oct", "kid": "shared", "k": "YS1zZWNyZXQtYW55b25lLXdobw", "alg": "HS256"}
    async with provider_running() as provider:
        provider.publish(key, oct_jwk)
        async with serving(jwks_settings(provider.url())) as client:
            await keys_loaded(client)
            assert len(client.running.service.key_sets[0]) == 1  # the oct key left out
            forged = jwt.encode(
                claims("mallory", iss=ISS, aud=AUD),
                secret,
                algorithm="HS256",
                headers={"kid": "shared"},
            )
            assert (await update(client, forged))[0] == 401
            assert refused(client, "algorithm") == 1  # HS256 is never taken from a JWKS


async def test_a_token_whose_alg_differs_from_its_keys_is_refused() -> None:
    rs = rsa_key("rsa-1", alg="RS256")
    es = ec_key("ec-1")
    async with provider_running() as provider:
        provider.publish(rs, es)
        async with serving(jwks_settings(provider.url())) as client:
            await keys_loaded(client)
            # Validly signed by the RSA key, but with PS256, which its JWK does not name.
            ps = rs.sign(claims("mallory", iss=ISS, aud=AUD), alg="PS256")
            assert (await update(client, ps))[0] == 401
            # An RSA signature under the EC key's kid.
            swapped = rs.sign(claims("mallory", iss=ISS, aud=AUD), kid="ec-1")
            assert (await update(client, swapped))[0] == 401
            assert refused(client, "algorithm") == 2
            # Unsigned: alg "none" is never taken.
            unsigned = jwt.encode(claims("mallory", iss=ISS, aud=AUD), None, algorithm="none")
            assert (await update(client, unsigned))[0] == 401
            assert refused(client, "algorithm") == 3
            assert (await update(client, token_of(es, "alice")))[0] == 200


# --- several issuers ---------------------------------------------------------------------


def issuers_file(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "issuers.toml"
    path.write_text(text)
    return settings_for(jwt_secret=None, jwt_algorithms=(), jwt_issuers_file=str(path))


STUDIO_ISS = "https://auth.studio.example"


def studio_and(
    tmp_path: Path,
    provider: IdentityProvider,
    other: str,
    other_iss: str,
    prefix: str,
    *,
    studio_scopes: bool = False,
) -> Any:
    """Settings trusting the studio (no prefix) and issuer ``other`` (``prefix``), each
    with its JWKS on ``provider``, taking any audience."""
    return issuers_file(
        tmp_path,
        f"""
        [issuers.studio]
        iss = "{STUDIO_ISS}"
        jwks_url = "{provider.url("studio")}"
        any_audience = true
        trust_scopes = {str(studio_scopes).lower()}

        [issuers.{other}]
        iss = "{other_iss}"
        jwks_url = "{provider.url(other)}"
        any_audience = true
        user_id_prefix = "{prefix}"
        """,
    )


async def test_a_kid_of_one_issuer_never_verifies_another_issuers_token(tmp_path: Path) -> None:
    studio, console = rsa_key("k1", index=0), rsa_key("k1", index=1)  # the same kid
    async with provider_running() as provider:
        provider.publish(studio, name="studio")
        provider.publish(console, name="console")
        settings = studio_and(tmp_path, provider, "console", "https://console.example", "console:")
        async with serving(settings) as client:
            await keys_loaded(client)
            # Signed by the console's key, claiming the studio: the studio's k1 refuses it.
            forged = console.sign(claims("alice", iss=STUDIO_ISS))
            assert (await update(client, forged))[0] == 401
            assert refused(client, "signature") == 1
            genuine = console.sign(claims("alice", iss="https://console.example"))
            assert (await update(client, genuine))[0] == 200
            assert await player_of(client, genuine) == "console:alice"


async def test_two_issuers_with_colliding_subs_stay_two_players(tmp_path: Path) -> None:
    studio, platform = ed25519_key("studio-1"), ec_key("platform-1")
    async with provider_running() as provider:
        provider.publish(studio, name="studio")
        provider.publish(platform, name="platform")
        settings = studio_and(tmp_path, provider, "platform", "https://platform.example", "pf:")
        async with serving(settings) as client:
            await keys_loaded(client)
            mine = studio.sign(claims("42", iss=STUDIO_ISS, name="Studio 42"))
            theirs = platform.sign(claims("42", iss="https://platform.example", name="PF 42"))
            assert (await update(client, mine, 5))[0] == 200
            assert (await update(client, theirs, 7))[0] == 200
            rows = [(r["user_id"], r["username"], r["score"]) for r in await client.top()]
            assert rows == [("pf:42", "PF 42", 7), ("42", "Studio 42", 5)]
            # The unprefixed issuer cannot name the other's player.
            posing = studio.sign(claims("pf:42", iss=STUDIO_ISS))
            assert (await update(client, posing))[0] == 401
            assert refused(client, "subject") == 1
            stranger = studio.sign(claims("42", iss="https://elsewhere.example"))
            assert (await update(client, stranger))[0] == 401
            assert refused(client, "unknown_issuer") == 1


async def test_only_an_issuer_trusted_with_scopes_grants_admin_rights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    studio, social = ed25519_key("ops-1"), rsa_key("social-1")
    async with provider_running() as provider:
        provider.publish(studio, name="studio")
        provider.publish(social, name="social")
        settings = studio_and(
            tmp_path, provider, "social", "https://social.example", "social:", studio_scopes=True
        )
        async with serving(settings) as client:
            await keys_loaded(client)
            admin_scope = {"scope": "scores:admin"}
            operator = studio.sign(claims("op", iss=STUDIO_ISS, **admin_scope))
            outsider = social.sign(claims("op", iss="https://social.example", **admin_scope))
            for token, status in ((operator, 404), (outsider, 403)):
                response = await client.request(
                    "GET", "/api/users/nobody", headers={"Authorization": f"Bearer {token}"}
                )
                assert response.code == status, response.body  # 404: allowed, no such user


# --- tokens as the four providers issue them ---------------------------------------------


async def test_tokens_shaped_as_firebase_auth0_cognito_and_keycloak_issue_them_pass(
    tmp_path: Path,
) -> None:
    firebase, auth0 = rsa_key("fb-kid", index=0), rsa_key("a0-kid", index=1)
    cognito, keycloak = rsa_key("cg-kid", index=2), rsa_key("kc-kid", index=3)
    keycloak_enc = {**rsa_key("kc-enc", index=4).jwk(), "use": "enc", "alg": "RSA-OAEP"}
    async with provider_running() as provider:
        provider.publish(firebase, name="firebase")
        provider.publish(auth0, name="auth0")
        provider.publish(cognito, name="cognito")
        provider.publish(keycloak, keycloak_enc, name="keycloak")
        settings = issuers_file(
            tmp_path,
            f"""
            [issuers.firebase]
            iss = "https://securetoken.google.com/my-game"
            jwks_url = "{provider.url("firebase")}"
            audience = "my-game"
            algorithms = ["RS256"]
            name_claims = ["name"]
            user_id_prefix = "fb:"

            [issuers.auth0]
            iss = "https://my-game.eu.auth0.com/"
            jwks_url = "{provider.url("auth0")}"
            audience = "https://scores.my-game.example"
            algorithms = ["RS256"]
            name_claims = ["nickname", "name"]
            user_id_prefix = "a0:"

            [issuers.cognito]
            iss = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123"
            jwks_url = "{provider.url("cognito")}"
            audience = "4f1a2b3c4d5e6f7g8h9i0j1k2l"
            algorithms = ["RS256"]
            name_claims = ["cognito:username"]
            user_id_prefix = "cg:"

            [issuers.keycloak]
            iss = "https://sso.my-game.example/realms/players"
            jwks_url = "{provider.url("keycloak")}"
            audience = "scoreboard"
            algorithms = ["RS256"]
            name_claims = ["preferred_username"]
            user_id_prefix = "kc:"
            """,
        )
        firebase_token = firebase.sign(
            claims(
                "x1YzUid9Q2hVb3",
                iss="https://securetoken.google.com/my-game",
                aud="my-game",
                auth_time=1,
                user_id="x1YzUid9Q2hVb3",
                name="Ann",
                firebase={"identities": {}, "sign_in_provider": "anonymous"},
            )
        )
        auth0_token = auth0.sign(
            claims(
                "google-oauth2|1029384756",
                iss="https://my-game.eu.auth0.com/",
                aud=["https://scores.my-game.example", "https://my-game.eu.auth0.com/userinfo"],
                azp="Zq8vJ2k",
                scope="openid profile",
                nickname="bo",
            )
        )
        cognito_token = cognito.sign(
            claims(
                "7c8d9e0f-1a2b-3c4d-5e6f-7a8b9c0d1e2f",
                iss="https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123",
                aud="4f1a2b3c4d5e6f7g8h9i0j1k2l",
                token_use="id",
                auth_time=1,
                **{"cognito:username": "cy"},
            )
        )
        keycloak_token = keycloak.sign(
            claims(
                "f3b0c442-98fc-1c14-9afb-f4c8996fb924",
                iss="https://sso.my-game.example/realms/players",
                aud=["scoreboard", "account"],
                typ="Bearer",
                azp="game-client",
                preferred_username="di",
                realm_access={"roles": ["player"]},
            )
        )
        async with serving(settings) as client:
            await keys_loaded(client)
            players = []
            for token in (firebase_token, auth0_token, cognito_token, keycloak_token):
                code, body = await update(client, token)
                assert code == 200, body
                players.append(await player_of(client, token))
            assert players == [
                "fb:x1YzUid9Q2hVb3",
                "a0:google-oauth2|1029384756",
                "cg:7c8d9e0f-1a2b-3c4d-5e6f-7a8b9c0d1e2f",
                "kc:f3b0c442-98fc-1c14-9afb-f4c8996fb924",
            ]
            names = {row["user_id"]: row["username"] for row in await client.top()}
            assert sorted(names.values()) == ["Ann", "bo", "cy", "di"]
            # Each provider's token for another audience is refused.
            wrong = keycloak.sign(
                claims("x", iss="https://sso.my-game.example/realms/players", aud="account")
            )
            assert (await update(client, wrong))[0] == 401
            assert refused(client, "claims") == 1
