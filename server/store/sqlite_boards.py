"""The boards' tables in the embedded store, and the jobs that read and write them.

Every function here runs in the SQLite writer thread, inside the transaction of its
batch (:mod:`server.store.sqlite`), so one board write is atomic however many periods
it feeds. Tables:

- ``board_standings``: one row per (board, period, season, player): that player's score
  in that season. A season's ranking is its rows (clustered on the key, so loading it in
  user id order is a range read); a player's rows (``board_standings_player``) rebuild
  their :class:`~server.domain.standings.BoardStandings`: per period, the newest season
  is the current one.
- ``board_players``: one row per (board, player): version, name, idempotency keys and
  the board's rate-limit log.
- ``spent_actions``: proof-of-action tokens spent on any board, until they expire (a
  ``jti`` is spent once across all boards).

A ban is the ``users_scores`` row's (it holds on every board): a banned player's writes
are refused and their rows are left out of every ranking read.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Final

from server.domain.board_writes import (
    BoardBanned,
    BoardCommand,
    BoardDecision,
    BoardKey,
    BoardRecord,
    BoardRules,
    board_season_start,
    decide_board_all,
)
from server.domain.boards import BoardSpec, Standing
from server.domain.records import BoardRow, SpentAction
from server.domain.standings import BoardStandings, SeasonStanding

BOARDS_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS board_standings (
    board      TEXT NOT NULL,
    period     TEXT NOT NULL,
    season     TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    username   TEXT NOT NULL,
    score      INTEGER NOT NULL,
    reached_ms INTEGER NOT NULL,
    v          INTEGER NOT NULL,
    start_ms   INTEGER NOT NULL,
    PRIMARY KEY (board, period, season, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS board_standings_player ON board_standings (board, user_id);
CREATE INDEX IF NOT EXISTS board_standings_start ON board_standings (board, period, start_ms);
CREATE TABLE IF NOT EXISTS board_players (
    board       TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    username    TEXT NOT NULL,
    v           INTEGER NOT NULL,
    recent_keys TEXT NOT NULL DEFAULT '[]',
    accepted_ms TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (board, user_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spent_actions (
    jti        TEXT PRIMARY KEY,
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS spent_actions_expiry ON spent_actions (expires_ms);
"""
_SELECT_PLAYER: Final = (
    "SELECT username, v, recent_keys, accepted_ms FROM board_players "
    "WHERE board = ? AND user_id = ?"
)
_SELECT_PLAYER_STANDINGS: Final = (
    "SELECT period, season, score, reached_ms, start_ms FROM board_standings "
    "WHERE board = ? AND user_id = ? ORDER BY period, start_ms DESC"
)
_INSERT_PLAYER: Final = (
    "INSERT INTO board_players (board, user_id, username, v, recent_keys, accepted_ms) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_UPDATE_PLAYER_IF: Final = (
    "UPDATE board_players SET username = ?, v = ?, recent_keys = ?, accepted_ms = ? "
    "WHERE board = ? AND user_id = ? AND v = ?"
)
_UPSERT_STANDING: Final = (
    "INSERT INTO board_standings "
    "(board, period, season, user_id, username, score, reached_ms, v, start_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (board, period, season, user_id) "
    "DO UPDATE SET username = excluded.username, score = excluded.score, "
    "reached_ms = excluded.reached_ms, v = excluded.v"
)
_DELETE_STANDING: Final = (
    "DELETE FROM board_standings WHERE board = ? AND period = ? AND season = ? AND user_id = ?"
)
_SELECT_BANNED: Final = "SELECT banned FROM users_scores WHERE user_id = ?"
_SELECT_SPENT: Final = "SELECT 1 FROM spent_actions WHERE jti = ? AND expires_ms > ?"
_SPEND: Final = (
    "INSERT INTO spent_actions (jti, expires_ms) VALUES (?, ?) "
    "ON CONFLICT (jti) DO UPDATE SET expires_ms = excluded.expires_ms"
)
# Keyset pages of one season by user id (the primary key's order), banned players left out.
_SELECT_SEASON: Final = (
    "SELECT s.user_id, s.username, s.score, s.reached_ms, s.v FROM board_standings s "
    "WHERE s.board = ? AND s.period = ? AND s.season = ? AND s.user_id > ? AND NOT EXISTS "
    "(SELECT 1 FROM users_scores u WHERE u.user_id = s.user_id AND u.banned = 1) "
    "ORDER BY s.user_id LIMIT ?"
)
_RETIRE: Final = (
    "DELETE FROM board_standings WHERE (board, period, season, user_id) IN ("
    "SELECT board, period, season, user_id FROM board_standings "
    "WHERE board = ? AND period = ? AND start_ms < ? LIMIT ?)"
)
_EXPIRE_SPENT: Final = (
    "DELETE FROM spent_actions WHERE jti IN "
    "(SELECT jti FROM spent_actions WHERE expires_ms <= ? LIMIT ?)"
)


