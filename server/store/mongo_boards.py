"""The boards' documents in MongoDB (issue 14), and the queries that read them: pure,
data in and data out (the calls are :class:`server.store.mongodb.MongoStore`'s).

Collections:

- ``board_scores``: ONE document per (board, player), so that one update feeds every
  period of its board in one atomic single-document write (a compare-and-set on ``v``,
  as a user's increment is)::

      {_id: "<board>\\x00<user_id>", b: board, u: user_id, n: username, v: version,
       s: [{p: period, id: season_id, sc: score, at: reached_ms, st: start_ms, cur: true},
           ...],
       keys: [[key, [score per period], seq, fingerprint], ...],
       acc: [accepted_ms, ...]}

  ``s`` holds the player's standings: the current one of each period first (``cur``,
  in the board's period order), then the ended ones kept readable (newest first within a
  period), as :class:`~server.domain.standings.BoardStandings` holds them. ``st`` (the
  season's start) is stored so that retiring old seasons is an index range, not a
  season computation per document. ``keys`` and ``acc`` are rings of slots, as a user's
  logs are (:mod:`server.store.mongo_documents`). Board ids are ``[a-z0-9_-]``, so the
  ``_id`` is unambiguous.
- ``spent_actions``: ``{_id: jti, exp: expires_ms, b: board, u: user_id}``, a
  proof-of-action token spent on any board, until a job forgets it once expired. Its
  ``_id`` makes a token spendable once across boards and pods.

Why ONE array of standings, current and ended together (and not a map of current
standings per period plus an array of ended ones): the store does not know the boards'
period names when it creates its indexes, so the fields it indexes cannot be named after
them; and a season's ranking is the union of the players whose current standing is in
that season and those who keep it among their ended ones. With both in ``s``, one
multikey index ``{b, s.p, s.id, u}`` serves a season's pages as one range read in user
id order (the query's ``$elemMatch`` makes period and season match in the SAME element),
and ``{b, s.p, s.st}`` finds the seasons to retire. A period has at most one standing
per season, so a document has at most one element per index key.

The oplog: a write ``$set``\\ s only the slots that changed (:func:`board_update`): in
a season, the ``cur`` element of each period (its position in ``s`` is fixed), ``v``,
and one slot of each ring. At a season's boundary the ended elements move one slot
along, so every slot of ``s`` may change: at most periods x (1 + keep_seasons)
elements. Either way the entry is bounded by the board's shape, never by the player's
history (``tests/server/store/test_mongo_boards.py`` checks both bounds).

A token is spent BEFORE the board's write (a separate document, and the adapter keeps to
single-document writes): a crash, or a timeout, between the two leaves the token spent
and the update not applied, so a retry of that update with the same token is refused
(``ActionReplayed``; its ``Idempotency-Key`` is not remembered either). That is the one
window: a token is never spent twice and an update never applied twice. A token the
write ends up not using (the update was re-decided on a fresher document, e.g. now rate
limited, or it lost every compare-and-set) is given back, unless MongoDB stopped
answering (a timeout, no primary): then it stays spent, as in a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from pymongo import ASCENDING

from server.domain.board_writes import BoardKey, BoardRecord, board_season_start
from server.domain.boards import BoardSpec, Standing
from server.domain.records import BoardRow, SpentAction
from server.domain.standings import BoardStandings, SeasonStanding

BOARD_COLLECTION: Final = "board_scores"
SPENT_COLLECTION: Final = "spent_actions"
# (collection, keys, name): what ``MongoStore.open`` creates.
BOARD_INDEXES: Final[tuple[tuple[str, list[tuple[str, int]], str], ...]] = (
    (
        BOARD_COLLECTION,
        [("b", ASCENDING), ("s.p", ASCENDING), ("s.id", ASCENDING), ("u", ASCENDING)],
        "season",
    ),
    (BOARD_COLLECTION, [("b", ASCENDING), ("s.p", ASCENDING), ("s.st", ASCENDING)], "start"),
    (SPENT_COLLECTION, [("exp", ASCENDING)], "expiry"),
)
# What a change event carries of a board document: the record without its rings.
FEED_FIELDS: Final = ("_id", "b", "u", "n", "v", "s")

StartOf = Callable[[str, str], int]


def board_id(board: str, user_id: str) -> str:
    """The ``_id`` of the player's document on ``board``."""
    return f"{board}\x00{user_id}"


