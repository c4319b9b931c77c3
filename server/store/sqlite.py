"""The embedded store: stdlib ``sqlite3`` in WAL mode, driven by one writer thread.

Every call becomes a job; the jobs of one event-loop iteration are handed to the writer
thread together. The thread takes all jobs waiting at that moment and runs them inside one
transaction (group commit); if one fails, the transaction is rolled back and the jobs run
again each in its own savepoint, so one failing job cannot undo the others. Then it
resolves the callers' futures on the event loop. An increment is answered only after its
transaction committed, so an answered increment survives ``kill -9`` of the process.

One process per file: :mod:`server.store.file_lock` refuses a second one at open. Errors
of a condition that passes (a full disk, a read-only file, I/O errors, a lock held too
long) are :class:`~server.store.port.StoreUnavailable`; they are logged at most once per
interval per kind, with a count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

from server.domain.admin import AdminChange
from server.domain.board_writes import BoardCommand, BoardDecision, BoardRecord, BoardRules
from server.domain.increments import IncrementPolicy, decide_all
from server.domain.records import (
    BoardRow,
    Decision,
    IncrementCommand,
    StoredUser,
    UserRecord,
    keys_from_stored,
)
from server.store import sqlite_boards as boards
from server.store.changes import BoardChange, Change, ChangeFeed, LocalChangeFeed, NoOtherWriters
from server.store.file_lock import ProcessFileLock
from server.store.port import StoreError, StoreUnavailable
from server.support.log_throttle import LogThrottle, error_key, log_throttled

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS users_scores (
    user_id     TEXT PRIMARY KEY,
    username    TEXT NOT NULL,
    score       INTEGER NOT NULL,
    v           INTEGER NOT NULL,
    reached_ms  INTEGER NOT NULL,
    recent_keys TEXT NOT NULL DEFAULT '[]',
    accepted_ms TEXT NOT NULL DEFAULT '[]',
    used_actions TEXT NOT NULL DEFAULT '[]',
    banned      INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""
_SELECT_USER: Final = (
    "SELECT user_id, username, score, v, reached_ms, recent_keys, accepted_ms, used_actions, "
    "banned FROM users_scores WHERE user_id = ?"
)
_UPSERT_USER: Final = (
    "INSERT INTO users_scores "
    "(user_id, username, score, v, reached_ms, recent_keys, accepted_ms, used_actions, banned) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (user_id) DO UPDATE SET username = excluded.username, score = excluded.score, "
    "v = excluded.v, reached_ms = excluded.reached_ms, recent_keys = excluded.recent_keys, "
    "accepted_ms = excluded.accepted_ms, used_actions = excluded.used_actions, "
    "banned = excluded.banned"
)
_UPDATE_IF_VERSION: Final = (
    "UPDATE users_scores SET username = ?, score = ?, v = ?, reached_ms = ?, recent_keys = ?, "
    "accepted_ms = ?, used_actions = ?, banned = ? WHERE user_id = ? AND v = ?"
)
_SELECT_TOP: Final = (
    "SELECT user_id, username, score, reached_ms, v FROM users_scores WHERE banned = 0 "
    "ORDER BY score DESC, reached_ms ASC, user_id ASC LIMIT ?"
)
# Keyset pages by the primary key (the table is clustered on it: WITHOUT ROWID).
_SELECT_RANKED_FIRST: Final = (
    "SELECT user_id, username, score, reached_ms, v FROM users_scores WHERE banned = 0 "
    "ORDER BY user_id LIMIT ?"
)
_SELECT_RANKED_AFTER: Final = (
    "SELECT user_id, username, score, reached_ms, v FROM users_scores WHERE banned = 0 "
    "AND user_id > ? ORDER BY user_id LIMIT ?"
)
_COUNT_AHEAD: Final = (
    "SELECT COUNT(*) FROM users_scores WHERE banned = 0 AND (score > ?1 OR (score = ?1 AND "
    "(reached_ms < ?2 OR (reached_ms = ?2 AND user_id < ?3))))"
)
_ADDED_COLUMNS: Final = (
    ("used_actions", "TEXT NOT NULL DEFAULT '[]'"),
    ("banned", "INTEGER NOT NULL DEFAULT 0"),
)
# The probe's row: readiness asks whether a write commits, not whether a read answers.
_HEALTH_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS scoreboard_health "
    "(id INTEGER PRIMARY KEY CHECK (id = 1), probed_ms INTEGER NOT NULL)"
)
_PROBE: Final = (
    "INSERT INTO scoreboard_health (id, probed_ms) VALUES (1, ?) "
    "ON CONFLICT (id) DO UPDATE SET probed_ms = excluded.probed_ms"
)
_STOP: Final = object()
PING_TIMEOUT_S: Final = 2.0
# Primary result codes of conditions that pass (or that an operator fixes without a
# restart): the caller answers 503 database_unavailable, not 500.
_UNAVAILABLE_CODES: Final = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
    }
)


def store_error(what: str, exc: BaseException) -> StoreError:
    """The store error for ``exc`` raised while doing ``what``: :class:`StoreUnavailable`
    for a full disk, a read-only file, an I/O error or a lock held too long."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _UNAVAILABLE_CODES:
        return StoreUnavailable(f"{what}: {exc}")
    return StoreError(f"{what}: {exc}")


