"""The issuers a server trusts, from its settings: one ``default`` issuer from the single-key
settings, or the trusted-issuers file, whose every mistake stops the server with one line
naming SCOREBOARD_JWT_ISSUERS_FILE, the file and (for an issuer's mistake) the issuer and
field; and each issuer's keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from server.domain.issuers import IssuerSpec, KeySource
from server.domain.tokens import StaticKey
from server.issuer_setup import issuers_of, keys_of, read_issuers_file
from server.jwks_client import JwksClient
from server.settings import Settings, SettingsError, load_settings
from server.support.metrics import Metrics
from tests.conftest import SECRET

ISSUERS_FILE = "SCOREBOARD_JWT_ISSUERS_FILE"
PROVIDER_SECRET = "a-provider-secret-that-is-32-bytes-or-more"


@pytest.fixture(scope="module")
def rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.fixture(scope="module")
def ec_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def settings(**env: str) -> Settings:
    """Settings from ``SCOREBOARD_<NAME>=value`` environment variables."""
    return load_settings([], {f"SCOREBOARD_{name.upper()}": value for name, value in env.items()})


def file_settings(path: Path) -> Settings:
    return settings(jwt_issuers_file=str(path))


def refusal(path: Path, environ: dict[str, str] | None = None) -> str:
    """The one-line SettingsError that the issuers file at ``path`` stops the server with."""
    with pytest.raises(SettingsError) as refused:
        issuers_of(file_settings(path), None, environ or {})
    message = str(refused.value)
    assert refused.value.setting == ISSUERS_FILE
    assert "\n" not in message
    assert message.startswith(f"invalid setting {ISSUERS_FILE}: {path}: "), message
    return message


GOOD_FILE = """
[issuers.studio]
iss = "https://game.example"
secret_env = "GAME_SECRET"

