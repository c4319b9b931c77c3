"""The live board's pure logic: deltas between two boards, messages, history and resume.

Every publish of the leaderboard is one *version* of the board. The messages for it are
encoded here once, as JSON text, for both formats:

- seed format (the default): ``update`` with the whole top N;
- delta format: ``delta`` with only the rows that changed (a row whose rank, name or
  score differs) and the users who left the top N.

A bounded :class:`DeltaHistory` keeps the last deltas so a reconnecting client can be
replayed what it missed (:func:`plan_resume`). No I/O here: tested as data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from server.domain.records import BoardRow

SNAPSHOT: Final = "snapshot"
UPDATE: Final = "update"
DELTA: Final = "delta"
RESUMED: Final = "resumed"
# Why a snapshot is sent: the reasons of plan_resume, then a lagging client's resync.
NEW: Final = "new"
EPOCH_CHANGED: Final = "epoch_changed"
UNKNOWN_VERSION: Final = "unknown_version"
HISTORY_EXPIRED: Final = "history_expired"
RESYNC: Final = "resync"
# A board route's period began a new season: the board starts empty (issue 14).
SEASON_STARTED: Final = "season_started"
SNAPSHOT_REASONS: Final = (
    NEW,
    EPOCH_CHANGED,
    UNKNOWN_VERSION,
    HISTORY_EXPIRED,
    RESYNC,
    SEASON_STARTED,
)


def encode(obj: object) -> str:
    """Compact JSON, UTF-8 names kept as they are."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _shown(row: BoardRow) -> dict[str, object]:
    return {"user_id": row.user_id, "username": row.username, "score": row.score}


def rows_json(rows: tuple[BoardRow, ...]) -> list[dict[str, object]]:
    """Rows as clients see them: ``[{"user_id", "username", "score"}, ...]``."""
    return [_shown(row) for row in rows]


def board_json(rows: tuple[BoardRow, ...]) -> str:
    """:func:`rows_json` encoded: the ``top_scores`` of every message that carries the
    whole board, encoded once for all of them."""
    return encode(rows_json(rows))


def looks_same(a: tuple[BoardRow, ...], b: tuple[BoardRow, ...]) -> bool:
    """Whether two boards look the same to clients: the same users in the same order,
    with the same names and scores (``reached_ms`` and ``v`` are not shown)."""
    if a == b:  # the usual case: the same row objects
        return True
    return len(a) == len(b) and all(
        x.user_id == y.user_id and x.score == y.score and x.username == y.username
        for x, y in zip(a, b, strict=True)
    )


@dataclass(frozen=True, slots=True)
class Delta:
    """What turns one board into the next.

    ``changed`` holds ``(rank, row)`` for every row of the new board whose rank (1-based),
    username or score differs from the old board; ``removed`` the users no longer in it.
    """

    changed: tuple[tuple[int, BoardRow], ...]
    removed: tuple[str, ...]


def diff_rows(old: tuple[BoardRow, ...], new: tuple[BoardRow, ...]) -> Delta:
    """The :class:`Delta` from ``old`` to ``new`` (both in rank order)."""
    old_at = {row.user_id: (rank, row.username, row.score) for rank, row in enumerate(old, 1)}
    changed = tuple(
        (rank, row)
        for rank, row in enumerate(new, start=1)
        if old_at.get(row.user_id) != (rank, row.username, row.score)
    )
    kept = {row.user_id for row in new}
    removed = tuple(row.user_id for row in old if row.user_id not in kept)
    return Delta(changed, removed)


def apply_delta(board: tuple[BoardRow, ...], delta: Delta) -> tuple[BoardRow, ...]:
    """What a client does with a delta (the reference for docs/protocol.md's JavaScript)."""
    gone = set(delta.removed) | {row.user_id for _, row in delta.changed}
    by_rank = {rank: row for rank, row in enumerate(board, start=1) if row.user_id not in gone}
    by_rank.update(delta.changed)
    return tuple(by_rank[rank] for rank in sorted(by_rank))


# The messages that carry the whole board are put together around its encoded rows
# (board_json), so that a publication encodes the rows once for the update and every
# snapshot; the text is the same as encode() of the message as a dict (tested).


