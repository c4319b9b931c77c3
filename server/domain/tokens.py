"""JWT verification (who is calling) and minting (the ``token`` subcommand, the demo token).

:class:`TokenVerifier` checks a bearer token against the issuers the server trusts
(:mod:`server.domain.issuers`): the token's ``iss`` picks the issuer before any key is
tried, the issuer's keys give the one key its ``kid`` and ``alg`` name
(:class:`IssuerKeys`: a fixed secret or PEM key, or a JWKS set kept current by
:mod:`server.jwks_client`), and the issuer's claims name the player. A ``kid`` the set
lacks raises :class:`KeyNotLoaded`, which lets an async caller refetch the set once and
try again (:func:`verify_fetching`).
"""

from __future__ import annotations

import base64
import json
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from server.domain.errors import InvalidToken, MissingToken
from server.domain.issuers import IssuerSpec, KeySource, single_issuer

MAX_TOKEN_BYTES: Final = 8192
MAX_USER_ID_CHARS: Final = 128
MAX_USERNAME_CHARS: Final = 128
VERIFIED_CACHE_SIZE: Final = 10_000
VERIFIED_CACHE_BYTES: Final = 4 * 1024 * 1024  # of token text: big tokens, fewer of them


@dataclass(frozen=True, slots=True)
class Identity:
    """The caller, as vouched for by a valid token.

    ``expires_at``: the token's ``exp`` (Unix seconds), after which a live connection
    opened with it is closed unless refreshed. Two tokens of one caller give equal
    identities whatever their expiry.
    """

    user_id: str
    username: str
    scopes: frozenset[str] = frozenset()
    expires_at: float = field(default=float("inf"), compare=False)


class IssuerKeys(Protocol):
    """One issuer's signing keys."""

    def key_for(self, kid: str | None, alg: str) -> Any:
        """The key that verifies a token with header ``kid`` and ``alg``.

        Raises:
            KeyNotLoaded: the keys held lack ``kid`` (a refetch may find it).
            InvalidToken: no key can verify this token.
        """
        ...

    async def refetch(self, kid: str) -> bool:
        """Fetch the keys again for a ``kid`` they lack, unless one was fetched lately;
        whether the keys were fetched (so a second try may find it)."""
        ...


class KeyNotLoaded(InvalidToken):
    """The token names a ``kid`` its issuer's keys do not hold (yet): refused as it is,
    but an async caller may have the keys refetched once and verify again."""

    def __init__(self, keys: IssuerKeys, issuer: str, kid: str, *, loaded: bool) -> None:
        if loaded:
            message = f"the token's key {shown(kid)} is not among issuer {issuer!r}'s keys"
        else:
            message = f"issuer {issuer!r}'s keys have not loaded (the provider is unreachable)"
        super().__init__(
            message, bearer_sent=True, reason="unknown_key" if loaded else "keys_unavailable"
        )
        self.keys = keys
        self.kid = kid


class StaticKey:
    """An issuer's one fixed key: an HMAC secret or a PEM public key (any ``kid``).

    The settings never pair a secret with an asymmetric algorithm or the reverse, so a
    token signed with the public key as an HMAC secret is refused (no key confusion).
    """

    def __init__(self, source: KeySource) -> None:
        self._key: Any = source.secret
        if source.public_key is not None:
            self._key = load_pem_public_key(source.public_key.encode())
        if self._key is None:
            raise ValueError("a fixed key is a secret or a PEM public key")

    def key_for(self, kid: str | None, alg: str) -> Any:
        return self._key

    async def refetch(self, kid: str) -> bool:
        return False


SHOWN_CHARS: Final = 32
MESSAGE_CHARS: Final = 120


def _cut(text: str, most: int = MESSAGE_CHARS) -> str:
    """``text`` cut to ``most`` characters. A refusal message goes into the answer, its
    challenge and the log, and what it quotes comes from the token (its header's values,
    or PyJWT's text about them, ``crit`` say)."""
    return text if len(text) <= most else text[: most - 1] + "…"


def shown(value: object) -> str:
    """A value from a token's header as a refusal message shows it: quoted, and cut."""
    return _cut(repr(value), SHOWN_CHARS)


def _invalid(message: str, reason: str = "malformed") -> InvalidToken:
    return InvalidToken(message, bearer_sent=True, reason=reason)


