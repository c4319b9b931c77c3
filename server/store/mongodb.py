"""The MongoDB adapter, on PyMongo's native async API (``pymongo.AsyncMongoClient``).

Each increment is one compare-and-set on the user's document: read it (or take the record
the user's actor last wrote, which saves the read), run the pure
:func:`server.domain.increments.decide_all`, then write the new state only if the
document's version ``v`` is still the one decided on (or insert it if it did not exist).
Another pod that wrote in between makes the write match nothing, and the increment is
decided again on the fresh document. Within a pod the user's actor already serializes
writes, so a retry only happens when another pod wrote the same user. The write sets only
the fields and log slots that changed (:mod:`server.store.mongo_documents`).

Every call has a deadline (``timeout_s``, the client's ``timeoutMS``), and its driver
errors are told apart by :func:`server.store.mongo_errors.store_error`: nothing applied
(``StoreUnavailable``), outcome unknown (``StoreTimeout``), anything else (``StoreError``).

The adapter keeps to the calls that PyMongo's async API and mongomock-motor (the test
double) share: ``find_one``, ``insert_one``, ``update_one``, ``find().sort().limit()`` with
``to_list``, ``create_index`` and the ``ping`` command.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import pymongo
from bson.errors import InvalidDocument
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError, PyMongoError

from server.domain.admin import AdminChange
from server.domain.board_writes import (
    BoardBanned,
    BoardCommand,
    BoardDecision,
    BoardRecord,
    BoardRules,
    decide_board_all,
)
from server.domain.increments import IncrementPolicy, decide_all
from server.domain.records import (
    BoardRow,
    Decision,
    IncrementCommand,
    SpentAction,
    StoredUser,
    UserRecord,
)
from server.store import mongo_boards as boards
from server.store.changes import BoardChange, Change, ChangeFeed, LocalChangeFeed
from server.store.mongo_changes import MongoChangeFeed
from server.store.mongo_documents import to_document, to_record, update_of
from server.store.mongo_errors import store_error
from server.store.port import StoreError, StoreTimeout, StoreUnavailable

T = TypeVar("T")
COLLECTION: Final = "users_scores"
_MAX_ATTEMPTS: Final = 16
_BACKOFF_S: Final = 0.002  # first retry waits up to this; doubles per attempt, jittered
PING_TIMEOUT_S: Final = 2.0
_RANK_SORT: Final = [("score", DESCENDING), ("reached_ms", ASCENDING), ("_id", ASCENDING)]
_RANK_FIELDS: Final = {"username": 1, "score": 1, "reached_ms": 1, "v": 1}
_USER_FIELDS: Final = {**_RANK_FIELDS, "banned": 1}
# What a store call can raise besides the driver's errors: a value BSON cannot encode.
_ENCODING_ERRORS: Final = (OverflowError, InvalidDocument)


def _to_row(doc: dict[str, Any]) -> BoardRow:
    return BoardRow(doc["_id"], doc["username"], doc["score"], doc["reached_ms"], doc["v"])


class MongoStore:
    """The MongoDB adapter of :class:`server.store.port.ScoreStore`.

    Args:
        database: an async database object (``AsyncMongoClient(...)[name]``, or
            mongomock-motor's in tests). Writes use the client's write concern: the
            factory creates the client with ``w="majority"``.
        policy: the increment limits.
        client: the client to close on :meth:`close`, when this store owns it.
        feed: an in-process feed to publish this store's writes to, in place of the
            change stream (mongomock has no ``watch()``); pass one feed to every store on
            the same database, as the tests do.
        timeout_s: the deadline of each store call as a whole (a compare-and-set's reads,
            writes and retries together), applied with ``pymongo.timeout``; ``None``: each
            operation has the client's own ``timeoutMS``, if any.
    """

    def __init__(
        self,
        database: Any,
        policy: IncrementPolicy,
        *,
        client: Any = None,
        feed: LocalChangeFeed | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self._db = database
        self._users = database[COLLECTION]
        self._boards = database[boards.BOARD_COLLECTION]
        self._spent = database[boards.SPENT_COLLECTION]
        self._local_feed = feed
        self.changes: ChangeFeed = (
            feed if feed is not None else MongoChangeFeed.of_database(database, COLLECTION)
        )
        self._policy = policy
        self._client = client
        self._timeout_s = timeout_s
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the MongoDB store is closed")

    async def open(self) -> None:
        """Create the ranking index and the boards' indexes (idempotent).

        Raises:
            StoreUnavailable: MongoDB cannot be reached (or has no primary) now: try again.
            StoreError: it answered with an error (e.g. not authorized).
        """
        collection = COLLECTION
        try:
            with pymongo.timeout(self._timeout_s):
                await self._users.create_index(_RANK_SORT, name="rank")
                for collection, keys, name in boards.BOARD_INDEXES:
                    await self._db[collection].create_index(keys, name=name)
        except PyMongoError as exc:
            error = store_error(exc, write=False)
            raise type(error)(f"cannot prepare MongoDB collection {collection!r}: {error}") from exc

    async def close(self) -> None:
        self._closed = True
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def ping(self) -> bool:
        if self._closed:
            return False
        try:
            # Bounded: /readyz must answer 503 quickly when MongoDB is down, not after the
            # driver's 30 s server selection timeout.
            async with asyncio.timeout(PING_TIMEOUT_S):
                await self._db.command("ping")
        except (PyMongoError, TimeoutError):
            return False
        return True

    async def apply_increments(
        self, cmds: list[IncrementCommand], known: UserRecord | None = None
    ) -> list[Decision]:
        def step(current: UserRecord | None) -> tuple[list[Decision], UserRecord | None]:
            return decide_all(current, cmds, self._policy)

        return await self._compare_and_set(cmds[0].user_id, step, known)

    async def apply_admin(
        self, user_id: str, change: AdminChange, blank: UserRecord | None = None
    ) -> UserRecord | None:
        def step(current: UserRecord | None) -> tuple[UserRecord | None, UserRecord | None]:
            held = current if current is not None else blank
            new = change(held) if held is not None else None
            return new, new

        return await self._compare_and_set(user_id, step)

    async def _compare_and_set(
        self,
        user_id: str,
        step: Callable[[UserRecord | None], tuple[T, UserRecord | None]],
        known: UserRecord | None = None,
    ) -> T:
        """Run ``step`` on the user's current record and store the record it returns, only
        if nobody wrote the document in between (else run it again on the fresh one).

        ``step`` returns ``(answer, record to store or None)``. With ``known`` (the record
        as the caller last saw it), the first attempt skips the read: one round trip when
        it is still current. Its answer stands only if its write matched. The write sets
        only what ``step`` changed (:func:`update_of`). Reads, writes and retries share
        one deadline.

        Raises:
            StoreUnavailable: nothing was applied (see :func:`store_error`).
            StoreTimeout: the write's outcome is unknown.
            StoreError: anything else; nothing is known to be applied.
        """
        self._check_open()
        writing = False
        try:
            with pymongo.timeout(self._timeout_s):
                lost_race = False
                for attempt in range(_MAX_ATTEMPTS):
                    if lost_race:
                        # Lost a race with another pod: back off a little, with jitter, so
                        # two pods hammering one user do not keep colliding in lockstep.
                        await asyncio.sleep(random.uniform(0, _BACKOFF_S * 2 ** min(attempt, 6)))
                    fresh = known is None
                    if known is not None:
                        current: UserRecord | None = known
                        known = None
                        answer, new = step(current)
                        if new is None:
                            continue  # nothing to write proves ``known`` current: read it
                    else:
                        doc = await self._users.find_one({"_id": user_id})
                        current = to_record(doc) if doc is not None else None
                        answer, new = step(current)
                        if new is None:
                            return answer
                    writing = True
                    if current is None:
                        try:
                            await self._users.insert_one(to_document(new))
                        except DuplicateKeyError:
                            lost_race, writing = True, False
                            continue  # another pod created the user first: decide again
                        self._written(new)
                        return answer
                    result = await self._users.update_one(
                        {"_id": user_id, "v": current.v}, update_of(current, new)
                    )
                    writing = False
                    if result.matched_count == 1:
                        self._written(new)
                        return answer
                    lost_race = fresh  # a stale ``known`` is no race: read again at once
        except (PyMongoError, *_ENCODING_ERRORS) as exc:
            raise store_error(exc, write=writing) from exc
        raise StoreError(f"too much write contention on user {user_id!r}")

    def _written(self, record: UserRecord) -> None:
        if self._local_feed is not None:
            self._local_feed.publish((Change.of(record, time.time_ns() // 1_000_000),))

    async def rank(self, user_id: str) -> int | None:
        self._check_open()
        try:
            with pymongo.timeout(self._timeout_s):
                doc = await self._users.find_one({"_id": user_id})
                if doc is None or doc.get("banned"):
                    return None
                score, reached = doc["score"], doc["reached_ms"]
                ahead = await self._users.count_documents(
                    {
                        "banned": {"$ne": True},
                        "$or": [
                            {"score": {"$gt": score}},
                            {"score": score, "reached_ms": {"$lt": reached}},
                            {"score": score, "reached_ms": reached, "_id": {"$lt": user_id}},
                        ],
                    }
                )
        except PyMongoError as exc:
            raise store_error(exc, write=False) from exc
        return int(ahead) + 1

    async def top(self, limit: int) -> list[BoardRow]:
        self._check_open()
        if limit <= 0:
            return []  # limit(0) means "no limit" to MongoDB
        try:
            with pymongo.timeout(self._timeout_s):
                active = {"banned": {"$ne": True}}
                cursor = self._users.find(active, _RANK_FIELDS).sort(_RANK_SORT).limit(limit)
                docs = await cursor.to_list(limit)
        except PyMongoError as exc:
            raise store_error(exc, write=False) from exc
        return [_to_row(doc) for doc in docs]

    async def get_score(self, user_id: str) -> BoardRow | None:
        self._check_open()
        try:
            with pymongo.timeout(self._timeout_s):
                doc = await self._users.find_one({"_id": user_id}, _RANK_FIELDS)
        except PyMongoError as exc:
            raise store_error(exc, write=False) from exc
        return _to_row(doc) if doc is not None else None

    async def get_user(self, user_id: str) -> StoredUser | None:
        self._check_open()
        try:
            with pymongo.timeout(self._timeout_s):
                doc = await self._users.find_one({"_id": user_id}, _USER_FIELDS)
        except PyMongoError as exc:
            raise store_error(exc, write=False) from exc
        return StoredUser(_to_row(doc), bool(doc.get("banned"))) if doc is not None else None

    async def ranked_rows(self, after_user_id: str | None, limit: int) -> list[BoardRow]:
        self._check_open()
        if limit <= 0:
            return []  # limit(0) means "no limit" to MongoDB
        query: dict[str, Any] = {"banned": {"$ne": True}}
        if after_user_id is not None:
            query["_id"] = {"$gt": after_user_id}
        try:
            with pymongo.timeout(self._timeout_s):
                # Keyset pages on the _id index: each page starts where the last one ended.
                cursor = self._users.find(query, _RANK_FIELDS).sort("_id", ASCENDING).limit(limit)
                docs = await cursor.to_list(limit)
        except PyMongoError as exc:
            raise store_error(exc, write=False) from exc
        return [_to_row(doc) for doc in docs]

    # --- boards (issue 14): documents and queries in server/store/mongo_boards.py -------

    async def apply_board_writes(
        self, rules: BoardRules, cmds: list[BoardCommand], known: BoardRecord | None = None
    ) -> list[BoardDecision]:
        # ``known`` is not used: the board's document is read first (the ban and the
        # spent tokens are read anyway), then written with a compare-and-set.
        self._check_open()
        if not cmds:
            return []
        board, user_id, now_ms = rules.spec.id, cmds[0].user_id, cmds[0].now_ms
        jtis = {cmd.action.jti for cmd in cmds if cmd.action is not None}
        taken: set[str] = set()  # tokens spent by other updates
        mine: set[str] = set()  # tokens this call recorded as spent
        using: set[str] = set()  # those the decided updates spend
        try:
            with pymongo.timeout(self._timeout_s):
                user = await self._users.find_one({"_id": user_id}, {"banned": 1})
                if user is not None and user.get("banned"):
                    return [BoardBanned() for _ in cmds]  # a ban holds on every board
                if jtis:
                    spent = {"_id": {"$in": sorted(jtis)}, "exp": {"$gt": now_ms}}
                    docs = await self._spent.find(spent, {"_id": 1}).to_list(len(jtis))
                    taken = {doc["_id"] for doc in docs}
        except PyMongoError as exc:
            raise store_error(exc, write=False) from exc

        async def step(
            doc: dict[str, Any] | None,
        ) -> tuple[list[BoardDecision], BoardRecord | None]:
            held = boards.board_record(doc) if doc is not None else None
            while True:
                decisions, new, spending = decide_board_all(
                    held, cmds, rules, spent=frozenset(taken)
                )
                using.clear()
                using.update(action.jti for action in spending)
                if new is None:
                    return decisions, None
                # Spent before the board's write: see mongo_boards' docstring.
                refused = await self._spend(spending, mine, board, user_id, now_ms)
                if not refused:
                    return decisions, new
                taken.update(refused)  # spent by another update meanwhile: a replay

        try:
            decisions = await self._board_compare_and_set(
                boards.board_id(board, user_id), rules, step
            )
        except (StoreTimeout, StoreUnavailable):
            raise  # MongoDB is not answering: the tokens spent stay spent
        except StoreError:
            await self._give_back(mine, board, user_id)  # nothing applied
            raise
        # Re-decided on a fresher document, the updates may spend fewer tokens.
        await self._give_back(mine - using, board, user_id)
        return decisions

    async def _give_back(self, jtis: set[str], board: str, user_id: str) -> None:
        """Forget tokens this call spent for updates not applied (best effort: at worst
        they stay spent, the window the module's docstring describes)."""
        if jtis:
            with contextlib.suppress(PyMongoError), pymongo.timeout(self._timeout_s):
                await self._spent.delete_many(
                    {"_id": {"$in": sorted(jtis)}, "b": board, "u": user_id}
                )

    async def _spend(
        self, spending: list[SpentAction], mine: set[str], board: str, user_id: str, now_ms: int
    ) -> set[str]:
        """Record ``spending``'s tokens as spent (those not in ``mine`` yet, which grows);
        returns those another update spent first."""
        refused: set[str] = set()
        for action in spending:
            if action.jti in mine:
                continue
            doc = boards.spent_document(action, board, user_id)
            try:
                await self._spent.insert_one(doc)
            except DuplicateKeyError:
                # Spent already, unless it expired and the job has not forgotten it yet.
                del doc["_id"]
                expired = {"_id": action.jti, "exp": {"$lte": now_ms}}
                result = await self._spent.update_one(expired, {"$set": doc})
                if result.matched_count != 1:
                    refused.add(action.jti)
                    continue
            mine.add(action.jti)
        return refused

    async def _board_compare_and_set(
        self,
        doc_id: str,
        rules: BoardRules | None,
        step: Callable[[dict[str, Any] | None], Awaitable[tuple[T, BoardRecord | None]]],
    ) -> T:
        """Run ``step`` on a board document (``None``: none yet) and store the record it
        returns, only if nobody wrote the document in between (else run it again on the
        fresh one), as :meth:`_compare_and_set` does for a user's. ``rules``: the board's,
        to find the start of a season the document does not hold yet."""
        self._check_open()
        writing = False
        try:
            with pymongo.timeout(self._timeout_s):
                for attempt in range(_MAX_ATTEMPTS):
                    if attempt:  # lost a race with another pod: back off, with jitter
                        await asyncio.sleep(random.uniform(0, _BACKOFF_S * 2 ** min(attempt, 6)))
                    doc = await self._boards.find_one({"_id": doc_id})
                    answer, new = await step(doc)
                    if new is None:
                        return answer
                    writing = True
                    start_of = boards.starts_of(doc, rules.spec if rules is not None else None)
                    if doc is None:
                        try:
                            await self._boards.insert_one(boards.board_document(new, start_of))
                        except DuplicateKeyError:
                            writing = False
                            continue  # another pod created it first: decide again
                    else:
                        result = await self._boards.update_one(
                            {"_id": doc_id, "v": doc["v"]}, boards.board_update(doc, new, start_of)
                        )
                        writing = False
                        if result.matched_count != 1:
                            continue
                    if self._local_feed is not None:
                        now_ms = time.time_ns() // 1_000_000
                        self._local_feed.publish((BoardChange(new, now_ms),))
                    return answer
        except (PyMongoError, *_ENCODING_ERRORS) as exc:
            raise store_error(exc, write=writing) from exc
        raise StoreError(f"too much write contention on board record {doc_id!r}")

    async def banned_users(self) -> list[str]:
        self._check_open()
        try:
            with pymongo.timeout(self._timeout_s):
                cursor = self._users.find({"banned": True}, {"_id": 1})
                docs = await cursor.to_list(None)
        except PyMongoError as exc:
            raise store_error(exc, write=False) from exc
        return [doc["_id"] for doc in docs]

    async def get_board_record(self, rules: BoardRules, user_id: str) -> BoardRecord | None:
        self._check_open()
        try:
            with pymongo.timeout(self._timeout_s):
                doc = await self._boards.find_one({"_id": boards.board_id(rules.spec.id, user_id)})
        except PyMongoError as exc:
            raise store_error(exc, write=False) from exc
        return boards.board_record(doc) if doc is not None else None

    async def season_rows(
        self, board: str, period: str, season: str, after_user_id: str | None, limit: int
    ) -> list[BoardRow]:
        self._check_open()
        rows: list[BoardRow] = []
        after = after_user_id
        projection = boards.season_projection(period, season)
        try:
            with pymongo.timeout(self._timeout_s):
                # Keyset pages on the "season" index; banned players are looked up per
                # page (by _id) and left out, the page then filled from further on.
                while len(rows) < limit:
                    want = limit - len(rows)
                    query = boards.season_query(board, period, season, after)
                    cursor = self._boards.find(query, projection).sort("u", ASCENDING)
                    docs = await cursor.limit(want).to_list(want)
                    if not docs:
                        break
                    users = [doc["u"] for doc in docs]
                    banned_query = {"_id": {"$in": users}, "banned": True}
                    banned_docs = await self._users.find(banned_query, {"_id": 1}).to_list(
                        len(users)
                    )
                    banned = {doc["_id"] for doc in banned_docs}
                    rows += [boards.season_row(doc) for doc in docs if doc["u"] not in banned]
                    if len(docs) < want:
                        break
                    after = users[-1]
        except PyMongoError as exc:
            raise store_error(exc, write=False) from exc
        return rows

    async def reset_board_standing(
        self, rules: BoardRules, user_id: str, period: str, season: str
    ) -> BoardRecord | None:
        async def step(doc: dict[str, Any] | None) -> tuple[BoardRecord | None, BoardRecord | None]:
            if doc is None:
                return None, None
            new = boards.without_season(boards.board_record(doc), period, season)
            return new, new

        return await self._board_compare_and_set(
            boards.board_id(rules.spec.id, user_id), rules, step
        )

    async def retire_seasons(self, board: str, period: str, before_ms: int, limit: int) -> int:
        self._check_open()
        removed = 0
        while removed < limit:
            try:
                with pymongo.timeout(self._timeout_s):
                    query = boards.retire_query(board, period, before_ms)
                    cursor = self._boards.find(query, {"_id": 1}).limit(limit - removed)
                    found = await cursor.to_list(limit - removed)
            except PyMongoError as exc:
                raise store_error(exc, write=False) from exc
            progress = 0
            for found_doc in found:
                budget = limit - removed - progress
                if budget <= 0:
                    break

                async def step(
                    doc: dict[str, Any] | None, budget: int = budget
                ) -> tuple[int, BoardRecord | None]:
                    seasons = boards.retiring(doc, period, before_ms, budget) if doc else set()
                    if doc is None or not seasons:
                        return 0, None  # retired meanwhile (by another job)
                    new = boards.without_seasons(boards.board_record(doc), period, seasons)
                    return len(seasons), new

                progress += await self._board_compare_and_set(found_doc["_id"], None, step)
            removed += progress
            if progress == 0:
                break
        return removed

    async def expire_spent_actions(self, now_ms: int, limit: int) -> int:
        self._check_open()
        if limit <= 0:
            return 0
        expired = {"exp": {"$lte": now_ms}}
        try:
            with pymongo.timeout(self._timeout_s):
                cursor = self._spent.find(expired, {"_id": 1}).sort("exp", ASCENDING)
                docs = await cursor.limit(limit).to_list(limit)
                if not docs:
                    return 0
                result = await self._spent.delete_many(
                    {"_id": {"$in": [doc["_id"] for doc in docs]}, **expired}
                )
        except PyMongoError as exc:
            raise store_error(exc, write=True) from exc
        return int(result.deleted_count)
