"""What an admin's response to cheating does to a user's record. Pure: data in, data out.

Each change bumps the version ``v`` like any write, so every reader (the leaderboard,
other pods) sees it as newer than what it had.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from enum import Enum

from server.domain.records import UserRecord

AdminChange = Callable[[UserRecord], UserRecord]


class AdminAction(Enum):
    """The admin actions on one user."""

    RESET = "reset"  # score to 0
    REMOVE = "remove"  # score to 0, off the board, updates refused until unbanned
    UNBAN = "unban"  # updates accepted again (from score 0)

    def change(self, now_ms: int) -> AdminChange:
        """The record change this action makes at ``now_ms``."""

        def apply(record: UserRecord) -> UserRecord:
            banned = {AdminAction.REMOVE: True, AdminAction.UNBAN: False}.get(self, record.banned)
            score = record.score if self is AdminAction.UNBAN else 0
            return dataclasses.replace(
                record,
                score=score,
                banned=banned,
                v=record.v + 1,
                reached_ms=now_ms if score != record.score else record.reached_ms,
            )

        return apply
