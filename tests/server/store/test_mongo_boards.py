"""The boards' MongoDB documents, their updates and queries as data, and what only the
MongoDB adapter does (spending tokens in their own collection, leaving banned players out
of a page and filling it), on mongomock.

Updates are applied with mongomock (its update operators) to check that the document then
holds exactly the new record; the update's BSON size stands for its oplog entry.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from zoneinfo import ZoneInfo

import bson
import mongomock
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mongomock_motor import AsyncMongoMockClient
from pymongo.errors import NetworkTimeout, OperationFailure, ServerSelectionTimeoutError

from server.domain.board_writes import (
    BoardApplied,
    BoardKey,
    BoardRecord,
    BoardRules,
    decide_board_all,
)
from server.domain.boards import Standing
from server.domain.records import ActionReplayed, RateLimited, SpentAction
from server.domain.seasons import Period, season_at
from server.domain.standings import BoardStandings, SeasonClock, SeasonStanding
from server.store import mongo_boards as boards
from server.store.changes import BoardChange, LocalChangeFeed
from server.store.mongodb import MongoStore
from server.store.port import StoreError, StoreTimeout, StoreUnavailable
from tests.conftest import scaled
from tests.server.store.test_board_contract import DAY, T0, rules, spec, write
from tests.server.store.test_contract import UNLIMITED, Backend

UTC = ZoneInfo("UTC")


def start_of(period: str, season: str) -> int:
    """A start for every season, as data (the adapter's come from the board's periods)."""
    return len(period) * 1_000 + len(season)


def written(before: BoardRecord | None, after: BoardRecord) -> dict[str, Any]:
    """Store ``before`` (``None``: no document), write ``after`` as the adapter does (an
    insert, or :func:`board_update` filtered on the version), and read the document back."""
    scores: Any = mongomock.MongoClient()["scoreboard"][boards.BOARD_COLLECTION]
    if before is None:
        scores.insert_one(boards.board_document(after, start_of))
    else:
        doc = boards.board_document(before, start_of)
        scores.insert_one(doc)
        update = boards.board_update(doc, after, start_of)
        assert scores.update_one({"_id": doc["_id"], "v": before.v}, update).matched_count == 1
    stored = scores.find_one({"_id": boards.board_id(after.board, after.user_id)})
    assert stored is not None
    return dict(stored)


# --- documents as data ------------------------------------------------------------------

PERIODS = ("daily", "weekly", "all_time", "cup")
seasons = st.sampled_from(["2026-03-02", "2026-03-03", "2026-03-09", "all", "2026-03"])
standings = st.builds(
    SeasonStanding,
    st.sampled_from(PERIODS),
    seasons,
    st.builds(Standing, st.integers(-(2**53), 2**53), st.integers(0, 2**50)),
)
records = st.builds(
    BoardRecord,
    board=st.sampled_from(["kills", "laps"]),
    user_id=st.just("alice"),
    username=st.text(min_size=1, max_size=12),
    v=st.integers(1, 10_000),
    standings=st.builds(
        BoardStandings,
        st.lists(standings, max_size=4).map(tuple),
        st.lists(standings, max_size=12).map(tuple),
    ),
    recent_keys=st.lists(
        st.builds(
            BoardKey,
            st.text(min_size=1, max_size=8),
            st.lists(st.integers(0, 2**40), max_size=4).map(tuple),
            st.integers(1, 10_000),
            st.none() | st.text(max_size=8),
        ),
        max_size=8,
    ).map(tuple),
    accepted_ms=st.lists(st.integers(0, 2**50), max_size=8).map(tuple),
)


@given(records)
def test_a_record_round_trips_through_its_document(record: BoardRecord) -> None:
    doc = boards.board_document(record, start_of)
    assert boards.board_record(doc) == record
    assert doc["_id"] == f"{record.board}\x00alice"
    assert [e.get("cur", False) for e in doc["s"]] == [True] * len(record.standings.current) + [
        False
    ] * len(record.standings.ended)
    assert all(e["st"] == start_of(e["p"], e["id"]) for e in doc["s"])


@settings(max_examples=200)
@given(records, records)
def test_an_update_leaves_exactly_the_new_document(before: BoardRecord, after: BoardRecord) -> None:
    after = BoardRecord(
        before.board,
        before.user_id,
        after.username,
        before.v + 1,
        after.standings,
        after.recent_keys,
        after.accepted_ms,
    )
    assert written(before, after) == boards.board_document(after, start_of)
    assert boards.board_record(written(None, after)) == after


def test_a_record_without_its_rings_reads_with_none() -> None:
    # As the change stream carries it: the rings projected away.
    record = BoardRecord(
        "kills",
        "alice",
        "Alice",
        3,
        BoardStandings((SeasonStanding("all_time", "all", Standing(5, T0)),)),
        (BoardKey("k", (5,), 3, None),),
        (T0,),
    )
    doc = boards.board_document(record, start_of)
    bare = {field: doc[field] for field in boards.FEED_FIELDS}
    assert boards.board_record(bare) == BoardRecord("kills", "alice", "Alice", 3, record.standings)


def test_starts_are_read_from_the_document_else_computed_from_the_board() -> None:
    daily = Period("daily", "daily", UTC)
    doc = {"s": [{"p": "daily", "id": "2026-03-02", "st": 42}]}
    start = boards.starts_of(doc, spec(periods=(daily,)))
    assert start("daily", "2026-03-02") == 42  # stored: not computed again
    assert start("daily", "2026-03-03") == season_at(daily, T0 + DAY).start_ms
    assert start("gone", "2026-03-03") == 0  # a period the board no longer names
    assert boards.starts_of(None, None)("daily", "2026-03-03") == 0


def test_retiring_takes_the_oldest_seasons_of_the_period_up_to_the_budget() -> None:
    doc = {
        "s": [
            {"p": "daily", "id": "d4", "st": 4, "cur": True},
            {"p": "weekly", "id": "w1", "st": 1, "cur": True},
            {"p": "daily", "id": "d3", "st": 3},
            {"p": "daily", "id": "d1", "st": 1},
            {"p": "daily", "id": "d2", "st": 2},
        ]
    }
    assert boards.retiring(doc, "daily", 4, 10) == {"d1", "d2", "d3"}
    assert boards.retiring(doc, "daily", 4, 2) == {"d1", "d2"}
    assert boards.retiring(doc, "daily", 2, 10) == {"d1"}
    assert boards.retiring(doc, "weekly", 4, 0) == set()


def test_a_season_matches_period_and_season_in_the_same_standing() -> None:
    scores: Any = mongomock.MongoClient()["scoreboard"][boards.BOARD_COLLECTION]

    def player(
        user: str, *elements: tuple[str, str, int, bool], board: str = "kills"
    ) -> dict[str, Any]:
        s = [{"p": p, "id": i, "sc": sc, "at": T0, "st": 0, "cur": c} for p, i, sc, c in elements]
        return {"_id": f"{board}\x00{user}", "b": board, "u": user, "n": user, "v": 1, "s": s}

    scores.insert_many(
        [
            player("ann", ("daily", "2026-03-02", 5, True)),  # current
            player("bob", ("daily", "2026-03-03", 1, True), ("daily", "2026-03-02", 7, False)),
            # The period in one standing and the season in another: not in that season.
            player("cid", ("daily", "2026-03-03", 2, True), ("weekly", "2026-03-02", 9, True)),
            player("dan", ("daily", "2026-03-02", 4, True)),
        ]
    )
    scores.insert_one(player("ann", ("daily", "2026-03-02", 3, True), board="laps"))

    def page(after: str | None) -> list[tuple[str, int]]:
        query = boards.season_query("kills", "daily", "2026-03-02", after)
        projection = boards.season_projection("daily", "2026-03-02")
        docs = scores.find(query, projection).sort("u", 1)
        return [(row.user_id, row.score) for row in map(boards.season_row, docs)]

    assert page(None) == [("ann", 5), ("bob", 7), ("dan", 4)]
    assert page("bob") == [("dan", 4)]
    assert [
        d["u"] for d in scores.find(boards.retire_query("kills", "weekly", 1)).sort("u", 1)
    ] == ["cid"]


# --- the oplog bound --------------------------------------------------------------------

THREE = (
    Period("daily", "daily", ZoneInfo("Europe/Berlin")),
    Period("weekly", "weekly", ZoneInfo("Europe/Berlin")),
    Period("all_time", "all_time", UTC),
)
# One standing as stored (the longest period name and season id): its BSON size bounds
# every element of ``s``.
ELEMENT = len(
    bson.encode(
        {
            "s": {
                "p": "all_time",
                "id": "2026-03-02",
                "sc": 2**53,
                "at": 2**50,
                "st": 2**50,
                "cur": True,
            }
        }
    )
)
# A key slot (a 36-character key, its scores, seq and fingerprint), a log slot, ``v``
# and the update's own framing.
OVERHEAD = 200


def test_an_update_stays_bounded_by_the_boards_shape_whatever_the_history() -> None:
    """3,000 keyed updates of one player over 60 days (three periods, 8 ended seasons
    kept, 64 keys, a rate-limit log): within a season every update sets the three
    current standings and a slot of each ring, under 3 elements + overhead; across a
    boundary at most every standing moves, under 3 x (1 + 8) elements + overhead.
    Neither grows with the history: the whole document is many times larger."""
    keep = 8
    r = BoardRules(spec(periods=THREE, rate=100, keep=keep), SeasonClock())
    scores: Any = mongomock.MongoClient()["scoreboard"][boards.BOARD_COLLECTION]
    doc: dict[str, Any] | None = None
    record: BoardRecord | None = None
    in_season: list[int] = []
    across: list[int] = []
    for i in range(3_000):
        now = T0 + i * (DAY // 50)
        cmd = write(value=1, now_ms=now, key=str(uuid.UUID(int=i)), fingerprint="0" * 16)
        (decision,), new, _ = decide_board_all(record, [cmd], r)
        assert isinstance(decision, BoardApplied) and new is not None
        start = boards.starts_of(doc, r.spec)
        if doc is None:
            scores.insert_one(boards.board_document(new, start))
        else:
            update = boards.board_update(doc, new, start)
            assert scores.update_one({"_id": doc["_id"], "v": new.v - 1}, update).matched_count
            size = len(bson.encode(update))
            same = record is not None and [s.season for s in record.standings.current] == [
                s.season for s in new.standings.current
            ]
            (in_season if same else across).append(size)
        doc = scores.find_one({"_id": boards.board_id("kills", "alice")})
        assert doc is not None
        record = boards.board_record(doc)
        assert record == new
    assert record is not None and len(record.recent_keys) == 64
    assert len(record.standings.ended) == keep + 8  # 8 days and 8 weeks
    assert max(in_season) <= 3 * ELEMENT + OVERHEAD, max(in_season)
    assert max(across) <= 3 * (1 + keep) * ELEMENT + OVERHEAD, max(across)
    assert doc is not None and len(bson.encode(doc)) > 5 * max(in_season)


# --- the adapter on mongomock -------------------------------------------------------------


def mock_backend(tmp_path: Any) -> Backend:
    return Backend("mongomock", tmp_path)


@pytest.mark.gen_test(timeout=scaled(20))
async def test_one_token_spent_at_once_on_two_boards_by_two_pods_applies_once(
    tmp_path: Any,
) -> None:
    b = mock_backend(tmp_path)
    kills, deaths = rules(), rules(spec("deaths"))
    async with b.opened() as one, b.opened() as two:
        results = await asyncio.gather(
            *(
                store.apply_board_writes(r, [write(board=r.spec.id, jti="j1")])
                for store, r in ((one, kills), (two, deaths))
            )
        )
        decisions = sorted(type(d).__name__ for (d,) in results)
        assert decisions == ["ActionReplayed", "BoardApplied"]
        spent = await b._mock_db[boards.SPENT_COLLECTION].find({}).to_list(10)
        assert [(s["_id"], s["exp"]) for s in spent] == [("j1", T0 + 60_000)]


@pytest.mark.gen_test(timeout=scaled(20))
async def test_a_token_of_an_update_refused_on_a_fresher_record_is_given_back(
    tmp_path: Any,
) -> None:
    """Two pods take one update each of one player, rate limited to one a minute: both
    decide on no record and spend their token, one write wins, the other is decided again
    (now rate limited) and its token is forgotten: the client may use it again."""
    b = mock_backend(tmp_path)
    r = rules(spec(rate=1))
    async with b.opened() as one, b.opened() as two:
        (first,), (second,) = await asyncio.gather(
            one.apply_board_writes(r, [write(jti="j1")]),
            two.apply_board_writes(r, [write(jti="j2")]),
        )
        assert {type(first), type(second)} == {BoardApplied, RateLimited}
        winner = "j1" if isinstance(first, BoardApplied) else "j2"
        spent = await b._mock_db[boards.SPENT_COLLECTION].find({}).to_list(10)
        assert [s["_id"] for s in spent] == [winner]
        assert b.stats.duplicate_keys > 0  # both decided on no record: the race ran


@pytest.mark.gen_test(timeout=scaled(20))
async def test_an_expired_token_not_yet_forgotten_can_be_spent_again(tmp_path: Any) -> None:
    b = mock_backend(tmp_path)
    r = rules()
    async with b.opened() as store:
        spent = b._mock_db[boards.SPENT_COLLECTION]
        await spent.insert_one({"_id": "j1", "exp": T0, "b": "deaths", "u": "bob"})
        (decision,) = await store.apply_board_writes(r, [write(jti="j1")])
        assert isinstance(decision, BoardApplied)
        assert await spent.find_one({"_id": "j1"}) == {
            "_id": "j1",
            "exp": T0 + 60_000,
            "b": "kills",
            "u": "alice",
        }
        (again,) = await store.apply_board_writes(r, [write(jti="j1", now_ms=T0 + 1)])
        assert isinstance(again, ActionReplayed)


@pytest.mark.gen_test(timeout=scaled(20))
async def test_a_page_without_banned_players_is_filled_from_further_on(tmp_path: Any) -> None:
    b = mock_backend(tmp_path)
    r = rules()
    async with b.opened() as store:
        for user in ("ann", "bob", "cid", "dan", "eve"):
            await store.apply_board_writes(r, [write(user)])
        users = b._mock_db["users_scores"]
        for banned in ("bob", "cid"):
            await users.insert_one({"_id": banned, "banned": True})
        await users.insert_one({"_id": "dan", "banned": False})
        first = await store.season_rows("kills", "all_time", "all", None, 2)
        assert [row.user_id for row in first] == ["ann", "dan"]
        rest = await store.season_rows("kills", "all_time", "all", "dan", 2)
        assert [row.user_id for row in rest] == ["eve"]
        assert await store.season_rows("kills", "all_time", "all", None, 0) == []


@pytest.mark.gen_test(timeout=scaled(20))
async def test_resets_and_retirements_are_on_the_feed_with_a_new_version() -> None:
    feed = LocalChangeFeed()
    r = rules(spec(periods=(THREE[0],)))
    store = MongoStore(AsyncMongoMockClient()["scoreboard_test"], UNLIMITED, feed=feed)
    await store.open()
    try:
        await store.apply_board_writes(r, [write(value=2)])
        await store.apply_board_writes(r, [write(value=3, now_ms=T0 + DAY)])
        stream = await feed.watch(None)
        reset = await store.reset_board_standing(r, "alice", "daily", "2026-03-03")
        assert reset is not None and reset.v == 3
        assert await store.retire_seasons("kills", "daily", T0 + DAY, 10) == 1
        events = await stream.next_batch()
        assert [e.record.v for e in events if isinstance(e, BoardChange)] == [3, 4]
        record = await store.get_board_record(r, "alice")
        assert record is not None and record.v == 4 and record.standings == BoardStandings()
    finally:
        await store.close()


class FailingUpdates:
    """A mongomock-motor database whose ``board_scores`` updates raise ``error``."""

    def __init__(self, error: Exception) -> None:
        self.target: Any = AsyncMongoMockClient()[f"test_{uuid.uuid4().hex}"]
        self.error = error

    def __getitem__(self, name: str) -> Any:
        collection = self.target[name]
        if name != boards.BOARD_COLLECTION:
            return collection
        error = self.error

        class Failing:
            def __getattr__(self, attr: str) -> Any:
                return getattr(collection, attr)

            async def update_one(self, *args: Any, **kwargs: Any) -> Any:
                raise error

        return Failing()


@pytest.mark.parametrize(
    ("error", "expected", "kept"),
    [
        (OperationFailure("not authorized", 13), StoreError, []),  # not applied: given back
        (NetworkTimeout("timed out"), StoreTimeout, ["j2"]),  # maybe applied: kept
        (ServerSelectionTimeoutError("no primary"), StoreUnavailable, ["j2"]),  # unreachable
    ],
)
@pytest.mark.gen_test(timeout=scaled(20))
async def test_a_failed_board_write_gives_its_token_back_only_when_nothing_was_applied(
    error: Exception, expected: type[StoreError], kept: list[str]
) -> None:
    db = FailingUpdates(error)
    store = MongoStore(db, UNLIMITED)
    await store.open()
    try:
        await store.apply_board_writes(rules(), [write(jti="j1")])  # an insert: it goes
        with pytest.raises(StoreError) as raised:
            await store.apply_board_writes(rules(), [write(jti="j2", now_ms=T0 + 1)])
        assert type(raised.value) is expected
        spent = await db.target[boards.SPENT_COLLECTION].find({}).sort("_id", 1).to_list(10)
        assert [s["_id"] for s in spent] == ["j1", *kept]
    finally:
        await store.close()


def test_a_spent_token_document() -> None:
    assert boards.spent_document(SpentAction("j", 9), "kills", "alice") == {
        "_id": "j",
        "exp": 9,
        "b": "kills",
        "u": "alice",
    }
