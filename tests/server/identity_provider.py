"""A loopback identity provider for the tests: real signing keys made here, JWKS documents
served over HTTP on 127.0.0.1, and tokens signed the way a provider signs them.

The provider can rotate (publish another set), go down (answer 503, or stop listening) and
come back; it counts the fetches of each document, so a test can see how often the
service asked.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
import tornado.httpserver
import tornado.netutil
import tornado.web
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

_RSA_KEYS: list[rsa.RSAPrivateKey] = []  # RSA keys are slow to make: a few, reused


@dataclass
class SigningKey:
    """A private key and how its JWK names it."""

    kid: str
    alg: str
    private: Any
    jwk_extra: dict[str, Any] = field(default_factory=dict)

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if self.alg.startswith(("RS", "PS")):
            body = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif self.alg.startswith("ES"):
            body = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            body = OKPAlgorithm.to_jwk(public, as_dict=True)
        return {**body, "kid": self.kid, "use": "sig", "alg": self.alg, **self.jwk_extra}

    def sign(
        self, claims: dict[str, Any], *, alg: str | None = None, kid: str | None = None
    ) -> str:
        """``claims`` signed with this key (``alg``/``kid``: override the header's)."""
        header = {"kid": self.kid if kid is None else kid}
        return jwt.encode(claims, self.private, algorithm=alg or self.alg, headers=header)


def rsa_key(kid: str, *, index: int = 0, alg: str = "RS256") -> SigningKey:
    """An RSA key (the ``index``-th made in this process: RSA keys are slow to make)."""
    while len(_RSA_KEYS) <= index:
        _RSA_KEYS.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return SigningKey(kid, alg, _RSA_KEYS[index])


def ec_key(kid: str) -> SigningKey:
    """A fresh EC P-256 key (ES256)."""
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def ed25519_key(kid: str) -> SigningKey:
    """A fresh Ed25519 key (EdDSA)."""
    return SigningKey(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())


def claims(sub: str, *, ttl_s: int = 600, **more: Any) -> dict[str, Any]:
    """A token's claims: ``sub``, ``iat``, ``exp`` and ``more``."""
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + ttl_s, **more}


class _JwksHandler(tornado.web.RequestHandler):
    def initialize(self, provider: IdentityProvider) -> None:
        self.provider = provider

    def get(self, name: str) -> None:
        provider = self.provider
        provider.fetches[name] = provider.fetches.get(name, 0) + 1
        if provider.down:
            self.set_status(503)
            self.finish("down for maintenance")
            return
        document = provider.documents.get(name)
        if document is None:
            self.set_status(404)
            self.finish()
            return
        if provider.cache_control:
            self.set_header("Cache-Control", provider.cache_control)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(document))


class IdentityProvider:
    """JWKS documents on ``http://127.0.0.1:<port>/<name>/jwks.json``, as a test sets them."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.fetches: dict[str, int] = {}
        self.down = False
        self.cache_control: str | None = "public, max-age=3600"
        self._server: tornado.httpserver.HTTPServer | None = None
        self._socket: socket.socket | None = None
        self.port = 0

    def url(self, name: str = "idp") -> str:
        return f"http://127.0.0.1:{self.port}/{name}/jwks.json"

    def publish(self, *keys: SigningKey | dict[str, Any], name: str = "idp") -> None:
        """Serve these keys (JWKs given as dicts go as they are) as document ``name``."""
        self.documents[name] = {"keys": [k.jwk() if isinstance(k, SigningKey) else k for k in keys]}

    def start(self) -> None:
        app = tornado.web.Application(
            [(r"/([a-z0-9_-]+)/jwks\.json", _JwksHandler, {"provider": self})]
        )
        if self._socket is None:
            [self._socket] = tornado.netutil.bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
            self.port = self._socket.getsockname()[1]
        self._server = tornado.httpserver.HTTPServer(app)
        self._server.add_sockets([self._socket])

    async def stop(self) -> None:
        """Stop answering (connections to the port are then refused)."""
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def restart_on_same_port(self) -> None:
        """Listen again on the port it had (after :meth:`stop`)."""
        [self._socket] = tornado.netutil.bind_sockets(self.port, "127.0.0.1", family=socket.AF_INET)
        self.start()
