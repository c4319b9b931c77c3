"""MongoDB's change feed: a change stream on ``users_scores`` (needs a replica set).

The pipeline keeps only the events that can change the board (inserts, replacements,
deletes, updates touching the score, the ban flag or the name, and the events that end a
stream) and projects each to the fields the board needs. ``full_document="updateLookup"``
gives the document as it is when the event is read, which may be newer than the event;
the per-user version ``v`` in it lets the leaderboard drop what it already has.

Only the real driver has ``watch()`` (mongomock does not): the tests drive this module
against a real replica set when ``SCOREBOARD_TEST_MONGODB_URI`` is set, and test
:func:`event_of` and the pipeline as data otherwise.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Mapping
from typing import Any, Final

from pymongo.errors import ConnectionFailure, CursorNotFound, OperationFailure, PyMongoError

from server.domain.records import BoardRow
from server.store.changes import (
    Change,
    ChangeEvent,
    ChangeStream,
    FeedHistoryLost,
    FeedInterrupted,
    FeedInvalidated,
    FeedNotResumable,
    Reload,
)

CHANGE_STREAM_HISTORY_LOST: Final = 286
# How long one getMore waits for events; an empty wait still advances the resume token.
MAX_AWAIT_MS: Final = 1000
_BOARD_FIELDS: Final = ("score", "banned", "username")
_ENDINGS: Final = ("invalidate", "drop", "rename", "dropDatabase")

PIPELINE: Final[list[dict[str, Any]]] = [
    {
        "$match": {
            "$or": [
                {"operationType": {"$in": ["insert", "replace", "delete", *_ENDINGS]}},
                *(
                    {f"updateDescription.updatedFields.{field}": {"$exists": True}}
                    for field in _BOARD_FIELDS
                ),
            ]
        }
    },
    {
        "$project": {
            "operationType": 1,
            "documentKey": 1,
            "wallTime": 1,
            **{
                f"fullDocument.{field}": 1
                for field in ("_id", "username", "score", "reached_ms", "v", "banned")
            },
        }
    },
]


def _written_ms(change: Mapping[str, Any]) -> int | None:
    wall = change.get("wallTime")  # MongoDB 6.0+
    if isinstance(wall, datetime.datetime):
        if wall.tzinfo is None:
            wall = wall.replace(tzinfo=datetime.UTC)
        return int(wall.timestamp() * 1000)
    return None


def event_of(change: Mapping[str, Any]) -> ChangeEvent | None:
    """The board event of one change-stream document; ``None``: nothing for the board.

    Raises:
        FeedInvalidated: the event ends the stream (collection dropped or renamed).
    """
    kind = change.get("operationType")
    if kind in _ENDINGS:
        raise FeedInvalidated(f"the change stream ended: {kind}")
    if kind == "delete":
        return Reload()
    doc = change.get("fullDocument")
    if not isinstance(doc, Mapping):
        # Looked up after the document was deleted: the delete event follows.
        return None
    row = BoardRow(doc["_id"], doc["username"], doc["score"], doc["reached_ms"], doc["v"])
    return Change(row, bool(doc.get("banned", False)), _written_ms(change))


class MongoChangeFeed:
    """A :class:`~server.store.changes.ChangeFeed` over ``collection.watch()``.

    Args:
        collection: a ``pymongo`` async collection (``users_scores``).
    """

    def __init__(self, collection: Any) -> None:
        self._collection = collection

    async def watch(self, resume_token: object | None) -> ChangeStream:
        try:
            stream = await self._collection.watch(
                PIPELINE,
                full_document="updateLookup",
                resume_after=resume_token,
                max_await_time_ms=MAX_AWAIT_MS,
            )
        except PyMongoError as exc:
            raise _feed_error(exc) from exc
        return _MongoStream(stream, resume_token)


def resumable(exc: PyMongoError) -> bool:
    """Whether a change stream that raised ``exc`` can go on from its resume token.

    The change-streams specification's rule, as PyMongo applies it (its private
    ``change_stream_shared._resumable``): a network error or a server that stepped down
    (``ConnectionFailure``: ``AutoReconnect``, ``NotPrimaryError``, ``NetworkTimeout``),
    a cursor the server no longer knows (``CursorNotFound``), and any server error
    labelled ``ResumableChangeStreamError``. And a timeout (the client's ``timeoutMS``):
    the driver keeps such a stream open to resume it.
    """
    if isinstance(exc, ConnectionFailure | CursorNotFound) or exc.timeout:
        return True
    return isinstance(exc, OperationFailure) and exc.has_error_label("ResumableChangeStreamError")


def _feed_error(exc: PyMongoError) -> Exception:
    """The feed error for ``exc``: resume (:class:`FeedInterrupted`) only when resuming
    can work; otherwise reopen from now and reload, or the same token fails forever."""
    if isinstance(exc, OperationFailure) and exc.code == CHANGE_STREAM_HISTORY_LOST:
        return FeedHistoryLost(f"change stream history lost: {exc}")
    if resumable(exc):
        return FeedInterrupted(f"change stream error: {exc}")
    return FeedNotResumable(f"change stream error, not resumable: {exc}")


class _MongoStream:
    def __init__(self, stream: Any, resume_token: object | None) -> None:
        self._stream = stream
        self._token = resume_token

    @property
    def resume_token(self) -> object | None:
        # The driver's token is set from the first reply (postBatchResumeToken) on, so a
        # stream cut before its first event still resumes from where it opened.
        token = self._stream.resume_token
        return token if token is not None else self._token

    async def next_batch(self) -> list[ChangeEvent]:
        try:
            # The driver resumes once by itself on a resumable error; what it raises
            # after that is an outage, a lost history or a non-resumable error. try_next
            # returns a buffered change at once, and waits at most MAX_AWAIT_MS for a
            # new batch.
            change = await self._stream.try_next()
        except PyMongoError as exc:
            raise _feed_error(exc) from exc
        if change is None:
            if not self._stream.alive:
                raise FeedInterrupted("the change stream cursor closed")
            return []
        event = event_of(change)
        return [event] if event is not None else []

    async def close(self) -> None:
        with contextlib.suppress(PyMongoError):
            await self._stream.close()
