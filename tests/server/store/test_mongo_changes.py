"""MongoDB's change feed without a replica set: the event mapping and the pipeline as data,
and the stream wrapper against a hand-written fake of the driver's change stream.

mongomock has no ``watch()``; a real replica set is only used by the contract suite. What
the driver does is modelled here by fakes: ``collection.watch(...)`` (awaited) returns an
object with ``try_next()``, ``alive``, ``resume_token`` and ``close()``.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import mongomock
import pytest
from pymongo.errors import (
    AutoReconnect,
    CursorNotFound,
    ExecutionTimeout,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from server.domain.board_writes import BoardKey, BoardRecord
from server.domain.boards import Standing
from server.domain.records import BoardRow
from server.domain.standings import BoardStandings, SeasonStanding
from server.store.changes import (
    RESTART_REASONS,
    BoardChange,
    Change,
    ChangeEvent,
    FeedHistoryLost,
    FeedInterrupted,
    FeedInvalidated,
    FeedNotResumable,
    Reload,
)
from server.store.mongo_boards import BOARD_COLLECTION, board_document
from server.store.mongo_changes import (
    MAX_AWAIT_MS,
    PIPELINE,
    MongoChangeFeed,
    _feed_error,
    _MongoStream,
    database_pipeline,
    event_of,
)
from tests.conftest import scaled

pytestmark = pytest.mark.gen_test(timeout=scaled(10))

WALL = datetime.datetime(2024, 5, 6, 7, 8, 9, 123_000, tzinfo=datetime.UTC)
WALL_MS = 1_714_979_289_123


def full_document(user: str = "alice", score: int = 5, v: int = 3, **extra: Any) -> dict[str, Any]:
    """A ``users_scores`` document as the store writes it."""
    return {
        "_id": user,
        "username": user.title(),
        "score": score,
        "v": v,
        "reached_ms": 1000 + v,
        "recent_keys": [["k", score]],
        "accepted_ms": [1000],
        "used_actions": [],
        **extra,
    }


def event(kind: str, token: int = 1, **fields: Any) -> dict[str, Any]:
    """A change-stream document shaped like the server's (``_id`` is the resume token)."""
    body: dict[str, Any] = {"_id": {"_data": f"token-{token}"}, "operationType": kind}
    if kind in {"insert", "update", "replace", "delete"}:
        body["documentKey"] = {"_id": "alice"}
        body["ns"] = {"db": "scoreboard", "coll": "users_scores"}
    body.update(fields)
    return body


def update(token: int, updated: dict[str, Any], **fields: Any) -> dict[str, Any]:
    description = {"updatedFields": updated, "removedFields": [], "truncatedArrays": []}
    return event("update", token, updateDescription=description, **fields)


# --- event_of ---------------------------------------------------------------------------


