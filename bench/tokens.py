"""What a token check costs, per algorithm: the first time a token is seen (the signature
checked in full) and every later time (answered from the verifier's memory), in process.

    python -m bench.tokens [--tokens 2000] [--repeat 5]
    python -m bench.tokens --quick         # 200 tokens, 1 repeat: the smoke test

For each of HS256 (a secret), RS256 (RSA 2048), ES256 (EC P-256) and EdDSA (Ed25519), the
last three from a JWKS as an identity provider publishes it (``server/domain/key_sets.py``
reads it), ``--tokens`` distinct tokens are signed first (not timed), then checked by a
fresh :class:`~server.domain.tokens.TokenVerifier` one after the other (the full check),
then all checked again (the remembered path). The best of ``--repeat`` runs is reported,
in µs per token. A token refused stops the run with its error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from server.domain.issuers import IssuerSpec, KeySource
from server.domain.key_sets import KeySet, parse_key_set
from server.domain.tokens import KeyNotLoaded, TokenVerifier
from server.signing_keys import ASYMMETRIC_ALGORITHMS

SECRET = "bench-secret-that-is-at-least-32-bytes-long"
ISS = "https://idp.example/"


class _Jwks:
    """A parsed key set, as :class:`server.jwks_client.JwksClient` holds one."""

    def __init__(self, key_set: KeySet) -> None:
        self.key_set = key_set

    def key_for(self, kid: str | None, alg: str) -> Any:
        key = self.key_set.keys.get(kid or "")
        if key is None or alg not in key.algorithms:
            raise KeyNotLoaded(self, "bench", kid or "", loaded=True)  # type: ignore[arg-type]
        return key.key

    async def refetch(self, kid: str) -> bool:
        return False


def _jwks_verifier(private: Any, alg: str, to_jwk: Callable[..., Any]) -> TokenVerifier:
    jwk = {**to_jwk(private.public_key(), as_dict=True), "kid": "k1", "alg": alg, "use": "sig"}
    key_set = parse_key_set(json.dumps({"keys": [jwk]}).encode())
    source = KeySource(jwks_url="https://idp.example/jwks")
    spec = IssuerSpec("bench", ISS, source, algorithms=ASYMMETRIC_ALGORITHMS)
    return TokenVerifier([(spec, _Jwks(key_set))])


def cases() -> list[tuple[str, Any, dict[str, str], Callable[[], TokenVerifier]]]:
    """(algorithm, signing key, header, a fresh verifier) for each algorithm measured."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    kid = {"kid": "k1"}
    return [
        ("HS256", SECRET, {}, lambda: TokenVerifier.single(SECRET, ("HS256",), issuer=ISS)),
        ("RS256", rsa_key, kid, lambda: _jwks_verifier(rsa_key, "RS256", RSAAlgorithm.to_jwk)),
        ("ES256", ec_key, kid, lambda: _jwks_verifier(ec_key, "ES256", ECAlgorithm.to_jwk)),
        ("EdDSA", ed_key, kid, lambda: _jwks_verifier(ed_key, "EdDSA", OKPAlgorithm.to_jwk)),
    ]


def measure(tokens: int, repeat: int) -> list[tuple[str, float, float]]:
    """(algorithm, µs per full check, µs per remembered check), best of ``repeat``."""
    results = []
    now = int(time.time())
    for alg, key, header, fresh in cases():
        signed = [
            jwt.encode(
                {"sub": f"player-{i}", "iss": ISS, "iat": now, "exp": now + 3600},
                key,
                algorithm=alg,
                headers=header,
            )
            for i in range(tokens)
        ]
        full, remembered = float("inf"), float("inf")
        for _ in range(repeat):
            verifier = fresh()
            started = time.perf_counter()
            for token in signed:
                verifier.verify(token)
            full = min(full, (time.perf_counter() - started) / tokens * 1e6)
            started = time.perf_counter()
            for token in signed:
                verifier.verify(token)
            remembered = min(remembered, (time.perf_counter() - started) / tokens * 1e6)
        results.append((alg, full, remembered))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tokens", description=__doc__)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="200 tokens, 1 repeat")
    args = parser.parse_args(argv)
    tokens, repeat = (200, 1) if args.quick else (args.tokens, args.repeat)
    print(f"python -m bench.tokens: {tokens} tokens per algorithm, best of {repeat}")
    print(f"{'alg':<6} {'full check µs':>14} {'remembered µs':>14}")
    for alg, full, remembered in measure(tokens, repeat):
        print(f"{alg:<6} {full:>14.1f} {remembered:>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
