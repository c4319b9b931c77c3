"""JWT verification (who is calling) and minting (the ``token`` subcommand, the demo token)."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from server.domain.errors import InvalidToken, MissingToken

MAX_TOKEN_BYTES: Final = 8192
MAX_USER_ID_CHARS: Final = 128
MAX_USERNAME_CHARS: Final = 128
VERIFIED_CACHE_SIZE: Final = 10_000
VERIFIED_CACHE_BYTES: Final = 4 * 1024 * 1024  # of token text: big tokens, fewer of them


@dataclass(frozen=True, slots=True)
class Identity:
    """The caller, as vouched for by a valid token."""

    user_id: str
    username: str
    scopes: frozenset[str] = frozenset()


def _invalid(message: str) -> InvalidToken:
    return InvalidToken(message, bearer_sent=True)


def _printable(text: str) -> str:
    """``text`` without control, format (e.g. bidi overrides) or unassigned characters,
    trimmed and bounded in length."""
    kept = "".join(ch for ch in text if not unicodedata.category(ch).startswith("C"))
    return kept.strip()[:MAX_USERNAME_CHARS]


def display_name(claims: dict[str, Any], user_id: str) -> str:
    """The ``name`` claim, else ``preferred_username``, else the user id; control characters
    removed and the length bounded, so a display name cannot break a scoreboard."""
    for claim in ("name", "preferred_username"):
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


class TokenVerifier:
    """Checks bearer tokens against one key and an allow-list of algorithms.

    Args:
        key: the HS* secret, or a PEM public key for RS*/PS*/ES*/EdDSA. The settings
            never pair a secret with an asymmetric algorithm or the reverse, so a token
            signed with the public key as an HMAC secret is refused (no key confusion).
        algorithms: the accepted ``alg`` values; ``none`` is never accepted.
        issuer, audience: checked when given.
        leeway_s: clock skew allowed on ``exp``, ``nbf`` and ``iat``.
        cache_size: how many verified tokens are remembered (least recently used out
            first; their total length is also kept under ``VERIFIED_CACHE_BYTES``). A game
            client sends the same token with every update until it expires; decoding and
            checking the signature again each time is most of the cost of a request.
        clock: wall-clock seconds, for the remembered tokens' expiry.

    A remembered token is answered from memory until its ``exp`` (without the leeway, so
    never longer than the full check would accept it); only tokens that passed the full
    check are remembered, keyed by the exact token text, signature included.
    """

    def __init__(
        self,
        key: str,
        algorithms: tuple[str, ...],
        *,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_s: int = 30,
        cache_size: int = VERIFIED_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key: Any = key
        if key.lstrip().startswith("-----BEGIN"):
            self._key = load_pem_public_key(key.encode())
        self._algorithms = list(algorithms)
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_s
        self._options: dict[str, Any] = {
            "require": ["exp", "sub"],
            "verify_aud": audience is not None,
        }
        self._cache_size = cache_size
        self._clock = clock
        # Least recently used first; the tokens' total length is kept under a budget too.
        self._verified: dict[str, tuple[Identity, float]] = {}
        self._verified_chars = 0

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
            InvalidToken: too long, badly signed, expired, or without a usable ``sub``.
        """
        remembered = self._verified.get(token)
        if remembered is not None:
            identity, expires = remembered
            del self._verified[token]
            if self._clock() < expires:
                self._verified[token] = remembered  # now the most recently used
                return identity
            self._verified_chars -= len(token)
        if not token:
            raise MissingToken("the bearer token is empty")
        if len(token.encode()) > MAX_TOKEN_BYTES:
            raise _invalid(f"the token is longer than {MAX_TOKEN_BYTES} bytes")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                options=self._options,  # type: ignore[arg-type]
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
            )
        except jwt.ExpiredSignatureError:
            raise _invalid("the token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise _invalid(f"the token is not valid: {exc}") from None
        sub = claims.get("sub")
        if (
            not isinstance(sub, str)
            or not sub.strip()
            or len(sub) > MAX_USER_ID_CHARS
            or not sub.isprintable()  # no control characters, no lone surrogates
        ):
            raise _invalid(
                f"'sub' must be a non-empty string of at most {MAX_USER_ID_CHARS} characters"
            )
        identity = Identity(sub, display_name(claims, sub), scopes_of(claims))
        self._remember(token, identity, claims["exp"])
        return identity

    def _remember(self, token: str, identity: Identity, exp: Any) -> None:
        if self._cache_size <= 0 or isinstance(exp, bool) or not isinstance(exp, int | float):
            return
        while self._verified and (
            len(self._verified) >= self._cache_size
            or self._verified_chars + len(token) > VERIFIED_CACHE_BYTES
        ):
            oldest = next(iter(self._verified))
            del self._verified[oldest]
            self._verified_chars -= len(oldest)
        self._verified[token] = (identity, float(exp))
        self._verified_chars += len(token)


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
