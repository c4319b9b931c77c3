"""The OpenAPI 3.1 document of the API, served at ``GET /api/openapi.json``.

It describes every HTTP endpoint, parameter, body, response header and error code; the
``error`` codes each status can carry are listed as an ``enum`` so a client (or a fuzzer)
knows exactly which ones to expect. ``docs/api.md`` is the prose version of the same
contract; ``tests/server/test_openapi.py`` keeps the two and the handlers in step.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Final

from handlers.admin import ADMIN_SCOPE
from handlers.pages import MAX_CURSOR_CHARS, MAX_LIMIT
from handlers.players import MAX_LOOKUP, MAX_WINDOW
from handlers.scores import MAX_BODY_BYTES, MAX_IDEMPOTENCY_KEY_CHARS
from handlers.strict_json import MAX_DEPTH as MAX_JSON_DEPTH
from server.domain.tokens import MAX_TOKEN_BYTES, MAX_USER_ID_CHARS
from server.settings import Settings

_DEFAULTS: Final = Settings()

JSON: Final = "application/json"

# What a route that writes through a user's actor answers with 503.
STORE_503: Final = ["busy", "shutting_down", "database_unavailable", "database_timeout"]

_ERROR_MESSAGES: Final[dict[int, str]] = {
    400: "The request is malformed",
    401: "Not authenticated",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    413: "The body is too large",
    415: "The body is not JSON",
    422: "The request cannot be processed",
    431: "The request headers are too large",
    429: "Too many requests",
    500: "The server failed",
    503: "Unavailable for now",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _header(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


def _error(
    status: int,
    codes: list[str],
    *,
    retry_after: bool = False,
    request_id: bool = True,
    challenge: bool = False,
) -> dict[str, Any]:
    """A response whose body is ``{"error": one of codes, "message": text}``; a 401 (and a
    403 with ``challenge``) carries ``WWW-Authenticate``."""
    headers: dict[str, Any] = {"X-Request-ID": _header("X-Request-ID")} if request_id else {}
    if retry_after:
        headers["Retry-After"] = _header("Retry-After")
    if status == 401 or challenge:
        headers["WWW-Authenticate"] = _header("WWW-Authenticate")
    return {
        "description": f"{_ERROR_MESSAGES[status]}: {', '.join(f'`{c}`' for c in codes)}",
        "headers": headers,
        "content": {
            JSON: {
                "schema": {
                    "allOf": [
                        _ref("Error"),
                        {"type": "object", "properties": {"error": {"enum": codes}}},
                    ]
                }
            }
        },
    }


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"X-Request-ID": _header("X-Request-ID")},
        "content": {JSON: {"schema": schema}},
    }


def _object(properties: dict[str, Any], *, required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }


def _admin_operation(
    operation_id: str, summary: str, description: str, ok: dict[str, Any]
) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "tags": ["admin"],
        "summary": summary,
        "description": description
        + f" Needs a bearer token whose `scope` claim contains `{ADMIN_SCOPE}`.",
        "security": [{"bearerAuth": [ADMIN_SCOPE]}],
        "parameters": [{"$ref": "#/components/parameters/UserId"}, _request_id_param()],
        "responses": {
            "200": ok,
            "401": _error(401, ["missing_token", "invalid_token"]),
            "403": _error(403, ["forbidden"], challenge=True),
            "404": _error(404, ["not_found"]),
            "429": _error(429, ["auth_throttled"], retry_after=True),
            "500": _error(500, ["database_error", "internal_error"]),
            "503": _error(503, STORE_503, retry_after=True),
        },
    }


def _request_id_param() -> dict[str, str]:
    return {"$ref": "#/components/parameters/RequestId"}


def openapi_document(
    *, max_increment: int = _DEFAULTS.max_increment, top_n: int = _DEFAULTS.top_n
) -> dict[str, Any]:
    """The OpenAPI 3.1 description of every endpoint.

    Args:
        max_increment: the server's ``SCOREBOARD_MAX_INCREMENT`` (the body's upper bound).
        top_n: the server's ``SCOREBOARD_TOP_N`` (rows in the top scores).
    """
    user_row = _object(
        {
            "user_id": {"type": "string"},
            "username": {"type": "string"},
            "score": {"type": "integer", "minimum": 0},
        }
    )
    update_score = {
        "operationId": "updateScore",
        "tags": ["scores"],
        "summary": "Add to the caller's score",
        "description": (
            "Adds `increment` (or, with proof of action on, the points of the action "
            "token's action type) to the score of the token's `sub`, at most once per "
            "`Idempotency-Key`, within the per-user rate limit. Checks run in this order: "
            "body size, token, body, action token, idempotency key, then (atomically in "
            "the store) idempotent replay (or 422 for a key reused with another "
            "request), spent action, rate limit, increment. 503 `database_timeout`: the "
            "outcome is unknown; retry with the same `Idempotency-Key` to learn it."
        ),
        "security": [{"bearerAuth": []}],
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": (
                    "A retry with a key among the user's last 64 is not applied again; it "
                    "answers the first result's `new_score` with 200 and "
                    "`Idempotent-Replayed: true`. The same key with a different request "
                    "(another increment or action token) answers 422 "
                    "`idempotency_key_reused`."
                ),
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_IDEMPOTENCY_KEY_CHARS,
                    # Printable ASCII; HTTP trims spaces around a header value.
                    "pattern": "^[!-~]([ -~]*[!-~])?$",
                },
            },
            _request_id_param(),
        ],
        "requestBody": {
            "required": False,
            "description": (
                f"At most {MAX_BODY_BYTES} bytes; an empty body means `{{}}`. Unknown fields, "
                f"nesting deeper than {MAX_JSON_DEPTH} levels and a key given twice are "
                "refused (`invalid_json`)."
            ),
            "content": {
                JSON: {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "increment": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": max_increment,
                                "default": 1,
                                "description": (
                                    'Points to add (`true`, `1.0` and `"1"` are refused). '
                                    "With proof of action on: leave it out, or make it "
                                    "equal the action's points."
                                ),
                            },
                            "action_token": {
                                "type": "string",
                                "description": (
                                    "Proof of action (required when "
                                    "`SCOREBOARD_ACTION_SECRET` is set, ignored otherwise): "
                                    "an HS256 JWT of the game's action service with `sub`, "
                                    "`jti`, `act` and `exp`; each `jti` is accepted once."
                                ),
                            },
                        },
                        "additionalProperties": False,
                    }
                }
            },
        },
        "responses": {
            "200": {
                "description": "Applied, or an idempotent replay of an earlier request",
                "headers": {
                    "X-Request-ID": _header("X-Request-ID"),
                    "Cache-Control": _header("Cache-Control"),
                    "Idempotent-Replayed": {
                        "description": (
                            "`true` on a replay: the answer of the first request with this "
                            "`Idempotency-Key`, nothing applied now; absent otherwise"
                        ),
                        "schema": {"type": "string", "const": "true"},
                    },
                },
                "content": {
                    JSON: {
                        "schema": _object(
                            {
                                "status": {"const": "success"},
                                "new_score": {"type": "integer", "minimum": 0},
                                "rank": {
                                    "type": ["integer", "null"],
                                    "minimum": 1,
                                    "description": (
                                        "the player's rank on this pod's board now (null: "
                                        "not ranked, e.g. banned meanwhile)"
                                    ),
                                },
                                "total": {
                                    "type": "integer",
                                    "minimum": 0,
                                    "description": "how many players are ranked",
                                },
                            }
                        )
                    }
                },
            },
            "400": _error(
                400,
                ["invalid_json", "invalid_increment", "invalid_idempotency_key", "invalid_action"],
            ),
            "401": _error(401, ["missing_token", "invalid_token"]),
            "403": _error(403, ["action_forbidden", "user_banned"]),
            "409": _error(409, ["action_replayed"]),
            "413": _error(413, ["body_too_large"]),
            "415": _error(415, ["unsupported_media_type"]),
            "422": _error(422, ["idempotency_key_reused"]),
            "429": _error(429, ["auth_throttled", "rate_limited"], retry_after=True),
            "500": _error(500, ["database_error", "internal_error"]),
            "503": _error(503, STORE_503, retry_after=True),
        },
    }
    ranked_row = _object({**user_row["properties"], "rank": {"type": "integer", "minimum": 1}})
    top_scores = {
        "operationId": "topScores",
        "tags": ["scores"],
        "summary": "The current top scores",
        "description": (
            f"At most {top_n} rows, score descending; ties: whoever reached the score first, "
            "then user id. No authentication."
        ),
        "security": [],
        "parameters": [
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": (
                    "Pages of the whole board: rows per page (default the top N's size). "
                    "With `limit` or `cursor` the answer has ranks and cursors."
                ),
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
            },
            {
                "name": "cursor",
                "in": "query",
                "required": False,
                "description": (
                    "A `next_cursor` or `prev_cursor` of an earlier page (opaque): the page "
                    "after or before it. A player who did not move is never skipped or "
                    "repeated at a page boundary."
                ),
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_CURSOR_CHARS},
            },
            _request_id_param(),
        ],
        "responses": {
            "200": _ok(
                "The top scores, or a page of the board",
                {
                    "anyOf": [
                        _object(
                            {"top_scores": {"type": "array", "maxItems": top_n, "items": user_row}}
                        ),
                        _object(
                            {
                                "top_scores": {
                                    "type": "array",
                                    "maxItems": MAX_LIMIT,
                                    "items": ranked_row,
                                },
                                "total": {"type": "integer", "minimum": 0},
                                "next_cursor": {"type": ["string", "null"]},
                                "prev_cursor": {"type": ["string", "null"]},
                            }
                        ),
                    ]
                },
            ),
            "400": _error(400, ["invalid_limit", "invalid_cursor"]),
            "503": _error(503, ["not_ready"], retry_after=True),
        },
    }
    player_param = {
        "name": "user_id",
        "in": "path",
        "required": True,
        "description": "A player's id, or `me` for the caller (then a bearer token is needed)",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_USER_ID_CHARS},
    }
    ranks_503 = _error(503, ["not_ready"], retry_after=True)
    get_player = {
        "operationId": "getPlayer",
        "tags": ["players"],
        "summary": "A player's score, rank and percentile",
        "description": (
            "From this pod's rank index, ordered as the board is (score, then who reached "
            "it first, then user id). `percentile`: the share of ranked players this one "
            "ranks above or level with, in percent. `me` is the caller of the bearer token; "
            "any other id is public."
        ),
        "security": [{}, {"bearerAuth": []}],
        "parameters": [player_param, _request_id_param()],
        "responses": {
            "200": _ok(
                "The player",
                _object(
                    {
                        **ranked_row["properties"],
                        "total": {"type": "integer", "minimum": 1},
                        "percentile": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
                    }
                ),
            ),
            "401": _error(401, ["missing_token", "invalid_token"]),
            "404": _error(404, ["not_ranked"]),
            "429": _error(429, ["auth_throttled"], retry_after=True),
            "503": ranks_503,
        },
    }
    window_param = {
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_WINDOW, "default": 5},
    }
    get_around = {
        "operationId": "getPlayersAround",
        "tags": ["players"],
        "summary": "The rows around a player, each with its rank",
        "description": (
            "Up to `above` rows ahead of the player and `below` behind, clipped at the ends "
            "of the board. A player who is not ranked gets the top `above + below + 1` rows "
            'and `"ranked": false`.'
        ),
        "security": [{}, {"bearerAuth": []}],
        "parameters": [
            player_param,
            {**window_param, "name": "above", "description": "Rows ahead of the player"},
            {**window_param, "name": "below", "description": "Rows behind the player"},
            _request_id_param(),
        ],
        "responses": {
            "200": _ok(
                "The window",
                _object(
                    {
                        "user_id": {"type": "string"},
                        "ranked": {"type": "boolean"},
                        "total": {"type": "integer", "minimum": 0},
                        "rows": {"type": "array", "items": ranked_row},
                    }
                ),
            ),
            "400": _error(400, ["invalid_window"]),
            "401": _error(401, ["missing_token", "invalid_token"]),
            "404": _error(404, ["not_ranked"]),
            "429": _error(429, ["auth_throttled"], retry_after=True),
            "503": ranks_503,
        },
    }
    nullable_time = {"type": ["string", "null"], "format": "date-time"}
    season = _object(
        {
            "id": {"type": "string"},
            "start": {"type": "string", "format": "date-time"},
            "end": {**nullable_time, "description": "null: the season never ends (all_time)"},
        }
    )
    board = _object(
        {
            "id": {"type": "string", "pattern": "^[a-z0-9_-]{1,32}$"},
            "title": {"type": "string"},
            "default": {"type": "boolean", "description": "the board the original routes serve"},
            "operator": {"enum": ["incr", "best", "set"]},
            "order": {"enum": ["desc", "asc"]},
            "value_field": {"enum": ["increment", "score"]},
            "limits": {
                "type": "object",
                "additionalProperties": {"type": ["integer", "null"]},
            },
            "top_n": {"type": "integer", "minimum": 1},
            "rate_limit_per_minute": {"type": "integer", "minimum": 0},
            "proof_of_action": {"type": "boolean"},
            "keep_seasons": {"type": "integer", "minimum": 0},
            "timezone": {"type": "string"},
            "week_starts": {"type": "string"},
            "periods": {
                "type": "array",
                "items": _object(
                    {
                        "name": {"type": "string"},
                        "kind": {"enum": ["all_time", "daily", "weekly", "monthly", "cron"]},
                        "cron": {"type": ["string", "null"]},
                        "season": season,
                    }
                ),
            },
        }
    )
    list_boards = {
        "operationId": "listBoards",
        "tags": ["boards"],
        "summary": "The boards, their rules, and each period's current season",
        "description": (
            "From `SCOREBOARD_BOARDS_FILE` (docs/boards.md), in the file's order; the first is "
            "the default board. Without a file: the one board `main`, from the settings."
        ),
        "security": [],
        "parameters": [_request_id_param()],
        "responses": {
            "200": _ok(
                "The boards",
                _object({"boards": {"type": "array", "items": board, "minItems": 1}}),
            )
        },
    }
    board_param = {
        "name": "board",
        "in": "path",
        "required": True,
        "description": "A board's id (`GET /api/boards`); today the one board served",
        "schema": {"type": "string", "minLength": 1},
    }
    period_param = {
        "name": "period",
        "in": "query",
        "required": False,
        "description": "One of the board's periods (default: its first)",
        "schema": {"type": "string"},
    }
    season_param = {
        "name": "season",
        "in": "query",
        "required": False,
        "description": "A season id of that period (default: the current one)",
        "schema": {"type": "string"},
    }

    def on_board(
        operation: dict[str, Any], operation_id: str, *, reads: bool, not_found: list[str]
    ) -> dict[str, Any]:
        """``operation`` under ``/api/boards/{board}/...``: the same answers, the board in
        the path (and the period and season in the query of a read)."""
        params = [board_param, *([period_param, season_param] if reads else [])]
        unknown = (
            ["unknown_board", "unknown_period", "unknown_season"] if reads else ["unknown_board"]
        )
        return {
            **operation,
            "operationId": operation_id,
            "tags": ["boards"],
            "parameters": [*params, *operation["parameters"]],
            "responses": {**operation["responses"], "404": _error(404, [*not_found, *unknown])},
        }

    def board_scores(operation: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/boards/{board}/scores``: with a boards file, the board's value
        field and the score and rank in every period; without one, the original answer."""
        ok = operation["responses"]["200"]
        original = ok["content"][JSON]["schema"]
        in_period = _object(
            {
                "season": {"type": "string"},
                "score": {"type": ["integer", "null"]},
                "rank": {"type": ["integer", "null"], "minimum": 1},
                "total": {"type": "integer", "minimum": 0},
            }
        )
        with_file = _object(
            {
                "status": {"const": "success"},
                "board": {"type": "string"},
                "user_id": {"type": "string"},
                "periods": {"type": "object", "additionalProperties": in_period},
            }
        )
        return {
            **operation,
            "description": (
                operation["description"] + " With a boards file (docs/boards.md) the body "
                "carries the board's value field (`increment`, or `score` for best and set "
                "boards) and the answer gives the score and rank in every period."
            ),
            "responses": {
                **operation["responses"],
                "200": {
                    **ok,
                    "content": {JSON: {"schema": {"oneOf": [original, with_file]}}},
                },
                "400": _error(
                    400,
                    [
                        "invalid_json",
                        "invalid_increment",
                        "invalid_score",
                        "invalid_idempotency_key",
                        "invalid_action",
                    ],
                ),
            },
        }

    lookup_players = {
        "operationId": "lookupPlayers",
        "tags": ["players"],
        "summary": "Many players' rows and ranks at once (a friends list)",
        "description": (
            f"At most {MAX_LOOKUP} ids; each ranked one's row in the order asked (each id "
            "once), and the ids that are not ranked."
        ),
        "security": [],
        "parameters": [_request_id_param()],
        "requestBody": {
            "required": True,
            "content": {
                JSON: {
                    "schema": {
                        **_object(
                            {
                                "user_ids": {
                                    "type": "array",
                                    "maxItems": MAX_LOOKUP,
                                    "items": {
                                        "type": "string",
                                        "minLength": 1,
                                        "maxLength": MAX_USER_ID_CHARS,
                                    },
                                }
                            }
                        ),
                        "additionalProperties": False,
                    }
                }
            },
        },
        "responses": {
            "200": _ok(
                "The players found",
                _object(
                    {
                        "total": {"type": "integer", "minimum": 0},
                        "rows": {"type": "array", "items": ranked_row},
                        "not_ranked": {"type": "array", "items": {"type": "string"}},
                    }
                ),
            ),
            "400": _error(400, ["invalid_json", "too_many_players"]),
            "415": _error(415, ["unsupported_media_type"]),
            "503": ranks_503,
        },
    }
    get_user = _admin_operation(
        "getUser",
        "A user's record and rank",
        "The user's id, display name, score, 1-based rank on the whole board (null while "
        "banned: a banned user is off the board) and whether they are banned.",
        _ok(
            "The user",
            _object(
                {
                    "user_id": {"type": "string"},
                    "username": {"type": "string"},
                    "score": {"type": "integer", "minimum": 0},
                    "rank": {
                        "type": ["integer", "null"],
                        "minimum": 1,
                        "description": "1-based rank on the whole board; null when banned",
                    },
                    "banned": {"type": "boolean"},
                }
            ),
        ),
    )
    reset_user = _admin_operation(
        "resetUser",
        "Set a user's score to 0",
        "The live top N is refilled from the store if the user was in it.",
        _ok(
            "Reset",
            _object({"user_id": {"type": "string"}, "score": {"const": 0}}),
        ),
    )
    ban_user = _admin_operation(
        "banUser",
        "Remove a user from the board and ban them",
        "The user's later updates get 403 `user_banned` until the ban is lifted.",
        _ok("Banned", _object({"user_id": {"type": "string"}, "banned": {"const": True}})),
    )
    unban_user = _admin_operation(
        "unbanUser",
        "Lift a user's ban",
        "The user may update again (starting from the score they have now).",
        _ok("Ban lifted", _object({"user_id": {"type": "string"}, "banned": {"const": False}})),
    )
    for operation in (reset_user, ban_user, unban_user):
        operation["responses"]["200"]["headers"]["Cache-Control"] = _header("Cache-Control")

    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Scoreboard",
            "version": "0.1.0",
            "description": (
                "Live scoreboard: authenticated score updates, the top scores, admin actions "
                'against cheaters. Every error is `{"error": code, "message": text}`; the '
                "code is stable. Unknown routes answer 404 `not_found`, a wrong method 405 "
                "`method_not_allowed`. Every GET route also answers HEAD: the same status "
                "and headers, no body. The live stream is a WebSocket at `/ws/scoreboard` "
                "(see docs/protocol.md)."
            ),
        },
        "tags": [
            {"name": "scores", "description": "Updating and reading scores"},
            {"name": "players", "description": "Ranks, windows and lookups of players"},
            {"name": "boards", "description": "The boards and their seasons (docs/boards.md)"},
            {"name": "admin", "description": f"Needs the `{ADMIN_SCOPE}` scope"},
            {"name": "operations", "description": "Health, readiness, metrics, this document"},
            {"name": "live", "description": "The WebSocket stream of the top scores"},
        ],
        "paths": {
            "/api/update-score": {"post": update_score, "options": _preflight()},
            "/api/top-scores": {"get": top_scores},
            "/api/users/{user_id}": {"get": get_user, "delete": ban_user},
            "/api/players/{user_id}": {"get": get_player},
            "/api/players/{user_id}/around": {"get": get_around},
            "/api/players/lookup": {"post": lookup_players},
            "/api/boards": {"get": list_boards},
            "/api/boards/{board}/scores": {
                "post": board_scores(
                    on_board(update_score, "postBoardScore", reads=False, not_found=[])
                ),
                "options": {
                    **_preflight(),
                    "operationId": "postBoardScorePreflight",
                    "parameters": [board_param, *_preflight()["parameters"]],
                },
            },
            "/api/boards/{board}/seasons": {
                "get": {
                    "operationId": "getBoardSeasons",
                    "tags": ["boards"],
                    "summary": "A period's seasons: start, end and state",
                    "description": (
                        "Newest first: the current season, then the ended ones kept "
                        "(`keep_seasons`), each with its players' count (`total`) and "
                        "final top N (`top`). An all_time period has one season, `all`, "
                        "that never ends (docs/boards.md)."
                    ),
                    "security": [],
                    "parameters": [board_param, period_param, _request_id_param()],
                    "responses": {
                        "200": _ok(
                            "The seasons",
                            _object(
                                {
                                    "board": {"type": "string"},
                                    "period": {"type": "string"},
                                    "seasons": {
                                        "type": "array",
                                        "items": _object(
                                            {
                                                **season["properties"],
                                                "state": {"enum": ["current", "ended"]},
                                                "total": {"type": "integer", "minimum": 0},
                                                "top": {"type": "array", "items": ranked_row},
                                            },
                                            required=[*season["required"], "state"],
                                        ),
                                    },
                                }
                            ),
                        ),
                        "404": _error(404, ["unknown_board", "unknown_period"]),
                    },
                }
            },
            "/api/boards/{board}/users/{user_id}/reset": {
                "post": {
                    **reset_user,
                    "operationId": "resetBoardUser",
                    "summary": "Set a user's score on one board and period to 0",
                    "parameters": [board_param, period_param, *reset_user["parameters"]],
                    "responses": {
                        **reset_user["responses"],
                        "404": _error(404, ["not_found", "unknown_board", "unknown_period"]),
                    },
                }
            },
            "/api/boards/{board}/top": {
                "get": on_board(top_scores, "getBoardTop", reads=True, not_found=[])
            },
            "/api/boards/{board}/players/{user_id}": {
                "get": on_board(get_player, "getBoardPlayer", reads=True, not_found=["not_ranked"])
            },
            "/api/boards/{board}/players/{user_id}/around": {
                "get": on_board(
                    get_around, "getBoardPlayersAround", reads=True, not_found=["not_ranked"]
                )
            },
            "/api/users/{user_id}/reset": {"post": reset_user},
            "/api/users/{user_id}/ban": {"delete": unban_user},
            "/ws/scoreboard": {"get": _websocket()},
            "/ws/boards/{board}": {"get": _board_websocket(board_param, period_param)},
            "/api/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "tags": ["operations"],
                    "summary": "This document",
                    "security": [],
                    "parameters": [_request_id_param()],
                    "responses": {
                        "200": _ok("The OpenAPI 3.1 document", {"type": "object"}),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "tags": ["operations"],
                    "summary": "Liveness: the process serves HTTP",
                    "security": [],
                    "parameters": [_request_id_param()],
                    "responses": {
                        "200": _ok("Alive", _object({"status": {"const": "ok"}})),
                    },
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "ready",
                    "tags": ["operations"],
                    "summary": "Readiness: this pod can serve what it has",
                    "description": (
                        "200 while the leaderboard is loaded, the server is not shutting "
                        "down, and both the change feed was open and the store passed its "
                        "background probe (SQLite: a write; MongoDB: a ping) within "
                        "`SCOREBOARD_READY_MAX_STALENESS_S`."
                    ),
                    "security": [],
                    "parameters": [_request_id_param()],
                    "responses": {
                        "200": _ok("Ready", _object({"status": {"const": "ready"}})),
                        "503": _error(503, ["not_ready"]),
                    },
                }
            },
            "/": {
                "get": {
                    "operationId": "livePage",
                    "tags": ["operations"],
                    "summary": "The live page (HTML; docs/api.md)",
                    "description": (
                        "The top N of a board and period, live, with the player's rank when "
                        "the URL's fragment carries a token (`#token=...`); `?embed=1` for an "
                        "iframe. A strict Content-Security-Policy."
                    ),
                    "security": [],
                    "parameters": [],
                    "responses": {
                        "200": {
                            "description": "The page",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/client/{file}": {
                "get": {
                    "operationId": "clientFile",
                    "tags": ["operations"],
                    "summary": "The live client module, and the live page's script and styles",
                    "description": (
                        "`scoreboard.js` is the live client, an ES module (docs/protocol.md). "
                        "With `?v=` naming the module's version, cached for a year as "
                        "immutable; otherwise revalidated on every use (`no-cache`), with "
                        "its ETag. Any origin may import it."
                    ),
                    "security": [],
                    "parameters": [
                        {
                            "name": "file",
                            "in": "path",
                            "required": True,
                            "schema": {
                                "enum": ["scoreboard.js", "page.js", "page.css", "icon.svg"]
                            },
                        },
                        {
                            "name": "v",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                            "description": "The file's version (a long cache when it matches)",
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The file",
                            "headers": {
                                "ETag": {
                                    "description": "the file's version, for If-None-Match",
                                    "schema": {"type": "string"},
                                },
                                "Cache-Control": _header("Cache-Control"),
                            },
                            "content": {
                                "text/javascript": {"schema": {"type": "string"}},
                                "text/css": {"schema": {"type": "string"}},
                                "image/svg+xml": {"schema": {"type": "string"}},
                            },
                        },
                        "304": {"description": "Not modified (If-None-Match)"},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "tags": ["operations"],
                    "summary": "Prometheus text exposition",
                    "security": [],
                    "parameters": [_request_id_param()],
                    "responses": {
                        "200": {
                            "description": "The metrics",
                            "headers": {"X-Request-ID": _header("X-Request-ID")},
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": (
                        "A JWT signed with the configured key and an allow-listed algorithm "
                        f"(never `none`), at most {MAX_TOKEN_BYTES} bytes, with `sub` (1 to "
                        f"{MAX_USER_ID_CHARS} characters) and `exp`; `iss`/`aud` when "
                        f"configured. Admin endpoints need `{ADMIN_SCOPE}` in `scope`. "
                        "Failed authentications are throttled per client address "
                        "(429 `auth_throttled`). Request headers over 16 KiB in all are "
                        "answered 431 `headers_too_large` and the connection is closed."
                    ),
                }
            },
            "parameters": {
                "UserId": {
                    "name": "user_id",
                    "in": "path",
                    "required": True,
                    "description": "The user's id (their tokens' `sub`)",
                    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_USER_ID_CHARS},
                },
                "RequestId": {
                    "name": "X-Request-ID",
                    "in": "header",
                    "required": False,
                    "description": (
                        "Echoed back and logged when it is 1 to 128 printable ASCII "
                        "characters; otherwise the server makes a new one."
                    ),
                    "schema": {"type": "string"},
                },
            },
            "headers": {
                "X-Request-ID": {
                    "description": "The request id (the caller's, if sane), on every answer",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                },
                "Retry-After": {
                    "description": "Seconds to wait before trying again",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                },
                "WWW-Authenticate": {
                    "description": (
                        'An RFC 6750 challenge: `Bearer realm="scoreboard"`, with '
                        '`error="invalid_token"` and an `error_description` when a bearer '
                        'token was refused, or `error="insufficient_scope"` and the `scope` '
                        "an admin route needs"
                    ),
                    "required": True,
                    "schema": {"type": "string", "pattern": "^Bearer realm="},
                },
                "Cache-Control": {
                    "description": "Writes are never cached",
                    "required": True,
                    "schema": {"type": "string", "const": "no-store"},
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {"type": "string", "description": "Stable, for programs"},
                        "message": {"type": "string", "description": "Human text"},
                    },
                    "required": ["error", "message"],
                    "additionalProperties": False,
                }
            },
        },
    }
    # Any request's headers may pass the server's 16 KiB bound, whatever the route.
    for item in document["paths"].values():
        for operation in item.values():
            operation["responses"]["431"] = _error(431, ["headers_too_large"])
    return document


def _preflight() -> dict[str, Any]:
    """CORS preflight (every API route answers it the same way)."""
    return {
        "operationId": "updateScorePreflight",
        "tags": ["scores"],
        "summary": "CORS preflight",
        "description": (
            "Answered from `SCOREBOARD_ALLOWED_ORIGINS`: 204 with the route's own methods "
            "(as its `Allow` lists them) and the request headers a page may send, for an "
            "allowed `Origin`, else 403 `origin_not_allowed`. Every API route answers "
            "preflights the same way. Answers to an allowed `Origin` expose `Retry-After`, "
            "`ETag`, `X-Request-ID` and `Idempotent-Replayed` to the page."
        ),
        "security": [],
        "parameters": [
            {"name": "Origin", "in": "header", "required": False, "schema": {"type": "string"}},
            _request_id_param(),
        ],
        "responses": {
            "204": {
                "description": "Allowed",
                "headers": {
                    "X-Request-ID": _header("X-Request-ID"),
                    "Access-Control-Allow-Origin": {"schema": {"type": "string"}},
                    "Access-Control-Allow-Methods": {
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    "Access-Control-Allow-Headers": {
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    "Access-Control-Max-Age": {"schema": {"type": "string"}},
                },
            },
            "403": _error(403, ["origin_not_allowed"]),
        },
    }


def _board_websocket(board: dict[str, Any], period: dict[str, Any]) -> dict[str, Any]:
    """``/ws/scoreboard`` under a board: one period's current season, each message naming
    its ``season``."""
    stream = _websocket()
    return {
        **stream,
        "operationId": "boardStream",
        "summary": "The live stream of one period's current season of a board",
        "description": (
            "As `/ws/scoreboard`, of the board's period (default its first) current season; "
            "every message carries `season`. docs/protocol.md."
        ),
        "parameters": [board, period, *stream["parameters"]],
        "responses": {
            **stream["responses"],
            "404": _error(404, ["unknown_board", "unknown_period"], request_id=False),
        },
    }


def _websocket() -> dict[str, Any]:
    return {
        "operationId": "scoreboardStream",
        "tags": ["live"],
        "summary": "The live top scores (WebSocket upgrade)",
        "description": (
            "A WebSocket: a snapshot (or a resume) on connect, then every change of the top "
            "scores. Messages and resume rules: docs/protocol.md. A connection that needs "
            "its token (auth required, or watch=me) is warned before the token expires, may "
            "send a fresh one, and is closed with 4401 if it does not (docs/protocol.md, "
            "'Tokens on a live connection'). Errors before the upgrade are JSON like any "
            "other."
        ),
        "security": [],
        "parameters": [
            {
                "name": "format",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": ["seed", "delta"], "default": "seed"},
            },
            {
                "name": "since",
                "in": "query",
                "required": False,
                "description": "`EPOCH:VERSION` of the last message seen, to resume",
                "schema": {"type": "string"},
            },
            {
                "name": "token",
                "in": "query",
                "required": False,
                "description": (
                    "A player JWT; required when `SCOREBOARD_WS_REQUIRE_AUTH` is on, and with "
                    "`watch=me`"
                ),
                "schema": {"type": "string"},
            },
            {
                "name": "watch",
                "in": "query",
                "required": False,
                "description": "`me`: also stream `rank` events for the token's player",
                "schema": {"type": "string", "enum": ["me"]},
            },
            {
                "name": "window",
                "in": "query",
                "required": False,
                "description": "With `watch=me`: rows above and below the player in each event",
                "schema": {"type": "integer", "minimum": 0, "maximum": 10, "default": 2},
            },
        ],
        "responses": {
            "101": {"description": "Switching to the WebSocket protocol"},
            "400": _error(
                400,
                [
                    "invalid_format",
                    "invalid_since",
                    "invalid_watch",
                    "invalid_window",
                    "websocket_required",
                ],
                request_id=False,
            ),
            "401": _error(401, ["missing_token", "invalid_token"], request_id=False),
            "403": _error(403, ["origin_not_allowed"], request_id=False),
            "429": _error(
                429, ["auth_throttled", "too_many_connections"], retry_after=True, request_id=False
            ),
            "503": _error(503, ["shutting_down", "not_ready"], request_id=False),
        },
    }


@functools.cache
def openapi_body(
    max_increment: int = _DEFAULTS.max_increment, top_n: int = _DEFAULTS.top_n
) -> bytes:
    """The document as JSON bytes for a server's limits, encoded once per combination."""
    document = openapi_document(max_increment=max_increment, top_n=top_n)
    return json.dumps(document, separators=(",", ":")).encode()