class _Pending:
    __slots__ = ("future", "job")

    def __init__(self, job: Job, future: asyncio.Future[Any]) -> None:
        self.job = job
        self.future = future


def _row_to_record(row: tuple[Any, ...]) -> UserRecord:
    return UserRecord(
        user_id=row[0],
        username=row[1],
        score=row[2],
        v=row[3],
        reached_ms=row[4],
        recent_keys=keys_from_stored(json.loads(row[5])),
        accepted_ms=tuple(json.loads(row[6])),
        used_actions=tuple((str(j), int(e)) for j, e in json.loads(row[7])),
        banned=bool(row[8]),
    )


def _json_list(items: tuple[Any, ...]) -> str:
    return json.dumps(items) if items else "[]"


def _state(r: UserRecord) -> tuple[Any, ...]:
    """The record's columns after ``user_id``, in the order the statements name them."""
    return (
        r.username,
        r.score,
        r.v,
        r.reached_ms,
        _json_list(r.recent_keys),
        _json_list(r.accepted_ms),
        _json_list(r.used_actions),
        int(r.banned),
    )


def _upsert(conn: sqlite3.Connection, r: UserRecord) -> None:
    conn.execute(_UPSERT_USER, (r.user_id, *_state(r)))


def _update_if_version(conn: sqlite3.Connection, r: UserRecord, expected_v: int) -> bool:
    """Write ``r`` only if the stored version is still ``expected_v``; return whether it was."""
    cursor = conn.execute(_UPDATE_IF_VERSION, (*_state(r), r.user_id, expected_v))
    return cursor.rowcount == 1