[issuers.google]
iss = "https://accounts.google.com"
jwks_url = "https://www.googleapis.com/oauth2/v3/certs"
audience = "my-client-id"
user_id_prefix = "google:"
"""


# --- the single-key settings ---------------------------------------------------------------


def test_a_secret_gives_one_default_issuer_with_that_secret() -> None:
    configured = settings(jwt_secret=SECRET, jwt_issuer="https://game.example")
    (spec,) = issuers_of(configured, configured.jwt_secret, {})
    assert spec == IssuerSpec(
        "default", "https://game.example", KeySource(secret=SECRET), algorithms=("HS256",)
    )


def test_a_pem_key_gives_one_default_issuer_with_that_key(ec_pem: str) -> None:
    configured = settings(jwt_public_key=ec_pem, jwt_audience="scoreboard")
    assert configured.jwt_public_key is not None
    (spec,) = issuers_of(configured, configured.jwt_public_key, {})
    assert spec == IssuerSpec(
        "default",
        None,
        KeySource(public_key=configured.jwt_public_key),
        audience="scoreboard",
        algorithms=("ES256",),
    )


def test_a_pem_key_with_leading_space_is_still_a_pem_key(rsa_pem: str) -> None:
    configured = settings(jwt_public_key=rsa_pem)
    (spec,) = issuers_of(configured, "\n  " + rsa_pem, {})
    assert spec.keys == KeySource(public_key="\n  " + rsa_pem)


def test_a_jwks_url_gives_one_default_issuer_reading_that_url() -> None:
    url = "https://idp.example/.well-known/jwks.json"
    configured = settings(
        jwt_jwks_url=url,
        jwt_algorithms="RS256,ES256",
        jwt_issuer="https://idp.example/",
        jwt_audience="scores",
    )
    (spec,) = issuers_of(configured, None, {})
    assert spec == IssuerSpec(
        "default",
        "https://idp.example/",
        KeySource(jwks_url=url),
        audience="scores",
        algorithms=("RS256", "ES256"),
        trust_scopes=False,  # a provider's scopes grant no admin rights
    )


def test_a_jwks_url_without_an_issuer_or_an_audience_is_refused() -> None:
    # One provider's keys may sign for others too (Firebase: one set for every project),
    # and its iss covers every app of the tenant.
    url = "https://idp.example/.well-known/jwks.json"
    with pytest.raises(SettingsError) as caught:
        settings(jwt_jwks_url=url, jwt_audience="scores")
    assert str(caught.value).startswith("invalid setting SCOREBOARD_JWT_ISSUER: is required")
    with pytest.raises(SettingsError) as caught:
        settings(jwt_jwks_url=url, jwt_issuer="https://idp.example/")
    assert str(caught.value).startswith("invalid setting SCOREBOARD_JWT_AUDIENCE: is required")


def test_a_demo_key_gives_the_default_issuer_when_none_is_configured() -> None:
    (spec,) = issuers_of(settings(), SECRET, {})
    assert (spec.name, spec.keys, spec.algorithms) == (
        "default",
        KeySource(secret=SECRET),
        ("HS256",),
    )


def test_no_key_at_all_is_a_settings_error() -> None:
    with pytest.raises(SettingsError) as refused:
        issuers_of(settings(), None, {})
    assert refused.value.setting == "SCOREBOARD_JWT_SECRET"


# --- the trusted-issuers file --------------------------------------------------------------


def test_the_issuers_file_gives_its_issuers(tmp_path: Path) -> None:
    path = tmp_path / "issuers.toml"
    path.write_text(GOOD_FILE, encoding="utf-8")
    studio, google = issuers_of(file_settings(path), "ignored", {"GAME_SECRET": PROVIDER_SECRET})
    assert (studio.name, studio.iss, studio.keys) == (
        "studio",
        "https://game.example",
        KeySource(secret=PROVIDER_SECRET),
    )
    assert studio.reserved_prefixes == ("google:",)
    assert (google.name, google.audience, google.user_id_prefix) == (
        "google",
        "my-client-id",
        "google:",
    )
    assert google.keys == KeySource(jwks_url="https://www.googleapis.com/oauth2/v3/certs")


def test_the_issuers_file_reads_secrets_from_the_process_environment_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "issuers.toml"
    path.write_text(GOOD_FILE, encoding="utf-8")
    monkeypatch.setenv("GAME_SECRET", PROVIDER_SECRET)
    studio, _ = issuers_of(file_settings(path), None)
    assert studio.keys == KeySource(secret=PROVIDER_SECRET)


def test_a_public_key_file_named_in_the_issuers_file_is_read(tmp_path: Path, rsa_pem: str) -> None:
    key_path = tmp_path / "partner.pem"
    key_path.write_text(rsa_pem, encoding="utf-8")
    path = tmp_path / "issuers.toml"
    path.write_text(
        f'[issuers.partner]\niss = "https://partner.example"\npublic_key_file = "{key_path}"\n',
        encoding="utf-8",
    )
    (spec,) = read_issuers_file(str(path), {})
    assert spec.keys == KeySource(public_key=rsa_pem)
    assert spec.algorithms == ("RS256",)


def test_a_missing_issuers_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    message = refusal(path)
    assert "cannot be read" in message and "No such file" in message


def test_an_issuers_file_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    assert "cannot be read" in refusal(tmp_path)


def test_an_issuers_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "issuers.toml"
    path.write_bytes(b'[issuers.a]\niss = "caf\xe9"\n')
    assert refusal(path).endswith(": is not UTF-8")


def test_an_issuers_file_that_is_not_toml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "issuers.toml"
    path.write_text("[issuers.a\niss = 'x'\nsecret_env =\n", encoding="utf-8")
    assert "is not TOML" in refusal(path)


def test_an_empty_issuers_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "issuers.toml"
    path.write_text("", encoding="utf-8")
    assert refusal(path).endswith(": no [issuers.<name>] table")


def test_a_wrong_issuer_in_the_file_is_refused_naming_the_issuer_and_field(
    tmp_path: Path,
) -> None:
    path = tmp_path / "issuers.toml"
    path.write_text(
        '[issuers.google]\niss = "https://accounts.google.com"\n'
        'jwks_url = "http://idp.example/jwks"\n',
        encoding="utf-8",
    )
    message = refusal(path)
    assert f"{path}: issuer 'google': jwks_url: must use https://" in message


def test_an_unset_secret_in_the_file_is_refused_naming_the_issuer_and_field(
    tmp_path: Path,
) -> None:
    path = tmp_path / "issuers.toml"
    path.write_text(GOOD_FILE, encoding="utf-8")
    message = refusal(path, {})
    assert f"{path}: issuer 'studio': secret_env: " in message
    assert "'GAME_SECRET' is not set" in message


def test_an_unreadable_public_key_file_is_refused_naming_the_issuer_and_field(
    tmp_path: Path,
) -> None:
    path = tmp_path / "issuers.toml"
    missing = tmp_path / "missing.pem"
    path.write_text(
        f'[issuers.partner]\niss = "p"\npublic_key_file = "{missing}"\n', encoding="utf-8"
    )
    message = refusal(path)
    assert f"{path}: issuer 'partner': public_key_file: cannot be read" in message


# --- each issuer's keys --------------------------------------------------------------------


def test_a_jwks_issuer_gets_a_jwks_client_whose_gauges_are_tracked() -> None:
    spec = IssuerSpec("google", "g", KeySource(jwks_url="https://idp.example/jwks"))
    metrics = Metrics()
    keys = keys_of(spec, metrics)
    assert isinstance(keys, JwksClient)
    assert (keys.issuer, keys.url) == ("google", "https://idp.example/jwks")
    sample = metrics.registry.get_sample_value
    assert sample("scoreboard_jwks_age_seconds", {"issuer": "google"}) == -1
    assert sample("scoreboard_jwks_keys", {"issuer": "google"}) == 0
    for outcome in ("ok", "unreachable", "http_error", "invalid"):
        labels = {"issuer": "google", "outcome": outcome}
        assert sample("scoreboard_jwks_fetches_total", labels) == 0


def test_a_secret_or_pem_issuer_gets_its_one_fixed_key(rsa_pem: str) -> None:
    metrics = Metrics()
    hmac = keys_of(IssuerSpec("a", "a", KeySource(secret=PROVIDER_SECRET)), metrics)
    assert isinstance(hmac, StaticKey)
    assert hmac.key_for(None, "HS256") == PROVIDER_SECRET
    pem = keys_of(IssuerSpec("b", "b", KeySource(public_key=rsa_pem)), metrics)
    assert isinstance(pem, StaticKey)
    assert isinstance(pem.key_for("any", "RS256"), rsa.RSAPublicKey)
