"""Admin response to cheating: look a user up, reset, remove from the board, unban.

Every route needs a bearer token whose ``scope`` claim holds ``scores:admin``. The changes
go through the user's actor, so they are serialized with that user's increments, and the
live board follows them (a removed member or a reset score leaves the top N; the
leaderboard refills from the store).
"""

from __future__ import annotations

import logging
from typing import Any, Final, cast

from actors.base import ActorStopped, MailboxFull
from actors.user import AdminCommand
from handlers.base import ApiHandler
from server.audit import audit_log
from server.errors import ApiError
from server.store.admin import AdminAction
from server.store.port import StoreError
from server.store.records import UserRecord

ADMIN_SCOPE: Final = "scores:admin"
MAX_USER_ID_CHARS: Final = 128

log = logging.getLogger(__name__)


class AdminHandler(ApiHandler):
    """Checks the admin scope and runs admin actions through the user's actor."""

    def admin(self) -> str:
        """The id of the admin calling.

        Raises:
            ApiError: 401 (bad or missing token), 403 ``forbidden`` (no admin scope).
        """
        identity = self.authenticate(self.request.headers.get("Authorization"))
        if ADMIN_SCOPE not in identity.scopes:
            raise ApiError(403, "forbidden", f"this needs a token with the {ADMIN_SCOPE} scope")
        return identity.user_id

    async def act(self, user_id: str, action: AdminAction) -> UserRecord:
        """Apply ``action`` to ``user_id`` and write the audit line.

        Raises:
            ApiError: 401/403 (caller), 404 ``not_found``, 500/503 (store, shutdown).
        """
        admin = self.admin()
        check_user_id(user_id)
        command = AdminCommand(action, self.service.clock_ms())
        outcome, record = "error", None
        try:
            record = cast(
                UserRecord | None, await self.service.users.actor_for(user_id).ask(command)
            )
            outcome = "applied" if record is not None else "not_found"
        except MailboxFull:
            outcome = "busy"
            raise ApiError(
                503, "busy", "too many requests queued for this user", {"Retry-After": "1"}
            ) from None
        except ActorStopped:
            outcome = "shutting_down"
            raise ApiError(
                503, "shutting_down", "the server is shutting down", {"Retry-After": "1"}
            ) from None
        except StoreError:
            outcome = "database_error"
            raise ApiError(500, "database_error", "the score store failed; retry") from None
        finally:
            audit_log.info(
                "admin",
                extra={
                    "request_id": self.request_id,
                    "client": self.client,
                    "admin": admin,
                    "action": action.value,
                    "user_id": user_id,
                    "outcome": outcome,
                    "new_score": record.score if record is not None else None,
                },
            )
        if record is None:
            raise ApiError(404, "not_found", f"no user {user_id!r}")
        return record


def check_user_id(user_id: str) -> None:
    """Raises ApiError 404 for an id no token could carry (empty or too long)."""
    if not user_id or len(user_id) > MAX_USER_ID_CHARS:
        raise ApiError(404, "not_found", "no such user")


class UserHandler(AdminHandler):
    """``GET /api/users/{id}``: the user and their rank; ``DELETE``: remove and ban."""

    async def get(self, user_id: str) -> None:
        self.admin()
        check_user_id(user_id)
        store = self.service.store
        try:
            row = await store.get_score(user_id)
            rank = await store.rank(user_id) if row is not None else None
        except StoreError:
            raise ApiError(500, "database_error", "the score store failed; retry") from None
        if row is None:
            raise ApiError(404, "not_found", f"no user {user_id!r}")
        body: dict[str, Any] = {
            "user_id": row.user_id,
            "username": row.username,
            "score": row.score,
            "rank": rank,
            "banned": rank is None,
        }
        self.write_json(body)

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
