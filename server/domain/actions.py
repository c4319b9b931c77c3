"""Proof of action: a short-lived token from the game's action service, spent once.

When ``SCOREBOARD_ACTION_SECRET`` is set, every update carries ``action_token``: a JWT
(HS256 with that secret) with ``sub`` (the player), ``jti`` (unique id), ``act`` (the
action type) and ``exp``. The points come from ``SCOREBOARD_ACTION_POINTS``, never from the
client. Whether the ``jti`` was spent is decided by the store, atomically with the
increment (:func:`server.domain.increments.decide`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import jwt

from server.domain.errors import ActionForbidden, InvalidAction
from server.domain.records import SpentAction

MAX_ACTION_TOKEN_BYTES: Final = 4096
MAX_JTI_CHARS: Final = 128


@dataclass(frozen=True, slots=True)
class ProvenAction:
    """A verified action: what it is worth and the token to spend."""

    act: str
    points: int
    spent: SpentAction


class ActionVerifier:
    """Verifies action tokens with the action service's HMAC key.

    Args:
        secret: the HS256 key shared with the game's action service.
        points: action type -> points it is worth.
        leeway_s: clock skew allowed on ``exp``.
        max_ttl_s: the furthest ``exp`` accepted, from now.
    """

    def __init__(
        self,
        secret: str,
        points: Mapping[str, int],
        *,
        leeway_s: int = 30,
        max_ttl_s: int = 300,
    ) -> None:
        self._secret = secret
        self._points = dict(points)
        self._leeway = leeway_s
        self._max_ttl_s = max_ttl_s

    def verify(
        self,
        token: Any,
        player_id: str,
        board_id: str,
        points: Mapping[str, int] | None = None,
    ) -> ProvenAction:
        """Check ``token`` proves an action of ``player_id`` on board ``board_id``.

        A token may name its board in a ``brd`` claim (issue 14): it is then refused on
        any other board, so the game's action service can scope a proof to one board.
        Without the claim it is good on any board (its ``jti`` is spent once across all).
        ``points``: that board's action types and their points (default: the server's).

        Raises:
            InvalidAction: missing, malformed, bad signature, expired, unknown action type,
                a ``brd`` that is not a string.
            ActionForbidden: another player's action, or another board's.
        """
        if token is None:
            raise InvalidAction("'action_token' is required: updates need a proof of action")
        if not isinstance(token, str) or not token:
            raise InvalidAction("'action_token' must be a token string")
        if len(token.encode()) > MAX_ACTION_TOKEN_BYTES:
            raise InvalidAction(f"'action_token' is longer than {MAX_ACTION_TOKEN_BYTES} bytes")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                options={"require": ["sub", "jti", "act", "exp"], "verify_aud": False},
                leeway=self._leeway,
            )
        except jwt.ExpiredSignatureError:
            raise InvalidAction("the action token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise InvalidAction(f"the action token is not valid: {exc}") from None
        jti, act, exp = claims["jti"], claims["act"], claims["exp"]
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS or not _utf8(jti):
            raise InvalidAction(f"'jti' must be a string of 1 to {MAX_JTI_CHARS} characters")
        # Short-lived means short-lived: a spent jti is remembered until its token expires,
        # so a far expiry would also make that memory unbounded.
        if int(exp) - time.time() > self._max_ttl_s + self._leeway:
            raise InvalidAction(f"the action token lives longer than {self._max_ttl_s} s")
        worth = self._points if points is None else points
        if not isinstance(act, str) or act not in worth:
            raise InvalidAction(f"unknown action type {act!r}")
        board = claims.get("brd")
        if board is not None and not isinstance(board, str):
            raise InvalidAction("'brd' must be the board's id, a string")
        if claims["sub"] != player_id:
            raise ActionForbidden("the action belongs to another player")
        if board is not None and board != board_id:
            raise ActionForbidden(f"the action belongs to board {board[:32]!r}, not {board_id!r}")
        # Keep the jti until the token could no longer pass, leeway included.
        expires_ms = (int(exp) + self._leeway) * 1000
        return ProvenAction(act, worth[act], SpentAction(jti, expires_ms))


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # lone surrogates: no store can hold them
        return False
    return True
