"""The Tornado application: routes and handler settings for one :class:`Service`.

Every handler gets the service and the server's :class:`InFlight` (its requests in flight
and whether it drains) through its route kwargs.
"""

from __future__ import annotations

import tornado.web
from tornado.routing import Router

from handlers.admin import BanHandler, ResetHandler, UserHandler
from handlers.base import NotFoundHandler, access_log, allowed_methods
from handlers.board_routes import (
    BoardAroundHandler,
    BoardPlayerHandler,
    BoardResetHandler,
    BoardScoresHandler,
    BoardSeasonsHandler,
    BoardTopHandler,
    DefaultBoardAroundHandler,
    DefaultBoardPlayerHandler,
    DefaultBoardScoresHandler,
    DefaultBoardTopHandler,
)
from handlers.boards import BoardsHandler
from handlers.inflight import InFlight
from handlers.live.socket import BoardSocket, ScoreboardSocket
from handlers.openapi import OpenApiHandler
from handlers.ops import HealthHandler, MetricsHandler, ReadyHandler
from handlers.players import AroundHandler, LookupHandler, PlayerHandler
from handlers.router import PLAYER_ROUTE, TOP_SCORES_PATH, FastReads
from handlers.router import ROUTE as TOP_SCORES_ROUTE
from handlers.scores import TopScoresHandler, UpdateScoreHandler
from handlers.web_client import FILES as CLIENT_FILES
from handlers.web_client import ClientModuleHandler, PageHandler
from server.domain.tokens import MAX_TOKEN_BYTES
from server.service import Service

# Client messages are a fresh token at most (else ignored); bound them so nobody can make
# the server buffer much.
WS_MAX_MESSAGE_BYTES = MAX_TOKEN_BYTES + 1024


def make_app(service: Service, inflight: InFlight) -> tornado.web.Application:
    """Build the application serving ``service``'s routes, counting requests in ``inflight``."""

    def route(name: str) -> dict[str, object]:
        return {"service": service, "inflight": inflight, "route": name}

    # With a boards file, the original routes answer for the default board's default
    # period (handlers/board_routes.py); without one, for the original board.
    boards_file = service.board_runtime is not None
    update_score = DefaultBoardScoresHandler if boards_file else UpdateScoreHandler
    top_scores = DefaultBoardTopHandler if boards_file else TopScoresHandler
    player = DefaultBoardPlayerHandler if boards_file else PlayerHandler
    around = DefaultBoardAroundHandler if boards_file else AroundHandler

    return tornado.web.Application(
        [
            (r"/api/update-score", update_score, route("update_score")),
            (TOP_SCORES_PATH, top_scores, route(TOP_SCORES_ROUTE)),
            (r"/ws/scoreboard", ScoreboardSocket, {"service": service, "inflight": inflight}),
            (r"/ws/boards/([^/]+)", BoardSocket, {"service": service, "inflight": inflight}),
            (r"/healthz", HealthHandler, route("healthz")),
            (r"/readyz", ReadyHandler, route("readyz")),
            (r"/metrics", MetricsHandler, route("metrics")),
            (r"/api/openapi.json", OpenApiHandler, route("openapi")),
            (rf"/client/({CLIENT_FILES})", ClientModuleHandler, route("client_module")),
            (r"/", PageHandler, route("page")),
            (r"/api/boards", BoardsHandler, route("boards")),
            (r"/api/boards/([^/]+)/scores", BoardScoresHandler, route("board_scores")),
            (r"/api/boards/([^/]+)/top", BoardTopHandler, route("board_top")),
            (r"/api/boards/([^/]+)/seasons", BoardSeasonsHandler, route("board_seasons")),
            (
                r"/api/boards/([^/]+)/users/([^/]+)/reset",
                BoardResetHandler,
                route("board_admin_reset"),
            ),
            (
                r"/api/boards/([^/]+)/players/([^/]+)/around",
                BoardAroundHandler,
                route("board_player_around"),
            ),
            (r"/api/boards/([^/]+)/players/([^/]+)", BoardPlayerHandler, route("board_player")),
            (r"/api/players/lookup", LookupHandler, route("players_lookup")),
            (r"/api/players/([^/]+)/around", around, route("player_around")),
            (r"/api/players/([^/]+)", player, route(PLAYER_ROUTE)),
            (r"/api/users/([^/]+)", UserHandler, route("admin_user")),
            (r"/api/users/([^/]+)/reset", ResetHandler, route("admin_reset")),
            (r"/api/users/([^/]+)/ban", BanHandler, route("admin_ban")),
        ],
        default_handler_class=NotFoundHandler,
        default_handler_args=route("not_found"),
        websocket_max_message_size=WS_MAX_MESSAGE_BYTES,
        websocket_ping_interval=service.settings.ws_ping_interval_s,
        websocket_ping_timeout=service.settings.ws_ping_timeout_s,
        log_function=_log_request,
    )


def make_router(service: Service, inflight: InFlight) -> Router:
    """What the HTTP server serves: plain reads of the top 10 answered without a
    ``RequestHandler`` (``handlers/router.py``), everything else by :func:`make_app`.

    Each route's latency series exist from start (at zero), for every method it answers
    but the CORS preflight: alerts on a route's latency see it before its first request.
    """
    app = make_app(service, inflight)
    for rule in app.wildcard_router.rules:
        route = rule.target_kwargs.get("route")
        if route is not None and isinstance(rule.target, type):
            methods = allowed_methods(rule.target)
            service.metrics.expect_requests(route, (m for m in methods if m != "OPTIONS"))
    return FastReads(app, service)


def _log_request(handler: tornado.web.RequestHandler) -> None:
    access_log(handler.request, handler.get_status())
