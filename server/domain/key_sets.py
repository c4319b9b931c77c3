"""A provider's signing keys: a JWKS document read into keys chosen by ``kid`` (pure).

PyJWT's :class:`jwt.PyJWK` turns each JSON Web Key into a key object; this module decides
which keys may verify which tokens:

- only public signing keys: an ``oct`` (symmetric) key in a JWKS is refused, since anyone
  who can read the document could sign with it; a key whose ``use`` is not ``sig`` or whose
  ``key_ops`` lack ``verify`` (Keycloak publishes an ``enc`` key beside its signing keys) is
  skipped;
- a key verifies only the algorithms it fits: its own ``alg`` when it names one, else those
  of its type and curve (RSA: RS*/PS*; EC: the curve's ES*; OKP Ed25519: EdDSA);
- every key needs a ``kid``, unique in its set.

A key that fails these is left out of the set, with the reason (never the key material)
in :attr:`KeySet.skipped`; a document without one usable key is refused whole, so a
broken answer never replaces the keys held.

Also here: how long a fetched set is used before it is fetched again, from the answer's
``Cache-Control`` within bounds (:func:`cache_lifetime`), and the gate that lets an unknown
``kid`` trigger at most one refetch per interval (:class:`RefetchGate`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import jwt

MAX_KEYS: Final = 100  # keys read from one document; providers publish two or three
MAX_KID_CHARS: Final = 256
MIN_LIFETIME_S: Final = 60.0  # a max-age below this (Auth0 says 15 s) is raised to it
MAX_LIFETIME_S: Final = 6 * 3600.0  # and one above lowered to it: rotations show within 6 h
DEFAULT_LIFETIME_S: Final = 600.0  # no usable Cache-Control
REFRESH_AT: Final = 0.8  # of the lifetime: the background refresh runs before it ends

_RSA = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_BY_CURVE: Final = {"P-256": ("ES256",), "P-384": ("ES384",), "P-521": ("ES512",)}
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)
_NO_STORE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\s*(?:,|=|$)", re.IGNORECASE)


class KeySetError(ValueError):
    """A JWKS document that cannot be used at all (its message names why, in one line)."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One public key of a set and the ``alg`` values it may verify."""

    kid: str
    kty: str
    algorithms: frozenset[str]
    key: Any  # the cryptography public key object
    jwk: str = ""  # the JWK as published (sorted JSON): a key replaced under its kid differs


def withdrawn(held: KeySet, fetched: KeySet) -> bool:
    """Whether a key of ``held`` is gone from ``fetched`` or replaced there under its
    ``kid``: tokens it verified must then be checked again."""
    return any(
        key.jwk != (now.jwk if (now := fetched.keys.get(kid)) is not None else None)
        for kid, key in held.keys.items()
    )


@dataclass(frozen=True, slots=True)
class KeySet:
    """The usable keys of one JWKS document, by ``kid``."""

    keys: Mapping[str, SigningKey]
    skipped: tuple[str, ...] = field(default=())  # why each left-out key was left out

    def __len__(self) -> int:
        return len(self.keys)


def fitting_algorithms(jwk: Mapping[str, Any]) -> frozenset[str]:
    """The ``alg`` values a JWK may verify: its own ``alg`` if it names one that fits its
    type, else all its type and curve fit (empty: none; a declared ``alg`` that does not
    fit its type fits nothing)."""
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "RSA":
        fits: tuple[str, ...] = _RSA
    elif kty == "EC" and isinstance(crv, str):
        fits = _EC_BY_CURVE.get(crv, ())
    elif kty == "OKP" and crv == "Ed25519":
        fits = ("EdDSA",)
    else:
        fits = ()
    declared = jwk.get("alg")
    if declared is None:
        return frozenset(fits)
    return frozenset({declared}) if declared in fits else frozenset()