def snapshot_message(epoch: str, version: int, board: str, reason: str) -> str:
    """The full board (``board``: its :func:`board_json`); ``reason`` says why a snapshot
    rather than a replay was sent."""
    return (
        f'{{"event":"{SNAPSHOT}","epoch":{encode(epoch)},"version":{version:d},'
        f'"reason":{encode(reason)},"top_scores":{board}}}'
    )


def update_message(epoch: str, version: int, board: str) -> str:
    """The seed format's message: the whole new top N (``board``: its :func:`board_json`)."""
    return (
        f'{{"event":"{UPDATE}","epoch":{encode(epoch)},"version":{version:d},"top_scores":{board}}}'
    )


def top_scores_body(board: str) -> bytes:
    """``GET /api/top-scores``'s body, ``{"top_scores": [...]}`` (``board``: its
    :func:`board_json`)."""
    return f'{{"top_scores":{board}}}'.encode()


def delta_message(epoch: str, version: int, delta: Delta) -> str:
    """The delta format's message: changed rows with their rank, and removed user ids."""
    changed = [{"rank": rank, **_shown(row)} for rank, row in delta.changed]
    return encode(
        {
            "event": DELTA,
            "epoch": epoch,
            "version": version,
            "changed": changed,
            "removed": list(delta.removed),
        }
    )


def resumed_message(epoch: str, since: int, missed: int) -> str:
    """Says a resume worked: ``missed`` deltas follow, versions ``since + 1`` onwards."""
    return encode({"event": RESUMED, "epoch": epoch, "version": since, "missed": missed})


@dataclass(frozen=True, slots=True)
class DeltaHistory:
    """The last ``size`` delta messages, by version, oldest first. A value: appending
    gives a new history (a copy of at most ``size`` references), this one never changes.
    """

    size: int
    deltas: tuple[tuple[int, str], ...] = ()

    def appended(self, version: int, message: str) -> DeltaHistory:
        """This history with the delta message of ``version`` (one more than the last)."""
        deltas = self.deltas
        if deltas and version != deltas[-1][0] + 1:
            deltas = ()  # a gap: older deltas can no longer be replayed in order
        elif len(deltas) >= self.size:
            deltas = deltas[len(deltas) - self.size + 1 :]
        return DeltaHistory(self.size, (*deltas, (version, message)))

    def since(self, version: int) -> list[str] | None:
        """The messages after ``version``, in order; ``None`` if some are no longer kept."""
        deltas = self.deltas
        if not deltas:
            return None
        if version < deltas[0][0] - 1:
            return None
        return [message for v, message in deltas if v > version]


@dataclass(frozen=True, slots=True)
class Since:
    """A client's last position in the board's versions, from ``?since=EPOCH:VERSION``."""

    epoch: str
    version: int


def parse_since(raw: str) -> Since:
    """Parse ``EPOCH:VERSION``.

    Raises:
        ValueError: not of that form, or the version is negative.
    """
    epoch, sep, version = raw.rpartition(":")
    if not sep or not epoch or not (version.isascii() and version.isdigit()) or len(raw) > 128:
        raise ValueError("since must be EPOCH:VERSION, as the last message said")
    return Since(epoch, int(version))


@dataclass(frozen=True, slots=True)
class Replay:
    """Resume: send :func:`resumed_message`, then ``messages`` in order."""

    messages: list[str]


@dataclass(frozen=True, slots=True)
class Resync:
    """No resume: send a snapshot, with ``reason``."""

    reason: str


def plan_resume(
    since: Since | None, epoch: str, version: int, history: DeltaHistory
) -> Replay | Resync:
    """Decide what a (re)connecting delta client gets first.

    Reasons for a snapshot: ``new`` (no ``since``), ``epoch_changed`` (the versions
    restarted: another process, or history lost), ``unknown_version`` (a version this
    board has not reached), ``history_expired`` (older than the history keeps).
    """
    if since is None:
        return Resync(NEW)
    if since.epoch != epoch:
        return Resync(EPOCH_CHANGED)
    if since.version > version:
        return Resync(UNKNOWN_VERSION)
    if since.version == version:
        return Replay([])
    missed = history.since(since.version)
    if missed is None or len(missed) != version - since.version:
        return Resync(HISTORY_EXPIRED)
    return Replay(missed)