@pytest.fixture
def local_time_is_not_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with the process's local time zone at UTC+5:30, so a naive ``wallTime`` (a
    driver client without ``tz_aware``) read as local time would be 5.5 hours off."""
    monkeypatch.setenv("TZ", "XYZ-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("kind", ["insert", "update", "replace"])
def test_a_write_with_its_full_document_is_a_change(kind: str) -> None:
    doc = full_document("alice", 42, v=7)
    assert event_of(event(kind, fullDocument=doc, wallTime=WALL)) == Change(
        BoardRow("alice", "Alice", 42, 1007, 7), False, WALL_MS
    )


def test_the_ban_flag_is_carried_and_a_document_without_one_is_not_banned() -> None:
    banned = event_of(event("update", fullDocument=full_document(banned=True)))
    assert isinstance(banned, Change) and banned.banned is True
    unbanned = event_of(event("update", fullDocument=full_document(banned=False)))
    assert isinstance(unbanned, Change) and unbanned.banned is False
    legacy = full_document()  # written before the ban flag existed
    legacy.pop("banned", None)
    old = event_of(event("insert", fullDocument=legacy))
    assert isinstance(old, Change) and old.banned is False


@pytest.mark.parametrize(
    ("wall", "expected"),
    [
        pytest.param(WALL, WALL_MS, id="aware-utc"),
        pytest.param(
            WALL.astimezone(datetime.timezone(datetime.timedelta(hours=2))), WALL_MS, id="aware+2"
        ),
        pytest.param(WALL.replace(tzinfo=None), WALL_MS, id="naive-is-utc"),
        pytest.param(None, None, id="absent"),
        pytest.param("2024-05-06T07:08:09Z", None, id="not-a-datetime"),
    ],
)
def test_written_ms_comes_from_the_wall_time(
    wall: Any, expected: int | None, local_time_is_not_utc: None
) -> None:
    fields: dict[str, Any] = {"fullDocument": full_document()}
    if wall is not None:
        fields["wallTime"] = wall
    change = event_of(event("update", **fields))
    assert isinstance(change, Change)
    assert change.written_ms == expected


def test_a_delete_asks_for_a_reload() -> None:
    assert event_of(event("delete")) == Reload()
    assert event_of(event("delete", wallTime=WALL)) == Reload()


def test_a_write_whose_document_is_already_gone_is_nothing() -> None:
    # updateLookup found no document (deleted since): the delete event follows.
    assert event_of(event("update", fullDocument=None)) is None
    assert event_of(event("replace")) is None


@pytest.mark.parametrize("kind", ["invalidate", "drop", "rename", "dropDatabase"])
def test_events_that_end_the_stream_raise_invalidated(kind: str) -> None:
    with pytest.raises(FeedInvalidated) as raised:
        event_of(event(kind))
    assert raised.value.reason == "invalidated"
    assert isinstance(raised.value, FeedHistoryLost)  # the reader reopens and reloads


# --- _feed_error ------------------------------------------------------------------------


def test_error_286_means_history_lost() -> None:
    error = _feed_error(OperationFailure("resume point no longer in the oplog", code=286))
    assert type(error) is FeedHistoryLost
    assert isinstance(error, FeedHistoryLost) and error.reason == "history_lost"


RESUMABLE = {"errorLabels": ["ResumableChangeStreamError"]}


@pytest.mark.parametrize(
    "exc",
    [
        OperationFailure("interrupted", code=11601, details=RESUMABLE),
        OperationFailure("primary stepped down", code=189, details=RESUMABLE),
        CursorNotFound("cursor id not found", code=43),
        AutoReconnect("primary stepped down"),
        NotPrimaryError("not primary"),
        NetworkTimeout("timed out"),
        ServerSelectionTimeoutError("no primary"),
        ExecutionTimeout("operation exceeded time limit", code=50),  # the client's timeoutMS
    ],
    ids=[
        "labelled-resumable",
        "stepped-down",
        "cursor-not-found",
        "auto-reconnect",
        "not-primary",
        "network-timeout",
        "server-selection",
        "csot-timeout",
    ],
)
def test_resumable_errors_mean_interrupted(exc: PyMongoError) -> None:
    assert type(_feed_error(exc)) is FeedInterrupted


@pytest.mark.parametrize(
    "exc",
    [
        OperationFailure("change stream fatal error", code=280),
        OperationFailure("invalid resume token", code=260),
        OperationFailure("cursor killed", code=237),
        OperationFailure("not authorized", code=13),
        OperationFailure("no code"),
        PyMongoError("anything else"),
    ],
    ids=["fatal-280", "invalid-token-260", "cursor-killed", "unauthorized", "no-code", "other"],
)
def test_errors_resuming_cannot_mend_mean_reload(exc: PyMongoError) -> None:
    """Resuming from the same token would fail the same way forever: start from now and
    reload (the restart metric's reason says which)."""
    error = _feed_error(exc)
    assert type(error) is FeedNotResumable
    assert isinstance(error, FeedHistoryLost) and error.reason == "not_resumable"
    assert error.reason in RESTART_REASONS


# --- the pipeline as data ------------------------------------------------------------------

SAMPLE_EVENTS = {
    "update-bookkeeping-only": update(
        1, {"recent_keys": [["k2", 6]], "accepted_ms": [1000, 2000], "v": 4}
    ),
    "update-used-actions-only": update(2, {"used_actions": [["jti", 9]], "v": 5}),
    "update-version-only": update(3, {"v": 6}),
    "update-score": update(4, {"score": 6, "v": 4, "reached_ms": 2000, "recent_keys": []}),
    "update-banned": update(5, {"banned": True, "score": 0, "v": 7}),
    "update-unbanned": update(6, {"banned": False, "v": 8}),
    "update-username": update(7, {"username": "Alice A.", "v": 9}),
    "insert": event("insert", 8, fullDocument=full_document()),
    "replace": event("replace", 9, fullDocument=full_document()),
    "delete": event("delete", 10),
    "invalidate": event("invalidate", 11),
    "drop": event("drop", 12),
    "rename": event("rename", 13),
    "dropDatabase": event("dropDatabase", 14),
}
FILTERED_OUT = {"update-bookkeeping-only", "update-used-actions-only", "update-version-only"}


def run_pipeline(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    collection: Any = mongomock.MongoClient()["changes"]["events"]
    collection.insert_many([{**doc, "name": name} for name, doc in SAMPLE_EVENTS.items()])
    return list(collection.aggregate(stages))


def test_the_match_stage_keeps_only_events_that_can_change_the_board() -> None:
    assert "$match" in PIPELINE[0]
    kept = {doc["name"] for doc in run_pipeline([PIPELINE[0]])}
    assert kept == set(SAMPLE_EVENTS) - FILTERED_OUT


def test_the_whole_pipeline_keeps_what_event_of_needs() -> None:
    # Keep the sample's name through the projection, to tell the results apart.
    stages = [PIPELINE[0], {"$project": {**PIPELINE[1]["$project"], "name": 1}}]
    by_name = {doc.pop("name"): doc for doc in run_pipeline(stages)}
    for doc in by_name.values():
        assert "updateDescription" not in doc  # projected away: only what the board needs
        assert set(doc.get("fullDocument", {})) <= {
            "_id",
            "username",
            "score",
            "reached_ms",
            "v",
            "banned",
        }
    assert by_name["insert"]["_id"] == SAMPLE_EVENTS["insert"]["_id"]  # the resume token
    assert event_of(by_name["insert"]) == Change(
        BoardRow("alice", "Alice", 5, 1003, 3), False, None
    )
    assert event_of(by_name["delete"]) == Reload()
    with pytest.raises(FeedInvalidated):
        event_of(by_name["invalidate"])


# --- _MongoStream over a fake driver stream ---------------------------------------------------


class FakeDriverStream:
    """The driver's change stream: ``try_next`` gives the scripted steps in turn (a
    document, ``None`` for "nothing yet", or an error to raise); each step may move the
    resume token."""

    def __init__(self, *steps: tuple[Any, object | None]) -> None:
        self.steps: deque[tuple[Any, object | None]] = deque(steps)
        self.resume_token: object | None = None
        self.alive = True
        self.closed = 0
        self.close_error: PyMongoError | None = None

    async def try_next(self) -> dict[str, Any] | None:
        await asyncio.sleep(0)
        if not self.steps:
            return None
        result, token = self.steps.popleft()
        if token is not None:
            self.resume_token = token
        if isinstance(result, BaseException):
            raise result
        return result  # type: ignore[no-any-return]

    async def close(self) -> None:
        self.closed += 1
        if self.close_error is not None:
            raise self.close_error


class FakeCollection:
    """``watch()`` records its arguments and returns the next scripted stream or error."""

    def __init__(self, *opens: FakeDriverStream | PyMongoError) -> None:
        self.opens = deque(opens)
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    async def watch(self, *args: Any, **kwargs: Any) -> FakeDriverStream:
        self.calls.append((args, kwargs))
        item = self.opens.popleft()
        if isinstance(item, PyMongoError):
            raise item
        return item


async def test_watch_asks_for_the_pipeline_lookups_and_the_resume_point() -> None:
    driver = FakeDriverStream()
    collection = FakeCollection(driver, FakeDriverStream())
    feed = MongoChangeFeed(collection)
    stream = await feed.watch({"_data": "t5"})
    assert stream.resume_token == {"_data": "t5"}
    assert collection.calls == [
        (
            (PIPELINE,),
            {
                "full_document": "updateLookup",
                "resume_after": {"_data": "t5"},
                "max_await_time_ms": MAX_AWAIT_MS,
            },
        )
    ]
    fresh = await feed.watch(None)
    assert fresh.resume_token is None
    assert collection.calls[1][1]["resume_after"] is None


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OperationFailure("resume token not found", code=286), FeedHistoryLost),
        (AutoReconnect("no primary"), FeedInterrupted),
        (OperationFailure("invalid resume token", code=260), FeedNotResumable),
    ],
)
async def test_watch_maps_driver_errors(error: PyMongoError, expected: type[Exception]) -> None:
    feed = MongoChangeFeed(FakeCollection(error))
    with pytest.raises(expected) as raised:
        await feed.watch({"_data": "t1"})
    assert type(raised.value) is expected
    assert raised.value.__cause__ is error