# --- records <-> documents --------------------------------------------------------------


def standing_document(held: SeasonStanding, start_ms: int, *, current: bool) -> dict[str, Any]:
    """One element of ``s``."""
    doc: dict[str, Any] = {
        "p": held.period,
        "id": held.season,
        "sc": held.standing.score,
        "at": held.standing.reached_ms,
        "st": start_ms,
    }
    if current:
        doc["cur"] = True
    return doc


def standings_documents(standings: BoardStandings, start_of: StartOf) -> list[dict[str, Any]]:
    """``s`` for ``standings``: the current ones, then the ended ones, in their order."""
    return [
        standing_document(held, start_of(held.period, held.season), current=current)
        for current, group in ((True, standings.current), (False, standings.ended))
        for held in group
    ]


def _key_document(key: BoardKey) -> list[Any]:
    return [key.key, list(key.scores), key.seq, key.fingerprint]


def board_document(record: BoardRecord, start_of: StartOf) -> dict[str, Any]:
    """The whole document of ``record`` (to insert a player's first one on a board)."""
    return {
        "_id": board_id(record.board, record.user_id),
        "b": record.board,
        "u": record.user_id,
        "n": record.username,
        "v": record.v,
        "s": standings_documents(record.standings, start_of),
        "keys": [_key_document(k) for k in record.recent_keys],
        "acc": list(record.accepted_ms),
    }


def _standing_of(doc: Mapping[str, Any]) -> SeasonStanding:
    return SeasonStanding(str(doc["p"]), str(doc["id"]), Standing(int(doc["sc"]), int(doc["at"])))


def board_record(doc: Mapping[str, Any]) -> BoardRecord:
    """The record a ``board_scores`` document holds (its rings may be projected away, as
    the change stream does: they are then empty)."""
    elements = doc.get("s", ())
    return BoardRecord(
        board=str(doc["b"]),
        user_id=str(doc["u"]),
        username=str(doc["n"]),
        v=int(doc["v"]),
        standings=BoardStandings(
            tuple(_standing_of(e) for e in elements if e.get("cur")),
            tuple(_standing_of(e) for e in elements if not e.get("cur")),
        ),
        recent_keys=tuple(
            BoardKey(
                str(key), tuple(int(s) for s in scores), int(seq), None if fp is None else str(fp)
            )
            for key, scores, seq, fp in doc.get("keys", ())
        ),
        accepted_ms=tuple(int(t) for t in doc.get("acc", ())),
    )


def starts_of(doc: Mapping[str, Any] | None, spec: BoardSpec | None) -> StartOf:
    """Each season's start: as ``doc`` stores it, else computed from ``spec`` (once)."""
    known: dict[tuple[str, str], int] = {
        (str(e["p"]), str(e["id"])): int(e["st"]) for e in (doc or {}).get("s", ())
    }

    def start_of(period: str, season: str) -> int:
        start = known.get((period, season))
        if start is None:
            start = known[period, season] = board_season_start(spec, period, season)
        return start

    return start_of


# --- the smallest update ----------------------------------------------------------------


