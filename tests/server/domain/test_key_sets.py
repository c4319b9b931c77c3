"""Key sets: a JWKS document read into the public signing keys it may verify with, the
lifetime of a fetched set, and the gate on refetches for unknown ``kid``s."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from server.domain.key_sets import (
    DEFAULT_LIFETIME_S,
    MAX_KEYS,
    MAX_LIFETIME_S,
    MIN_LIFETIME_S,
    REFRESH_AT,
    KeySet,
    KeySetError,
    RefetchGate,
    cache_lifetime,
    fitting_algorithms,
    parse_key_set,
    refresh_delay,
    signing_key,
)

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})


@pytest.fixture(scope="module")
def rsa_private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_jwk(rsa_private: rsa.RSAPrivateKey) -> dict[str, Any]:
    """An RSA 2048 public key as a JWK, without ``kid`` (each test names its own)."""
    return RSAAlgorithm.to_jwk(rsa_private.public_key(), as_dict=True)


@pytest.fixture(scope="module")
def ec_private() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ec_jwk(ec_private: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    return ECAlgorithm.to_jwk(ec_private.public_key(), as_dict=True)


@pytest.fixture(scope="module")
def ed_private() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def ed_jwk(ed_private: ed25519.Ed25519PrivateKey) -> dict[str, Any]:
    return OKPAlgorithm.to_jwk(ed_private.public_key(), as_dict=True)


def jwk(base: dict[str, Any], kid: str | None = "k1", **extra: Any) -> dict[str, Any]:
    """``base`` with a ``kid`` (None: none) and ``extra`` fields (a None value removes)."""
    key = {**base, "kid": kid, **extra}
    return {k: v for k, v in key.items() if v is not None}


def document(*keys: Any) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


def refusal(body: bytes) -> str:
    with pytest.raises(KeySetError) as refused:
        parse_key_set(body)
    message = str(refused.value)
    assert "\n" not in message
    return message


# --- keys and the algorithms they fit ------------------------------------------------------


def test_an_rsa_key_verifies_the_rs_and_ps_algorithms(
    rsa_jwk: dict[str, Any], rsa_private: rsa.RSAPrivateKey
) -> None:
    key_set = parse_key_set(document(jwk(rsa_jwk, "rsa-1")))
    key = key_set.keys["rsa-1"]
    assert (key.kid, key.kty, key.algorithms) == ("rsa-1", "RSA", RSA_ALGORITHMS)
    assert isinstance(key.key, rsa.RSAPublicKey)
    assert key.key.public_numbers() == rsa_private.public_key().public_numbers()
    assert len(key_set) == 1
    assert key_set.skipped == ()


def test_an_ec_p256_key_verifies_es256_only(
    ec_jwk: dict[str, Any], ec_private: ec.EllipticCurvePrivateKey
) -> None:
    key = parse_key_set(document(jwk(ec_jwk, "ec-1"))).keys["ec-1"]
    assert (key.kty, key.algorithms) == ("EC", frozenset({"ES256"}))
    assert isinstance(key.key, ec.EllipticCurvePublicKey)
    assert key.key.public_numbers() == ec_private.public_key().public_numbers()


def test_an_ed25519_key_verifies_eddsa_only(
    ed_jwk: dict[str, Any], ed_private: ed25519.Ed25519PrivateKey
) -> None:
    key = parse_key_set(document(jwk(ed_jwk, "ed-1"))).keys["ed-1"]
    assert (key.kty, key.algorithms) == ("OKP", frozenset({"EdDSA"}))
    assert isinstance(key.key, ed25519.Ed25519PublicKey)
    assert key.key.public_bytes_raw() == ed_private.public_key().public_bytes_raw()


def test_keys_of_several_types_are_kept_side_by_side_by_kid(
    rsa_jwk: dict[str, Any], ec_jwk: dict[str, Any], ed_jwk: dict[str, Any]
) -> None:
    key_set = parse_key_set(document(jwk(rsa_jwk, "a"), jwk(ec_jwk, "b"), jwk(ed_jwk, "c")))
    assert {kid: key.kty for kid, key in key_set.keys.items()} == {
        "a": "RSA",
        "b": "EC",
        "c": "OKP",
    }


def test_a_declared_alg_narrows_the_key_to_that_algorithm(rsa_jwk: dict[str, Any]) -> None:
    key = parse_key_set(document(jwk(rsa_jwk, "a", alg="PS384"))).keys["a"]
    assert key.algorithms == frozenset({"PS384"})


@pytest.mark.parametrize(
    ("kty", "crv", "expected"),
    [
        ("RSA", None, RSA_ALGORITHMS),
        ("EC", "P-256", frozenset({"ES256"})),
        ("EC", "P-384", frozenset({"ES384"})),
        ("EC", "P-521", frozenset({"ES512"})),
        ("EC", "secp256k1", frozenset()),
        ("EC", None, frozenset()),
        ("OKP", "Ed25519", frozenset({"EdDSA"})),
        ("OKP", "Ed448", frozenset()),
        ("OKP", "X25519", frozenset()),
        ("oct", None, frozenset()),
        (None, None, frozenset()),
    ],
)
def test_a_key_fits_the_algorithms_of_its_type_and_curve(
    kty: str | None, crv: str | None, expected: frozenset[str]
) -> None:
    assert fitting_algorithms({"kty": kty, "crv": crv}) == expected


@pytest.mark.parametrize(
    ("kty", "crv", "alg"),
    [
        ("RSA", None, "ES256"),
        ("RSA", None, "HS256"),
        ("RSA", None, "none"),
        ("EC", "P-256", "ES384"),
        ("EC", "P-256", "RS256"),
        ("OKP", "Ed25519", "ES256"),
    ],
)
def test_a_declared_alg_that_does_not_fit_the_kty_fits_nothing(
    kty: str, crv: str | None, alg: str
) -> None:
    assert fitting_algorithms({"kty": kty, "crv": crv, "alg": alg}) == frozenset()


def test_a_key_whose_declared_alg_does_not_fit_is_skipped_with_the_reason(
    rsa_jwk: dict[str, Any], ec_jwk: dict[str, Any]
) -> None:
    key_set = parse_key_set(document(jwk(rsa_jwk, "good"), jwk(ec_jwk, "odd", alg="RS256")))
    assert set(key_set.keys) == {"good"}
    (reason,) = key_set.skipped
    assert "'odd'" in reason and "fits no supported algorithm" in reason and "'RS256'" in reason


# --- what is left out ----------------------------------------------------------------------


def test_a_symmetric_oct_key_is_skipped_with_a_reason_naming_its_kid(
    rsa_jwk: dict[str, Any],
) -> None:
    oct_key = {"kty": "oct", "kid": "shared", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ", "alg": "HS256"}
    key_set = parse_key_set(document(oct_key, jwk(rsa_jwk, "rsa")))
    assert set(key_set.keys) == {"rsa"}
    (reason,) = key_set.skipped
    assert "'shared'" in reason and "symmetric" in reason


def test_a_set_of_only_oct_keys_is_refused_whole() -> None:
    keys = [{"kty": "oct", "kid": f"s{i}", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"} for i in range(2)]
    message = refusal(document(*keys))
    assert "no usable signing key" in message
    assert "'s0'" in message and "'s1'" in message


def test_a_key_for_encryption_is_skipped(rsa_jwk: dict[str, Any]) -> None:
    key_set = parse_key_set(document(jwk(rsa_jwk, "enc-1", use="enc"), jwk(rsa_jwk, "sig-1")))
    assert set(key_set.keys) == {"sig-1"}
    (reason,) = key_set.skipped
    assert "'enc-1'" in reason and "'enc'" in reason


def test_a_key_marked_for_signatures_is_kept(rsa_jwk: dict[str, Any]) -> None:
    key_set = parse_key_set(document(jwk(rsa_jwk, "sig-1", use="sig")))
    assert set(key_set.keys) == {"sig-1"}


@pytest.mark.parametrize("ops", [["encrypt"], ["sign"], [], "verify"])
def test_a_key_whose_key_ops_lack_verify_is_skipped(rsa_jwk: dict[str, Any], ops: Any) -> None:
    key_set = parse_key_set(document(jwk(rsa_jwk, "odd", key_ops=ops), jwk(rsa_jwk, "ok")))
    assert set(key_set.keys) == {"ok"}
    (reason,) = key_set.skipped
    assert "'odd'" in reason and "key_ops" in reason


def test_a_key_whose_key_ops_include_verify_is_kept(rsa_jwk: dict[str, Any]) -> None:
    key_set = parse_key_set(document(jwk(rsa_jwk, "a", key_ops=["verify", "encrypt"])))
    assert set(key_set.keys) == {"a"}


def test_a_key_holding_private_material_is_skipped(
    rsa_private: rsa.RSAPrivateKey, ec_jwk: dict[str, Any]
) -> None:
    private = jwk(RSAAlgorithm.to_jwk(rsa_private, as_dict=True), key_ops=None)
    key_set = parse_key_set(document(jwk(private, "leaked"), jwk(ec_jwk, "ok")))
    assert set(key_set.keys) == {"ok"}
    (reason,) = key_set.skipped
    assert "'leaked'" in reason and "private" in reason


@pytest.mark.parametrize("kid", [None, "", 7, "x" * 257])
def test_a_key_without_a_usable_kid_is_skipped(rsa_jwk: dict[str, Any], kid: Any) -> None:
    key_set = parse_key_set(document(jwk(rsa_jwk, kid), jwk(rsa_jwk, "ok")))
    assert set(key_set.keys) == {"ok"}
    (reason,) = key_set.skipped
    assert "no 'kid'" in reason


def test_a_kid_of_the_longest_length_allowed_is_kept(rsa_jwk: dict[str, Any]) -> None:
    key_set = parse_key_set(document(jwk(rsa_jwk, "x" * 256)))
    assert set(key_set.keys) == {"x" * 256}


def test_a_key_that_is_not_an_object_is_skipped(rsa_jwk: dict[str, Any]) -> None:
    key_set = parse_key_set(document("a key", 3, None, jwk(rsa_jwk, "ok")))
    assert set(key_set.keys) == {"ok"}
    assert key_set.skipped == ("a key is not a JSON object",) * 3


def test_a_key_that_cannot_be_read_is_skipped(
    rsa_jwk: dict[str, Any], ec_jwk: dict[str, Any]
) -> None:
    broken = jwk(ec_jwk, "broken", x=ec_jwk["y"])  # a point off the curve
    key_set = parse_key_set(document(broken, jwk(rsa_jwk, "ok")))
    assert set(key_set.keys) == {"ok"}
    (reason,) = key_set.skipped
    assert "'broken'" in reason and "could not be read" in reason


def test_signing_key_refuses_a_key_it_would_skip(rsa_jwk: dict[str, Any]) -> None:
    assert signing_key(jwk(rsa_jwk, "a")).kid == "a"
    with pytest.raises(KeySetError, match="not for signatures"):
        signing_key(jwk(rsa_jwk, "a", use="enc"))


def test_the_reasons_never_hold_key_material(
    rsa_private: rsa.RSAPrivateKey, ec_jwk: dict[str, Any], ed_jwk: dict[str, Any]
) -> None:
    private = jwk(RSAAlgorithm.to_jwk(rsa_private, as_dict=True), key_ops=None)
    secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
    keys = [
        jwk(private, "private"),
        {"kty": "oct", "kid": "oct", "k": secret},
        jwk(ec_jwk, "enc", use="enc"),
        jwk(ed_jwk, "ops", key_ops=["sign"]),
        jwk(ec_jwk, "off-curve", x=ec_jwk["y"]),
        jwk(ed_jwk, "wrong-alg", alg="RS256"),
        jwk(private, None),
    ]
    message = refusal(document(*keys))
    material = [private["n"], private["d"], private["p"], secret, ec_jwk["x"], ec_jwk["y"]]
    material += [ed_jwk["x"]]
    for value in material:
        assert value not in message
        assert value[:16] not in message
    for kid in ("private", "oct", "enc", "ops", "off-curve", "wrong-alg"):
        assert f"'{kid}'" in message


# --- the document as a whole ---------------------------------------------------------------


def test_a_kid_twice_refuses_the_whole_document(rsa_jwk: dict[str, Any]) -> None:
    message = refusal(document(jwk(rsa_jwk, "same"), jwk(rsa_jwk, "other"), jwk(rsa_jwk, "same")))
    assert "'same'" in message and "twice" in message


def test_a_kid_twice_refuses_the_document_even_when_one_of_them_is_skipped(
    rsa_jwk: dict[str, Any],
) -> None:
    message = refusal(document(jwk(rsa_jwk, "same", use="enc"), jwk(rsa_jwk, "same")))
    assert "'same'" in message and "twice" in message


@pytest.mark.parametrize("body", [b"", b"not json", b"{", b"\xff\xfe\x00", b"{'keys': []}"])
def test_an_answer_that_is_not_json_is_refused(body: bytes) -> None:
    assert refusal(body) == "the answer is not JSON"


@pytest.mark.parametrize(
    "body", [b"[]", b"null", b'"keys"', b"{}", b'{"keys": {}}', b'{"keys": "a"}', b'{"key": []}']
)
def test_an_answer_without_a_keys_list_is_refused(body: bytes) -> None:
    assert refusal(body) == "the answer has no 'keys' list"


def test_an_empty_keys_list_is_refused() -> None:
    assert refusal(b'{"keys": []}') == "no usable signing key (the list is empty)"


def test_a_document_nesting_thousands_deep_is_refused_as_not_json() -> None:
    # json.loads raises RecursionError on such JSON (not a ValueError): a provider's answer,
    # broken or hostile, must be refused like any other answer that is not a key set.
    for body in (b"[" * 3000, b'{"keys": ' + b"[" * 3000):
        with pytest.raises(KeySetError):
            parse_key_set(body)


def test_at_most_max_keys_are_read_from_one_document(ed_jwk: dict[str, Any]) -> None:
    keys = [jwk(ed_jwk, f"k{i}") for i in range(MAX_KEYS + 3)]
    key_set = parse_key_set(document(*keys))
    assert len(key_set) == MAX_KEYS
    assert set(key_set.keys) == {f"k{i}" for i in range(MAX_KEYS)}
    assert key_set.skipped == (f"3 keys past the first {MAX_KEYS}",)


def test_max_keys_are_all_read(ed_jwk: dict[str, Any]) -> None:
    key_set = parse_key_set(document(*(jwk(ed_jwk, f"k{i}") for i in range(MAX_KEYS))))
    assert len(key_set) == MAX_KEYS
    assert key_set.skipped == ()


def test_a_key_set_counts_its_keys() -> None:
    assert len(KeySet({})) == 0


# --- how long a fetched set is used --------------------------------------------------------


@pytest.mark.parametrize("header", [None, ""])
def test_an_answer_without_cache_control_is_used_for_the_default_lifetime(
    header: str | None,
) -> None:
    assert cache_lifetime(header) == DEFAULT_LIFETIME_S


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("max-age=300", 300.0),
        ("public, max-age=3600", 3600.0),
        ("max-age=3600, must-revalidate", 3600.0),
        ('max-age="900"', 900.0),
        ("MAX-AGE = 120", 120.0),
        ("max-age=60", 60.0),
        ("max-age=21600", 21600.0),
    ],
)
def test_a_max_age_within_the_bounds_is_the_lifetime(header: str, expected: float) -> None:
    assert MIN_LIFETIME_S <= expected <= MAX_LIFETIME_S
    assert cache_lifetime(header) == expected


@pytest.mark.parametrize("header", ["max-age=0", "max-age=15", "public, max-age=59"])
def test_a_max_age_below_the_minimum_is_raised_to_it(header: str) -> None:
    assert cache_lifetime(header) == MIN_LIFETIME_S


@pytest.mark.parametrize("header", ["max-age=21601", "max-age=86400", "max-age=9999999999"])
def test_a_max_age_above_the_maximum_is_lowered_to_it(header: str) -> None:
    assert cache_lifetime(header) == MAX_LIFETIME_S


@pytest.mark.parametrize(
    "header", ["no-store", "no-cache", "private, no-store", 'no-cache="set-cookie", max-age=600']
)
def test_no_store_or_no_cache_gives_the_minimum_lifetime(header: str) -> None:
    assert cache_lifetime(header) == MIN_LIFETIME_S


@pytest.mark.parametrize(
    "header",
    [
        "public",
        "max-age",
        "max-age=",
        "max-age=abc",
        "max-age=-5",
        "max-age=1.5",
        "s-maxage=60",
        "x-max-age=60",
        "max-age=60x",
        "x-no-store",
        "\x00\xff garbage",
    ],
)
def test_a_cache_control_without_a_usable_max_age_gives_the_default_lifetime(
    header: str,
) -> None:
    assert cache_lifetime(header) == DEFAULT_LIFETIME_S


def test_the_background_refresh_runs_before_the_lifetime_ends() -> None:
    assert refresh_delay(600.0) == 600.0 * REFRESH_AT
    assert 0 < refresh_delay(MIN_LIFETIME_S) < MIN_LIFETIME_S


# --- the refetch gate ----------------------------------------------------------------------


def test_the_refetch_gate_opens_at_once_then_once_per_interval() -> None:
    gate = RefetchGate(5.0)
    assert gate.open(100.0)
    assert not gate.open(100.0)
    assert not gate.open(104.9)
    assert gate.open(105.0)
    assert not gate.open(109.0)
    assert gate.open(130.0)


def test_a_refused_refetch_does_not_push_the_next_one_back() -> None:
    gate = RefetchGate(5.0)
    assert gate.open(0.0)
    for now in (1.0, 2.0, 3.0, 4.0):
        assert not gate.open(now)
    assert gate.open(5.0)


def test_the_refetch_gate_opens_at_any_first_time() -> None:
    assert RefetchGate(5.0).open(0.0)
    assert RefetchGate(5.0).open(-1000.0)
