"""The board as its readers see it: one immutable value per state, replaced, never changed.

The leaderboard actor is the only writer of the board; everyone else (the WebSocket
fan-out, the top-scores reads, readiness, the user actors deciding whether to tell it of
a change) reads the :class:`BoardView` it published last, as a value. A reader that holds
a view keeps a consistent board however the actor moves on. Building the next view is
pure (:meth:`BoardView.loaded_with`, :meth:`BoardView.changed`, :meth:`BoardView.published`),
tested as data. What readers send is encoded here, once per view, never per read:

- per publication (a new ``version``): the seed ``update`` and the ``delta`` message, a
  snapshot per reason (the rows encoded once for all of them), the history of deltas;
- per change of the top N: ``GET /api/top-scores``'s body and ETag, encoded at the first
  read of that top N (most of them are never read; encoding each one would add to every
  update that changes the board).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from server.domain.deltas import (
    SNAPSHOT_REASONS,
    DeltaHistory,
    board_json,
    delta_message,
    diff_rows,
    snapshot_message,
    top_scores_body,
    update_message,
)
from server.domain.records import BoardRow
from server.domain.topk import ADMITS_ALL, Admission

__all__ = ["BoardView", "Publication", "TopScores"]


@dataclass(frozen=True, slots=True)
class Publication:
    """One version of the board, its messages encoded once for every subscriber."""

    epoch: str
    version: int
    rows: tuple[BoardRow, ...]
    update: str  # seed format: the whole top N
    delta: str  # delta format: changed rows and removed users


class TopScores:
    """A top N and ``GET /api/top-scores``'s answer for it: the body
    ``{"top_scores": [...]}`` and its ETag, encoded at the first read, then the same
    objects for every read (they follow from ``rows`` alone, so the value never changes).
    """

    __slots__ = ("_answer", "_rows")

    def __init__(self, rows: tuple[BoardRow, ...]) -> None:
        self._rows = rows
        self._answer: tuple[bytes, str] | None = None

    @property
    def rows(self) -> tuple[BoardRow, ...]:
        return self._rows

    @property
    def answer(self) -> tuple[bytes, str]:
        """The body and its ETag (a strong one: the body's SHA-1, quoted)."""
        answer = self._answer
        if answer is None:
            body = top_scores_body(board_json(self._rows))
            etag = f'"{hashlib.sha1(body, usedforsecurity=False).hexdigest()}"'
            answer = self._answer = (body, etag)
        return answer

    @property
    def body(self) -> bytes:
        return self.answer[0]

    @property
    def etag(self) -> str:
        return self.answer[1]


def _snapshots(epoch: str, version: int, board: str) -> Mapping[str, str]:
    """The snapshot of every reason, around one encoding of the rows (``board``)."""
    return MappingProxyType(
        {reason: snapshot_message(epoch, version, board, reason) for reason in SNAPSHOT_REASONS}
    )


@dataclass(frozen=True, slots=True)
class BoardView:
    """The board as of one moment. Frozen: the actor publishes a new view, readers keep
    theirs as long as they like.

    Attributes:
        loaded: the top K was read from the store (before: every reader answers "not
            ready", and every change is wanted).
        epoch: this process's run of versions (random per process).
        version: the last publication; ``rows`` is its top N.
        history: the deltas up to ``version``, for resuming clients.
        top_scores: the top N now and its encoded answer; ahead of ``rows`` while a
            publication waits for the broadcast interval.
        admission: which score changes could change the board (:meth:`wants`).
    """

    loaded: bool
    epoch: str
    version: int
    rows: tuple[BoardRow, ...]
    history: DeltaHistory
    snapshots: Mapping[str, str]
    top_scores: TopScores
    admission: Admission

    @classmethod
    def empty(cls, epoch: str, history_size: int) -> BoardView:
        """The view before the board is loaded: version 0, no rows, every change wanted."""
        return cls(
            loaded=False,
            epoch=epoch,
            version=0,
            rows=(),
            history=DeltaHistory(history_size),
            snapshots=_snapshots(epoch, 0, board_json(())),
            top_scores=TopScores(()),
            admission=ADMITS_ALL,
        )

    def wants(self, row: BoardRow) -> bool:
        """Whether the board wants to be told of ``row`` (a user's new score): it could
        change the board. A user actor skips telling it of users who stay outside it,
        most users in a big game. Answered as of this view: a change queued behind it
        (or a refill) reads the store, where the new score already is."""
        return self.admission.admits(row)

    def snapshot(self, reason: str) -> str:
        """The snapshot message of ``version``, saying ``reason`` (one of
        :data:`server.domain.deltas.SNAPSHOT_REASONS`)."""
        return self.snapshots[reason]

    def loaded_with(self, rows: tuple[BoardRow, ...], admission: Admission) -> BoardView:
        """The view once the top K is read: ``rows`` are the top N of this version."""
        return BoardView(
            loaded=True,
            epoch=self.epoch,
            version=self.version,
            rows=rows,
            history=self.history,
            snapshots=_snapshots(self.epoch, self.version, board_json(rows)),
            top_scores=TopScores(rows),
            admission=admission,
        )

    def changed(self, top_scores: TopScores, admission: Admission) -> BoardView:
        """The view after a change of the cache (not yet published)."""
        return BoardView(
            loaded=self.loaded,
            epoch=self.epoch,
            version=self.version,
            rows=self.rows,
            history=self.history,
            snapshots=self.snapshots,
            top_scores=top_scores,
            admission=admission,
        )

    def published(self) -> tuple[Publication, BoardView]:
        """Publish the top N now (``top_scores.rows``) as the next version: its
        publication and the view after it."""
        epoch, version, rows = self.epoch, self.version + 1, self.top_scores.rows
        delta = delta_message(epoch, version, diff_rows(self.rows, rows))
        board = board_json(rows)
        publication = Publication(
            epoch=epoch,
            version=version,
            rows=rows,
            update=update_message(epoch, version, board),
            delta=delta,
        )
        view = BoardView(
            loaded=self.loaded,
            epoch=epoch,
            version=version,
            rows=rows,
            history=self.history.appended(version, delta),
            snapshots=_snapshots(epoch, version, board),
            top_scores=self.top_scores,
            admission=self.admission,
        )
        return publication, view
