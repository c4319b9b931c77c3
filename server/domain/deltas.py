"""The live stream's pure logic: deltas between two boards, messages, history and resume.

Every publish of the leaderboard is one *version* of the stream. The messages for it are
encoded here once, as JSON text, for both formats:

- seed format (the default): ``update`` with the whole top N;
- delta format: ``delta`` with only the rows that changed (a row whose rank, name or
  score differs) and the users who left the top N.

A bounded :class:`StreamHistory` keeps the last deltas so a reconnecting client can be
replayed what it missed (:func:`plan_resume`). No I/O here: tested as data.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Final

from server.domain.topk import Row

SNAPSHOT: Final = "snapshot"
UPDATE: Final = "update"
DELTA: Final = "delta"
RESUMED: Final = "resumed"


def encode(obj: object) -> str:
    """Compact JSON, UTF-8 names kept as they are."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _row(user_id: str, username: str, score: int) -> dict[str, object]:
    return {"user_id": user_id, "username": username, "score": score}


def rows_json(rows: tuple[Row, ...]) -> list[dict[str, object]]:
    """Rows as clients see them: ``[{"user_id", "username", "score"}, ...]``."""
    return [_row(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class Delta:
    """What turns one board into the next.

    ``changed`` holds ``(rank, row)`` for every row of the new board whose rank (1-based),
    username or score differs from the old board; ``removed`` the users no longer in it.
    """

    changed: tuple[tuple[int, Row], ...]
    removed: tuple[str, ...]


def diff_rows(old: tuple[Row, ...], new: tuple[Row, ...]) -> Delta:
    """The :class:`Delta` from ``old`` to ``new`` (both in rank order)."""
    old_at = {row[0]: (rank, row) for rank, row in enumerate(old, start=1)}
    changed = tuple(
        (rank, row) for rank, row in enumerate(new, start=1) if old_at.get(row[0]) != (rank, row)
    )
    kept = {row[0] for row in new}
    removed = tuple(row[0] for row in old if row[0] not in kept)
    return Delta(changed, removed)


def apply_delta(board: tuple[Row, ...], delta: Delta) -> tuple[Row, ...]:
    """What a client does with a delta (the reference for docs/protocol.md's JavaScript)."""
    gone = set(delta.removed) | {row[0] for _, row in delta.changed}
    by_rank = {rank: row for rank, row in enumerate(board, start=1) if row[0] not in gone}
    by_rank.update(delta.changed)
    return tuple(by_rank[rank] for rank in sorted(by_rank))


def snapshot_message(epoch: str, version: int, rows: tuple[Row, ...], reason: str) -> str:
    """The full board; ``reason`` says why a snapshot rather than a replay was sent."""
    return encode(
        {
            "event": SNAPSHOT,
            "epoch": epoch,
            "version": version,
            "reason": reason,
            "top_scores": rows_json(rows),
        }
    )


def update_message(epoch: str, version: int, rows: tuple[Row, ...]) -> str:
    """The seed format's message: the whole new top N."""
    return encode(
        {"event": UPDATE, "epoch": epoch, "version": version, "top_scores": rows_json(rows)}
    )


def delta_message(epoch: str, version: int, delta: Delta) -> str:
    """The delta format's message: changed rows with their rank, and removed user ids."""
    changed = [{"rank": rank, **_row(*row)} for rank, row in delta.changed]
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


class StreamHistory:
    """The last ``size`` delta messages, by version, oldest first."""

    def __init__(self, size: int) -> None:
        self._entries: deque[tuple[int, str]] = deque(maxlen=size)

    def append(self, version: int, message: str) -> None:
        """Record the delta message of ``version`` (one more than the last recorded)."""
        if self._entries and version != self._entries[-1][0] + 1:
            self._entries.clear()  # a gap: older entries can no longer be replayed in order
        self._entries.append((version, message))

    def since(self, version: int) -> list[str] | None:
        """The messages after ``version``, in order; ``None`` if some are no longer kept."""
        if not self._entries:
            return None
        first = self._entries[0][0]
        if version < first - 1:
            return None
        return [message for v, message in self._entries if v > version]


@dataclass(frozen=True, slots=True)
class Since:
    """A client's last position in the stream, from ``?since=EPOCH:VERSION``."""

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
    since: Since | None, epoch: str, version: int, history: StreamHistory
) -> Replay | Resync:
    """Decide what a (re)connecting delta client gets first.

    Reasons for a snapshot: ``new`` (no ``since``), ``epoch_changed`` (the stream restarted:
    another process, or history lost), ``unknown_version`` (a version this stream has not
    reached), ``history_expired`` (older than the history keeps).
    """
    if since is None:
        return Resync("new")
    if since.epoch != epoch:
        return Resync("epoch_changed")
    if since.version > version:
        return Resync("unknown_version")
    if since.version == version:
        return Replay([])
    missed = history.since(since.version)
    if missed is None or len(missed) != version - since.version:
        return Resync("history_expired")
    return Replay(missed)
