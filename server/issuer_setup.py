"""The issuers a server trusts, from its settings, and each one's keys.

Either the single-key settings (``SCOREBOARD_JWT_SECRET``, ``_PUBLIC_KEY`` or
``_JWKS_URL``, with ``_ISSUER``, ``_AUDIENCE`` and ``_ALGORITHMS``: one issuer, as before),
or ``SCOREBOARD_JWT_ISSUERS_FILE`` (several; the format is in docs/security.md). The file
is read and checked once, at start; a mistake stops the server with one line naming the
issuer and field.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from server.domain.issuers import IssuersError, IssuerSpec, KeySource, parse_issuers, single_issuer
from server.domain.tokens import IssuerKeys, StaticKey
from server.jwks_client import JwksClient
from server.settings import Settings, SettingsError
from server.support.metrics import Metrics


def issuers_of(
    settings: Settings, jwt_key: str | None, environ: Mapping[str, str] | None = None
) -> tuple[IssuerSpec, ...]:
    """The issuers ``settings`` trust. ``jwt_key``: the single issuer's secret or PEM key
    (a demo's random key when none is configured); unused with a JWKS URL or a file.

    Raises:
        SettingsError: the issuers file is missing, not TOML, or wrong (one line).
    """
    if settings.jwt_issuers_file:
        path = settings.jwt_issuers_file
        try:
            return read_issuers_file(path, os.environ if environ is None else environ)
        except IssuersError as exc:
            raise SettingsError("SCOREBOARD_JWT_ISSUERS_FILE", f"{path}: {exc}") from None
    if settings.jwt_jwks_url:
        key = KeySource(jwks_url=settings.jwt_jwks_url)
    elif jwt_key is None:
        raise SettingsError("SCOREBOARD_JWT_SECRET", "no key to check tokens with")
    else:
        key = KeySource.fixed(jwt_key)
    return (
        single_issuer(
            key=key,
            algorithms=settings.jwt_algorithms,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        ),
    )


def read_issuers_file(path: str, environ: Mapping[str, str]) -> tuple[IssuerSpec, ...]:
    """Read and check the trusted-issuers file at ``path``.

    Raises:
        IssuersError: unreadable, not UTF-8, not TOML, or an issuer is wrong (one line).
    """
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise IssuersError(f"cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise IssuersError("is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise IssuersError(f"is not TOML: {exc}") from None
    return parse_issuers(
        document, environ=environ, read_file=lambda p: Path(p).read_text(encoding="utf-8")
    )


def keys_of(spec: IssuerSpec, metrics: Metrics) -> IssuerKeys:
    """The keys of ``spec``: a :class:`JwksClient` (counted in ``metrics``; the lifecycle
    starts and stops it) or its one fixed key."""
    source = spec.keys
    if source.jwks_url:
        client = JwksClient(
            spec.name,
            source.jwks_url,
            count_fetch=lambda outcome: metrics.jwks_fetches.labels(spec.name, outcome).inc(),
        )
        metrics.track_key_set(spec.name, age_s=client.age_s, keys=lambda: float(len(client)))
        return client
    return StaticKey(source)
