"""Trusted issuers: the TOML document's tables read into issuers, each mistake one line
naming the issuer and field, user ids kept apart across issuers; and the checks on keys
and JWKS URLs they share with the single-key settings (server/signing_keys.py)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519

from server.domain.issuers import (
    DEFAULT_ISSUER_NAME,
    DEFAULT_NAME_CLAIMS,
    MAX_ISSUERS,
    IssuersError,
    IssuerSpec,
    KeySource,
    parse_issuers,
    single_issuer,
)
from server.signing_keys import (
    ASYMMETRIC_ALGORITHMS,
    algorithms_for_pem,
    is_loopback_url,
    jwks_url_problem,
)

SECRET = "a-provider-secret-that-is-32-bytes-or-more"
ENVIRON = {"GAME_SECRET": SECRET, "SHORT_SECRET": "x" * 31, "EMPTY_SECRET": ""}


def pem_of(public_key: Any) -> str:
    pem: bytes = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


@pytest.fixture(scope="module")
def rsa_pem() -> str:
    return pem_of(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())


@pytest.fixture(scope="module")
def ec_pem() -> str:
    return pem_of(ec.generate_private_key(ec.SECP256R1()).public_key())


def file_reader(files: dict[str, str]) -> Callable[[str], str]:
    """A ``read_file`` over ``files``; any other path is missing."""

    def read(path: str) -> str:
        if path not in files:
            raise FileNotFoundError(2, "No such file or directory", path)
        return files[path]

    return read


def parse(tables: dict[str, Any], files: dict[str, str] | None = None) -> tuple[IssuerSpec, ...]:
    return parse_issuers({"issuers": tables}, environ=ENVIRON, read_file=file_reader(files or {}))


def refusal(document: dict[str, Any], files: dict[str, str] | None = None) -> str:
    with pytest.raises(IssuersError) as refused:
        parse_issuers(document, environ=ENVIRON, read_file=file_reader(files or {}))
    message = str(refused.value)
    assert "\n" not in message
    return message


def game(**fields: Any) -> dict[str, Any]:
    """The table of an HMAC issuer, ``fields`` added (a None value removes one)."""
    table = {"iss": "https://game.example", "secret_env": "GAME_SECRET", **fields}
    return {k: v for k, v in table.items() if v is not None}


# --- the happy path ------------------------------------------------------------------------


def test_issuers_with_each_kind_of_key_source_are_read(rsa_pem: str, ec_pem: str) -> None:
    tables = {
        "studio": game(),
        "google": {
            "iss": "https://accounts.google.com",
            "jwks_url": "https://www.googleapis.com/oauth2/v3/certs",
            "audience": "my-client-id",
            "user_id_prefix": "google:",
            "name_claims": ["name", "email"],
        },
        "partner": {
            "iss": "https://partner.example",
            "public_key": rsa_pem,
            "user_id_claim": "uid",
            "user_id_prefix": "partner:",
        },
        "arcade": {
            "iss": "https://arcade.example",
            "public_key_file": "/keys/arcade.pem",
            "algorithms": ["ES256"],
            "user_id_prefix": "arcade:",
        },
    }
    studio, google, partner, arcade = parse(tables, {"/keys/arcade.pem": ec_pem})

    assert studio == IssuerSpec(
        "studio",
        "https://game.example",
        KeySource(secret=SECRET),
        algorithms=("HS256",),
        reserved_prefixes=("google:", "partner:", "arcade:"),
        trust_scopes=False,  # a file's issuer grants no scopes unless it says so
    )
    assert google == IssuerSpec(
        "google",
        "https://accounts.google.com",
        KeySource(jwks_url="https://www.googleapis.com/oauth2/v3/certs"),
        audience="my-client-id",
        algorithms=ASYMMETRIC_ALGORITHMS,
        name_claims=("name", "email"),
        user_id_prefix="google:",
        trust_scopes=False,
    )
    assert partner == IssuerSpec(
        "partner",
        "https://partner.example",
        KeySource(public_key=rsa_pem),
        algorithms=("RS256",),
        user_id_claim="uid",
        user_id_prefix="partner:",
        trust_scopes=False,
    )
    assert arcade.keys == KeySource(public_key=ec_pem)
    assert arcade.algorithms == ("ES256",)
    assert (arcade.user_id_claim, arcade.name_claims) == ("sub", DEFAULT_NAME_CLAIMS)


def test_an_issuer_alone_keeps_its_user_ids_and_reserves_nothing() -> None:
    (spec,) = parse({"studio": game()})
    assert (spec.user_id_prefix, spec.reserved_prefixes) == ("", ())
    assert spec.user_id("google:123") == "google:123"


def test_the_algorithms_listed_are_the_ones_accepted(rsa_pem: str) -> None:
    (hmac,) = parse({"a": game(algorithms=["HS512", "HS256"])})
    assert hmac.algorithms == ("HS512", "HS256")
    (pem,) = parse({"b": {"iss": "b", "public_key": rsa_pem, "algorithms": ["PS256", "RS512"]}})
    assert pem.algorithms == ("PS256", "RS512")
    (jwks,) = parse(
        {
            "c": {
                "iss": "c",
                "jwks_url": "https://c.example/jwks",
                "algorithms": ["EdDSA"],
                "audience": "scores",
            }
        }
    )
    assert jwks.algorithms == ("EdDSA",)


def test_text_fields_are_stripped_but_a_pem_is_kept_as_given(rsa_pem: str) -> None:
    (spec,) = parse(
        {"a": {"iss": "  https://a.example ", "public_key": rsa_pem + "\n", "audience": " aud "}}
    )
    assert (spec.iss, spec.audience) == ("https://a.example", "aud")
    assert spec.keys.public_key == rsa_pem + "\n"


def test_a_secret_from_the_environment_is_never_in_the_description() -> None:
    (spec,) = parse({"a": game()})
    assert SECRET not in spec.keys.describe
    assert spec.keys.describe == "an HMAC secret"
    assert KeySource(jwks_url="https://x.example/j").describe == "JWKS https://x.example/j"
    assert KeySource(public_key="-----BEGIN").describe == "a PEM public key"


def test_the_document_is_not_changed(rsa_pem: str) -> None:
    document = {"issuers": {"a": game(), "b": game(iss="b", user_id_prefix="b:")}}
    before = copy.deepcopy(document)
    parse_issuers(document, environ=ENVIRON, read_file=file_reader({}))
    assert document == before


def test_the_single_key_settings_give_one_issuer_named_default() -> None:
    spec = single_issuer(
        key=KeySource(secret=SECRET), algorithms=("HS256",), issuer=None, audience="aud"
    )
    assert spec == IssuerSpec(
        DEFAULT_ISSUER_NAME, None, KeySource(secret=SECRET), audience="aud", algorithms=("HS256",)
    )
    assert spec.name == "default"


# --- user ids kept apart -------------------------------------------------------------------


def test_the_unprefixed_issuer_refuses_a_user_id_beginning_with_another_issuers_prefix() -> None:
    studio, google, steam = parse(
        {
            "studio": game(),
            "google": game(iss="https://google.example", user_id_prefix="google:"),
            "steam": game(iss="https://steam.example", user_id_prefix="steam|"),
        }
    )
    assert studio.reserved_prefixes == ("google:", "steam|")
    assert studio.user_id("google:123") is None
    assert studio.user_id("steam|9") is None
    assert studio.user_id("google") == "google"
    assert studio.user_id("player-1") == "player-1"
    assert google.user_id("google:123") == "google:google:123"
    assert google.user_id("123") == "google:123"
    assert steam.user_id("123") == "steam|123"
    assert google.reserved_prefixes == steam.reserved_prefixes == ()


def test_prefixed_issuers_alone_reserve_nothing() -> None:
    a, b = parse(
        {
            "a": game(iss="https://a.example", user_id_prefix="a:"),
            "b": game(iss="https://b.example", user_id_prefix="b:"),
        }
    )
    assert a.reserved_prefixes == b.reserved_prefixes == ()
    assert a.user_id("b:1") == "a:b:1"


# --- mistakes: one line naming the issuer and the field ------------------------------------


def field_refusal(tables: dict[str, Any], issuer: str, field: str, **files: str) -> str:
    message = refusal({"issuers": tables}, files)
    assert message.startswith(f"issuer {issuer!r}: {field}: "), message
    return message


def test_an_unknown_field_is_refused() -> None:
    message = field_refusal({"a": game(colour="blue")}, "a", "colour")
    assert "unknown field" in message


def test_an_issuer_without_iss_is_refused() -> None:
    field_refusal({"a": game(iss=None)}, "a", "iss")


@pytest.mark.parametrize("iss", ["", "   ", 7, ["https://a.example"]])
def test_an_iss_that_is_not_a_non_empty_string_is_refused(iss: Any) -> None:
    field_refusal({"a": game(iss=iss)}, "a", "iss")


def test_an_issuer_without_a_key_source_is_refused() -> None:
    message = field_refusal({"a": game(secret_env=None)}, "a", "jwks_url")
    assert "exactly one key source" in message


def test_an_issuer_with_two_key_sources_is_refused(rsa_pem: str) -> None:
    message = field_refusal({"a": game(public_key=rsa_pem)}, "a", "jwks_url")
    assert "exactly one key source" in message
    assert rsa_pem not in message and SECRET not in message


@pytest.mark.parametrize(
    "url",
    [
        "http://idp.example/jwks",
        "http://10.0.0.1/jwks",
        "http://localhost.evil.example/jwks",
        "ftp://idp.example/jwks",
        "/jwks",
        "idp.example/jwks",
    ],
)
def test_a_jwks_url_that_is_not_https_or_loopback_http_is_refused(url: str) -> None:
    field_refusal({"a": {"iss": "a", "jwks_url": url}}, "a", "jwks_url")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/jwks", "http://[::1]/jwks", "http://localhost:9000/jwks"]
)
def test_a_jwks_url_over_plain_http_to_loopback_is_allowed(url: str) -> None:
    (spec,) = parse({"a": {"iss": "a", "jwks_url": url, "any_audience": True}})
    assert spec.keys == KeySource(jwks_url=url)


@pytest.mark.parametrize("name", ["UNSET_SECRET", "EMPTY_SECRET"])
def test_a_secret_env_naming_an_unset_variable_is_refused(name: str) -> None:
    message = field_refusal({"a": game(secret_env=name)}, "a", "secret_env")
    assert repr(name) in message and "not set" in message


def test_a_secret_env_naming_a_short_secret_is_refused() -> None:
    message = field_refusal({"a": game(secret_env="SHORT_SECRET")}, "a", "secret_env")
    assert "32 bytes" in message
    assert ENVIRON["SHORT_SECRET"] not in message


def test_a_public_key_that_is_not_pem_is_refused() -> None:
    message = field_refusal({"a": {"iss": "a", "public_key": "not a key"}}, "a", "public_key")
    assert "not a valid PEM public key" in message


def test_a_public_key_file_that_cannot_be_read_is_refused() -> None:
    tables = {"a": {"iss": "a", "public_key_file": "/keys/missing.pem"}}
    message = field_refusal(tables, "a", "public_key_file")
    assert "cannot be read" in message


def test_a_public_key_file_that_is_not_pem_is_refused() -> None:
    tables = {"a": {"iss": "a", "public_key_file": "/keys/a.pem"}}
    message = refusal({"issuers": tables}, {"/keys/a.pem": "hello"})
    assert message.startswith("issuer 'a': public_key_file: not a valid PEM public key")


def test_hmac_algorithms_with_a_pem_key_are_refused(rsa_pem: str) -> None:
    tables = {"a": {"iss": "a", "public_key": rsa_pem, "algorithms": ["HS256"]}}
    message = field_refusal(tables, "a", "algorithms")
    assert "HS256 does not fit a PEM public key" in message
    assert rsa_pem not in message


def test_asymmetric_algorithms_with_a_secret_are_refused() -> None:
    message = field_refusal({"a": game(algorithms=["HS256", "RS256"])}, "a", "algorithms")
    assert "RS256 does not fit an HMAC secret" in message
    assert SECRET not in message


def test_an_algorithm_of_another_key_type_is_refused(rsa_pem: str, ec_pem: str) -> None:
    tables = {"a": {"iss": "a", "public_key": rsa_pem, "algorithms": ["ES256"]}}
    assert "ES256 does not fit" in field_refusal(tables, "a", "algorithms")
    tables = {"b": {"iss": "b", "public_key": ec_pem, "algorithms": ["RS256"]}}
    assert "RS256 does not fit" in field_refusal(tables, "b", "algorithms")


@pytest.mark.parametrize("algorithms", [["none"], ["HS256"], ["RS1"]])
def test_a_jwks_issuer_takes_only_asymmetric_algorithms(algorithms: list[str]) -> None:
    tables = {"a": {"iss": "a", "jwks_url": "https://a.example/jwks", "algorithms": algorithms}}
    field_refusal(tables, "a", "algorithms")


@pytest.mark.parametrize("algorithms", [[], "HS256", [256]])
def test_algorithms_that_are_not_a_list_of_names_are_refused(algorithms: Any) -> None:
    field_refusal({"a": game(algorithms=algorithms)}, "a", "algorithms")


@pytest.mark.parametrize("name", ["Studio", "my issuer", "", "x" * 33, "a.b", "ü"])
def test_an_issuer_name_out_of_the_allowed_characters_is_refused(name: str) -> None:
    message = refusal({"issuers": {name: game()}})
    assert message.startswith(f"issuer {name!r}: the name must be")


def test_an_issuer_that_is_not_a_table_is_refused() -> None:
    assert refusal({"issuers": {"a": "https://a.example"}}) == "issuer 'a': must be a table"


def test_a_user_id_claim_that_is_not_a_claim_name_is_refused() -> None:
    field_refusal({"a": game(user_id_claim="sub claim")}, "a", "user_id_claim")


def test_name_claims_that_are_not_claim_names_are_refused() -> None:
    field_refusal({"a": game(name_claims=["name", "a b"])}, "a", "name_claims")
    field_refusal({"b": game(name_claims="name")}, "b", "name_claims")


@pytest.mark.parametrize("prefix", ["a/b:", "a%2F", "x" * 33, "a\tb:"])
def test_a_user_id_prefix_out_of_bounds_is_refused(prefix: str) -> None:
    field_refusal({"a": game(user_id_prefix=prefix)}, "a", "user_id_prefix")


def test_two_issuers_with_the_same_iss_are_refused() -> None:
    tables = {"a": game(), "b": game(user_id_prefix="b:")}
    message = field_refusal(tables, "b", "iss")
    assert "issuer 'a'" in message


def test_two_issuers_without_a_prefix_are_refused() -> None:
    tables = {"a": game(), "b": game(iss="https://b.example")}
    message = field_refusal(tables, "b", "user_id_prefix")
    assert "'a'" in message and "at most one" in message


@pytest.mark.parametrize(("first", "second"), [("g:", "g:x:"), ("g:x:", "g:"), ("g:", "g:")])
def test_a_prefix_that_begins_another_is_refused(first: str, second: str) -> None:
    tables = {
        "one": game(iss="https://one.example", user_id_prefix=first),
        "two": game(iss="https://two.example", user_id_prefix=second),
    }
    longer = "two" if len(second) >= len(first) else "one"
    shorter = "one" if longer == "two" else "two"
    message = field_refusal(tables, longer, "user_id_prefix")
    assert f"begins with issuer {shorter!r}'s prefix" in message


def test_prefixes_that_only_share_a_start_are_allowed() -> None:
    a, b = parse(
        {
            "a": game(iss="https://a.example", user_id_prefix="ga:"),
            "b": game(iss="https://b.example", user_id_prefix="gb:"),
        }
    )
    assert (a.user_id_prefix, b.user_id_prefix) == ("ga:", "gb:")


# --- mistakes in the document as a whole ---------------------------------------------------


def test_an_unknown_top_level_key_is_refused() -> None:
    message = refusal({"issuers": {"a": game()}, "issuer": {}})
    assert "unknown top-level key 'issuer'" in message


@pytest.mark.parametrize("document", [{}, {"issuers": {}}, {"issuers": []}, {"issuers": "a"}])
def test_a_document_without_issuer_tables_is_refused(document: dict[str, Any]) -> None:
    assert refusal(document) == "no [issuers.<name>] table"


def test_more_than_max_issuers_are_refused() -> None:
    tables = {
        f"i{n}": game(iss=f"https://{n}.example", user_id_prefix=f"p{n}:")
        for n in range(MAX_ISSUERS + 1)
    }
    assert f"at most {MAX_ISSUERS}" in refusal({"issuers": tables})
    del tables[f"i{MAX_ISSUERS}"]
    assert len(parse(tables)) == MAX_ISSUERS


# --- keys and URLs (server/signing_keys.py) ------------------------------------------------


def test_the_algorithms_a_pem_key_verifies_default_first(rsa_pem: str, ec_pem: str) -> None:
    assert algorithms_for_pem(rsa_pem) == ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
    assert algorithms_for_pem(ec_pem) == ("ES256",)
    assert algorithms_for_pem(pem_of(ec.generate_private_key(ec.SECP384R1()).public_key())) == (
        "ES384",
    )
    ed_pem = pem_of(ed25519.Ed25519PrivateKey.generate().public_key())
    assert algorithms_for_pem(ed_pem) == ("EdDSA",)


def test_a_pem_key_no_jwt_algorithm_takes_is_refused() -> None:
    k1 = pem_of(ec.generate_private_key(ec.SECP256K1()).public_key())
    with pytest.raises(ValueError, match="unsupported EC curve secp256k1"):
        algorithms_for_pem(k1)
    x = pem_of(x25519.X25519PrivateKey.generate().public_key())
    with pytest.raises(ValueError, match="unsupported key type"):
        algorithms_for_pem(x)
    with pytest.raises(ValueError, match="not a valid PEM public key"):
        algorithms_for_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1/jwks", True),
        ("http://127.0.0.53:8080/jwks", True),
        ("http://[::1]:8080/jwks", True),
        ("http://localhost/jwks", True),
        ("http://LOCALHOST/jwks", True),
        ("http://10.0.0.1/jwks", False),
        ("http://192.168.1.1/jwks", False),
        ("http://[::2]/jwks", False),
        ("http://localhost.evil.example/jwks", False),
        ("http://127.0.0.1.evil.example/jwks", False),
        ("http://idp.example/jwks", False),
        ("/jwks", False),
    ],
)
def test_is_loopback_url(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback


@pytest.mark.parametrize(
    "url",
    [
        "https://idp.example/jwks",
        "https://10.0.0.1/jwks",
        "http://127.0.0.1:8080/jwks",
        "http://[::1]/jwks",
        "http://localhost/jwks",
    ],
)
def test_a_jwks_url_over_https_or_plain_http_to_loopback_has_no_problem(url: str) -> None:
    assert jwks_url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://10.0.0.1/jwks", "must use https://"),
        ("http://idp.example/jwks", "must use https://"),
        ("ftp://localhost/jwks", "must use https://"),
        ("/jwks", "must be an absolute https:// URL"),
        ("https:///jwks", "must be an absolute https:// URL"),
        ("", "must be an absolute https:// URL"),
    ],
)
def test_a_jwks_url_problem_says_why(url: str, problem: str) -> None:
    found = jwks_url_problem(url)
    assert found is not None and found.startswith(problem)


# --- scopes ------------------------------------------------------------------------------


def test_a_files_issuer_grants_no_scopes_unless_it_says_so() -> None:
    (quiet,) = parse({"a": game()})
    (trusted,) = parse({"a": game(trust_scopes=True)})
    assert (quiet.trust_scopes, trusted.trust_scopes) == (False, True)


@pytest.mark.parametrize("value", ["yes", 1, "true"])
def test_trust_scopes_must_be_a_boolean(value: Any) -> None:
    field_refusal({"a": game(trust_scopes=value)}, "a", "trust_scopes")


# --- audiences of JWKS issuers --------------------------------------------------------------


def test_a_jwks_issuer_needs_an_audience_or_says_it_takes_any() -> None:
    jwks = {"iss": "https://tenant.example/", "jwks_url": "https://tenant.example/jwks"}
    message = field_refusal({"a": jwks}, "a", "audience")
    assert "any_audience = true" in message
    (waived,) = parse({"a": {**jwks, "any_audience": True}})
    assert waived.audience is None
    (checked,) = parse({"a": {**jwks, "audience": "scores"}})
    assert checked.audience == "scores"
    field_refusal({"a": {**jwks, "audience": "scores", "any_audience": True}}, "a", "any_audience")


def test_a_fixed_key_issuer_may_go_without_an_audience() -> None:
    (spec,) = parse({"a": game()})
    assert spec.audience is None


def test_the_single_key_settings_issuer_grants_scopes_only_with_a_studio_key() -> None:
    studio = single_issuer(
        key=KeySource(secret=SECRET), algorithms=("HS256",), issuer=None, audience=None
    )
    provider = single_issuer(
        key=KeySource(jwks_url="https://idp.example/jwks"),
        algorithms=("RS256",),
        issuer="https://idp.example/",
        audience="scores",
    )
    assert (studio.trust_scopes, provider.trust_scopes) == (True, False)