async def test_next_batch_maps_each_document_and_follows_the_resume_token() -> None:
    driver = FakeDriverStream(
        (event("insert", 1, fullDocument=full_document(v=1), wallTime=WALL), "t1"),
        (None, "t2"),  # a quiet wait still moves the token (postBatchResumeToken)
        (event("update", 3, fullDocument=None), "t3"),  # looked up after a delete
        (event("delete", 4), "t4"),
        (None, None),  # no new token: keep the last one
    )
    stream = await MongoChangeFeed(FakeCollection(driver)).watch("t0")
    steps: list[tuple[list[ChangeEvent], object | None]] = [([], stream.resume_token)]
    for _ in range(5):
        batch = await stream.next_batch()
        steps.append((batch, stream.resume_token))
    assert steps == [
        ([], "t0"),
        ([Change(BoardRow("alice", "Alice", 5, 1001, 1), False, WALL_MS)], "t1"),
        ([], "t2"),
        ([], "t3"),
        ([Reload()], "t4"),
        ([], "t4"),
    ]


async def test_a_cursor_that_closed_by_itself_is_an_interruption() -> None:
    driver = FakeDriverStream((None, "t1"))
    driver.alive = False
    stream = await MongoChangeFeed(FakeCollection(driver)).watch(None)
    with pytest.raises(FeedInterrupted):
        await stream.next_batch()
    assert stream.resume_token == "t1"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OperationFailure("history lost", code=286), FeedHistoryLost),
        (AutoReconnect("connection reset"), FeedInterrupted),
        (OperationFailure("change stream fatal error", code=280), FeedNotResumable),
    ],
)
async def test_next_batch_maps_driver_errors_and_keeps_the_token(
    error: PyMongoError, expected: type[Exception]
) -> None:
    driver = FakeDriverStream(
        (event("insert", 1, fullDocument=full_document()), "t1"), (error, None)
    )
    stream = await MongoChangeFeed(FakeCollection(driver)).watch(None)
    assert len(await stream.next_batch()) == 1
    with pytest.raises(expected) as raised:
        await stream.next_batch()
    assert type(raised.value) is expected
    assert raised.value.__cause__ is error
    assert stream.resume_token == "t1"  # where a reader resumes after an interruption


