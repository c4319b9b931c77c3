"""TokenVerifier: who is calling. Every kind of bad token is a 401 ``invalid_token``."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from server.domain.errors import TokenRefused
from server.domain.tokens import (
    MAX_TOKEN_BYTES,
    MAX_USER_ID_CHARS,
    MAX_USERNAME_CHARS,
    Identity,
    TokenVerifier,
    display_name,
    mint_token,
)
from tests.conftest import SECRET, make_token

OTHER_SECRET = "another-secret-that-is-also-32-bytes-or-more"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def segment(obj: dict[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "player-1", "iat": now, "exp": now + 600, **extra}


def hand_signed_hs256(payload: dict[str, Any], key: bytes, **header: Any) -> str:
    """An HS256 token built by hand (PyJWT refuses to sign some of the bad ones)."""
    signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT', **header})}.{segment(payload)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_pem(rsa_key: rsa.RSAPrivateKey) -> str:
    return (
        rsa_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier.single(SECRET, ("HS256",))


@pytest.fixture
def rs_verifier(rsa_pem: str) -> TokenVerifier:
    return TokenVerifier.single(rsa_pem, ("RS256",))


def refusal(verifier: TokenVerifier, token: str, code: str = "invalid_token") -> TokenRefused:
    with pytest.raises(TokenRefused) as info:
        verifier.verify(token)
    assert info.value.code == code
    # A token was sent and refused (an empty one is none): the web layer's challenge
    # names the error then.
    assert info.value.bearer_sent == (code == "invalid_token")
    return info.value


# --- valid tokens --------------------------------------------------------------------------


def test_a_valid_token_names_the_caller(verifier: TokenVerifier) -> None:
    identity = verifier.verify(make_token("alice", name="Alice"))
    assert identity == Identity(user_id="alice", username="Alice")


def test_a_token_without_a_name_is_named_by_its_sub(verifier: TokenVerifier) -> None:
    assert verifier.verify(make_token("bob")) == Identity("bob", "bob")


def test_a_minted_token_is_accepted(verifier: TokenVerifier) -> None:
    token = mint_token(SECRET, "carol", name="Carol", ttl_s=60)
    assert verifier.verify(token) == Identity("carol", "Carol")


def test_a_valid_rs256_token_is_accepted(
    rs_verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = jwt.encode(claims(sub="dave", name="Dave"), rsa_key, algorithm="RS256")
    assert rs_verifier.verify(token) == Identity("dave", "Dave")


# --- refused tokens ------------------------------------------------------------------------


def test_a_token_signed_with_another_key_is_refused(verifier: TokenVerifier) -> None:
    refusal(verifier, make_token("alice", secret=OTHER_SECRET))


def test_a_tampered_payload_is_refused(verifier: TokenVerifier) -> None:
    header, _, signature = make_token("alice").split(".")
    forged = f"{header}.{segment(claims(sub='admin'))}.{signature}"
    refusal(verifier, forged)


def test_an_expired_token_is_refused(verifier: TokenVerifier) -> None:
    error = refusal(verifier, make_token("alice", ttl_s=-120, iat=int(time.time()) - 600))
    assert "expired" in error.message


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_an_unsigned_alg_none_token_is_refused(
    verifier: TokenVerifier, rs_verifier: TokenVerifier, alg: str
) -> None:
    token = f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(claims())}."
    refusal(verifier, token)
    refusal(rs_verifier, token)


def test_a_token_without_sub_is_refused(verifier: TokenVerifier) -> None:
    refusal(verifier, make_token(sub=None))


def test_a_token_without_exp_is_refused(verifier: TokenVerifier) -> None:
    refusal(verifier, make_token("alice", exp=None))


@pytest.mark.parametrize("sub", [12345, 0, ["alice"], {"id": "alice"}, True])
def test_a_non_string_sub_is_refused(verifier: TokenVerifier, sub: Any) -> None:
    token = hand_signed_hs256(claims(sub=sub), SECRET.encode())
    refusal(verifier, token)


def test_an_empty_sub_is_refused(verifier: TokenVerifier) -> None:
    refusal(verifier, hand_signed_hs256(claims(sub=""), SECRET.encode()))


def test_a_sub_longer_than_128_characters_is_refused(verifier: TokenVerifier) -> None:
    assert MAX_USER_ID_CHARS == 128
    longest = "x" * MAX_USER_ID_CHARS
    assert verifier.verify(make_token(longest)).user_id == longest
    refusal(verifier, make_token(longest + "x"))


def test_issuer_is_checked_when_configured() -> None:
    verifier = TokenVerifier.single(SECRET, ("HS256",), issuer="https://idp.example")
    assert verifier.verify(make_token("alice", iss="https://idp.example")).user_id == "alice"
    refusal(verifier, make_token("alice", iss="https://evil.example"))
    refusal(verifier, make_token("alice"))  # no iss at all


def test_audience_is_checked_when_configured() -> None:
    verifier = TokenVerifier.single(SECRET, ("HS256",), audience="scoreboard")
    assert verifier.verify(make_token("alice", aud="scoreboard")).user_id == "alice"
    assert verifier.verify(make_token("alice", aud=["other", "scoreboard"])).user_id == "alice"
    refusal(verifier, make_token("alice", aud="billing"))
    refusal(verifier, make_token("alice"))  # no aud at all


def test_issuer_and_audience_are_not_required_when_not_configured(
    verifier: TokenVerifier,
) -> None:
    token = make_token("alice", iss="anyone", aud="anything")
    assert verifier.verify(token).user_id == "alice"


def _token_of_length_near(target: int, *, above: bool) -> str:
    """A validly signed token whose length is just at/below ``target`` or just above it."""
    base = len(make_token("alice", pad=""))
    pad = max(0, (target - base) * 3 // 4 - 8)
    while True:
        token = make_token("alice", pad="p" * pad)
        if above and len(token) > target:
            return token
        if not above and len(make_token("alice", pad="p" * (pad + 1))) > target:
            assert len(token) <= target
            return token
        pad += 1


def test_a_token_longer_than_8192_bytes_is_refused(verifier: TokenVerifier) -> None:
    assert MAX_TOKEN_BYTES == 8192
    longest = _token_of_length_near(MAX_TOKEN_BYTES, above=False)
    assert len(longest) > MAX_TOKEN_BYTES - 8
    assert verifier.verify(longest).user_id == "alice"  # a valid token near the limit is fine
    too_long = _token_of_length_near(MAX_TOKEN_BYTES, above=True)
    assert len(too_long) <= MAX_TOKEN_BYTES + 8
    error = refusal(verifier, too_long)
    assert "8192" in error.message


def test_key_confusion_hs256_signed_with_the_public_key_is_refused(
    rs_verifier: TokenVerifier, rsa_pem: str
) -> None:
    # The classic attack: the verifier's public key (known to all) used as an HMAC secret.
    for key in (rsa_pem.encode(), rsa_pem.strip().encode()):
        refusal(rs_verifier, hand_signed_hs256(claims(sub="admin"), key))


def test_an_rs256_verifier_refuses_an_hs256_token_and_the_reverse(
    rs_verifier: TokenVerifier, verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    refusal(rs_verifier, make_token("alice"))
    refusal(verifier, jwt.encode(claims(), rsa_key, algorithm="RS256"))


@pytest.mark.parametrize("garbage", ["abc", "a.b.c", "a.b", "....", "Bearer x", "é.é.é"])
def test_garbage_is_refused(verifier: TokenVerifier, garbage: str) -> None:
    refusal(verifier, garbage)


def test_an_empty_token_is_missing(verifier: TokenVerifier) -> None:
    refusal(verifier, "", code="missing_token")


# --- the Authorization header --------------------------------------------------------------


@pytest.mark.parametrize("header", [None, ""])
def test_no_header_is_missing_token(verifier: TokenVerifier, header: str | None) -> None:
    with pytest.raises(TokenRefused) as info:
        verifier.verify_header(header)
    assert (info.value.code, info.value.bearer_sent) == ("missing_token", False)


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "bearer   ", "  Bearer  "])
def test_bearer_with_nothing_is_missing_token(verifier: TokenVerifier, header: str) -> None:
    with pytest.raises(TokenRefused) as info:
        verifier.verify_header(header)
    assert (info.value.code, info.value.bearer_sent) == ("missing_token", False)


@pytest.mark.parametrize("scheme", ["Basic", "Token", "JWT", "Bearer:", "Bearerx"])
def test_another_scheme_is_invalid_token(verifier: TokenVerifier, scheme: str) -> None:
    with pytest.raises(TokenRefused) as info:
        verifier.verify_header(f"{scheme} {make_token('alice')}")
    # No bearer token was sent: the challenge names no error (RFC 6750 section 3.1).
    assert (info.value.code, info.value.bearer_sent) == ("invalid_token", False)


def test_a_bare_token_without_a_scheme_is_invalid_token(verifier: TokenVerifier) -> None:
    with pytest.raises(TokenRefused) as info:
        verifier.verify_header(make_token("alice"))
    assert (info.value.code, info.value.bearer_sent) == ("invalid_token", False)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_bearer_scheme_is_case_insensitive(verifier: TokenVerifier, scheme: str) -> None:
    header = f"{scheme}  {make_token('alice', name='Alice')} "
    assert verifier.verify_header(header) == Identity("alice", "Alice")


def test_a_bad_token_in_the_header_is_invalid_token(verifier: TokenVerifier) -> None:
    with pytest.raises(TokenRefused) as info:
        verifier.verify_header(f"Bearer {make_token('alice', secret=OTHER_SECRET)}")
    assert (info.value.code, info.value.bearer_sent) == ("invalid_token", True)


# --- display names -------------------------------------------------------------------------


def test_display_name_prefers_name_then_preferred_username_then_sub() -> None:
    assert display_name({"name": "N", "preferred_username": "P"}, "id") == "N"
    assert display_name({"preferred_username": "P"}, "id") == "P"
    assert display_name({}, "id") == "id"
    # Not a usable string: fall through to the next choice.
    assert display_name({"name": 42, "preferred_username": "P"}, "id") == "P"
    assert display_name({"name": "  ", "preferred_username": None}, "id") == "id"
    assert display_name({"name": "\x00\x07\u200b"}, "id") == "id"


def test_display_name_strips_control_and_format_characters() -> None:
    assert display_name({"name": "Al\x00ice\n"}, "id") == "Alice"
    assert display_name({"name": "\x1b[31mRed\x1b[0m"}, "id") == "[31mRed[0m"
    assert display_name({"name": "evil\u202egnp.exe"}, "id") == "evilgnp.exe"  # RTL override
    assert display_name({"name": "zero\u200bwidth"}, "id") == "zerowidth"
    assert display_name({"name": "Zoë 🎮 李"}, "id") == "Zoë 🎮 李"  # letters and emoji stay


def test_the_fallback_to_the_user_id_is_cleaned_too() -> None:
    assert display_name({}, "evil\u202egnp.exe") == "evilgnp.exe"


@pytest.mark.parametrize("sub", ["evil\u202egnp.exe", "line\nbreak", "lone\ud800surrogate"])
def test_a_sub_with_control_or_unencodable_characters_is_refused(
    verifier: TokenVerifier, sub: str
) -> None:
    token = (
        jwt.encode({"sub": sub, "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
        if "\ud800" not in sub
        else _raw_token({"sub": sub, "exp": int(time.time()) + 60})
    )
    with pytest.raises(TokenRefused) as caught:
        verifier.verify(token)
    assert caught.value.code == "invalid_token"


def _raw_token(claims: dict[str, object]) -> str:
    """An HS256 token whose JSON may hold an escaped lone surrogate (PyJWT cannot encode it)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(b'{"alg":"HS256","typ":"JWT"}')
    payload = b64(json.dumps(claims).encode())  # ensure_ascii escapes it as \\ud800
    signature = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256)
    return f"{header}.{payload}.{b64(signature.digest())}"