def signing_key(jwk: object) -> SigningKey:
    """One JWK as a :class:`SigningKey`.

    Raises:
        KeySetError: not a public signing key this service will verify with (the message
            names the ``kid`` and why, never the key).
    """
    if not isinstance(jwk, dict):
        raise KeySetError("a key is not a JSON object")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS:
        raise KeySetError("a key has no 'kid' (or one too long)")
    kty = jwk.get("kty")
    if kty == "oct":
        raise KeySetError(f"key {kid!r} is symmetric ('oct'): a public document holds no secret")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise KeySetError(f"key {kid!r} is not for signatures (use {use!r})")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise KeySetError(f"key {kid!r} is not for verifying (key_ops)")
    algorithms = fitting_algorithms(jwk)
    if not algorithms:
        raise KeySetError(
            f"key {kid!r} fits no supported algorithm (kty {kty!r}, alg {jwk.get('alg')!r})"
        )
    if "d" in jwk:
        raise KeySetError(f"key {kid!r} holds private material: it is never used")
    try:
        parsed = jwt.PyJWK(jwk, algorithm=min(algorithms))
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise KeySetError(f"key {kid!r} could not be read ({type(exc).__name__})") from None
    return SigningKey(kid, str(kty), algorithms, parsed.key, json.dumps(jwk, sort_keys=True))


def parse_key_set(body: bytes) -> KeySet:
    """A JWKS document (``{"keys": [...]}``) as the keys this service may verify with.

    Raises:
        KeySetError: not JSON, no ``keys`` list, a ``kid`` twice, or no usable key.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # nested thousands deep: not a key set either
        raise KeySetError("the answer is not JSON") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise KeySetError("the answer has no 'keys' list")
    usable: dict[str, SigningKey] = {}
    skipped: list[str] = []
    seen: set[str] = set()
    for jwk in keys[:MAX_KEYS]:
        kid = jwk.get("kid") if isinstance(jwk, dict) else None
        if isinstance(kid, str) and kid in seen:
            # Which of the two would a token mean? Neither is guessed at.
            raise KeySetError(f"kid {kid!r} appears twice")
        if isinstance(kid, str):
            seen.add(kid)
        try:
            key = signing_key(jwk)
        except KeySetError as exc:
            skipped.append(str(exc))
            continue
        usable[key.kid] = key
    if len(keys) > MAX_KEYS:
        skipped.append(f"{len(keys) - MAX_KEYS} keys past the first {MAX_KEYS}")
    if not usable:
        reasons = "; ".join(skipped) or "the list is empty"
        raise KeySetError(f"no usable signing key ({reasons})")
    return KeySet(usable, tuple(skipped))


def cache_lifetime(cache_control: str | None) -> float:
    """How long a fetched key set is used, in seconds: the answer's ``max-age`` within
    [``MIN_LIFETIME_S``, ``MAX_LIFETIME_S``]; ``DEFAULT_LIFETIME_S`` without one; the
    minimum for ``no-store``/``no-cache`` (the keys are still needed between fetches)."""
    if not cache_control:
        return DEFAULT_LIFETIME_S
    if _NO_STORE.search(cache_control):
        return MIN_LIFETIME_S
    found = _MAX_AGE.search(cache_control)
    if found is None:
        return DEFAULT_LIFETIME_S
    return min(MAX_LIFETIME_S, max(MIN_LIFETIME_S, float(found.group(1))))


def refresh_delay(lifetime_s: float) -> float:
    """When, after a fetch, the background refresh runs: before the set's lifetime ends."""
    return lifetime_s * REFRESH_AT


class RefetchGate:
    """Lets an unknown ``kid`` trigger a refetch at most once per ``interval_s``.

    A token naming a ``kid`` the set lacks may mean the provider rotated (the new key is
    published, not yet fetched) or may be made up. Either way at most one refetch per
    interval goes out, so a flood of made-up ``kid``s costs the provider one request per
    interval at most (beside the background refresh, which this gate does not hold back:
    a rotation just after it is still found at once). Times are monotonic seconds.
    """

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: float | None = None

    def open(self, now: float) -> bool:
        """Whether a refetch may go out at ``now``; if so, it is counted as gone out."""
        if self._last is not None and now - self._last < self.interval_s:
            return False
        self._last = now
        return True
