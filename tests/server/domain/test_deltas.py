"""server.domain.deltas as data: deltas, messages, the bounded history, ``since``, resume."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.deltas import (
    Delta,
    DeltaHistory,
    Replay,
    Resync,
    Since,
    apply_delta,
    board_json,
    delta_message,
    diff_rows,
    encode,
    looks_same,
    parse_since,
    plan_resume,
    resumed_message,
    rows_json,
    snapshot_message,
    top_scores_body,
    update_message,
)
from server.domain.records import BoardRow

Board = tuple[BoardRow, ...]


def row(user_id: str, username: str, score: int, v: int = 1) -> BoardRow:
    return BoardRow(user_id, username, score, 1_000 + v, v)


def shown(board: Board) -> list[tuple[str, str, int]]:
    """What clients see of a board."""
    return [(r.user_id, r.username, r.score) for r in board]


# A small pool of ids, names and scores, so that two boards share users often and the
# same user often moves, gets renamed or changes score (or only its version: not shown).
_rows = st.builds(
    row,
    st.sampled_from([f"u{i}" for i in range(12)]),
    st.sampled_from(["Ann", "Bob", "Zoë", "李"]),
    st.integers(0, 5),
    st.integers(1, 2),
)
boards = st.lists(_rows, max_size=10, unique_by=lambda row: row.user_id).map(tuple)


# --- diff_rows and apply_delta ---------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(old=boards, new=boards)
def test_applying_the_diff_of_two_boards_gives_the_new_board(old: Board, new: Board) -> None:
    assert shown(apply_delta(old, diff_rows(old, new))) == shown(new)


@settings(max_examples=400, deadline=None)
@given(old=boards, new=boards)
def test_the_diff_holds_exactly_the_rows_that_differ(old: Board, new: Board) -> None:
    delta = diff_rows(old, new)
    old_at = {r.user_id: (rank, *shown((r,))) for rank, r in enumerate(old, start=1)}
    # changed: rows of the new board, with their rank, in rank order ...
    ranks = [rank for rank, _ in delta.changed]
    assert ranks == sorted(set(ranks))
    for rank, r in delta.changed:
        assert new[rank - 1] == r
        # ... each new to the board, or at another rank, or with another name or score.
        assert old_at.get(r.user_id) != (rank, *shown((r,)))
    # Every row left out of changed is where it was and looks as it did.
    changed_ranks = set(ranks)
    for rank, r in enumerate(new, start=1):
        if rank not in changed_ranks:
            assert old_at[r.user_id] == (rank, *shown((r,)))
    # removed: the users of the old board not on the new one, in the old board's order.
    new_ids = {r.user_id for r in new}
    assert delta.removed == tuple(r.user_id for r in old if r.user_id not in new_ids)


@given(old=boards, new=boards)
def test_boards_look_the_same_when_their_shown_rows_are_equal(old: Board, new: Board) -> None:
    assert looks_same(old, new) == (shown(old) == shown(new))
    assert looks_same(old, new) == (diff_rows(old, new) == Delta((), ()))


def test_a_new_version_of_the_same_row_is_no_change() -> None:
    before = (row("a", "A", 9, v=1),)
    after = (row("a", "A", 9, v=2),)  # e.g. an admin reset of a score to what it was
    assert looks_same(before, after)
    assert diff_rows(before, after) == Delta((), ())


@given(board=boards)
def test_the_diff_of_a_board_with_itself_is_empty(board: Board) -> None:
    assert diff_rows(board, board) == Delta((), ())
    assert apply_delta(board, Delta((), ())) == board


def test_diff_examples() -> None:
    old: Board = (row("a", "A", 9), row("b", "B", 5), row("c", "C", 1))
    # b overtakes a; c's score changes; a keeps nothing but its row at a new rank.
    new: Board = (row("b", "B", 10, 2), row("a", "A", 9), row("c", "C", 2, 2))
    assert diff_rows(old, new) == Delta(((1, new[0]), (2, new[1]), (3, new[2])), ())
    # Only a rename at rank 2.
    renamed: Board = (row("a", "A", 9), row("b", "Bee", 5, 2), row("c", "C", 1))
    assert diff_rows(old, renamed) == Delta(((2, renamed[1]),), ())
    # d enters at rank 3, c leaves.
    entered: Board = (row("a", "A", 9), row("b", "B", 5), row("d", "D", 3))
    assert diff_rows(old, entered) == Delta(((3, entered[2]),), ("c",))
    # The board shrinks (a reset made the top N shorter): only removals.
    assert diff_rows(old, old[:1]) == Delta((), ("b", "c"))
    assert apply_delta(old, Delta((), ("b", "c"))) == old[:1]
    assert diff_rows((), old) == Delta(tuple(enumerate(old, start=1)), ())
    assert diff_rows(old, ()) == Delta((), ("a", "b", "c"))


def js_like_apply(board: list[dict[str, Any]], message: dict[str, Any]) -> list[dict[str, Any]]:
    """docs/protocol.md's JavaScript ``apply`` for a delta, transcribed line by line."""
    gone = set(message["removed"]) | {row["user_id"] for row in message["changed"]}
    by_rank = {i + 1: row for i, row in enumerate(board) if row["user_id"] not in gone}
    for c in message["changed"]:
        by_rank[c["rank"]] = {k: c[k] for k in ("user_id", "username", "score")}
    return [by_rank[rank] for rank in sorted(by_rank)]