async def test_an_invalidate_event_ends_the_stream_as_invalidated() -> None:
    driver = FakeDriverStream((event("invalidate", 9), "t9"))
    stream = await MongoChangeFeed(FakeCollection(driver)).watch("t8")
    with pytest.raises(FeedInvalidated):
        await stream.next_batch()


async def test_close_closes_the_driver_stream_and_swallows_its_errors() -> None:
    driver = FakeDriverStream()
    stream = await MongoChangeFeed(FakeCollection(driver)).watch(None)
    await stream.close()
    assert driver.closed == 1
    driver.close_error = AutoReconnect("already gone")
    await asyncio.wait_for(stream.close(), scaled(1))  # no error
    assert driver.closed == 2


def test_the_stream_wrapper_takes_the_token_it_was_opened_at() -> None:
    assert _MongoStream(FakeDriverStream(), "t7").resume_token == "t7"
    assert _MongoStream(FakeDriverStream(), None).resume_token is None


async def test_a_stream_opened_from_now_resumes_from_the_drivers_first_token() -> None:
    # The driver sets its token from the open's reply (postBatchResumeToken): a stream cut
    # before its first event must resume there, not from "now" again.
    driver = FakeDriverStream((AutoReconnect("cut before any event"), None))
    driver.resume_token = {"_data": "opened-here"}
    stream = await MongoChangeFeed(FakeCollection(driver)).watch(None)
    assert stream.resume_token == {"_data": "opened-here"}
    with pytest.raises(FeedInterrupted):
        await stream.next_batch()
    assert stream.resume_token == {"_data": "opened-here"}


# --- the boards (issue 14): one stream on the database ------------------------------------

RECORD = BoardRecord(
    "kills",
    "alice",
    "Alice",
    4,
    BoardStandings(
        (
            SeasonStanding("daily", "2026-03-03", Standing(2, 1_000)),
            SeasonStanding("all_time", "all", Standing(7, 1_000)),
        ),
        (SeasonStanding("daily", "2026-03-02", Standing(5, 900)),),
    ),
    (BoardKey("k", (2, 7), 4, "fp"),),
    (1_000,),
)


def board_event(kind: str, token: int = 1, **fields: Any) -> dict[str, Any]:
    """A change-stream document of ``board_scores``."""
    body = event(kind, token, **fields)
    if "ns" in body:
        body["ns"] = {"db": "scoreboard", "coll": BOARD_COLLECTION}
        body["documentKey"] = {"_id": "kills\x00alice"}
    return body


def board_full_document(record: BoardRecord = RECORD) -> dict[str, Any]:
    return board_document(record, lambda period, season: len(season))


@pytest.mark.parametrize("kind", ["insert", "update", "replace"])
def test_a_board_write_is_a_board_change_of_its_record(kind: str) -> None:
    change = event_of(board_event(kind, fullDocument=board_full_document(), wallTime=WALL))
    assert change == BoardChange(RECORD, WALL_MS)