def _unverified(segment: str, what: str) -> dict[str, Any]:
    """A token's header or payload segment as JSON, unverified: only to choose the issuer
    and the key, which PyJWT's full check then uses (and decodes again). Done here rather
    than with ``jwt.get_unverified_header``, which costs twice the whole rest of a check
    of a new token (docs/benchmarks.md, "Issue 16")."""
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, RecursionError):  # binascii.Error and UnicodeDecodeError included
        raise _invalid(f"the token is not valid: its {what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise _invalid(f"the token is not valid: its {what} is not a JSON object")
    return value


def _printable(text: str) -> str:
    """``text`` without control, format (e.g. bidi overrides) or unassigned characters,
    trimmed and bounded in length."""
    kept = "".join(ch for ch in text if not unicodedata.category(ch).startswith("C"))
    return kept.strip()[:MAX_USERNAME_CHARS]


def display_name(
    claims: dict[str, Any],
    user_id: str,
    name_claims: Sequence[str] = ("name", "preferred_username"),
) -> str:
    """The first of ``name_claims`` that holds a usable string, else the user id; control
    characters removed and the length bounded, so a display name cannot break a
    scoreboard."""
    for claim in name_claims:
        value = claims.get(claim)
        if isinstance(value, str) and (cleaned := _printable(value)):
            return cleaned
    return _printable(user_id) or user_id


def scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    """The ``scope`` claim: a space-separated string (OAuth 2) or a list of strings."""
    scope = claims.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    if isinstance(scope, list):
        return frozenset(s for s in scope if isinstance(s, str))
    return frozenset()


def _usable_user_id(value: object) -> str | None:
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > MAX_USER_ID_CHARS
        or not value.isprintable()  # no control characters, no lone surrogates
    ):
        return None
    return value