def test_display_name_is_bounded() -> None:
    name = display_name({"name": "n" * 1000}, "id")
    assert name == "n" * MAX_USERNAME_CHARS


def test_the_verified_identity_uses_the_cleaned_display_name(verifier: TokenVerifier) -> None:
    token = make_token("alice", name=None, preferred_username="\tAli\rce\x7f ")
    assert verifier.verify(token) == Identity("alice", "Alice")


# --- leeway --------------------------------------------------------------------------------


def test_leeway_accepts_a_token_that_expired_within_it() -> None:
    token = make_token("alice", ttl_s=-10, iat=int(time.time()) - 100)
    assert TokenVerifier.single(SECRET, ("HS256",), leeway_s=30).verify(token).user_id == "alice"
    refusal(TokenVerifier.single(SECRET, ("HS256",), leeway_s=0), token)
    refusal(TokenVerifier.single(SECRET, ("HS256",), leeway_s=5), token)


def test_leeway_applies_to_not_before() -> None:
    token = make_token("alice", nbf=int(time.time()) + 10)
    assert TokenVerifier.single(SECRET, ("HS256",), leeway_s=30).verify(token).user_id == "alice"
    refusal(TokenVerifier.single(SECRET, ("HS256",), leeway_s=0), token)


def test_the_default_leeway_is_30_seconds() -> None:
    verifier = TokenVerifier.single(SECRET, ("HS256",))
    assert verifier.verify(make_token("alice", ttl_s=-20)).user_id == "alice"
    refusal(verifier, make_token("alice", ttl_s=-60))