def test_a_board_event_without_the_rings_carries_the_standings() -> None:
    # As the database pipeline projects it: no keys, no rate-limit log.
    doc = {k: v for k, v in board_full_document().items() if k not in {"keys", "acc"}}
    change = event_of(board_event("update", fullDocument=doc))
    assert isinstance(change, BoardChange)
    assert change.record.standings == RECORD.standings
    assert (change.record.v, change.record.recent_keys, change.record.accepted_ms) == (4, (), ())


def test_board_events_that_carry_no_record_are_as_the_users() -> None:
    assert event_of(board_event("delete")) == Reload()
    assert event_of(board_event("update", fullDocument=None)) is None
    with pytest.raises(FeedInvalidated):
        event_of(board_event("drop"))


def other(kind: str, token: int, coll: str, **fields: Any) -> dict[str, Any]:
    body = event(kind, token, **fields)
    body["ns"] = {"db": "scoreboard", "coll": coll}
    return body


DATABASE_EVENTS = {
    **{
        name: {**doc, "ns": {"db": "scoreboard", "coll": "users_scores"}}
        if name not in {"invalidate", "dropDatabase"}
        else doc
        for name, doc in SAMPLE_EVENTS.items()
    },
    "board-insert": board_event("insert", 20, fullDocument=board_full_document()),
    "board-update": board_event(
        "update",
        21,
        fullDocument=board_full_document(),
        updateDescription={"updatedFields": {"v": 4, "s.0": {}}, "removedFields": []},
    ),
    "board-rings-only": board_event(
        "update",
        22,
        fullDocument=board_full_document(),
        updateDescription={"updatedFields": {"keys.3": [], "acc.1": 5}, "removedFields": []},
    ),
    "board-drop": other("drop", 23, BOARD_COLLECTION),
    "spent-insert": other("insert", 24, "spent_actions", fullDocument={"_id": "j1", "exp": 9}),
    "other-drop": other("drop", 25, "elsewhere"),
    "other-update": other("update", 26, "elsewhere", fullDocument=full_document()),
}
DATABASE_KEPT = (set(SAMPLE_EVENTS) - FILTERED_OUT) | {
    "board-insert",
    "board-update",
    "board-rings-only",
    "board-drop",
}


def run_database_pipeline(stages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    collection: Any = mongomock.MongoClient()["changes"]["events"]
    collection.insert_many([{**doc, "name": name} for name, doc in DATABASE_EVENTS.items()])
    return {doc.pop("name"): doc for doc in collection.aggregate(stages)}


def test_the_database_pipeline_keeps_the_users_events_and_every_board_write() -> None:
    (match, project) = database_pipeline("users_scores")
    assert set(run_database_pipeline([match])) == DATABASE_KEPT
    by_name = run_database_pipeline([match, {"$project": {**project["$project"], "name": 1}}])
    # The users' events map as they do on the collection's own stream.
    for name in (
        set(SAMPLE_EVENTS) - FILTERED_OUT - {"invalidate", "drop", "rename", "dropDatabase"}
    ):
        assert event_of(by_name[name]) == event_of(SAMPLE_EVENTS[name])
    # A board event keeps its record but not the rings: the oplog holds them, the feed not.
    board = by_name["board-insert"]
    assert set(board["fullDocument"]) == {"_id", "b", "u", "n", "v", "s"}
    assert event_of(board) == BoardChange(
        BoardRecord(RECORD.board, RECORD.user_id, RECORD.username, RECORD.v, RECORD.standings)
    )
    with pytest.raises(FeedInvalidated):
        event_of(by_name["board-drop"])


def test_the_users_collection_pipeline_is_unchanged() -> None:
    # The database pipeline does not touch the collection's (the store's own before).
    match, project = database_pipeline("users_scores")
    assert PIPELINE[0] == {"$match": match["$match"]["$or"][1]["$and"][1]}
    assert set(PIPELINE[1]["$project"]) < set(project["$project"])


async def test_the_store_feed_watches_the_database_with_its_pipeline() -> None:
    database = FakeCollection(FakeDriverStream())  # a database's watch() is the same call
    feed = MongoChangeFeed.of_database(database, "users_scores")
    stream = await feed.watch({"_data": "t1"})
    assert stream.resume_token == {"_data": "t1"}
    assert database.calls == [
        (
            (database_pipeline("users_scores"),),
            {
                "full_document": "updateLookup",
                "resume_after": {"_data": "t1"},
                "max_await_time_ms": MAX_AWAIT_MS,
            },
        )
    ]