class SqliteStore:
    """The embedded SQLite adapter of :class:`server.store.port.ScoreStore`.

    Args:
        path: a file path, or ``":memory:"`` (one process only, gone on exit).
        policy: the increment limits (rate limit, idempotency keys kept).
        synchronous: SQLite's ``synchronous`` pragma; ``FULL`` also survives power loss,
            ``NORMAL`` survives a crash of the process (``kill -9``) but not of the machine.
        max_batch: the most jobs committed in one transaction.
        feed: where committed writes are published (:attr:`changes`); pass one feed to
            every store on the same file so they see each other's writes, as pods do.
            ``None``: nobody else writes here, and nothing is published.
    """

    def __init__(
        self,
        path: str,
        policy: IncrementPolicy,
        *,
        synchronous: str = "FULL",
        max_batch: int = 512,
        feed: LocalChangeFeed | None = None,
    ) -> None:
        self._feed = feed
        self.changes: ChangeFeed = feed if feed is not None else NoOtherWriters()
        # Written by the batch in progress (writer thread only).
        self._written: list[UserRecord | BoardRecord] = []
        self._path = path
        self._policy = policy
        self._synchronous = synchronous
        self._max_batch = max_batch
        self._jobs: queue.SimpleQueue[object] = queue.SimpleQueue()  # lists of jobs, or _STOP
        self._outbox: list[_Pending] = []  # this loop iteration's jobs, not yet handed over
        self._handing_over = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._lock = ProcessFileLock(path) if path != ":memory:" else None
        self._throttle = LogThrottle()  # the writer thread's

    async def open(self) -> None:
        """Lock the file for this process, connect and create the schema.

        Raises:
            FileInUse: another process uses the file.
            StoreError: the file cannot be opened (any SQLite error here is fatal).
        """
        if self._lock is not None:
            self._lock.acquire()
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="sqlite-writer", daemon=True
        )
        self._thread.start()
        await ready

    async def close(self) -> None:
        if self._closed or self._thread is None:
            self._closed = True
            return
        self._hand_over()  # what was called before close() is still done (thread still up)
        self._closed = True
        self._jobs.put(_STOP)
        # The thread finishes every job queued before the stop marker, then exits.
        await asyncio.to_thread(self._thread.join)

    async def ping(self) -> bool:
        """Whether a write commits now: one row of ``scoreboard_health`` is written in the
        writer's next transaction (a full disk, a read-only file fail it)."""
        now_ms = time.time_ns() // 1_000_000

        def probe(conn: sqlite3.Connection) -> None:
            # The table is made here, not at open: a file that cannot be written (one
            # made by an earlier version, now read-only) still opens, serves its board
            # and is not ready.
            conn.execute(_HEALTH_TABLE)
            conn.execute(_PROBE, (now_ms,))

        try:
            # Bounded, so a stuck writer (e.g. locked) fails the probe in time.
            async with asyncio.timeout(PING_TIMEOUT_S):
                await self._call(probe)
        except (StoreError, TimeoutError):
            return False
        return True

    async def apply_increments(
        self, cmds: list[IncrementCommand], known: UserRecord | None = None
    ) -> list[Decision]:
        policy = self._policy

        def job(conn: sqlite3.Connection) -> list[Decision]:
            if known is not None:
                decisions, final = decide_all(known, cmds, policy)
                if final is not None and _update_if_version(conn, final, known.v):
                    if self._feed is not None:
                        self._written.append(final)
                    return decisions  # ``known`` was the stored state: no read needed
            row = conn.execute(_SELECT_USER, (cmds[0].user_id,)).fetchone()
            decisions, final = decide_all(_row_to_record(row) if row else None, cmds, policy)
            if final is not None:
                self._write(conn, final)
            return decisions

        return await self._call(job)

    async def top(self, limit: int) -> list[BoardRow]:
        def job(conn: sqlite3.Connection) -> list[BoardRow]:
            return [BoardRow(*row) for row in conn.execute(_SELECT_TOP, (limit,))]

        return await self._call(job)

    async def apply_admin(
        self, user_id: str, change: AdminChange, blank: UserRecord | None = None
    ) -> UserRecord | None:
        def job(conn: sqlite3.Connection) -> UserRecord | None:
            row = conn.execute(_SELECT_USER, (user_id,)).fetchone()
            current = _row_to_record(row) if row is not None else blank
            if current is None:
                return None
            record = change(current)
            self._write(conn, record)
            return record

        return await self._call(job)

    async def rank(self, user_id: str) -> int | None:
        def job(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(_SELECT_USER, (user_id,)).fetchone()
            if row is None or row[8]:
                return None
            ahead = conn.execute(_COUNT_AHEAD, (row[2], row[4], row[0])).fetchone()[0]
            return int(ahead) + 1

        return await self._call(job)

    async def get_score(self, user_id: str) -> BoardRow | None:
        def job(conn: sqlite3.Connection) -> BoardRow | None:
            row = conn.execute(_SELECT_USER, (user_id,)).fetchone()
            if row is None:
                return None
            return BoardRow(row[0], row[1], row[2], row[4], row[3])

        return await self._call(job)

    async def get_user(self, user_id: str) -> StoredUser | None:
        def job(conn: sqlite3.Connection) -> StoredUser | None:
            row = conn.execute(_SELECT_USER, (user_id,)).fetchone()
            if row is None:
                return None
            return StoredUser(BoardRow(row[0], row[1], row[2], row[4], row[3]), bool(row[8]))

        return await self._call(job)

    async def ranked_rows(self, after_user_id: str | None, limit: int) -> list[BoardRow]:
        def job(conn: sqlite3.Connection) -> list[BoardRow]:
            if after_user_id is None:
                rows = conn.execute(_SELECT_RANKED_FIRST, (limit,))
            else:
                rows = conn.execute(_SELECT_RANKED_AFTER, (after_user_id, limit))
            return [BoardRow(*row) for row in rows]

        return await self._call(job)

    # --- boards (server/store/sqlite_boards.py) --------------------------------------

    async def apply_board_writes(
        self, rules: BoardRules, cmds: list[BoardCommand], known: BoardRecord | None = None
    ) -> list[BoardDecision]:
        def job(conn: sqlite3.Connection) -> list[BoardDecision]:
            decisions, written = boards.apply_board_writes(conn, rules, cmds, known)
            if written is not None and self._feed is not None:
                self._written.append(written)
            return decisions

        return await self._call(job)

    async def get_board_record(self, rules: BoardRules, user_id: str) -> BoardRecord | None:
        return await self._call(lambda conn: boards.read_board_record(conn, rules, user_id))

    async def banned_users(self) -> list[str]:
        def job(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("SELECT user_id FROM users_scores WHERE banned = 1")
            return [row[0] for row in rows]

        return await self._call(job)

    async def season_rows(
        self, board: str, period: str, season: str, after_user_id: str | None, limit: int
    ) -> list[BoardRow]:
        after = after_user_id if after_user_id is not None else ""
        return await self._call(
            lambda conn: boards.season_rows(conn, (board, period, season), after, limit)
        )

    async def reset_board_standing(
        self, rules: BoardRules, user_id: str, period: str, season: str
    ) -> BoardRecord | None:
        def job(conn: sqlite3.Connection) -> BoardRecord | None:
            record = boards.reset_standing(conn, rules, user_id, period, season)
            if record is not None and self._feed is not None:
                self._written.append(record)
            return record

        return await self._call(job)

    async def retire_seasons(self, board: str, period: str, before_ms: int, limit: int) -> int:
        return await self._call(
            lambda conn: boards.retire_seasons(conn, board, period, before_ms, limit)
        )

    async def expire_spent_actions(self, now_ms: int, limit: int) -> int:
        return await self._call(lambda conn: boards.expire_spent(conn, now_ms, limit))

    async def _call(self, job: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed or self._loop is None:
            raise StoreError("the SQLite store is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self._outbox.append(_Pending(job, future))
        if not self._handing_over:
            self._handing_over = True
            self._loop.call_soon(self._hand_over)
        return await future

    def _hand_over(self) -> None:
        """Pass this loop iteration's jobs to the writer thread in one go: one wake-up of
        the thread per iteration, not per job, and bigger group commits."""
        self._handing_over = False
        jobs, self._outbox = self._outbox, []
        if jobs:
            self._jobs.put(jobs)
            if self._closed:  # the writer thread is gone: nobody will take them
                self._fail_all(StoreError("the SQLite store is closed"))

    # --- the writer thread -------------------------------------------------------------

    def _write(self, conn: sqlite3.Connection, record: UserRecord) -> None:
        _upsert(conn, record)
        if self._feed is not None:
            self._written.append(record)

    def _open_connection(self) -> sqlite3.Connection:
        return sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)

    def _connect(self) -> sqlite3.Connection:
        conn = self._open_connection()
        conn.execute("PRAGMA busy_timeout = 10000")
        if self._path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.executescript(_SCHEMA)
        conn.executescript(boards.BOARDS_SCHEMA)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(users_scores)")}
        for column, kind in _ADDED_COLUMNS:
            if column not in columns:  # a file made by an earlier version
                conn.execute(f"ALTER TABLE users_scores ADD COLUMN {column} {kind}")
        conn.execute(
            "CREATE INDEX IF NOT EXISTS users_scores_rank_active "
            "ON users_scores (score DESC, reached_ms ASC, user_id ASC) WHERE banned = 0"
        )
        conn.execute("DROP INDEX IF EXISTS users_scores_rank")
        return conn

    def _run(self, ready: asyncio.Future[None]) -> None:
        assert self._loop is not None
        loop = self._loop
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            error = StoreError(f"cannot open SQLite store at {self._path!r}: {exc}")
            self._closed = True  # later calls fail at once instead of waiting on no thread
            self._release_lock()  # before open() returns: the file is free again
            loop.call_soon_threadsafe(_settle, ready, None, error)
            self._fail_all(StoreError("the SQLite store failed to open"))
            return
        loop.call_soon_threadsafe(_settle, ready, None, None)
        batch: list[_Pending] = []
        try:
            stopping = False
            while not stopping:
                batch = []
                item = self._jobs.get()
                while True:
                    if item is _STOP:
                        stopping = True
                        break
                    assert isinstance(item, list)
                    batch.extend(item)
                    if len(batch) >= self._max_batch:
                        break
                    try:
                        item = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    results = self._run_batch(conn, batch)
                    written, self._written = self._written, []
                    loop.call_soon_threadsafe(self._committed, batch, results, written)
                    batch = []
        finally:
            # However the thread ends, nobody may wait on it afterwards.
            self._closed = True
            with contextlib.suppress(Exception):
                conn.close()
            self._release_lock()
            error = StoreError("the SQLite store stopped")
            for pending in batch:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, pending.future, None, error)
            self._fail_all(StoreError("the SQLite store is closed"))

    def _run_batch(
        self, conn: sqlite3.Connection, batch: list[_Pending]
    ) -> list[tuple[Any, BaseException | None]]:
        """Run ``batch`` in one transaction. First all together; if a job fails, roll back
        and run them again each in its own savepoint, so only that job fails (jobs only
        read and write the database, so running them again is safe)."""
        results: list[tuple[Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for pending in batch:
                results.append((pending.job(conn), None))
            conn.execute("COMMIT")
            return results
        except Exception:
            self._written.clear()
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
        return self._run_isolated(conn, batch)

    def _run_isolated(
        self, conn: sqlite3.Connection, batch: list[_Pending]
    ) -> list[tuple[Any, BaseException | None]]:
        results: list[tuple[Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for pending in batch:
                conn.execute("SAVEPOINT job")
                written_before = len(self._written)
                try:
                    results.append((pending.job(conn), None))
                    conn.execute("RELEASE job")
                except Exception as exc:
                    del self._written[written_before:]
                    if not conn.in_transaction:
                        # SQLite rolled the whole transaction back (a full disk, an I/O
                        # error): every job of it failed, for this job's reason.
                        raise
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    self._log_error("sqlite job failed", exc)
                    results.append((None, store_error("SQLite error", exc)))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._log_error("sqlite transaction failed", exc)
            self._written.clear()
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            error = store_error("SQLite transaction failed", exc)
            return [(None, error)] * len(batch)
        return results

    def _log_error(self, msg: str, exc: BaseException) -> None:
        """In the writer thread: a full disk fails every job alike; log each kind at most
        once per interval, with a count."""
        log_throttled(log, self._throttle, logging.ERROR, msg, key=error_key(exc), exc_info=exc)

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def _committed(
        self,
        batch: list[_Pending],
        results: list[tuple[Any, BaseException | None]],
        written: list[UserRecord | BoardRecord],
    ) -> None:
        """On the event loop: publish the committed writes, then answer the callers."""
        try:
            if written and self._feed is not None:
                now_ms = time.time_ns() // 1_000_000
                self._feed.publish(
                    BoardChange(record, now_ms)
                    if isinstance(record, BoardRecord)
                    else Change.of(record, now_ms)
                    for record in written
                )
        finally:
            _settle_all(batch, results)  # whatever publishing did, every caller hears back

    def _fail_all(self, error: StoreError) -> None:
        assert self._loop is not None
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                return
            for pending in item if isinstance(item, list) else ():
                with contextlib.suppress(RuntimeError):  # the event loop is already closed
                    self._loop.call_soon_threadsafe(_settle, pending.future, None, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _settle_all(batch: list[_Pending], results: list[tuple[Any, BaseException | None]]) -> None:
    for pending, (result, error) in zip(batch, results, strict=True):
        _settle(pending.future, result, error)