@settings(max_examples=200, deadline=None)
@given(old=boards, new=boards)
def test_the_encoded_delta_applied_as_documented_gives_the_new_board(
    old: Board, new: Board
) -> None:
    message = json.loads(delta_message("e", 1, diff_rows(old, new)))
    assert js_like_apply(rows_json(old), message) == rows_json(new)


# --- messages --------------------------------------------------------------------------------

ROWS: Board = (row("u1", "Zoë", 30), row("u2", "李", 20))
ROWS_JSON = [
    {"user_id": "u1", "username": "Zoë", "score": 30},
    {"user_id": "u2", "username": "李", "score": 20},
]


def test_snapshot_message() -> None:
    text = snapshot_message("ab12", 7, board_json(ROWS), "history_expired")
    assert json.loads(text) == {
        "event": "snapshot",
        "epoch": "ab12",
        "version": 7,
        "reason": "history_expired",
        "top_scores": ROWS_JSON,
    }
    assert json.loads(snapshot_message("ab12", 0, board_json(()), "new"))["top_scores"] == []


def test_update_message() -> None:
    assert json.loads(update_message("ab12", 8, board_json(ROWS))) == {
        "event": "update",
        "epoch": "ab12",
        "version": 8,
        "top_scores": ROWS_JSON,
    }


def test_delta_message() -> None:
    delta = Delta(((2, row("u2", "李", 21, 2)),), ("u9", "u8"))
    assert json.loads(delta_message("ab12", 9, delta)) == {
        "event": "delta",
        "epoch": "ab12",
        "version": 9,
        "changed": [{"rank": 2, "user_id": "u2", "username": "李", "score": 21}],
        "removed": ["u9", "u8"],
    }
    assert json.loads(delta_message("ab12", 10, Delta((), ()))) == {
        "event": "delta",
        "epoch": "ab12",
        "version": 10,
        "changed": [],
        "removed": [],
    }


def test_resumed_message() -> None:
    assert json.loads(resumed_message("ab12", 40, 2)) == {
        "event": "resumed",
        "epoch": "ab12",
        "version": 40,
        "missed": 2,
    }


def test_messages_are_compact_json_with_names_kept_as_they_are() -> None:
    text = update_message("ab12", 1, board_json(ROWS))
    assert ": " not in text and ", " not in text
    assert "Zoë" in text and "李" in text  # not \\u escapes: fewer bytes per client
    assert encode({"a": [1, "é"]}) == '{"a":[1,"é"]}'


