"""Settings: every one an environment variable ``SCOREBOARD_*`` and a command-line flag.

Parsing is pure (argv and environ in, :class:`Settings` out) so it is tested as data.
A flag wins over its environment variable, which wins over the default. An invalid value
raises :class:`SettingsError` naming the setting as it was given (the flag or the
variable); the entry point prints it on one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.signing_keys import (
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    MIN_SECRET_BYTES,
    algorithms_for_pem,
    jwks_url_problem,
)

ENV_PREFIX = "SCOREBOARD_"
_ASYMMETRIC_PREFIXES = ("RS", "PS", "ES", "Ed")
SUPPORTED_ALGORITHMS = frozenset({*HMAC_ALGORITHMS, *ASYMMETRIC_ALGORITHMS})


class SettingsError(ValueError):
    """An invalid setting. ``str()`` is one line that names it as it was given: the flag
    for a value from the command line, else the environment variable."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"invalid setting {setting}: {message}")
        self.setting = setting


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated configuration of one server process. See ``python -m server --help``."""

    host: str = "0.0.0.0"
    port: int = 8000
    mongodb_uri: str | None = None
    mongodb_db: str = "scoreboard"
    store_timeout_s: float = 5.0
    sqlite_path: str = "scoreboard.db"
    sqlite_synchronous: str = "FULL"
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_algorithms: tuple[str, ...] = ()
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_s: int = 30
    jwt_jwks_url: str | None = None
    jwt_issuers_file: str | None = None
    rate_limit_per_minute: int = 10
    max_increment: int = 100
    top_n: int = 10
    broadcast_interval_ms: int = 100
    shutdown_timeout_s: float = 20.0
    mailbox_size: int = 100
    user_idle_s: float = 60.0
    log_level: str = "INFO"
    allowed_origins: tuple[str, ...] = ("*",)
    # Origins whose pages may frame the live page (?embed=1): CSP frame-ancestors.
    frame_ancestors: tuple[str, ...] = ()
    ws_require_auth: bool = False
    ws_max_buffer_bytes: int = 256 * 1024
    ws_slow_client_timeout_s: float = 10.0
    ws_ping_interval_s: float = 20.0
    ws_ping_timeout_s: float = 20.0
    ws_history_size: int = 256
    auth_failures_per_minute: int = 30
    trusted_proxies: tuple[str, ...] = ()
    tls_cert: str | None = None
    tls_key: str | None = None
    action_secret: str | None = None
    action_points: tuple[tuple[str, int], ...] = ()
    action_max_ttl_s: int = 300
    update_timeout_s: float = 10.0
    ready_max_staleness_s: float = 30.0
    store_probe_interval_s: float = 1.0
    ws_send_buffer_bytes: int = 64 * 1024
    boards_file: str | None = None
    ws_max_per_address: int = 256
    max_user_actors: int = 50_000

    @property
    def uses_mongodb(self) -> bool:
        return self.mongodb_uri is not None

    @property
    def uses_tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def has_jwt_key(self) -> bool:
        """Whether tokens are checked with configured keys (not a demo's random key)."""
        return bool(
            self.jwt_secret or self.jwt_public_key or self.jwt_jwks_url or self.jwt_issuers_file
        )


# --- value parsers: str -> value, ValueError with a human message on bad input ---------


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"must be a whole number from {low} to {high}") from None
        if not low <= value <= high:
            raise ValueError(f"must be a whole number from {low} to {high}")
        return value

    return parse


def _float_range(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"must be a number from {low:g} to {high:g}") from None
        if not low <= value <= high:
            raise ValueError(f"must be a number from {low:g} to {high:g}")
        return value

    return parse


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().upper()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def _text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _optional_text(raw: str) -> str | None:
    return raw.strip() or None


def _secret(raw: str) -> str | None:
    if not raw:
        return None
    if len(raw.encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"must be at least {MIN_SECRET_BYTES} bytes (an HS256 key shorter than the hash "
            "is weak)"
        )
    return raw


def _jwks_url(raw: str) -> str | None:
    raw = raw.strip()
    if not raw:
        return None
    problem = jwks_url_problem(raw)
    if problem:
        raise ValueError(problem)
    return raw


