"""MongoDB's change feed: a change stream on ``users_scores`` (needs a replica set).

The pipeline keeps only the events that can change the board (inserts, replacements,
deletes, updates touching the score, the ban flag or the name, and the events that end a
stream) and projects each to the fields the board needs. ``full_document="updateLookup"``
gives the document as it is when the event is read, which may be newer than the event;
the per-user version ``v`` in it lets the leaderboard drop what it already has.

The store's feed watches the database instead (:meth:`MongoChangeFeed.of_database`,
:func:`database_pipeline`): the same events of ``users_scores``, and every write of
``board_scores`` (issue 14: each changes a player's standings and version), which
:func:`event_of` turns into a :class:`~server.store.changes.BoardChange`. One stream, so
one resume token and one order for both. A board event's record comes without its
idempotency keys and rate-limit log (projected away: readers take its standings).

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
    BoardChange,
    Change,
    ChangeEvent,
    ChangeStream,
    FeedHistoryLost,
    FeedInterrupted,
    FeedInvalidated,
    FeedNotResumable,
    Reload,
)
from server.store.mongo_boards import BOARD_COLLECTION, FEED_FIELDS, board_record

CHANGE_STREAM_HISTORY_LOST: Final = 286
# How long one getMore waits for events; an empty wait still advances the resume token.
MAX_AWAIT_MS: Final = 1000
_BOARD_FIELDS: Final = ("score", "banned", "username")
_ENDINGS: Final = ("invalidate", "drop", "rename", "dropDatabase")
_USER_FIELDS: Final = ("_id", "username", "score", "reached_ms", "v", "banned")
# The users' events that can change the board.
_USERS_MATCH: Final[dict[str, Any]] = {
    "$or": [
        {"operationType": {"$in": ["insert", "replace", "delete", *_ENDINGS]}},
        *(
            {f"updateDescription.updatedFields.{field}": {"$exists": True}}
            for field in _BOARD_FIELDS
        ),
    ]
}
_EVENT_FIELDS: Final = {"operationType": 1, "documentKey": 1, "wallTime": 1}

PIPELINE: Final[list[dict[str, Any]]] = [
    {"$match": _USERS_MATCH},
    {
        "$project": {
            **_EVENT_FIELDS,
            **{f"fullDocument.{field}": 1 for field in _USER_FIELDS},
        }
    },
]


def database_pipeline(users: str) -> list[dict[str, Any]]:
    """The pipeline of a stream on the database: ``PIPELINE``'s events of the ``users``
    collection, every event of ``board_scores``, and the database's own ending events
    (other collections' events are left out). ``ns`` is kept: it tells them apart."""
    return [
        {
            "$match": {
                "$or": [
                    {"operationType": {"$in": ["invalidate", "dropDatabase"]}},
                    {"$and": [{"ns.coll": users}, _USERS_MATCH]},
                    {"ns.coll": BOARD_COLLECTION},
                ]
            }
        },
        {
            "$project": {
                **_EVENT_FIELDS,
                "ns": 1,
                **{f"fullDocument.{field}": 1 for field in (*_USER_FIELDS, *FEED_FIELDS)},
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
    namespace = change.get("ns")
    if isinstance(namespace, Mapping) and namespace.get("coll") == BOARD_COLLECTION:
        return BoardChange(board_record(doc), _written_ms(change))
    row = BoardRow(doc["_id"], doc["username"], doc["score"], doc["reached_ms"], doc["v"])
    return Change(row, bool(doc.get("banned", False)), _written_ms(change))


class MongoChangeFeed:
    """A :class:`~server.store.changes.ChangeFeed` over ``collection.watch()``.

    Args:
        collection: a ``pymongo`` async collection (``users_scores``), or database
            (:meth:`of_database`).
        pipeline: the stream's pipeline.
    """

    def __init__(self, collection: Any, pipeline: list[dict[str, Any]] = PIPELINE) -> None:
        self._collection = collection
        self._pipeline = pipeline

    @classmethod
    def of_database(cls, database: Any, users: str) -> MongoChangeFeed:
        """The feed of the ``users`` collection's and the boards' writes: one stream on
        ``database`` (:func:`database_pipeline`)."""
        return cls(database, database_pipeline(users))

    async def watch(self, resume_token: object | None) -> ChangeStream:
        try:
            stream = await self._collection.watch(
                self._pipeline,
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
