"""The token issuers a server trusts, and how each one's claims name a player (pure).

One :class:`IssuerSpec` per issuer: its ``iss``, where its keys come from (a JWKS URL, a
PEM public key, or an HMAC secret), its audience and algorithms, which claims give the user
id and the display name, and a prefix that keeps two providers' user ids apart.

Two ways to configure them, both checked at start:

- the single-key settings of before (``SCOREBOARD_JWT_SECRET``/``_PUBLIC_KEY``, or
  ``SCOREBOARD_JWT_JWKS_URL``, with ``_ISSUER``, ``_AUDIENCE`` and ``_ALGORITHMS``): one
  issuer, named ``default``, whose tokens need no ``iss`` unless ``_ISSUER`` is set
  (:func:`single_issuer`);
- ``SCOREBOARD_JWT_ISSUERS_FILE``: a TOML file, one ``[issuers.<name>]`` table per issuer
  (:func:`parse_issuers`; the format is in docs/security.md).

User ids cannot collide across issuers: with several issuers, at most one may keep the
empty prefix (the studio's own players keep their ids), no prefix may begin another, and
a token of the unprefixed issuer whose user id begins with another issuer's prefix is
refused (:meth:`IssuerSpec.user_id`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, NoReturn

from server.signing_keys import (
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    MIN_SECRET_BYTES,
    algorithms_for_pem,
    jwks_url_problem,
)

DEFAULT_NAME_CLAIMS: Final = ("name", "preferred_username")
DEFAULT_ISSUER_NAME: Final = "default"
MAX_ISSUERS: Final = 20
MAX_PREFIX_CHARS: Final = 32
_KEY_FIELDS: Final = ("jwks_url", "public_key", "public_key_file", "secret_env")
_NAME = re.compile(r"[a-z0-9_-]{1,32}")
_CLAIM = re.compile(r"[A-Za-z0-9_:.\-/]{1,64}")
_FIELDS: Final = frozenset(
    {
        "iss",
        "jwks_url",
        "public_key",
        "public_key_file",
        "secret_env",
        "audience",
        "algorithms",
        "user_id_claim",
        "name_claims",
        "user_id_prefix",
        "trust_scopes",
        "any_audience",
    }
)


class IssuersError(ValueError):
    """A trusted-issuers configuration that cannot be used (one line, naming the issuer
    and field)."""


@dataclass(frozen=True, slots=True)
class KeySource:
    """Where one issuer's keys come from: exactly one of the three is set."""

    jwks_url: str | None = None
    public_key: str | None = None  # PEM text
    secret: str | None = None  # an HMAC secret

    @classmethod
    def fixed(cls, key: str) -> KeySource:
        """A secret's or a PEM public key's text as a key source (PEM text begins with
        ``-----BEGIN``; the settings checked which it is)."""
        if key.lstrip().startswith("-----BEGIN"):
            return cls(public_key=key)
        return cls(secret=key)

    @property
    def describe(self) -> str:
        """What kind of key this is, for logs (never the key)."""
        if self.jwks_url:
            return f"JWKS {self.jwks_url}"
        return "a PEM public key" if self.public_key else "an HMAC secret"


@dataclass(frozen=True, slots=True)
class IssuerSpec:
    """One trusted issuer.

    Attributes:
        name: its name in metrics and logs (``default`` for the single-key settings).
        iss: the ``iss`` its tokens carry; ``None`` (single-key settings without
            ``SCOREBOARD_JWT_ISSUER``): tokens need none, and any is accepted.
        keys: where its signing keys come from.
        audience: the ``aud`` its tokens must carry, when set.
        algorithms: the ``alg`` values accepted from it; never ``none``, never an HMAC
            algorithm with a public key or the reverse.
        user_id_claim: the claim that names the player (``sub`` by default).
        name_claims: the claims tried in order for the display name, else the user id.
        user_id_prefix: put before the claim's value to make the player's id.
        reserved_prefixes: the other issuers' prefixes, which this issuer's user ids may
            not begin with (set for the unprefixed issuer of several).
        trust_scopes: whether its tokens' ``scope`` claim counts (the admin routes need
            ``scores:admin``): always for the single-key settings' issuer, only when the
            file says so for the file's issuers, so a console platform's or a social
            login's tokens never carry admin rights by accident.
    """

    name: str
    iss: str | None
    keys: KeySource
    audience: str | None = None
    algorithms: tuple[str, ...] = ("HS256",)
    user_id_claim: str = "sub"
    name_claims: tuple[str, ...] = DEFAULT_NAME_CLAIMS
    user_id_prefix: str = ""
    reserved_prefixes: tuple[str, ...] = ()
    trust_scopes: bool = True

    def user_id(self, claimed: str) -> str | None:
        """The player's id for the user id claim's value, or None when it would pass for
        another issuer's player."""
        if claimed.startswith(self.reserved_prefixes):
            return None
        return self.user_id_prefix + claimed