def _public_key(raw: str) -> str | None:
    """Accept the PEM text itself, or a path to a PEM file."""
    raw = raw.strip()
    if not raw:
        return None
    if not raw.startswith("-----BEGIN"):
        path = Path(raw)
        try:
            raw = path.read_text()
        except OSError as exc:
            raise ValueError(f"is neither PEM text nor a readable file ({exc.strerror})") from None
    if "PUBLIC KEY-----" not in raw:
        raise ValueError("must be a PEM public key (-----BEGIN PUBLIC KEY-----)")
    return raw


def _algorithms(raw: str) -> tuple[str, ...]:
    names = tuple(a.strip() for a in raw.split(",") if a.strip())
    unknown = [a for a in names if a not in SUPPORTED_ALGORITHMS]
    if unknown:
        raise ValueError(f"unknown algorithm {unknown[0]!r} (allowed: HS*, RS*, PS*, ES*, EdDSA)")
    return names


def _boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def _frame_origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip() for o in raw.split(",") if o.strip())
    for origin in origins:
        if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?", origin):
            raise ValueError(f"{origin!r} is not an origin like https://game.example.com")
    return origins


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip() for o in raw.split(",") if o.strip())
    if not origins:
        raise ValueError("must be * or a comma-separated list of origins")
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ValueError(f"{origin!r} is not an origin like https://game.example.com")
    return origins


def _action_points(raw: str) -> tuple[tuple[str, int], ...]:
    try:
        data = json.loads(raw)
    except ValueError:
        raise ValueError('must be a JSON object like {"kill": 10, "quest": 50}') from None
    if not isinstance(data, dict) or not data:
        raise ValueError('must be a non-empty JSON object like {"kill": 10, "quest": 50}')
    for act, points in data.items():
        if type(points) is not int or points < 1:
            raise ValueError(f"points of {act!r} must be a positive whole number")
    return tuple(sorted(data.items()))


def _networks(raw: str) -> tuple[str, ...]:
    entries = tuple(e.strip() for e in raw.split(",") if e.strip())
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not an address or CIDR range") from None
    return entries


