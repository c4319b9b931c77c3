"""Admin response to cheating: look a user up, reset, remove from the board, unban.

Every route needs a bearer token whose ``scope`` claim holds ``scores:admin``. The changes
go through the user's actor, so they are serialized with that user's increments, and the
live board follows them (a removed member or a reset score leaves the top N; the
leaderboard refills from the store).
"""

from __future__ import annotations

import logging
from typing import Any, Final, cast

from actors.user import AdminCommand
from handlers.base import ApiHandler, ask_user_actor, header
from handlers.errors import ApiError, challenge, failure_refusal
from server.domain.admin import AdminAction
from server.domain.records import UserRecord
from server.domain.tokens import MAX_USER_ID_CHARS
from server.store.changes import Change
from server.store.port import StoreError
from server.support.audit import audit_log

ADMIN_SCOPE: Final = "scores:admin"

log = logging.getLogger(__name__)


class AdminHandler(ApiHandler):
    """Checks the admin scope, runs admin actions through the user's actor, and leaves one
    audit line per admin request, refused ones included."""

    def prepare(self) -> None:
        super().prepare()
        self._audit: dict[str, Any] = {
            "request_id": self.request_id,
            "client": self.client,
            "admin": None,
            "action": "lookup",
            "user_id": self.path_args[0] if self.path_args else None,
            "outcome": None,
            "new_score": None,
        }

    def on_finish(self) -> None:
        audit = getattr(self, "_audit", None)
        if self._counted and audit is not None and self.request.method != "OPTIONS":
            status = self.get_status()
            audit["outcome"] = audit["outcome"] or ("applied" if status < 400 else f"http_{status}")
            audit["latency_ms"] = round(self.request.request_time() * 1000, 3)
            audit_log.info("admin", extra=audit)
        super().on_finish()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError) and getattr(self, "_audit", None) is not None:
            self._audit["outcome"] = exc.code
        super().write_error(status_code, **kwargs)

    async def admin(self) -> str:
        """The id of the admin calling.

        Raises:
            ApiError: 401 (bad or missing token), 403 ``forbidden`` (no admin scope).
        """
        identity = await self.authenticate(header(self.request, "Authorization"))
        self._audit["admin"] = identity.user_id
        if ADMIN_SCOPE not in identity.scopes:
            raise ApiError(
                403,
                "forbidden",
                f"this needs a token with the {ADMIN_SCOPE} scope",
                challenge("insufficient_scope", scope=ADMIN_SCOPE),
            )
        return identity.user_id

    async def act(self, user_id: str, action: AdminAction) -> UserRecord:
        """Apply ``action`` to ``user_id``.

        Raises:
            ApiError: 401/403 (caller), 404 ``not_found``, 500/503 (store, shutdown).
        """
        self._audit["action"] = action.value
        await self.admin()
        check_user_id(user_id)
        now_ms = self.service.clock_ms()
        blank = None
        if self.service.board_runtime is not None and action is AdminAction.REMOVE:
            # A boards file's player may have no record on the original board: the ban
            # makes one, and holds on every board.
            blank = UserRecord(user_id, user_id, 0, 0, now_ms)
        command = AdminCommand(action, now_ms, blank)
        record = cast(UserRecord | None, await ask_user_actor(self.service, user_id, command))
        if record is None:
            raise ApiError(404, "not_found", f"no user {user_id!r}")
        if self.service.board_runtime is not None:  # a ban holds on every board
            self.service.board_runtime.saw(Change.of(record))
        self._audit["new_score"] = record.score
        return record


def check_user_id(user_id: str) -> None:
    """Raises ApiError 404 for an id no token could carry (empty or too long)."""
    if not user_id or len(user_id) > MAX_USER_ID_CHARS:
        raise ApiError(404, "not_found", "no such user")


class UserHandler(AdminHandler):
    """``GET /api/users/{id}``: the user and their rank; ``DELETE``: remove and ban.

    The user, their score and whether they are banned are read from the store (the
    record of truth); the rank from the pod's rank index (O(log n), where the store could
    only count the players ahead). Just after a write on another pod the two may differ
    for the feed's lag: a banned user is banned, whether or not the index knows yet.
    """

    async def get(self, user_id: str) -> None:
        await self.admin()
        check_user_id(user_id)
        store = self.service.store
        try:
            user = await store.get_user(user_id)
        except StoreError as exc:
            raise failure_refusal(exc, store.retry_after_s) from None
        if user is None:
            raise ApiError(404, "not_found", f"no user {user_id!r}")
        row = user.row
        body: dict[str, Any] = {
            "user_id": row.user_id,
            "username": row.username,
            "score": row.score,
            "rank": None if user.banned else self.service.ranks.rank_of(user_id),
            "banned": user.banned,
        }
        self.write_json(body)

    head = get

    async def delete(self, user_id: str) -> None:
        record = await self.act(user_id, AdminAction.REMOVE)
        self.write_json({"user_id": record.user_id, "banned": True})


class ResetHandler(AdminHandler):
    """``POST /api/users/{id}/reset``: score to 0."""

    async def post(self, user_id: str) -> None:
        record = await self.act(user_id, AdminAction.RESET)
        self.write_json({"user_id": record.user_id, "score": record.score})


class BanHandler(AdminHandler):
    """``DELETE /api/users/{id}/ban``: accept the user's updates again."""

    async def delete(self, user_id: str) -> None:
        record = await self.act(user_id, AdminAction.UNBAN)
        self.write_json({"user_id": record.user_id, "banned": False})