def single_issuer(
    *,
    key: KeySource,
    algorithms: tuple[str, ...],
    issuer: str | None,
    audience: str | None,
) -> IssuerSpec:
    """The one issuer of the single-key settings (already checked by the settings)."""
    return IssuerSpec(
        DEFAULT_ISSUER_NAME,
        issuer,
        key,
        audience=audience,
        algorithms=algorithms,
        # A provider's tokens carry whatever scopes its tenant grants: only a key of the
        # studio's own (a secret, a PEM key) grants admin rights, as before.
        trust_scopes=key.jwks_url is None,
    )


def parse_issuers(
    document: Mapping[str, Any],
    *,
    environ: Mapping[str, str],
    read_file: Any,
) -> tuple[IssuerSpec, ...]:
    """The issuers of a trusted-issuers document (the parsed TOML).

    Args:
        document: the file's content: ``{"issuers": {name: {...}}}``.
        environ: where ``secret_env`` names are looked up.
        read_file: reads a ``public_key_file`` path to text (raises ``OSError``).

    Raises:
        IssuersError: a mistake, in one line naming the issuer and field.
    """
    unknown = set(document) - {"issuers"}
    if unknown:
        first = sorted(unknown)[0]
        raise IssuersError(f"unknown top-level key {first!r} (expected [issuers.<name>])")
    tables = document.get("issuers")
    if not isinstance(tables, dict) or not tables:
        raise IssuersError("no [issuers.<name>] table")
    if len(tables) > MAX_ISSUERS:
        raise IssuersError(f"{len(tables)} issuers: at most {MAX_ISSUERS}")
    specs = [_issuer(name, raw, environ, read_file) for name, raw in tables.items()]
    return _apart(specs)


def _issuer(name: str, raw: object, environ: Mapping[str, str], read_file: Any) -> IssuerSpec:
    if not _NAME.fullmatch(name):
        raise IssuersError(f"issuer {name!r}: the name must be 1 to 32 of a-z 0-9 _ -")
    if not isinstance(raw, dict):
        raise IssuersError(f"issuer {name!r}: must be a table")
    fields = _Fields(name, raw)
    unknown = set(raw) - _FIELDS
    if unknown:
        fields.fail(sorted(unknown)[0], "unknown field")
    iss = fields.text("iss")
    if iss is None:
        fields.fail("iss", "is required (the 'iss' claim its tokens carry)")
    keys = _key_source(fields, environ, read_file)
    algorithms = _algorithms(fields, keys)
    user_id_claim = fields.text("user_id_claim") or "sub"
    if not _CLAIM.fullmatch(user_id_claim):
        fields.fail("user_id_claim", "must be a claim name")
    name_claims = fields.texts("name_claims", DEFAULT_NAME_CLAIMS)
    if any(not _CLAIM.fullmatch(claim) for claim in name_claims):
        fields.fail("name_claims", "must be claim names")
    audience = fields.text("audience")
    if fields.flag("any_audience"):
        if audience is not None:
            fields.fail("any_audience", "goes without an audience (it waives the check)")
    elif audience is None and keys.jwks_url:
        # A provider's iss covers its whole tenant or realm: every app of it would do.
        fields.fail(
            "audience",
            "is required with a jwks_url (the provider signs for every app of the tenant); "
            "set any_audience = true to accept them all",
        )
    prefix = fields.text("user_id_prefix") or ""
    if len(prefix) > MAX_PREFIX_CHARS or not prefix.isprintable() or set(prefix) & {"/", "%"}:
        fields.fail(
            "user_id_prefix", f"at most {MAX_PREFIX_CHARS} printable characters, no '/' or '%'"
        )
    return IssuerSpec(
        name,
        iss,
        keys,
        audience=audience,
        algorithms=algorithms,
        user_id_claim=user_id_claim,
        name_claims=name_claims,
        user_id_prefix=prefix,
        trust_scopes=fields.flag("trust_scopes"),
    )