def _readable_file(raw: str) -> str | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        with open(raw, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read the file ({exc.strerror})") from None
    return raw


def _log_level(raw: str) -> str:
    return _choice("DEBUG", "INFO", "WARNING", "ERROR")(raw)


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its field in :class:`Settings`, its parser and its help text, and the
    placeholder ``--help`` shows for its value (unset: see :func:`placeholder`)."""

    field: str
    parse: Callable[[str], Any]
    help: str
    metavar: str | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.field.upper()

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("host", _text, "address to listen on", metavar="ADDRESS"),
    Option("port", _int_range(0, 65535), "port to listen on (0: any free port)", metavar="PORT"),
    Option(
        "mongodb_uri",
        _optional_text,
        "MongoDB URI; unset: the embedded SQLite store",
        metavar="URI",
    ),
    Option("mongodb_db", _text, "MongoDB database name", metavar="NAME"),
    Option(
        "boards_file",
        _optional_text,
        "TOML file of boards (docs/boards.md); unset: one board 'main' from these settings",
        metavar="PATH",
    ),
    Option(
        "store_timeout_s",
        # Above the change stream's 1 s wait for events, which the driver requires.
        _float_range(2, 300),
        "deadline of each MongoDB store call, seconds (the driver's timeoutMS)",
    ),
    Option(
        "sqlite_path",
        _text,
        "SQLite file of the embedded store (':memory:' allowed)",
        metavar="PATH",
    ),
    Option(
        "sqlite_synchronous",
        _choice("FULL", "NORMAL"),
        "SQLite durability: FULL survives power loss, NORMAL only a process crash",
        metavar="FULL|NORMAL",
    ),
    Option(
        "jwt_secret",
        _secret,
        "HS256 key (32+ bytes); unset with no other JWT key and no MongoDB: "
        "a random per-process key and a printed demo token",
        metavar="SECRET",
    ),
    Option(
        "jwt_public_key",
        _public_key,
        "PEM public key (text or file path) for RS256/ES256",
        metavar="PEM|PATH",
    ),
    Option(
        "jwt_algorithms",
        _algorithms,
        "comma-separated allow-list; default follows the key (HS256, or RS256/ES256 from "
        "the public key's type, or every asymmetric one with a JWKS URL)",
    ),
    Option(
        "jwt_issuer",
        _optional_text,
        "required 'iss' claim, checked when set (required with a JWKS URL)",
    ),
    Option(
        "jwt_audience",
        _optional_text,
        "required 'aud' claim, checked when set (required with a JWKS URL)",
    ),
    Option("jwt_leeway_s", _int_range(0, 300), "clock skew allowed on exp/nbf/iat, seconds"),
    Option(
        "jwt_jwks_url",
        _jwks_url,
        "the identity provider's JWKS URL (https; http only to loopback), in place of a "
        "secret or public key; keys chosen by kid, refreshed as they rotate",
        metavar="URL",
    ),
    Option(
        "jwt_issuers_file",
        _optional_text,
        "TOML file of trusted issuers, each with its keys, audience and claims "
        "(docs/security.md); replaces the other SCOREBOARD_JWT_* key settings",
        metavar="PATH",
    ),
    Option(
        "rate_limit_per_minute",
        _int_range(0, 1000),
        "accepted updates per user per sliding minute (0: off)",
    ),
    Option("max_increment", _int_range(1, 1_000_000_000), "largest increment accepted"),
    Option("top_n", _int_range(1, 1000), "rows in the top scores"),
    Option(
        "broadcast_interval_ms",
        _int_range(0, 60_000),
        "least time between two live broadcasts (0: each change at once)",
    ),
    Option("shutdown_timeout_s", _float_range(0.1, 3600), "time allowed for a graceful stop"),
    Option(
        "mailbox_size",
        _int_range(1, 100_000),
        "queued increments per user before answering 503 busy",
    ),
    Option("user_idle_s", _float_range(0.01, 86_400), "idle time before a user actor is evicted"),
    Option(
        "log_level", _log_level, "DEBUG, INFO, WARNING or ERROR", metavar="DEBUG|INFO|WARNING|ERROR"
    ),
    Option(
        "allowed_origins",
        _origins,
        "browser origins allowed for CORS and the WebSocket (comma list, or *)",
    ),
    Option(
        "frame_ancestors",
        _frame_origins,
        "origins whose pages may frame the live page, for ?embed=1 (comma list; none: no framing)",
    ),
    Option("ws_require_auth", _boolean, "refuse WebSocket upgrades without a valid ?token="),
    Option(
        "ws_max_buffer_bytes",
        _int_range(1024, 1 << 30),
        "unsent bytes per WebSocket client before its updates are skipped",
    ),
    Option(
        "ws_slow_client_timeout_s",
        _float_range(0.1, 3600),
        "time a client may stay over the buffer bound before it is closed (1013)",
    ),
    Option(
        "ws_ping_interval_s", _float_range(0, 3600), "WebSocket keepalive ping interval (0: off)"
    ),
    Option(
        "ws_ping_timeout_s",
        _float_range(0, 3600),
        "close a WebSocket whose pong is this late (at most the interval)",
    ),
    Option(
        "auth_failures_per_minute",
        _int_range(0, 100_000),
        "failed authentications per client address per minute before 429 (0: off)",
    ),
    Option(
        "trusted_proxies",
        _networks,
        "proxies (addresses or CIDRs, comma list) whose X-Forwarded-For is believed",
    ),
    Option(
        "tls_cert",
        _readable_file,
        "PEM certificate chain: serve HTTPS/WSS directly",
        metavar="PATH",
    ),
    Option("tls_key", _readable_file, "PEM private key of --tls-cert", metavar="PATH"),
    Option(
        "action_secret",
        _secret,
        "HS256 key of the game's action service; set: every update needs an action_token",
        metavar="SECRET",
    ),
    Option(
        "action_points",
        _action_points,
        'JSON object: action type -> points, e.g. {"kill": 10}',
        metavar="JSON",
    ),
    Option(
        "action_max_ttl_s",
        _int_range(1, 86_400),
        "the longest-lived action token accepted (exp - now), seconds",
    ),
    Option(
        "ws_history_size", _int_range(1, 100_000), "versions of deltas kept for resuming clients"
    ),
    Option(
        "update_timeout_s",
        _float_range(0.1, 3600),
        "longest wait for an update or admin action before 503 database_timeout "
        "(its outcome is then unknown)",
    ),
    Option(
        "ready_max_staleness_s",
        _float_range(0, 3600),
        "time /readyz stays 200 after the change feed was last open and the store last "
        "passed its probe",
    ),
    Option(
        "store_probe_interval_s",
        _float_range(0.05, 60),
        "time between background probes of the store (SQLite: a write; MongoDB: a ping)",
    ),
    Option(
        "ws_send_buffer_bytes",
        _int_range(0, 1 << 26),
        "kernel send buffer (SO_SNDBUF) of each WebSocket, so a client that stops reading is "
        "noticed soon (0: the kernel's autotuning, up to megabytes)",
    ),
    Option(
        "ws_max_per_address",
        _int_range(0, 1_000_000),
        "open WebSockets per client address before 429 (0: no limit)",
    ),
    Option(
        "max_user_actors",
        _int_range(1, 10_000_000),
        "live user actors; when full, the least recently used idle one is stopped, and with "
        "none idle an update answers 503 busy",
    ),
)


_UNIT_PLACEHOLDERS: tuple[tuple[str, str], ...] = (
    ("_s", "SECONDS"),
    ("_ms", "MS"),
    ("_bytes", "BYTES"),
)


def placeholder(option: Option) -> str:
    """What ``--help`` shows for an option's value: its ``metavar``; else the unit its name
    ends with (``_s``: SECONDS, ``_ms``: MS, ``_bytes``: BYTES); else the kind of its
    default (``true|false``, ``N``, ``NUMBER``, ``LIST`` for a comma list, ``TEXT``)."""
    if option.metavar is not None:
        return option.metavar
    for suffix, shown in _UNIT_PLACEHOLDERS:
        if option.field.endswith(suffix):
            return shown
    default = getattr(Settings(), option.field)
    if isinstance(default, bool):
        return "true|false"
    if isinstance(default, int):
        return "N"
    if isinstance(default, float):
        return "NUMBER"
    if isinstance(default, tuple):
        return "LIST"
    return "TEXT"


def _default_text(option: Option) -> str:
    value = getattr(Settings(), option.field)
    if value is None:
        return "unset"
    if option.field == "jwt_algorithms":
        return "from key"
    if value == ():
        return "unset"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def build_parser(prog: str = "python -m server") -> argparse.ArgumentParser:
    """The ``python -m server`` parser; ``--help`` lists every setting and its default."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Live scoreboard service. Every flag is also an environment variable.",
        epilog="Subcommand: 'python -m server token --sub ID [--name NAME] [--ttl SECONDS] "
        "[--scope SCOPE]...' mints a token with SCOREBOARD_JWT_SECRET.",
    )
    for option in OPTIONS:
        parser.add_argument(
            option.flag,
            dest=option.field,
            metavar=placeholder(option),
            default=None,
            help=f"{option.help} [env {option.env}; default {_default_text(option)}]",
        )
    return parser