def read_board_record(
    conn: sqlite3.Connection, rules: BoardRules, user_id: str
) -> BoardRecord | None:
    """The player's record on ``rules``' board, or ``None``."""
    spec = rules.spec
    row = conn.execute(_SELECT_PLAYER, (spec.id, user_id)).fetchone()
    if row is None:
        return None
    username, v, keys, accepted = row
    current: list[SeasonStanding] = []
    ended: list[SeasonStanding] = []
    seen: set[str] = set()
    for period, season, score, reached_ms, _ in conn.execute(
        _SELECT_PLAYER_STANDINGS, (spec.id, user_id)
    ):
        held = SeasonStanding(period, season, Standing(score, reached_ms))
        (ended if period in seen else current).append(held)
        seen.add(period)
    order = {p.name: i for i, p in enumerate(spec.periods)}
    current.sort(key=lambda s: order.get(s.period, len(order)))
    return BoardRecord(
        board=spec.id,
        user_id=user_id,
        username=username,
        v=v,
        standings=BoardStandings(tuple(current), tuple(ended)),
        recent_keys=tuple(
            BoardKey(str(k), tuple(int(s) for s in scores), int(seq), fp)
            for k, scores, seq, fp in json.loads(keys)
        ),
        accepted_ms=tuple(json.loads(accepted)),
    )


def apply_board_writes(
    conn: sqlite3.Connection,
    rules: BoardRules,
    cmds: list[BoardCommand],
    known: BoardRecord | None = None,
) -> tuple[list[BoardDecision], BoardRecord | None]:
    """Decide ``cmds`` (one player's, in order) and write what they change: the player's
    row, each season row that moved, and the tokens spent. Returns the decisions and the
    record written (``None``: nothing was).

    ``known``: the record as the player's writer last wrote it. It is decided on without
    reading the player's rows, and trusted only if the player's row still has its version
    (a compare-and-set); otherwise the rows are read and the updates decided again.
    """
    user_id = cmds[0].user_id
    banned = conn.execute(_SELECT_BANNED, (user_id,)).fetchone()
    if banned is not None and banned[0]:
        return [BoardBanned() for _ in cmds], None
    now_ms = cmds[0].now_ms
    spent = frozenset(
        cmd.action.jti
        for cmd in cmds
        if cmd.action is not None
        and conn.execute(_SELECT_SPENT, (cmd.action.jti, now_ms)).fetchone() is not None
    )
    if known is not None:
        decisions, final, spending = decide_board_all(known, cmds, rules, spent=spent)
        if final is not None and _write(conn, rules, known, final):
            _spend(conn, spending)
            return decisions, final
    held = read_board_record(conn, rules, user_id)
    decisions, final, spending = decide_board_all(held, cmds, rules, spent=spent)
    if final is None:
        return decisions, None
    _write(conn, rules, held, final)
    _spend(conn, spending)
    return decisions, final


def _spend(conn: sqlite3.Connection, spending: list[SpentAction]) -> None:
    for action in spending:
        conn.execute(_SPEND, (action.jti, action.expires_ms))


