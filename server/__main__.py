"""``python -m server``: serve, or ``python -m server token`` to mint a token."""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from handlers.admin import ADMIN_SCOPE
from server.domain.tokens import mint_token
from server.lifecycle import serve
from server.settings import Settings, SettingsError, load_settings
from server.store.port import StoreError
from server.support import logs

DEMO_USER = "demo"
DEMO_TOKEN_TTL_S = 24 * 3600


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    if argv[:1] == ["token"]:
        return token_command(argv[1:], environ)
    try:
        settings = load_settings(argv, environ)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    jwt_key = settings.jwt_secret or settings.jwt_public_key
    banner = None
    if not settings.has_jwt_key:  # a demo: a random key, and a banner that says how to call it
        jwt_key = secrets.token_urlsafe(48)
        banner = functools.partial(print_demo_banner, settings, jwt_key, out=sys.stderr)
    try:
        return asyncio.run(serve(settings, jwt_key, on_listening=banner))
    except StoreError as exc:
        print(f"error: cannot start: {exc}", file=sys.stderr)
        return 1
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1


def print_demo_banner(settings: Settings, jwt_key: str, port: int, out: TextIO) -> None:
    """Tell a developer how to call a server that signs with a random per-process key."""
    token = mint_token(
        jwt_key,
        DEMO_USER,
        name="Demo Player",
        ttl_s=DEMO_TOKEN_TTL_S,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    base = f"http://{host}:{port}"
    out.write(
        "\n"
        f"Scoreboard is serving {base} on the embedded SQLite store ({settings.sqlite_path}).\n"
        "No JWT key is configured, so this process signs tokens with a random key: tokens\n"
        "stop working when it restarts. Set SCOREBOARD_JWT_SECRET for a stable key.\n\n"
        f"Demo token for user '{DEMO_USER}' (valid 24 h):\n    {token}\n\n"
        "Try:\n"
        f"    curl -X POST {base}/api/update-score -H 'Authorization: Bearer {token}' "
        "-H 'Content-Type: application/json' -d '{\"increment\": 1}'\n"
        f"    curl {base}/api/top-scores\n\n"
    )
    out.flush()


def token_command(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """``python -m server token --sub ID [--name NAME] [--ttl SECONDS] [--scope SCOPE]...``:
    print a token."""
    parser = argparse.ArgumentParser(
        prog="python -m server token",
        description="Mint an HS256 token with SCOREBOARD_JWT_SECRET (and its issuer/audience).",
    )
    parser.add_argument("--sub", required=True, metavar="ID", help="the user id")
    parser.add_argument("--name", metavar="NAME", help="the display name")
    parser.add_argument(
        "--ttl", type=int, default=3600, metavar="SECONDS", help="seconds valid (default 3600)"
    )
    parser.add_argument(
        "--scope",
        action="append",
        default=[],
        metavar="SCOPE",
        help=f"a scope to grant, e.g. {ADMIN_SCOPE} for the admin routes; repeat it, or "
        "give several separated by spaces",
    )
    parser.add_argument(
        "--secret", metavar="SECRET", help="the key (default: SCOREBOARD_JWT_SECRET)"
    )
    args = parser.parse_args(list(argv))
    # Each --scope may hold several, as the claim does; each kept once, in order.
    scopes = tuple(dict.fromkeys(word for given in args.scope for word in given.split()))
    env = dict(environ)
    if args.secret:
        env["SCOREBOARD_JWT_SECRET"] = args.secret
    try:
        settings = load_settings([], env)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not settings.jwt_secret:
        print(
            "error: SCOREBOARD_JWT_SECRET is not set: a server without it signs with a random "
            "per-process key (it prints a demo token at start); set the secret on both sides",
            file=sys.stderr,
        )
        return 2
    if not args.sub or len(args.sub) > 128 or args.ttl <= 0:
        print("error: --sub must be 1 to 128 characters and --ttl positive", file=sys.stderr)
        return 2
    print(
        mint_token(
            settings.jwt_secret,
            args.sub,
            name=args.name,
            ttl_s=args.ttl,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            scopes=scopes,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
