"""``/ws/scoreboard``: a snapshot (or a resume) on connect, then every change of the top N.

Query parameters: ``format=seed`` (default: the whole top N per change) or ``format=delta``
(only what changed); ``since=EPOCH:VERSION`` to resume the deltas; ``token=<JWT>``
(required when ``SCOREBOARD_WS_REQUIRE_AUTH`` is on or with ``watch=me``, else an invalid
one is ignored); ``watch=me`` and ``window=N`` (0 to 10, default 2) to follow the token's
player's rank (:mod:`handlers.live.rank_stream`). A connection that needs its token (auth
required, or ``watch=me``) is warned before the token expires and may send a fresh one
(:mod:`handlers.live.token_lease`); the socket is otherwise one-way. See docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import tornado.web
import tornado.websocket
from tornado.iostream import IOStream
from tornado.websocket import WebSocketProtocol

from handlers.base import authenticate, client_of, header, render_error
from handlers.board_routes import period_of, served_board
from handlers.context import Backend
from handlers.errors import ApiError, board_loading, refusal
from handlers.inflight import InFlight
from handlers.live.auth import check_watcher_token
from handlers.live.token_lease import TokenLease
from handlers.players import parse_window
from handlers.tornado_internals import notify_closing
from server.domain.deltas import Since, parse_since
from server.domain.errors import MissingToken
from server.domain.rank_watch import MAX_WINDOW
from server.domain.token_lease import parse_client_message, token_refreshed, token_refused
from server.domain.tokens import Identity

FORMATS = ("seed", "delta")
DEFAULT_RANK_WINDOW = 2

log = logging.getLogger(__name__)


class ScoreboardSocket(tornado.websocket.WebSocketHandler):
    """One watcher of the scoreboard; the service's fan-out writes to it."""

    service: Backend
    inflight: InFlight
    wants_delta: bool
    # The stream the fan-out writes to; None once either side began closing, as no data
    # frame may follow a close frame. A plain attribute: it is read per client per broadcast.
    out: IOStream | None

    def initialize(self, service: Backend, inflight: InFlight) -> None:
        self.service = service
        self.inflight = inflight
        self.wants_delta = False
        self.out = None
        self._since: Since | None = None
        self._watch: tuple[str, int] | None = None  # (user id, window) with watch=me
        # On a board route (BoardSocket): the season every message names, and the
        # period's own fan-out and rank stream (with a boards file).
        self.season: str | None = None
        self.fanout = service.fanout
        self.rank_stream = service.rank_stream
        self._address: str | None = None  # counted in service.ws_addresses while open
        self._identity: Identity | None = None  # the token's, when the connection needs it
        self._lease: TokenLease | None = None  # while open, for a connection that needs it
        self._refreshing: asyncio.Task[None] | None = None  # a fresh token being checked

    async def prepare(self) -> None:
        service = self.service
        if service.board_runtime is not None and self.fanout is service.fanout:
            # With a boards file, /ws/scoreboard is the default board's default period.
            default = service.boards[0]
            key = (default.id, default.default_period.name)
            self.fanout = service.board_fanouts[key]
            self.rank_stream = service.board_rank_streams[key]
        if (header(self.request, "Upgrade") or "").lower() != "websocket":
            raise ApiError(
                400, "websocket_required", "this endpoint speaks WebSocket: send an Upgrade"
            )
        fmt = self.get_query_argument("format", "seed")
        if fmt not in FORMATS:
            raise ApiError(400, "invalid_format", "format must be 'seed' or 'delta'")
        self.wants_delta = fmt == "delta"
        since = self.get_query_argument("since", None)
        if since is not None:
            try:
                self._since = parse_since(since)
            except ValueError as exc:
                raise ApiError(400, "invalid_since", str(exc)) from None
        watch = self.get_query_argument("watch", None)
        if watch not in (None, "me"):
            raise ApiError(400, "invalid_watch", "watch must be 'me' (with ?token=<JWT>)")
        raw_window = self.get_query_argument("window", None)
        if raw_window is not None and watch is None:
            raise ApiError(400, "invalid_window", "'window' goes with watch=me")
        window = parse_window(raw_window, "window", default=DEFAULT_RANK_WINDOW, most=MAX_WINDOW)
        token = self.get_query_argument("token", None)
        needed = watch is not None
        who = await check_watcher_token(
            service, token, client_of(self.request, service), needed=needed
        )
        if needed or service.settings.ws_require_auth:
            assert who is not None  # refused above otherwise
            self._identity = who  # held for as long as the token is valid
        if watch is not None:
            assert who is not None
            self._watch = (who.user_id, window)
        if self.inflight.draining:
            raise ApiError(503, "shutting_down", "the server is shutting down")
        if not service.leaderboard.view.loaded:  # the store has not answered yet
            raise board_loading()
        origin = header(self.request, "Origin")
        if origin is not None and not service.origins.allows(origin):
            # Refused here (not only by Tornado's check_origin) to answer with a JSON body.
            raise ApiError(403, "origin_not_allowed", "this origin may not open the scoreboard")
        self._check_address()

    def _check_address(self) -> None:
        """Refuse the upgrade while this address has its most WebSockets open.

        Nothing yields between here and :meth:`open`, so the count cannot be overtaken.
        """
        addresses = self.service.ws_addresses
        if addresses.limit and addresses.full(client_of(self.request, self.service)):
            self.service.metrics.ws_address_refusals.inc()
            raise ApiError(
                429,
                "too_many_connections",
                f"this address has {addresses.limit} WebSockets open; close one first",
                {"Retry-After": "10"},
            )

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # Tornado's own line names the whole URI, a ?token= included: the path only.
        if isinstance(value, tornado.web.HTTPError):
            return  # an answer, not a failure (the access log has it)
        log.error(
            "uncaught exception on %s %s",
            self.request.method,
            self.request.path,
            exc_info=(typ, value, tb),
        )

    def check_origin(self, origin: str) -> bool:
        return self.service.origins.allows(origin)

    def get_websocket_protocol(self) -> WebSocketProtocol | None:
        protocol = super().get_websocket_protocol()
        notify_closing(protocol)  # every close, also Tornado's own, calls on_closing first
        return protocol

    def on_closing(self) -> None:
        # No data frame may follow a close frame: the fan-out stops writing to this one,
        # and the token's timer and a refresh under way end (a shutdown closes with 1001).
        self.out = None
        self._end_lease()

    def _end_lease(self) -> None:
        if self._lease is not None:
            self._lease = None
            self.service.token_leases.release(self)  # and its timer cancelled
        refreshing, self._refreshing = self._refreshing, None
        if refreshing is not None:
            refreshing.cancel()

    def open(self, *args: Any, **kwargs: Any) -> None:
        assert self.ws_connection is not None
        service = self.service
        stream = self.ws_connection.stream
        self.out = stream
        if service.ws_addresses.limit:
            self._address = client_of(self.request, service)
            service.ws_addresses.opened(self._address)
        send_buffer = service.settings.ws_send_buffer_bytes
        sock = stream.socket if stream is not None else None
        if send_buffer and sock is not None:
            # The kernel would otherwise let a client that stops reading take megabytes
            # before the fan-out's own bound sees a byte.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        self.fanout.join(self, self._since)
        if self._watch is not None:
            self.rank_stream.watch(self, *self._watch)
        if self._identity is not None:
            self._lease = TokenLease(
                self._identity.user_id,
                self._identity.expires_at,
                leeway_s=service.settings.jwt_leeway_s,
                send=lambda message: self.fanout.write_own(self, message),
                close=self.close,
                on_expired=service.metrics.ws_token_expired.inc,
            )
            service.token_leases.hold(self, self._lease)

    def on_message(self, message: str | bytes) -> None:
        # Only a connection holding its token listens, and only for a fresh token; other
        # messages are ignored (their size is bounded: server.app.WS_MAX_MESSAGE_BYTES).
        lease = self._lease
        if lease is None:
            return
        request = parse_client_message(message)
        if request is None or self._refreshing is not None:
            return  # one refresh at a time: another sent meanwhile is ignored
        # A task, not awaited here: Tornado reads no frame (pongs, a close) until
        # on_message returns, and the check may wait for the provider's keys.
        task = asyncio.get_running_loop().create_task(self._refresh(lease, request.token))
        self._refreshing = task
        task.add_done_callback(self._refresh_ended)

    def _refresh_ended(self, task: asyncio.Task[None]) -> None:
        if self._refreshing is task:
            self._refreshing = None
        if not task.cancelled() and (error := task.exception()) is not None:
            # The traceback holds code, never the token's text.
            log.error("a token refresh failed", exc_info=(type(error), error, error.__traceback__))

    async def _refresh(self, lease: TokenLease, token: str | None) -> None:
        """Check a fresh token (as any token, its failures counted against the address)
        and, if it names the same player, hold it instead; answer either way."""
        service = self.service
        try:
            if token is None:
                service.metrics.tokens_refused.labels("missing").inc()
                raise refusal(MissingToken('a refresh carries {"token": "<JWT>"}'))
            client = client_of(self.request, service)
            fresh = await authenticate(service, client, lambda: service.verifier.verify(token))
        except ApiError as refused:
            answer = token_refused(refused.code, refused.message)
        else:
            if self._lease is not lease:
                return  # closing, or closed, while the token was checked
            if fresh.user_id != lease.user_id:
                answer = token_refused("token_mismatch", "the fresh token names another player")
            elif fresh.expires_at <= lease.expires_at:
                # A replayed or older token would cut the connection short.
                answer = token_refused(
                    "invalid_token", "the fresh token expires no later than the one held"
                )
            else:
                lease.renew(fresh.expires_at)
                service.metrics.ws_token_refreshes.labels("accepted").inc()
                self.fanout.write_own(self, token_refreshed(lease.close_at, time.time()))
                return
        service.metrics.ws_token_refreshes.labels("refused").inc()
        self.fanout.write_own(self, answer)

    def on_close(self) -> None:
        self._end_lease()
        self.out = None
        self.rank_stream.leave(self)
        self.fanout.leave(self)
        address, self._address = self._address, None
        if address is not None:
            self.service.ws_addresses.closed(address)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        render_error(self, status_code, kwargs.get("exc_info"))


class BoardSocket(ScoreboardSocket):
    """``/ws/boards/{board}?period=``: the stream of one period's current season of a
    board, each message naming its ``season``; otherwise ``/ws/scoreboard``'s (the same
    versions, formats, resume and ``watch=me``), from the period's own fan-out. At a new
    season every watcher gets a ``snapshot`` with reason ``season_started``."""

    async def prepare(self) -> None:
        service = self.service
        board = served_board(service, self.path_args[0] if self.path_args else "")
        period = period_of(board, self.get_query_argument("period", None))
        runtime = service.board_runtime
        if runtime is None:
            self.season = service.seasons.current(period, service.clock_ms()).season_id
        else:
            key = (board.id, period.name)
            self.season = runtime.period(*key).season.season_id
            self.fanout = service.board_fanouts[key]
            self.rank_stream = service.board_rank_streams[key]
        await super().prepare()