class TokenVerifier:
    """Checks bearer tokens against the trusted issuers.

    Args:
        issuers: each trusted issuer and its keys. With one issuer, every token goes to
            it: its ``iss``, if it has one, is checked with the claims; without one (the
            single-key settings without ``SCOREBOARD_JWT_ISSUER``), any ``iss`` passes.
        leeway_s: clock skew allowed on ``exp``, ``nbf`` and ``iat``.
        cache_size: how many verified tokens are remembered (least recently used out
            first; their total length is also kept under ``VERIFIED_CACHE_BYTES``). A game
            client sends the same token with every update until it expires; decoding and
            checking the signature again each time is most of the cost of a request.
        clock: wall-clock seconds, for the remembered tokens' expiry.

    A remembered token is answered from memory until its ``exp`` (without the leeway, so
    never longer than the full check would accept it), or until :meth:`forget_verified`
    (a key left its issuer's set); only tokens that passed the full check are remembered,
    keyed by the exact token text, signature included.
    """

    def __init__(
        self,
        issuers: Sequence[tuple[IssuerSpec, IssuerKeys]],
        *,
        leeway_s: int = 30,
        cache_size: int = VERIFIED_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not issuers:
            raise ValueError("at least one issuer")
        self._by_iss = {spec.iss: (spec, keys) for spec, keys in issuers}
        # One issuer takes every token: no 'iss' to read first (PyJWT's check refuses
        # another 'iss' than its own, when it has one).
        self._only = issuers[0] if len(issuers) == 1 else None
        self._leeway = leeway_s
        self._options: dict[str, dict[str, Any]] = {
            spec.name: {"require": ["exp"], "verify_aud": spec.audience is not None}
            for spec, _ in issuers
        }
        self._cache_size = cache_size
        self._clock = clock
        # Least recently used first; the tokens' total length is kept under a budget too.
        self._verified: dict[str, Identity] = {}
        self._verified_chars = 0

    @classmethod
    def single(
        cls,
        key: str,
        algorithms: tuple[str, ...],
        *,
        issuer: str | None = None,
        audience: str | None = None,
        **options: Any,
    ) -> TokenVerifier:
        """A verifier of one issuer with one fixed key (a secret or PEM public key): the
        single-key settings' case. ``options``: as the constructor's."""
        source = KeySource.fixed(key)
        spec = single_issuer(key=source, algorithms=algorithms, issuer=issuer, audience=audience)
        return cls([(spec, StaticKey(source))], **options)

    def verify_header(self, header: str | None) -> Identity:
        """Verify an ``Authorization`` header value.

        Raises:
            MissingToken: no header, or an empty bearer token.
            InvalidToken: another scheme than Bearer, or a token :meth:`verify` refuses.
        """
        if not header:
            raise MissingToken("an Authorization: Bearer <token> header is required")
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            # Another scheme is no bearer token, so none was sent (RFC 6750 section 3.1).
            raise InvalidToken(
                "the Authorization header must use the Bearer scheme", bearer_sent=False
            )
        return self.verify(credentials.strip())

    def verify(self, token: str) -> Identity:
        """Verify a bare token and return who it names.

        Raises:
            MissingToken: the token is empty.
            KeyNotLoaded: its issuer's keys lack its ``kid`` (see :func:`verify_fetching`).
            InvalidToken: too long, from an untrusted issuer, badly signed, expired, or
                without a usable user id.
        """
        remembered = self._verified.get(token)
        if remembered is not None:
            del self._verified[token]
            if self._clock() < remembered.expires_at:
                self._verified[token] = remembered  # now the most recently used
                return remembered
            self._verified_chars -= len(token)
        if not token:
            raise MissingToken("the bearer token is empty")
        if not token.isascii():  # a JWT is base64url and dots (a lone surrogate cannot encode)
            raise _invalid("the token is not valid: it holds characters other than ASCII")
        if len(token) > MAX_TOKEN_BYTES:
            raise _invalid(f"the token is longer than {MAX_TOKEN_BYTES} bytes", "too_long")
        segments = token.split(".")
        if len(segments) != 3:
            raise _invalid("the token is not valid: not three dot-separated segments")
        header = _unverified(segments[0], "header")
        spec, keys = self._issuer_of(segments[1])
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in spec.algorithms:
            raise _invalid(f"issuer {spec.name!r} does not sign with alg {shown(alg)}", "algorithm")
        kid = header.get("kid")
        key = keys.key_for(kid if isinstance(kid, str) else None, alg)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                options=self._options[spec.name],  # type: ignore[arg-type]
                issuer=spec.iss,
                audience=spec.audience,
                leeway=self._leeway,
            )
        except jwt.ExpiredSignatureError:
            raise _invalid("the token has expired", "expired") from None
        except jwt.InvalidSignatureError:
            raise _invalid("the token's signature does not verify", "signature") from None
        except (
            jwt.InvalidAudienceError,
            jwt.InvalidIssuerError,
            jwt.ImmatureSignatureError,
            jwt.InvalidIssuedAtError,
            jwt.MissingRequiredClaimError,
        ) as exc:
            raise _invalid(f"the token is not valid: {_cut(str(exc))}", "claims") from None
        except jwt.PyJWTError as exc:
            raise _invalid(f"the token is not valid: {_cut(str(exc))}") from None
        identity = self._identity(spec, claims)
        self._remember(token, identity)
        return identity

    def forget_verified(self) -> None:
        """Forget every remembered token: a key was withdrawn, so tokens it signed must
        pass the full check again (and fail it)."""
        self._verified.clear()
        self._verified_chars = 0

    def _issuer_of(self, payload: str) -> tuple[IssuerSpec, IssuerKeys]:
        """The issuer of a token whose payload segment is ``payload``, picked by its
        ``iss`` before any key is tried (read unverified: the issuer's key checks it)."""
        if self._only is not None:
            return self._only
        iss = _unverified(payload, "payload").get("iss")
        found = self._by_iss.get(iss) if isinstance(iss, str) else None
        if found is None:
            raise _invalid("the token's issuer ('iss') is not trusted here", "unknown_issuer")
        return found

    def _identity(self, spec: IssuerSpec, claims: dict[str, Any]) -> Identity:
        claimed = _usable_user_id(claims.get(spec.user_id_claim))
        user_id = spec.user_id(claimed) if claimed is not None else None
        if user_id is None or len(user_id) > MAX_USER_ID_CHARS:
            raise _invalid(
                f"{spec.user_id_claim!r} must be a non-empty string of at most "
                f"{MAX_USER_ID_CHARS - len(spec.user_id_prefix)} characters"
                + (
                    ", not one that begins with another issuer's prefix"
                    if spec.reserved_prefixes
                    else ""
                ),
                "subject",
            )
        exp = claims["exp"]  # PyJWT checked it is a number ("require")
        try:
            expires_at = 0.0 if isinstance(exp, bool) else float(exp)
        except OverflowError:  # an integer past any float: no real expiry
            raise _invalid("the token is not valid: 'exp' is out of range", "claims") from None
        scopes = scopes_of(claims) if spec.trust_scopes else frozenset()
        return Identity(
            user_id, display_name(claims, user_id, spec.name_claims), scopes, expires_at
        )

    def _remember(self, token: str, identity: Identity) -> None:
        if self._cache_size <= 0 or identity.expires_at <= 0:
            return
        while self._verified and (
            len(self._verified) >= self._cache_size
            or self._verified_chars + len(token) > VERIFIED_CACHE_BYTES
        ):
            oldest = next(iter(self._verified))
            del self._verified[oldest]
            self._verified_chars -= len(oldest)
        self._verified[token] = identity
        self._verified_chars += len(token)


async def verify_fetching(verify: Callable[[], Identity]) -> Identity:
    """Run ``verify``; if the token names a ``kid`` its issuer's keys lack, have them
    refetched (at most once per interval, :class:`server.domain.key_sets.RefetchGate`)
    and run it once more. A key the provider published since the last fetch (a rotation)
    is thus found on its first token.

    Raises:
        TokenRefused: as ``verify`` (a ``kid`` still unknown is :class:`KeyNotLoaded`).
    """
    try:
        return verify()
    except KeyNotLoaded as missing:
        if not await missing.keys.refetch(missing.kid):
            raise
    return verify()


def mint_token(
    secret: str,
    sub: str,
    *,
    name: str | None = None,
    ttl_s: int = 3600,
    issuer: str | None = None,
    audience: str | None = None,
    scopes: tuple[str, ...] = (),
    now: float | None = None,
) -> str:
    """Sign an HS256 token for ``sub`` valid for ``ttl_s`` seconds (development and tests);
    ``scopes`` go in the ``scope`` claim, space-separated (OAuth 2), as :func:`scopes_of`
    reads it."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": sub, "iat": issued, "exp": issued + ttl_s}
    if name:
        claims["name"] = name
    if scopes:
        claims["scope"] = " ".join(scopes)
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")