@settings(max_examples=100, deadline=None)
@given(
    board=boards,
    epoch=st.text(max_size=12),
    version=st.integers(0, 2**63),
    reason=st.sampled_from(["new", "resync", 'a "quoted" reason']),
)
def test_messages_put_together_around_the_board_are_the_encoded_dicts(
    board: Board, epoch: str, version: int, reason: str
) -> None:
    # The wire format was encode() of these dicts: byte for byte the same.
    rows = rows_json(board)
    text = board_json(board)
    assert snapshot_message(epoch, version, text, reason) == encode(
        {
            "event": "snapshot",
            "epoch": epoch,
            "version": version,
            "reason": reason,
            "top_scores": rows,
        }
    )
    assert update_message(epoch, version, text) == encode(
        {"event": "update", "epoch": epoch, "version": version, "top_scores": rows}
    )
    assert top_scores_body(text) == encode({"top_scores": rows}).encode()


# --- DeltaHistory ----------------------------------------------------------------------------


def filled(size: int, versions: range) -> DeltaHistory:
    history = DeltaHistory(size)
    for version in versions:
        history = history.appended(version, f"m{version}")
    return history


def test_an_empty_history_replays_nothing() -> None:
    history = DeltaHistory(4)
    assert history.since(0) is None
    assert history.since(5) is None


def test_the_history_keeps_the_last_size_versions() -> None:
    history = filled(3, range(1, 11))  # versions 1..10, keeps 8..10
    assert history.since(7) == ["m8", "m9", "m10"]
    assert history.since(8) == ["m9", "m10"]
    assert history.since(9) == ["m10"]
    assert history.since(10) == []
    assert history.since(6) is None  # version 7 is gone
    assert history.since(0) is None


def test_a_short_history_replays_from_the_start() -> None:
    history = filled(5, range(1, 4))
    assert history.since(0) == ["m1", "m2", "m3"]
    assert history.since(2) == ["m3"]


def test_a_gap_clears_the_history() -> None:
    history = filled(10, range(1, 5)).appended(6, "m6")  # version 5 never recorded
    assert history.since(5) == ["m6"]
    assert history.since(4) is None  # 5 is missing: 4 can no longer be resumed
    assert history.since(1) is None
    history = history.appended(7, "m7")
    assert history.since(5) == ["m6", "m7"]


def test_appending_gives_a_new_history_and_leaves_this_one_as_it_was() -> None:
    before = filled(2, range(1, 3))
    after = before.appended(3, "m3")
    assert before.since(0) == ["m1", "m2"]
    assert after.since(1) == ["m2", "m3"]
    assert after.since(0) is None  # keeps 2: m1 is gone from the new one only


@pytest.mark.parametrize("again", [3, 2, 1])
def test_a_duplicate_or_out_of_order_append_clears_the_history(again: int) -> None:
    history = filled(10, range(1, 4)).appended(again, "again")
    # What came before can no longer be replayed in order; only what follows ``again``.
    assert history.since(again - 1) == ["again"]
    if again > 1:
        assert history.since(again - 2) is None
    assert history.since(0) == (["again"] if again == 1 else None)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 8), last=st.integers(0, 30), since=st.integers(0, 30))
def test_since_replays_exactly_the_versions_after_it_or_none(
    size: int, last: int, since: int
) -> None:
    history = filled(size, range(1, last + 1))
    kept_from = max(1, last - size + 1)
    result = history.since(since)
    if last == 0 or since < kept_from - 1:
        assert result is None
    else:
        assert result == [f"m{v}" for v in range(since + 1, last + 1)]


