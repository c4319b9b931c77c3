"""A live connection's token: when to warn that it expires, when to close, and the client's
``refresh`` message (pure: times in, decisions and messages out).

A WebSocket that needs its token (``SCOREBOARD_WS_REQUIRE_AUTH``, or ``watch=me``) holds
it for as long as the token is valid: until its ``exp`` plus the leeway the server allows
on every token. ``WARNING_S`` before that, the connection gets ``token_expiring``; the
client may answer with ``{"event": "refresh", "token": "..."}`` (a token of the same
player, checked like any other); unrefreshed, the connection is closed with
``TOKEN_EXPIRED_CLOSE_CODE``. See docs/protocol.md ("Tokens on a live connection").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Final

WARNING_S: Final = 30.0
TOKEN_EXPIRED_CLOSE_CODE: Final = 4401  # the 4000-4999 range is the application's
TOKEN_EXPIRED_REASON: Final = "token expired"


@dataclass(frozen=True, slots=True)
class LeaseTimes:
    """When (Unix seconds) a connection is warned and closed unless refreshed."""

    warn_at: float
    close_at: float


def lease_times(expires_at: float, leeway_s: float, now: float) -> LeaseTimes:
    """The warning and the close for a token expiring at ``expires_at``: closed once the
    server would refuse the token (``exp`` + leeway), warned ``WARNING_S`` before (at once
    if less is left)."""
    close_at = expires_at + leeway_s
    return LeaseTimes(warn_at=max(now, close_at - WARNING_S), close_at=close_at)


def seconds_left(close_at: float, now: float) -> int:
    """Whole seconds until ``close_at`` (rounded up, at least 0), as the messages say."""
    return max(0, math.ceil(close_at - now))


def token_expiring(close_at: float, now: float) -> str:
    """``{"event":"token_expiring","in_s":N}``: refresh within N seconds."""
    return json.dumps({"event": "token_expiring", "in_s": seconds_left(close_at, now)})


def token_refreshed(close_at: float, now: float) -> str:
    """``{"event":"token_refreshed","expires_in_s":N}``: the fresh token holds N seconds."""
    return json.dumps({"event": "token_refreshed", "expires_in_s": seconds_left(close_at, now)})


def token_refused(error: str, message: str) -> str:
    """``{"event":"token_refused",...}``: the fresh token was refused (the old one's
    deadline stands)."""
    return json.dumps({"event": "token_refused", "error": error, "message": message})


@dataclass(frozen=True, slots=True)
class RefreshRequest:
    """A client's ``refresh`` message; ``token`` is None when it carried no string."""

    token: str | None


def parse_client_message(message: str | bytes) -> RefreshRequest | None:
    """The client's message as a :class:`RefreshRequest`, or None: anything else (not
    JSON, another event) is ignored, as every client message was before."""
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):  # nested thousands deep: not a refresh either
        return None
    if not isinstance(data, dict) or data.get("event") != "refresh":
        return None
    token = data.get("token")
    return RefreshRequest(token if isinstance(token, str) and token else None)
