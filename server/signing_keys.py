"""Which signing keys and key URLs the service accepts: pure checks shared by the settings
(the single-key ``SCOREBOARD_JWT_*`` settings) and the trusted-issuers file
(:mod:`server.domain.issuers`), so both refuse the same things the same way.
"""

from __future__ import annotations

import ipaddress
from typing import Final
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

ASYMMETRIC_ALGORITHMS: Final = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
HMAC_ALGORITHMS: Final = ("HS256", "HS384", "HS512")
# An HMAC secret shorter than the hash's output is weak (RFC 7518, section 3.2).
MIN_SECRET_BYTES: Final = 32


def algorithms_for_pem(pem: str) -> tuple[str, ...]:
    """The algorithms a PEM public key can verify, the default first.

    Raises:
        ValueError: not a PEM public key, or one of a kind no JWT algorithm takes.
    """
    try:
        key = load_pem_public_key(pem.encode())
    except ValueError:
        raise ValueError("not a valid PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        return ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
    if isinstance(key, ec.EllipticCurvePublicKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        if key.curve.name in by_curve:
            return (by_curve[key.curve.name],)
        raise ValueError(f"unsupported EC curve {key.curve.name}: use P-256, P-384 or P-521")
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return ("EdDSA",)
    raise ValueError("unsupported key type: give RSA, EC or Ed25519")


def is_loopback_url(url: str) -> bool:
    """Whether ``url``'s host is a loopback address (or ``localhost``)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def jwks_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a JWKS URL (None: it can): HTTPS, or plain HTTP to loopback."""
    parts = urlsplit(url)
    if not parts.hostname:
        return "must be an absolute https:// URL"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and is_loopback_url(url):
        return None
    return "must use https:// (plain http only to a loopback address)"