# --- remembered (cached) verifications -----------------------------------------------------


class FakeClock:
    """Wall-clock seconds that only move when a test moves them."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token ``jwt.decode`` is asked to check (the full check), in order."""
    calls: list[str] = []
    real_decode = jwt.decode

    def counting_decode(token: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(token)
        return real_decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    return calls


def pin_pyjwt_clock(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    """Make PyJWT's own exp/nbf/iat checks read ``clock`` too (white-box: ``api_jwt``)."""

    class PinnedDatetime(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> PinnedDatetime:
            return cls.fromtimestamp(clock(), tz)

    monkeypatch.setattr(jwt.api_jwt, "datetime", PinnedDatetime)


def test_a_verified_token_is_answered_from_memory(decoded: list[str]) -> None:
    verifier = TokenVerifier.single(SECRET, ("HS256",))
    token = make_token("alice", name="Alice")
    first = verifier.verify(token)
    assert decoded == [token]
    assert verifier.verify(token) == first
    assert verifier.verify_header(f"Bearer {token}") == first  # the header path too
    assert decoded == [token]  # checked in full once


def test_a_remembered_token_is_checked_in_full_again_from_its_exp(
    decoded: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = int(time.time())
    clock = FakeClock(now)
    pin_pyjwt_clock(monkeypatch, clock)
    verifier = TokenVerifier.single(SECRET, ("HS256",), leeway_s=0, clock=clock)
    token = make_token("alice", iat=now, exp=now + 60)
    assert verifier.verify(token).user_id == "alice"
    clock.now = now + 59.9
    assert verifier.verify(token).user_id == "alice"
    assert len(decoded) == 1  # still remembered just before exp
    clock.now = now + 61
    error = refusal(verifier, token)
    assert "expired" in error.message
    assert len(decoded) == 2  # the full check ran again, and refused it
    refusal(verifier, token)
    assert len(decoded) == 3  # and the expired token is not remembered either


def test_a_remembered_token_is_not_answered_within_the_leeway_past_exp(
    decoded: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The full check accepts a token up to leeway_s after its exp; memory never does.
    now = int(time.time())
    clock = FakeClock(now)
    pin_pyjwt_clock(monkeypatch, clock)
    verifier = TokenVerifier.single(SECRET, ("HS256",), leeway_s=30, clock=clock)
    token = make_token("alice", iat=now, exp=now + 60)
    verifier.verify(token)
    clock.now = now + 60
    assert verifier.verify(token).user_id == "alice"  # accepted: within the leeway
    assert verifier.verify(token).user_id == "alice"
    assert len(decoded) == 3  # but each time by the full check
    clock.now = now + 91
    assert "expired" in refusal(verifier, token).message


def test_a_refused_token_is_never_remembered(decoded: list[str]) -> None:
    verifier = TokenVerifier.single(SECRET, ("HS256",))
    forged = make_token("alice", secret=OTHER_SECRET)
    refusal(verifier, forged)
    refusal(verifier, forged)
    assert decoded == [forged, forged]
    expired = make_token("bob", ttl_s=-120, iat=int(time.time()) - 600)
    refusal(verifier, expired)
    refusal(verifier, expired)
    assert decoded[2:] == [expired, expired]
    no_sub = hand_signed_hs256(claims(sub=""), SECRET.encode())  # refused after decoding
    refusal(verifier, no_sub)
    refusal(verifier, no_sub)
    assert decoded[4:] == [no_sub, no_sub]


def test_only_the_exact_token_text_is_answered_from_memory(decoded: list[str]) -> None:
    verifier = TokenVerifier.single(SECRET, ("HS256",))
    body = claims(sub="alice")
    token = jwt.encode(body, SECRET, algorithm="HS256")
    verifier.verify(token)
    # Same header and claims, another signature: a forgery must not ride on the memory.
    signing_input = token.rsplit(".", 1)[0]
    forged = f"{signing_input}.{make_token('alice', secret=OTHER_SECRET).rsplit('.', 1)[1]}"
    refusal(verifier, forged)
    refusal(verifier, token + "A")  # one character more
    refusal(verifier, token[:-1])  # one character less
    assert decoded == [token, forged, token + "A", token[:-1]]
    # A second valid token with the same claims is another text: checked in full too.
    other = jwt.encode(body, SECRET, algorithm="HS256", headers={"kid": "k2"})
    assert verifier.verify(other) == verifier.verify(token)
    assert decoded[4:] == [other]


def test_remembered_tokens_are_bounded_oldest_out_first(decoded: list[str]) -> None:
    verifier = TokenVerifier.single(SECRET, ("HS256",), cache_size=2)
    a, b, c = (make_token(user) for user in ("a", "b", "c"))
    for token in (a, b, c):
        verifier.verify(token)
    assert decoded == [a, b, c]
    assert verifier.verify(c).user_id == "c"
    assert decoded == [a, b, c]  # c is remembered
    assert verifier.verify(a).user_id == "a"
    assert decoded == [a, b, c, a]  # a was forgotten when c came in
    assert verifier.verify(c).user_id == "c"
    assert verifier.verify(a).user_id == "a"
    assert decoded == [a, b, c, a]  # now c and a are remembered...
    verifier.verify(b)
    assert decoded == [a, b, c, a, b]  # ...and b was not


def test_a_remembered_token_in_use_stays_the_longest(decoded: list[str]) -> None:
    verifier = TokenVerifier.single(SECRET, ("HS256",), cache_size=2)
    a, b, c = (make_token(user) for user in ("a", "b", "c"))
    verifier.verify(a)
    verifier.verify(b)
    verifier.verify(a)  # a used again: b is now the least recently used
    verifier.verify(c)
    verifier.verify(a)
    assert decoded == [a, b, c]  # a stayed; b went when c came in
    verifier.verify(b)
    assert decoded == [a, b, c, b]


def test_remembered_tokens_are_bounded_by_their_total_length(
    decoded: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, c = (make_token(user) for user in ("a", "b", "c"))
    monkeypatch.setattr("server.domain.tokens.VERIFIED_CACHE_BYTES", len(a) + len(b))
    verifier = TokenVerifier.single(SECRET, ("HS256",), cache_size=100)
    for token in (a, b, a, b):
        verifier.verify(token)
    assert decoded == [a, b]  # two fit
    verifier.verify(c)  # a third does not: the least recently used (a) goes
    verifier.verify(b)
    verifier.verify(a)
    assert decoded == [a, b, c, a]


def test_cache_size_zero_remembers_nothing(decoded: list[str]) -> None:
    verifier = TokenVerifier.single(SECRET, ("HS256",), cache_size=0)
    token = make_token("alice")
    for _ in range(3):
        assert verifier.verify(token).user_id == "alice"
    assert decoded == [token] * 3


def test_the_remembered_identity_is_the_fully_checked_one(decoded: list[str]) -> None:
    token = make_token("alice", name="\tAlice\x7f ", scope="scores:admin scores:read")
    full = TokenVerifier.single(SECRET, ("HS256",), cache_size=0).verify(token)
    assert full == Identity("alice", "Alice", frozenset({"scores:admin", "scores:read"}))
    verifier = TokenVerifier.single(SECRET, ("HS256",))
    assert verifier.verify(token) == full
    remembered = verifier.verify(token)
    assert len(decoded) == 2  # the third answer came from memory
    assert (remembered.user_id, remembered.username, remembered.scopes) == (
        full.user_id,
        full.username,
        full.scopes,
    )


def test_a_token_whose_json_nests_thousands_deep_is_refused_not_a_crash(
    verifier: TokenVerifier,
) -> None:
    # json.loads raises RecursionError on such JSON; the token's header is parsed before
    # any signature is checked, so anyone can send one (issue 11, finding 11).
    deep = base64.urlsafe_b64encode(b"[" * 3000).rstrip(b"=").decode()
    for token in (f"{deep}.e30.c2ln", f"eyJhbGciOiJIUzI1NiJ9.{deep}.c2ln"):
        with pytest.raises(TokenRefused) as refused:
            verifier.verify(token)
        assert (refused.value.code, refused.value.bearer_sent) == ("invalid_token", True)


# --- odd tokens never raise anything but a refusal, and refusals stay short ----------------


@pytest.mark.parametrize("token", ["\ud800.e30.sig", "é.e30.sig", "a.b.c\x00"])
def test_a_token_with_characters_other_than_ascii_is_malformed(
    verifier: TokenVerifier, token: str
) -> None:
    assert refusal(verifier, token).reason == "malformed"


def test_a_refusal_quoting_the_tokens_own_header_stays_short(verifier: TokenVerifier) -> None:
    token = jwt.encode(
        claims(sub="alice"), SECRET, algorithm="HS256", headers={"crit": ["A" * 5000]}
    )
    refused = refusal(verifier, token)
    assert len(refused.message) <= 160, refused.message


def test_a_header_naming_a_long_kid_or_alg_is_refused_briefly(verifier: TokenVerifier) -> None:
    header = base64.urlsafe_b64encode(json.dumps({"alg": "X" * 5000}).encode()).decode()
    refused = refusal(verifier, f"{header.rstrip('=')}.e30.sig")
    assert refused.reason == "algorithm"
    assert len(refused.message) <= 160, refused.message


def test_an_exp_past_any_float_is_refused_as_a_claim(verifier: TokenVerifier) -> None:
    token = jwt.encode(claims(sub="alice", exp=10**400), SECRET, algorithm="HS256")
    assert refusal(verifier, token).reason == "claims"