def _write(
    conn: sqlite3.Connection, rules: BoardRules, held: BoardRecord | None, record: BoardRecord
) -> bool:
    """Write ``record`` over ``held`` (what the store holds, or ``None``): the player's row
    (only if it still has ``held``'s version) and the season rows that changed. Returns
    whether it was written (``False``: another writer got there first, nothing written)."""
    spec = rules.spec
    player = (
        record.username,
        record.v,
        json.dumps([list(k) for k in record.recent_keys], separators=(",", ":"))
        if record.recent_keys
        else "[]",
        json.dumps(list(record.accepted_ms), separators=(",", ":")) if record.accepted_ms else "[]",
    )
    if held is None:
        conn.execute(_INSERT_PLAYER, (spec.id, record.user_id, *player))
    elif conn.execute(_UPDATE_PLAYER_IF, (*player, spec.id, record.user_id, held.v)).rowcount != 1:
        return False
    rows = _changed_rows(spec, held, record)
    if rows:
        conn.executemany(_UPSERT_STANDING, rows)
    if held is not None and (
        record.standings.ended is not held.standings.ended
        or len(record.standings.current) != len(held.standings.current)
    ):
        # A season ended (its standing moved to the ended ones), one past keep_seasons was
        # dropped, or a reset took one: delete the rows of the seasons no longer held.
        gone = _by_season(held.standings).keys() - _by_season(record.standings).keys()
        conn.executemany(
            _DELETE_STANDING, [(spec.id, p, season, record.user_id) for p, season in gone]
        )
    return True


def _changed_rows(
    spec: BoardSpec, held: BoardRecord | None, record: BoardRecord
) -> list[tuple[object, ...]]:
    """The season rows ``record`` writes over ``held``: the standings that changed (all
    of them when the player's name did)."""
    renamed = held is None or held.username != record.username
    standings = record.standings
    if renamed or standings.ended is not held.standings.ended:  # type: ignore[union-attr]
        before = {} if renamed or held is None else _by_season(held.standings)
        changed = [
            (s.period, s.season, s.standing)
            for s in (*standings.current, *standings.ended)
            if before.get((s.period, s.season)) != s.standing
        ]
    else:
        # The common write: no season ended, so only current standings can have moved.
        assert held is not None
        was = {(s.period, s.season): s.standing for s in held.standings.current}
        changed = [
            (s.period, s.season, s.standing)
            for s in standings.current
            if was.get((s.period, s.season)) is not s.standing
        ]
    return [
        (
            spec.id,
            period,
            season,
            record.user_id,
            record.username,
            standing.score,
            standing.reached_ms,
            record.v,
            board_season_start(spec, period, season),
        )
        for period, season, standing in changed
    ]


def _by_season(standings: BoardStandings) -> dict[tuple[str, str], Standing]:
    return {(s.period, s.season): s.standing for s in (*standings.current, *standings.ended)}


def season_rows(
    conn: sqlite3.Connection, where: tuple[str, str, str], after: str, limit: int
) -> list[BoardRow]:
    """One page of a season's ranking (``where``: board, period, season), by user id
    after ``after`` ("": from the start)."""
    return [BoardRow(*row) for row in conn.execute(_SELECT_SEASON, (*where, after, limit))]


def reset_standing(
    conn: sqlite3.Connection, rules: BoardRules, user_id: str, period: str, season: str
) -> BoardRecord | None:
    """Take the player off ``season`` of ``period`` (an admin reset): their standing in it
    is dropped and their version grows. ``None``: no record on this board."""
    held = read_board_record(conn, rules, user_id)
    if held is None:
        return None
    standings = held.standings
    record = BoardRecord(
        board=held.board,
        user_id=held.user_id,
        username=held.username,
        v=held.v + 1,
        standings=BoardStandings(
            tuple(s for s in standings.current if (s.period, s.season) != (period, season)),
            tuple(s for s in standings.ended if (s.period, s.season) != (period, season)),
        ),
        recent_keys=held.recent_keys,
        accepted_ms=held.accepted_ms,
    )
    _write(conn, rules, held, record)
    return record


def retire_seasons(
    conn: sqlite3.Connection, board: str, period: str, before_ms: int, limit: int
) -> int:
    """Delete up to ``limit`` rows of ``period``'s seasons that started before
    ``before_ms``; returns how many went (fewer than ``limit``: none are left)."""
    return conn.execute(_RETIRE, (board, period, before_ms, limit)).rowcount


def expire_spent(conn: sqlite3.Connection, now_ms: int, limit: int) -> int:
    """Forget up to ``limit`` spent tokens that expired; returns how many went."""
    return conn.execute(_EXPIRE_SPENT, (now_ms, limit)).rowcount