# --- parse_since -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ab12cd34:0", Since("ab12cd34", 0)),
        ("ab12cd34:41", Since("ab12cd34", 41)),
        ("e:007", Since("e", 7)),
        ("a:b:3", Since("a:b", 3)),  # the version is after the last colon
        ("e" * 126 + ":1", Since("e" * 126, 1)),  # 128 characters: the most accepted
    ],
)
def test_parse_since(raw: str, expected: Since) -> None:
    assert parse_since(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "41",
        "ab12",
        ":41",
        "ab12:",
        "ab12:-1",
        "ab12:+1",
        "ab12:1.5",
        "ab12:1e3",
        "ab12: 1",
        "ab12:1 ",
        "ab12:x",
        "ab12:²",  # a digit to str.isdigit, not to int()
        "e" * 127 + ":1",  # longer than 128 characters
        "e:" + "9" * 127,
    ],
)
def test_parse_since_refuses_malformed_values(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_since(raw)


# --- plan_resume -----------------------------------------------------------------------------

EPOCH = "ab12cd34"


def test_no_since_gets_a_new_snapshot() -> None:
    assert plan_resume(None, EPOCH, 5, filled(10, range(1, 6))) == Resync("new")


def test_another_epoch_gets_a_snapshot_even_for_a_version_in_history() -> None:
    history = filled(10, range(1, 6))
    assert plan_resume(Since("00000000", 3), EPOCH, 5, history) == Resync("epoch_changed")
    assert plan_resume(Since("00000000", 5), EPOCH, 5, history) == Resync("epoch_changed")


def test_a_version_ahead_of_the_board_gets_a_snapshot() -> None:
    history = filled(10, range(1, 6))
    assert plan_resume(Since(EPOCH, 6), EPOCH, 5, history) == Resync("unknown_version")
    assert plan_resume(Since(EPOCH, 10**40), EPOCH, 5, history) == Resync("unknown_version")


def test_the_current_version_resumes_with_nothing_missed() -> None:
    assert plan_resume(Since(EPOCH, 5), EPOCH, 5, filled(10, range(1, 6))) == Replay([])
    # Also before anything was published, and with an empty history.
    assert plan_resume(Since(EPOCH, 0), EPOCH, 0, DeltaHistory(10)) == Replay([])


def test_a_version_in_history_replays_the_missed_deltas_in_order() -> None:
    history = filled(10, range(1, 6))
    assert plan_resume(Since(EPOCH, 2), EPOCH, 5, history) == Replay(["m3", "m4", "m5"])
    assert plan_resume(Since(EPOCH, 0), EPOCH, 5, history) == Replay(["m1", "m2", "m3", "m4", "m5"])


def test_a_version_older_than_the_history_gets_a_snapshot() -> None:
    history = filled(2, range(1, 6))  # keeps 4 and 5
    assert plan_resume(Since(EPOCH, 3), EPOCH, 5, history) == Replay(["m4", "m5"])
    assert plan_resume(Since(EPOCH, 2), EPOCH, 5, history) == Resync("history_expired")
    assert plan_resume(Since(EPOCH, 0), EPOCH, 5, history) == Resync("history_expired")
    # A board that published without recording history cannot replay either.
    assert plan_resume(Since(EPOCH, 4), EPOCH, 5, DeltaHistory(10)) == Resync("history_expired")


def test_a_history_behind_the_board_is_not_replayed_as_if_complete() -> None:
    # The history's last version is 5 but the board is at 7: replaying 3..5 would lose 6, 7.
    history = filled(10, range(1, 6))
    assert plan_resume(Since(EPOCH, 3), EPOCH, 7, history) == Resync("history_expired")
    assert plan_resume(Since(EPOCH, 5), EPOCH, 7, history) == Resync("history_expired")


@pytest.mark.parametrize("again", [5, 4, 2])
def test_duplicate_or_out_of_order_appends_never_replay_a_wrong_sequence(again: int) -> None:
    # A bug upstream: a version recorded twice.
    history = filled(10, range(1, 6)).appended(again, "again")
    for since in range(6):
        plan = plan_resume(Since(EPOCH, since), EPOCH, 5, history)
        if since == 5:
            assert plan == Replay([])
        elif isinstance(plan, Replay):
            # Whatever is replayed covers every missed version exactly once, in order.
            assert len(plan.messages) == 5 - since
        else:
            assert plan == Resync("history_expired")


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 8), version=st.integers(0, 30), since=st.integers(0, 35))
def test_resume_replays_exactly_the_missed_versions_or_says_why_not(
    size: int, version: int, since: int
) -> None:
    history = filled(size, range(1, version + 1))
    plan = plan_resume(Since(EPOCH, since), EPOCH, version, history)
    if since > version:
        assert plan == Resync("unknown_version")
    elif version - since <= size:
        assert plan == Replay([f"m{v}" for v in range(since + 1, version + 1)])
    else:
        assert plan == Resync("history_expired")