def _key_source(fields: _Fields, environ: Mapping[str, str], read_file: Any) -> KeySource:
    given = [k for k in _KEY_FIELDS if k in fields.raw]
    if len(given) != 1:
        fields.fail(
            "jwks_url",
            "give exactly one key source: jwks_url, public_key, public_key_file or secret_env",
        )
    source = given[0]
    value = fields.text(source) or ""
    if source == "jwks_url":
        problem = jwks_url_problem(value)
        if problem:
            fields.fail("jwks_url", problem)
        return KeySource(jwks_url=value)
    if source == "secret_env":
        secret = environ.get(value)
        if not secret:
            fields.fail("secret_env", f"the environment variable {value!r} is not set")
        if len(secret.encode()) < MIN_SECRET_BYTES:
            fields.fail("secret_env", f"the secret must be at least {MIN_SECRET_BYTES} bytes")
        return KeySource(secret=secret)
    if source == "public_key_file":
        try:
            value = read_file(value)
        except OSError as exc:
            fields.fail("public_key_file", f"cannot be read ({exc.strerror or exc})")
    try:
        algorithms_for_pem(value)
    except ValueError as exc:
        fields.fail(source, str(exc))
    return KeySource(public_key=value)


def _algorithms(fields: _Fields, keys: KeySource) -> tuple[str, ...]:
    if keys.secret:
        allowed: tuple[str, ...] = HMAC_ALGORITHMS
        default: tuple[str, ...] = ("HS256",)
    elif keys.public_key:
        allowed = algorithms_for_pem(keys.public_key)
        default = allowed[:1]
    else:
        allowed = default = ASYMMETRIC_ALGORITHMS
    algorithms = fields.texts("algorithms", default)
    wrong = [a for a in algorithms if a not in allowed]
    if wrong or not algorithms:
        fields.fail(
            "algorithms",
            f"{wrong[0] if wrong else 'none'} does not fit {keys.describe} "
            f"(it takes {', '.join(allowed)})",
        )
    return algorithms


def _apart(specs: list[IssuerSpec]) -> tuple[IssuerSpec, ...]:
    """Check that no two issuers' tokens could name the same player or the same ``iss``,
    and reserve the other prefixes from the unprefixed issuer."""
    seen: dict[str, str] = {}
    for spec in specs:
        assert spec.iss is not None
        if spec.iss in seen:
            other = seen[spec.iss]
            raise IssuersError(f"issuer {spec.name!r}: iss: the same as issuer {other!r}'s")
        seen[spec.iss] = spec.name
    if len(specs) == 1:
        return tuple(specs)
    unprefixed = [s.name for s in specs if not s.user_id_prefix]
    if len(unprefixed) > 1:
        raise IssuersError(
            f"issuer {unprefixed[1]!r}: user_id_prefix: with several issuers at most one may "
            f"go without one ({unprefixed[0]!r} does), or their players' ids could collide"
        )
    for a in specs:
        for b in specs:
            if a is not b and a.user_id_prefix and b.user_id_prefix.startswith(a.user_id_prefix):
                raise IssuersError(
                    f"issuer {b.name!r}: user_id_prefix: begins with issuer {a.name!r}'s "
                    f"prefix {a.user_id_prefix!r}, so their players' ids could collide"
                )
    prefixes = tuple(s.user_id_prefix for s in specs if s.user_id_prefix)
    return tuple(s if s.user_id_prefix else replace(s, reserved_prefixes=prefixes) for s in specs)


class _Fields:
    def __init__(self, name: str, raw: dict[str, Any]) -> None:
        self.name = name
        self.raw = raw

    def fail(self, field: str, problem: str) -> NoReturn:
        raise IssuersError(f"issuer {self.name!r}: {field}: {problem}")

    def text(self, key: str) -> str | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(key, "must be a non-empty string")
        return value.strip() if key not in ("public_key",) else value

    def flag(self, key: str) -> bool:
        value = self.raw.get(key, False)
        if not isinstance(value, bool):
            self.fail(key, "must be true or false")
        return value

    def texts(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.raw.get(key)
        if value is None:
            return default
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            self.fail(key, "must be a non-empty list of strings")
        return tuple(value)