def board_update(
    before: Mapping[str, Any], after: BoardRecord, start_of: StartOf
) -> dict[str, Any]:
    """The update that turns the stored document ``before`` into ``after``'s.

    The caller filters it on ``before``'s ``v``. Only what differs is ``$set``: the
    scalars, and the slots of ``s``, ``keys`` and ``acc`` that changed (the whole field
    when it shrank, or was empty: a numeric path would then make an object).
    """
    changes: dict[str, Any] = {}
    if before.get("n") != after.username:
        changes["n"] = after.username
    if before.get("v") != after.v:
        changes["v"] = after.v
    _slots("s", before.get("s", []), standings_documents(after.standings, start_of), changes)
    _slots("keys", before.get("keys", []), [_key_document(k) for k in after.recent_keys], changes)
    _slots("acc", before.get("acc", []), list(after.accepted_ms), changes)
    return {"$set": changes}


def _slots(name: str, before: Sequence[Any], after: list[Any], changes: dict[str, Any]) -> None:
    if not before or len(after) < len(before):
        if list(before) != after:
            changes[name] = after
        return
    for slot, item in enumerate(after):
        if slot >= len(before) or before[slot] != item:
            changes[f"{name}.{slot}"] = item


# --- what the writes change -------------------------------------------------------------


def without_season(record: BoardRecord, period: str, season: str) -> BoardRecord:
    """``record`` without its standing in one season of one period, one version on (an
    admin reset)."""
    return _without(record, lambda held: (held.period, held.season) == (period, season))


def retiring(doc: Mapping[str, Any], period: str, before_ms: int, budget: int) -> set[str]:
    """The seasons (ids) of ``period`` that started before ``before_ms`` among ``doc``'s
    standings, at most ``budget`` of them, the oldest first."""
    old = sorted(
        (int(e["st"]), str(e["id"]))
        for e in doc.get("s", ())
        if e["p"] == period and int(e["st"]) < before_ms
    )
    return {season for _, season in old[: max(budget, 0)]}


def without_seasons(record: BoardRecord, period: str, seasons: Iterable[str]) -> BoardRecord:
    """``record`` without its standings in ``seasons`` of ``period``, one version on."""
    gone = set(seasons)
    return _without(record, lambda held: held.period == period and held.season in gone)


def _without(record: BoardRecord, drop: Callable[[SeasonStanding], bool]) -> BoardRecord:
    standings = record.standings
    return BoardRecord(
        board=record.board,
        user_id=record.user_id,
        username=record.username,
        v=record.v + 1,
        standings=BoardStandings(
            tuple(s for s in standings.current if not drop(s)),
            tuple(s for s in standings.ended if not drop(s)),
        ),
        recent_keys=record.recent_keys,
        accepted_ms=record.accepted_ms,
    )


def spent_document(action: SpentAction, board: str, user_id: str) -> dict[str, Any]:
    """A spent token's document."""
    return {"_id": action.jti, "exp": action.expires_ms, "b": board, "u": user_id}


# --- queries ----------------------------------------------------------------------------


def _in_season(period: str, season: str) -> dict[str, Any]:
    return {"$elemMatch": {"p": period, "id": season}}


def season_query(board: str, period: str, season: str, after_user_id: str | None) -> dict[str, Any]:
    """The players with a standing (current or ended) in one season, after a user id."""
    query: dict[str, Any] = {"b": board, "s": _in_season(period, season)}
    if after_user_id is not None:
        query["u"] = {"$gt": after_user_id}
    return query


def season_projection(period: str, season: str) -> dict[str, Any]:
    """A season's row of each document: its name, version and that one standing."""
    return {"_id": 0, "u": 1, "n": 1, "v": 1, "s": _in_season(period, season)}


def season_row(doc: Mapping[str, Any]) -> BoardRow:
    """The row of a document read with :func:`season_projection`."""
    (held,) = doc["s"]
    return BoardRow(str(doc["u"]), str(doc["n"]), int(held["sc"]), int(held["at"]), int(doc["v"]))


def retire_query(board: str, period: str, before_ms: int) -> dict[str, Any]:
    """The players holding a standing of ``period`` in a season started before ``before_ms``."""
    return {"b": board, "s": {"$elemMatch": {"p": period, "st": {"$lt": before_ms}}}}
