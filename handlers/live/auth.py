"""Who may open ``/ws/scoreboard``: the ``?token=`` rule of ``SCOREBOARD_WS_REQUIRE_AUTH``."""

from __future__ import annotations

import logging

from handlers.base import authenticate
from handlers.context import Backend
from handlers.errors import refusal
from server.domain.errors import MissingToken, TokenRefused
from server.domain.tokens import Identity, verify_fetching
from server.support.log_throttle import log_throttled

log = logging.getLogger(__name__)


async def check_watcher_token(
    service: Backend, token: str | None, client: str, *, needed: bool = False
) -> Identity | None:
    """Apply the token rule to one WebSocket upgrade from ``client``; answer whose token
    it is (None: no valid one).

    ``needed``: the connection follows its own player (``watch=me``), so it must name
    them with a valid token whatever ``SCOREBOARD_WS_REQUIRE_AUTH`` says.

    Auth required: the token must be given and valid (failures count against the
    client's address, as for any authentication). Auth not required: a token that does
    not verify is no reason to refuse a stream anyone may watch (a client would retry
    forever with its expired token): it is ignored, so the connection opens anonymously,
    logged (its reason, never the token; one line per kind per 10 s) and counted
    (``scoreboard_ws_ignored_tokens_total``). Nothing is counted against the address
    then: the answer is the same for any token, so there is nothing to guess at.

    Raises:
        ApiError: auth required: 401 ``missing_token`` or ``invalid_token``, 429
            ``auth_throttled``.
    """
    if service.settings.ws_require_auth or needed:
        if token is None:
            why = "watch=me" if needed else "this scoreboard"
            service.metrics.tokens_refused.labels("missing").inc()
            raise refusal(MissingToken(f"{why} needs ?token=<JWT>"))
        return await authenticate(service, client, lambda: service.verifier.verify(token))
    if token is not None:
        try:
            return await verify_fetching(lambda: service.verifier.verify(token))
        except TokenRefused as refused:
            service.metrics.ws_ignored_tokens.inc()
            service.metrics.tokens_refused.labels(refused.reason).inc()
            # A client reconnecting in a loop with an expired token must not fill the log.
            log_throttled(
                log,
                service.log_throttle,
                logging.INFO,
                "ignored an invalid optional WebSocket token",
                key=refused.reason,  # bounded: a made-up kid per token is one line
                extra={"client": client, "error": refused.code, "reason": refused.message},
            )
    return None
