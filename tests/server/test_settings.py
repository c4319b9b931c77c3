"""load_settings(argv, environ): defaults, precedence, validation and the key rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from server.settings import (
    OPTIONS,
    Settings,
    SettingsError,
    build_parser,
    load_settings,
    placeholder,
)
from tests.conftest import SECRET

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def public_pem(private_key: PrivateKey) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_pem(rsa_key: rsa.RSAPrivateKey) -> str:
    return public_pem(rsa_key)


@pytest.fixture(scope="module")
def ec_pem() -> str:
    return public_pem(ec.generate_private_key(ec.SECP256R1()))


def refused(argv: list[str] | None = None, /, **env: str) -> SettingsError:
    """The SettingsError that ``argv`` and ``SCOREBOARD_<NAME>=value`` settings raise."""
    environ = {f"SCOREBOARD_{k.upper()}": v for k, v in env.items()}
    with pytest.raises(SettingsError) as info:
        load_settings(argv or [], environ)
    return info.value


def assert_one_line_naming(error: SettingsError, setting: str) -> None:
    message = str(error)
    assert error.setting == setting
    assert message.startswith(f"invalid setting {setting}: ")
    assert "\n" not in message
    assert "\r" not in message


# --- defaults and precedence ---------------------------------------------------------------


def test_defaults() -> None:
    settings = load_settings([], {})
    assert settings == Settings(jwt_algorithms=("HS256",))
    assert settings.host == "0.0.0.0"
    assert settings.port == 8000
    assert settings.rate_limit_per_minute == 10
    assert settings.top_n == 10
    assert settings.jwt_secret is None
    assert not settings.uses_mongodb


def test_unrelated_environment_variables_are_ignored() -> None:
    assert load_settings([], {"PORT": "1", "SCOREBOARD": "x"}) == load_settings([], {})


def test_environment_variables_set_values() -> None:
    settings = load_settings(
        [],
        {
            "SCOREBOARD_HOST": "127.0.0.1",
            "SCOREBOARD_PORT": " 9001 ",
            "SCOREBOARD_JWT_SECRET": SECRET,
            "SCOREBOARD_RATE_LIMIT_PER_MINUTE": "0",
            "SCOREBOARD_SQLITE_SYNCHRONOUS": "normal",
            "SCOREBOARD_SHUTDOWN_TIMEOUT_S": "2.5",
            "SCOREBOARD_LOG_LEVEL": "debug",
            "SCOREBOARD_JWT_ISSUER": "https://issuer.example",
        },
    )
    assert settings.host == "127.0.0.1"
    assert settings.port == 9001
    assert settings.jwt_secret == SECRET
    assert settings.rate_limit_per_minute == 0
    assert settings.sqlite_synchronous == "NORMAL"
    assert settings.shutdown_timeout_s == 2.5
    assert settings.log_level == "DEBUG"
    assert settings.jwt_issuer == "https://issuer.example"


def test_flags_set_values() -> None:
    settings = load_settings(
        ["--port", "0", "--top-n", "25", "--mongodb-uri", "mongodb://db", "--jwt-secret", SECRET],
        {},
    )
    assert settings.port == 0
    assert settings.top_n == 25
    assert settings.mongodb_uri == "mongodb://db"
    assert settings.uses_mongodb


def test_a_flag_wins_over_its_environment_variable() -> None:
    environ = {"SCOREBOARD_PORT": "1111", "SCOREBOARD_TOP_N": "7"}
    settings = load_settings(["--port", "2222"], environ)
    assert settings.port == 2222
    assert settings.top_n == 7  # no flag: the environment variable applies


def test_a_valid_flag_hides_an_invalid_environment_variable() -> None:
    settings = load_settings(["--port", "2222"], {"SCOREBOARD_PORT": "not-a-port"})
    assert settings.port == 2222


def test_an_empty_optional_value_means_unset() -> None:
    settings = load_settings([], {"SCOREBOARD_MONGODB_URI": "  ", "SCOREBOARD_JWT_SECRET": ""})
    assert settings.mongodb_uri is None
    assert settings.jwt_secret is None


# --- invalid values ------------------------------------------------------------------------

INVALID = [
    ("host", "   "),
    ("port", "http"),
    ("port", "65536"),
    ("port", "-1"),
    ("port", "80\n81"),
    ("mongodb_db", ""),
    ("store_timeout_s", "1"),  # not above the change stream's 1 s wait, which the driver needs
    ("store_timeout_s", "301"),
    ("store_timeout_s", "nan"),
    ("sqlite_path", " "),
    ("sqlite_synchronous", "OFF"),
    ("jwt_secret", "too-short"),
    ("jwt_public_key", "/no/such/key.pem"),
    ("jwt_jwks_url", "http://idp.example/jwks.json"),  # plain http beyond loopback
    ("jwt_jwks_url", "ftp://127.0.0.1/jwks.json"),
    ("jwt_jwks_url", "/jwks.json"),
    ("jwt_algorithms", "none"),
    ("jwt_algorithms", "HS256,HS1"),
    ("jwt_leeway_s", "301"),
    ("rate_limit_per_minute", "-1"),
    ("rate_limit_per_minute", "1001"),
    ("rate_limit_per_minute", "1.5"),
    ("max_increment", "0"),
    ("top_n", "0"),
    ("top_n", "1001"),
    ("broadcast_interval_ms", "60001"),
    ("shutdown_timeout_s", "0"),
    ("shutdown_timeout_s", "nan"),
    ("shutdown_timeout_s", "soon"),
    ("mailbox_size", "0"),
    ("user_idle_s", "0"),
    ("user_idle_s", "inf"),
    ("log_level", "TRACE"),
    ("allowed_origins", "game.com"),
    ("allowed_origins", "https://game.example,game.com"),
    ("allowed_origins", "ftp://game.example"),
    ("allowed_origins", " , "),
    ("frame_ancestors", "game.com"),
    ("frame_ancestors", "https://game.example/path"),
    ("frame_ancestors", "https://game.example; script-src *"),
    ("ws_require_auth", "maybe"),
    ("ws_require_auth", "2"),
    ("ws_max_buffer_bytes", "1023"),
    ("ws_max_buffer_bytes", "1MiB"),
    ("ws_slow_client_timeout_s", "0"),
    ("ws_slow_client_timeout_s", "never"),
    ("ws_ping_interval_s", "-1"),
    ("ws_ping_interval_s", "3601"),
    ("ws_ping_timeout_s", "-0.5"),
    ("ws_ping_timeout_s", "soon"),
    ("auth_failures_per_minute", "-1"),
    ("trusted_proxies", "proxy.local"),
    ("tls_cert", "/nonexistent/cert.pem"),
    ("tls_key", "/nonexistent/key.pem"),
    ("action_secret", "too-short"),
    ("action_max_ttl_s", "0"),
    ("action_points", "nope"),
    ("action_points", "{}"),
    ("action_points", "[1]"),
    ("action_points", '{"kill": 0}'),
    ("action_points", '{"kill": true}'),
    ("action_points", '{"kill": 1.5}'),
    ("ws_history_size", "0"),
    ("ws_history_size", "100001"),
    ("update_timeout_s", "0"),
    ("update_timeout_s", "later"),
    ("ready_max_staleness_s", "-1"),
    ("ready_max_staleness_s", "3601"),
    ("store_probe_interval_s", "0"),
    ("store_probe_interval_s", "61"),
    ("ws_send_buffer_bytes", "-1"),
    ("ws_send_buffer_bytes", "64KiB"),
    ("ws_max_per_address", "-1"),
    ("max_user_actors", "0"),
    ("max_user_actors", "unlimited"),
]
# These accept any text (an empty one means unset).
# boards_file: any path here; the file itself is read and checked when the service is built
# (tests/server/test_board_setup.py, and test_main.py end to end).
# Files are read and checked at start (server/board_setup.py, server/issuer_setup.py).
FREE_TEXT = {"mongodb_uri", "jwt_issuer", "jwt_audience", "boards_file", "jwt_issuers_file"}


def test_action_secret_needs_action_points_and_is_never_echoed() -> None:
    secret = "s" * 40
    with pytest.raises(SettingsError) as caught:
        load_settings([], {"SCOREBOARD_ACTION_SECRET": secret})
    assert "SCOREBOARD_ACTION_POINTS" in str(caught.value)
    with pytest.raises(SettingsError) as short:
        load_settings([], {"SCOREBOARD_ACTION_SECRET": "secret-value-9"})
    assert "secret-value-9" not in str(short.value)
    settings = load_settings(
        [], {"SCOREBOARD_ACTION_SECRET": secret, "SCOREBOARD_ACTION_POINTS": '{"b": 5, "a": 1}'}
    )
    assert settings.action_points == (("a", 1), ("b", 5))


def test_every_setting_with_rules_has_an_invalid_case() -> None:
    assert {field for field, _ in INVALID} == {o.field for o in OPTIONS} - FREE_TEXT


@pytest.mark.parametrize(("field", "raw"), INVALID)
def test_an_invalid_environment_variable_is_named_on_one_line(field: str, raw: str) -> None:
    env = f"SCOREBOARD_{field.upper()}"
    assert_one_line_naming(refused(**{field: raw}), env)


@pytest.mark.parametrize(("field", "raw"), INVALID)
def test_an_invalid_flag_is_named_as_the_flag_on_one_line(field: str, raw: str) -> None:
    flag = "--" + field.replace("_", "-")
    assert_one_line_naming(refused([flag, raw]), flag)
    # The same value from the environment names the variable.
    assert_one_line_naming(refused(**{field: raw}), f"SCOREBOARD_{field.upper()}")


def test_store_timeout_default_and_value() -> None:
    assert load_settings([], {}).store_timeout_s == 5.0
    env = {"SCOREBOARD_STORE_TIMEOUT_S": "2.5"}
    assert load_settings([], env).store_timeout_s == 2.5
    assert load_settings(["--store-timeout-s", "30"], env).store_timeout_s == 30.0


def test_live_stream_defaults() -> None:
    settings = load_settings([], {})
    assert settings.allowed_origins == ("*",)
    assert settings.ws_require_auth is False
    assert settings.ws_max_buffer_bytes == 256 * 1024
    assert settings.ws_send_buffer_bytes == 64 * 1024
    assert settings.ws_max_per_address == 256
    assert settings.ws_history_size == 256
    assert 0 < settings.ws_ping_timeout_s <= settings.ws_ping_interval_s


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        *[("true", True), (" TRUE ", True), ("1", True), ("yes", True), ("on", True)],
        *[("false", False), ("False", False), ("0", False), ("no", False), ("off", False)],
    ],
)
def test_booleans_accept_the_usual_spellings(raw: str, expected: bool) -> None:
    assert load_settings([], {"SCOREBOARD_WS_REQUIRE_AUTH": raw}).ws_require_auth is expected
    assert load_settings(["--ws-require-auth", raw], {}).ws_require_auth is expected


def test_allowed_origins_are_a_comma_list_or_a_star() -> None:
    settings = load_settings(
        [], {"SCOREBOARD_ALLOWED_ORIGINS": " https://game.example , http://localhost:3000 ,"}
    )
    assert settings.allowed_origins == ("https://game.example", "http://localhost:3000")
    assert load_settings(["--allowed-origins", "*"], {}).allowed_origins == ("*",)
    message = str(refused(allowed_origins="game.com"))
    assert "'game.com'" in message
    assert "https://" in message  # says what an origin looks like


def test_a_ping_timeout_longer_than_the_interval_is_refused() -> None:
    error = refused(ws_ping_interval_s="10", ws_ping_timeout_s="10.5")
    assert_one_line_naming(error, "SCOREBOARD_WS_PING_TIMEOUT_S")
    assert "SCOREBOARD_WS_PING_INTERVAL_S" in str(error)
    ok = load_settings(
        [], {"SCOREBOARD_WS_PING_INTERVAL_S": "10", "SCOREBOARD_WS_PING_TIMEOUT_S": "10"}
    )
    assert (ok.ws_ping_interval_s, ok.ws_ping_timeout_s) == (10, 10)
    # With pings off (interval 0) the timeout does not matter.
    off = load_settings([], {"SCOREBOARD_WS_PING_INTERVAL_S": "0"})
    assert off.ws_ping_interval_s == 0


def test_an_invalid_value_is_shown_when_it_is_not_a_secret() -> None:
    message = str(refused(port="http"))
    assert "'http'" in message
    assert "0 to 65535" in message


def test_a_short_jwt_secret_is_refused_and_not_echoed() -> None:
    secret = "hunter2-" + "x" * 23  # 31 bytes
    error = refused(jwt_secret=secret)
    assert_one_line_naming(error, "SCOREBOARD_JWT_SECRET")
    assert "32 bytes" in str(error)
    assert "hunter2" not in str(error)
    # 32 bytes is enough; bytes, not characters, are counted.
    assert load_settings([], {"SCOREBOARD_JWT_SECRET": "y" * 32}).jwt_secret == "y" * 32
    assert_one_line_naming(refused(jwt_secret="é" * 15), "SCOREBOARD_JWT_SECRET")
    assert load_settings([], {"SCOREBOARD_JWT_SECRET": "é" * 16}).jwt_secret == "é" * 16


def test_a_private_key_given_as_the_public_key_is_refused_and_not_echoed(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    private = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    error = refused(jwt_public_key=private)
    assert_one_line_naming(error, "SCOREBOARD_JWT_PUBLIC_KEY")
    assert "PUBLIC KEY" in str(error)
    body = private.splitlines()[1]
    assert body[:20] not in str(error)
    assert "PRIVATE" not in str(error)


def test_a_malformed_public_key_is_refused() -> None:
    garbage = "-----BEGIN PUBLIC KEY-----\nc2VjcmV0LW1hdGVyaWFs\n-----END PUBLIC KEY-----\n"
    error = refused(jwt_public_key=garbage)
    assert_one_line_naming(error, "SCOREBOARD_JWT_PUBLIC_KEY")
    assert "c2VjcmV0" not in str(error)


def test_a_mongodb_uri_with_a_password_is_never_echoed() -> None:
    error = refused(mongodb_uri="mongodb://admin:s3cr3t-pw@db.example:27017/x")
    assert "s3cr3t-pw" not in str(error)
    assert "db.example" not in str(error)


def test_secret_and_public_key_together_are_refused_without_echoing_either(rsa_pem: str) -> None:
    error = refused(jwt_secret=SECRET, jwt_public_key=rsa_pem)
    assert_one_line_naming(error, "SCOREBOARD_JWT_SECRET")
    assert "not several" in str(error)
    assert SECRET not in str(error)
    assert rsa_pem.splitlines()[1][:20] not in str(error)


def test_mongodb_without_a_jwt_key_is_refused_with_the_reason() -> None:
    error = refused(mongodb_uri="mongodb://db.example")
    assert_one_line_naming(error, "SCOREBOARD_JWT_SECRET")
    message = str(error)
    assert "SCOREBOARD_MONGODB_URI" in message
    assert "SCOREBOARD_JWT_PUBLIC_KEY" in message
    assert "share a key" in message  # why: a random key per process
    assert "one pod" in message


def test_mongodb_with_a_secret_or_a_public_key_is_accepted(rsa_pem: str) -> None:
    with_secret = load_settings(
        [], {"SCOREBOARD_MONGODB_URI": "mongodb://db", "SCOREBOARD_JWT_SECRET": SECRET}
    )
    assert with_secret.mongodb_uri == "mongodb://db"
    with_key = load_settings(
        [], {"SCOREBOARD_MONGODB_URI": "mongodb://db", "SCOREBOARD_JWT_PUBLIC_KEY": rsa_pem}
    )
    assert with_key.jwt_public_key == rsa_pem.strip()


# --- algorithms ----------------------------------------------------------------------------


def test_algorithms_default_to_hs256_with_a_secret_or_no_key() -> None:
    assert load_settings([], {"SCOREBOARD_JWT_SECRET": SECRET}).jwt_algorithms == ("HS256",)
    assert load_settings([], {}).jwt_algorithms == ("HS256",)


def test_algorithms_default_to_rs256_for_an_rsa_public_key(rsa_pem: str) -> None:
    settings = load_settings([], {"SCOREBOARD_JWT_PUBLIC_KEY": rsa_pem})
    assert settings.jwt_algorithms == ("RS256",)
    assert settings.jwt_secret is None


def test_algorithms_default_to_es256_for_an_ec_public_key(ec_pem: str) -> None:
    settings = load_settings([], {"SCOREBOARD_JWT_PUBLIC_KEY": ec_pem})
    assert settings.jwt_algorithms == ("ES256",)


@pytest.mark.parametrize(
    ("curve", "expected"),
    [(ec.SECP384R1(), "ES384"), (ec.SECP521R1(), "ES512")],
    ids=["P-384", "P-521"],
)
def test_an_ec_key_on_another_curve_gets_its_own_algorithm_or_is_refused(
    curve: ec.EllipticCurve, expected: str
) -> None:
    pem = public_pem(ec.generate_private_key(curve))
    try:
        settings = load_settings([], {"SCOREBOARD_JWT_PUBLIC_KEY": pem})
    except SettingsError as error:  # refusing at start-up is an acceptable fix too
        assert_one_line_naming(error, "SCOREBOARD_JWT_PUBLIC_KEY")
        return
    assert settings.jwt_algorithms == (expected,)


def test_an_ed25519_key_defaults_to_eddsa() -> None:
    pem = public_pem(ed25519.Ed25519PrivateKey.generate())
    assert load_settings([], {"SCOREBOARD_JWT_PUBLIC_KEY": pem}).jwt_algorithms == ("EdDSA",)
    settings = load_settings(
        [], {"SCOREBOARD_JWT_PUBLIC_KEY": pem, "SCOREBOARD_JWT_ALGORITHMS": "EdDSA"}
    )
    assert settings.jwt_algorithms == ("EdDSA",)


@pytest.mark.parametrize(
    ("key", "algorithms"),
    [("rsa", "ES256"), ("rsa", "RS256,EdDSA"), ("ec", "RS256"), ("ec", "ES384"), ("ed", "RS256")],
)
def test_algorithms_that_do_not_fit_the_public_key_are_refused(
    rsa_pem: str, ec_pem: str, key: str, algorithms: str
) -> None:
    pem = {
        "rsa": rsa_pem,
        "ec": ec_pem,
        "ed": public_pem(ed25519.Ed25519PrivateKey.generate()),
    }[key]
    error = refused(jwt_public_key=pem, jwt_algorithms=algorithms)
    assert_one_line_naming(error, "SCOREBOARD_JWT_ALGORITHMS")
    assert "does not fit" in str(error)


def test_explicit_algorithms_are_kept_in_order(rsa_pem: str) -> None:
    settings = load_settings(
        ["--jwt-algorithms", " PS256 , RS256 "], {"SCOREBOARD_JWT_PUBLIC_KEY": rsa_pem}
    )
    assert settings.jwt_algorithms == ("PS256", "RS256")
    hs = load_settings(
        [], {"SCOREBOARD_JWT_SECRET": SECRET, "SCOREBOARD_JWT_ALGORITHMS": "HS512,HS256"}
    )
    assert hs.jwt_algorithms == ("HS512", "HS256")


@pytest.mark.parametrize("algorithms", ["RS256", "ES256", "HS256,RS256", "EdDSA", "PS384"])
def test_asymmetric_algorithms_without_a_public_key_are_refused(algorithms: str) -> None:
    for env in ({"jwt_secret": SECRET}, {}):
        error = refused(jwt_algorithms=algorithms, **env)
        assert_one_line_naming(error, "SCOREBOARD_JWT_ALGORITHMS")
        assert "SCOREBOARD_JWT_PUBLIC_KEY" in str(error)


@pytest.mark.parametrize("algorithms", ["HS256", "RS256,HS256", "HS512"])
def test_hs_algorithms_with_a_public_key_are_refused(rsa_pem: str, algorithms: str) -> None:
    error = refused(jwt_public_key=rsa_pem, jwt_algorithms=algorithms)
    assert_one_line_naming(error, "SCOREBOARD_JWT_ALGORITHMS")


def test_none_is_never_an_algorithm() -> None:
    for raw in ("none", "None", "HS256,none"):
        assert_one_line_naming(
            refused(jwt_secret=SECRET, jwt_algorithms=raw), "SCOREBOARD_JWT_ALGORITHMS"
        )


# --- public key from a file ----------------------------------------------------------------


def test_the_public_key_can_be_a_file_path(tmp_path: Path, rsa_pem: str) -> None:
    key_file = tmp_path / "jwt.pub.pem"
    key_file.write_text(rsa_pem)
    settings = load_settings([], {"SCOREBOARD_JWT_PUBLIC_KEY": f" {key_file} "})
    assert settings.jwt_public_key == rsa_pem
    assert settings.jwt_algorithms == ("RS256",)
    by_flag = load_settings(["--jwt-public-key", str(key_file)], {})
    assert by_flag.jwt_public_key == rsa_pem


def test_a_public_key_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "not-a-key.pem"
    key_file.write_text("password=swordfish\n")
    error = refused(jwt_public_key=str(key_file))
    assert_one_line_naming(error, "SCOREBOARD_JWT_PUBLIC_KEY")
    assert "swordfish" not in str(error)
    error = refused(jwt_public_key=str(tmp_path))  # a directory
    assert_one_line_naming(error, "SCOREBOARD_JWT_PUBLIC_KEY")


# --- help ----------------------------------------------------------------------------------


def test_help_mentions_every_setting_env_name_and_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # argparse wraps to the terminal width
    text = build_parser().format_help()
    for option in OPTIONS:
        assert option.env in text, option.env
        assert option.flag in text, option.flag
    assert "[env SCOREBOARD_PORT; default 8000]" in text
    assert "[env SCOREBOARD_JWT_SECRET; default unset]" in text


# What a value looks like, for --help: units, kinds, and a few names of their own.
PLACEHOLDERS = {"N", "SECONDS", "MS", "BYTES", "LIST", "TEXT", "true|false", "NUMBER"} | {
    "ADDRESS", "PORT", "URI", "URL", "NAME", "PATH", "SECRET", "PEM|PATH", "JSON",
    "FULL|NORMAL", "DEBUG|INFO|WARNING|ERROR",
}  # fmt: skip


def test_help_shows_a_meaningful_placeholder_for_every_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    text = build_parser().format_help()
    for option in OPTIONS:
        shown = placeholder(option)
        assert shown in PLACEHOLDERS, (option.flag, shown)
        assert f"{option.flag} {shown}" in text
    for flag, shown in [
        ("--rate-limit-per-minute", "N"),
        ("--ws-require-auth", "true|false"),
        ("--jwt-leeway-s", "SECONDS"),
        ("--ws-max-buffer-bytes", "BYTES"),
        ("--broadcast-interval-ms", "MS"),
        ("--mongodb-uri", "URI"),
        ("--trusted-proxies", "LIST"),
        ("--sqlite-synchronous", "FULL|NORMAL"),
    ]:
        assert f"{flag} {shown}" in text


def test_an_unknown_flag_exits(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        load_settings(["--no-such-flag"], {})
    assert "--no-such-flag" in capsys.readouterr().err


def test_tls_needs_both_the_certificate_and_the_key(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(SettingsError) as caught:
        load_settings([], {"SCOREBOARD_TLS_CERT": str(cert)})
    assert "SCOREBOARD_TLS_KEY" in str(caught.value)


def test_with_mongodb_the_update_deadline_must_outlast_the_store_deadline() -> None:
    env = {
        "SCOREBOARD_MONGODB_URI": "mongodb://db/?replicaSet=rs0",
        "SCOREBOARD_JWT_SECRET": "s" * 32,
        "SCOREBOARD_STORE_TIMEOUT_S": "5",
    }
    with pytest.raises(SettingsError) as error:
        load_settings([], {**env, "SCOREBOARD_UPDATE_TIMEOUT_S": "5"})
    assert error.value.setting == "SCOREBOARD_UPDATE_TIMEOUT_S"
    assert "SCOREBOARD_STORE_TIMEOUT_S (5 s)" in str(error.value)
    assert load_settings([], {**env, "SCOREBOARD_UPDATE_TIMEOUT_S": "6"}).update_timeout_s == 6
    # The embedded store has no such deadline: any update deadline goes.
    assert load_settings([], {"SCOREBOARD_UPDATE_TIMEOUT_S": "1"}).update_timeout_s == 1