def load_settings(argv: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from flags (``argv``, without the program name) and ``environ``.

    Raises:
        SettingsError: a value is invalid or the combination is inconsistent.
        SystemExit: from argparse, for ``--help`` or an unknown flag.
    """
    environ = {} if environ is None else environ
    args = build_parser().parse_args(list(argv))
    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw, given_as = getattr(args, option.field), option.flag
        if raw is None:
            raw, given_as = environ.get(option.env), option.env
        if raw is None:
            continue
        try:
            values[option.field] = option.parse(raw)
        except ValueError as exc:
            message = f"{exc} (got {raw!r})" if _shown(option) else str(exc)
            raise SettingsError(given_as, message) from None
    if "ws_ping_timeout_s" not in values and values.get("ws_ping_interval_s"):
        # Unset, the timeout follows a shorter interval rather than contradict it.
        values["ws_ping_timeout_s"] = min(
            Settings().ws_ping_timeout_s, values["ws_ping_interval_s"]
        )
    settings = Settings(**{k: v for k, v in values.items() if v is not None})
    return _checked(settings)


def _shown(option: Option) -> bool:
    """Secrets are never echoed back in an error message."""
    return option.field not in {"jwt_secret", "jwt_public_key", "mongodb_uri", "action_secret"}


def _checked(settings: Settings) -> Settings:
    algorithms = _checked_jwt(settings)
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise SettingsError(
            "SCOREBOARD_TLS_KEY" if settings.tls_cert else "SCOREBOARD_TLS_CERT",
            "TLS needs both SCOREBOARD_TLS_CERT and SCOREBOARD_TLS_KEY",
        )
    if settings.action_secret and not settings.action_points:
        raise SettingsError("SCOREBOARD_ACTION_POINTS", "is required with SCOREBOARD_ACTION_SECRET")
    if 0 < settings.ws_ping_interval_s < settings.ws_ping_timeout_s:
        raise SettingsError(
            "SCOREBOARD_WS_PING_TIMEOUT_S", "must not be longer than SCOREBOARD_WS_PING_INTERVAL_S"
        )
    if settings.uses_mongodb and settings.update_timeout_s <= settings.store_timeout_s:
        # The store's own deadline must answer first: it knows whether anything was applied.
        raise SettingsError(
            "SCOREBOARD_UPDATE_TIMEOUT_S",
            f"must be longer than SCOREBOARD_STORE_TIMEOUT_S ({settings.store_timeout_s:g} s) "
            "with MongoDB, so a store that does not answer is reported by its own deadline",
        )
    if settings.uses_mongodb and not settings.has_jwt_key:
        raise SettingsError(
            "SCOREBOARD_JWT_SECRET",
            "with SCOREBOARD_MONGODB_URI set, a JWT key is required (set SCOREBOARD_JWT_SECRET, "
            "SCOREBOARD_JWT_PUBLIC_KEY, SCOREBOARD_JWT_JWKS_URL or SCOREBOARD_JWT_ISSUERS_FILE): "
            "pods sharing a database must share a key, so a random per-process key would make "
            "tokens work on one pod only",
        )
    return dataclasses.replace(settings, jwt_algorithms=algorithms)


def _checked_jwt(settings: Settings) -> tuple[str, ...]:
    """Check the JWT key settings together; the algorithms to accept."""
    if settings.jwt_issuers_file:
        given = [
            name
            for name in ("secret", "public_key", "jwks_url", "issuer", "audience", "algorithms")
            if getattr(settings, f"jwt_{name}")
        ]
        if given:
            raise SettingsError(
                f"SCOREBOARD_JWT_{given[0].upper()}",
                "goes in SCOREBOARD_JWT_ISSUERS_FILE's issuers when that file is set",
            )
        return ()
    sources = [n for n in ("secret", "public_key", "jwks_url") if getattr(settings, f"jwt_{n}")]
    if len(sources) > 1:
        raise SettingsError(
            f"SCOREBOARD_JWT_{sources[0].upper()}",
            "set one of a secret (HS256), a public key or a JWKS URL, not several",
        )
    if settings.jwt_jwks_url and not settings.jwt_issuer:
        # A provider's JWKS may sign for others too (Firebase: one set for every project).
        raise SettingsError(
            "SCOREBOARD_JWT_ISSUER",
            "is required with SCOREBOARD_JWT_JWKS_URL: the provider's keys may sign tokens "
            "of other tenants or projects, so the 'iss' claim must be checked",
        )
    if settings.jwt_jwks_url and not settings.jwt_audience:
        # And its iss covers every app of the tenant or realm.
        raise SettingsError(
            "SCOREBOARD_JWT_AUDIENCE",
            "is required with SCOREBOARD_JWT_JWKS_URL: the provider signs tokens for every "
            "app of the tenant (to accept them all, use SCOREBOARD_JWT_ISSUERS_FILE with "
            "any_audience = true)",
        )
    algorithms = settings.jwt_algorithms
    if settings.jwt_public_key or settings.jwt_jwks_url:
        fitting = (
            _algorithms_for_key(settings.jwt_public_key)
            if settings.jwt_public_key
            else ASYMMETRIC_ALGORITHMS
        )
        if not algorithms:
            algorithms = fitting if settings.jwt_jwks_url else fitting[:1]
        if any(not a.startswith(_ASYMMETRIC_PREFIXES) for a in algorithms):
            raise SettingsError(
                "SCOREBOARD_JWT_ALGORITHMS",
                "only asymmetric algorithms (RS*, PS*, ES*, EdDSA) go with a public key or "
                "a JWKS URL",
            )
        unfit = [a for a in algorithms if a not in fitting]
        if unfit:
            raise SettingsError(
                "SCOREBOARD_JWT_ALGORITHMS",
                f"{unfit[0]} does not fit the public key (it takes {', '.join(fitting)})",
            )
    else:
        if not algorithms:
            algorithms = ("HS256",)
        if any(not a.startswith("HS") for a in algorithms):
            raise SettingsError(
                "SCOREBOARD_JWT_ALGORITHMS",
                "asymmetric algorithms need SCOREBOARD_JWT_PUBLIC_KEY or SCOREBOARD_JWT_JWKS_URL",
            )
    return algorithms


def _algorithms_for_key(pem: str) -> tuple[str, ...]:
    """The algorithms a public key can verify, the default first."""
    try:
        return algorithms_for_pem(pem)
    except ValueError as exc:
        raise SettingsError("SCOREBOARD_JWT_PUBLIC_KEY", str(exc)) from None
