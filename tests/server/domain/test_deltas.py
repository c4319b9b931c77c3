"""server.domain.deltas as data: deltas, messages, the bounded history, ``since``, resume."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.deltas import (
    Delta,
    Replay,
    Resync,
    Since,
    StreamHistory,
    apply_delta,
    delta_message,
    diff_rows,
    encode,
    parse_since,
    plan_resume,
    resumed_message,
    rows_json,
    snapshot_message,
    update_message,
)
from server.domain.topk import Row

Board = tuple[Row, ...]

# A small pool of ids, names and scores, so that two boards share users often and the
# same user often moves, gets renamed or changes score.
_rows = st.tuples(
    st.sampled_from([f"u{i}" for i in range(12)]),
    st.sampled_from(["Ann", "Bob", "Zoë", "李"]),
    st.integers(0, 5),
)
boards = st.lists(_rows, max_size=10, unique_by=lambda row: row[0]).map(tuple)


# --- diff_rows and apply_delta ---------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(old=boards, new=boards)
def test_applying_the_diff_of_two_boards_gives_the_new_board(old: Board, new: Board) -> None:
    assert apply_delta(old, diff_rows(old, new)) == new


@settings(max_examples=400, deadline=None)
@given(old=boards, new=boards)
def test_the_diff_holds_exactly_the_rows_that_differ(old: Board, new: Board) -> None:
    delta = diff_rows(old, new)
    old_at = {row[0]: (rank, row) for rank, row in enumerate(old, start=1)}
    # changed: rows of the new board, with their rank, in rank order ...
    ranks = [rank for rank, _ in delta.changed]
    assert ranks == sorted(set(ranks))
    for rank, row in delta.changed:
        assert new[rank - 1] == row
        # ... each new to the board, or at another rank, or with another name or score.
        assert old_at.get(row[0]) != (rank, row)
    # Every row left out of changed is exactly where and what it was.
    changed_ranks = set(ranks)
    for rank, row in enumerate(new, start=1):
        if rank not in changed_ranks:
            assert old_at[row[0]] == (rank, row)
    # removed: the users of the old board not on the new one, in the old board's order.
    new_ids = {row[0] for row in new}
    assert delta.removed == tuple(row[0] for row in old if row[0] not in new_ids)


@given(board=boards)
def test_the_diff_of_a_board_with_itself_is_empty(board: Board) -> None:
    assert diff_rows(board, board) == Delta((), ())
    assert apply_delta(board, Delta((), ())) == board


def test_diff_examples() -> None:
    old: Board = (("a", "A", 9), ("b", "B", 5), ("c", "C", 1))
    # b overtakes a; c's score changes; a keeps nothing but its row at a new rank.
    new: Board = (("b", "B", 10), ("a", "A", 9), ("c", "C", 2))
    assert diff_rows(old, new) == Delta(
        ((1, ("b", "B", 10)), (2, ("a", "A", 9)), (3, ("c", "C", 2))), ()
    )
    # Only a rename at rank 2.
    renamed: Board = (("a", "A", 9), ("b", "Bee", 5), ("c", "C", 1))
    assert diff_rows(old, renamed) == Delta(((2, ("b", "Bee", 5)),), ())
    # d enters at rank 3, c leaves.
    entered: Board = (("a", "A", 9), ("b", "B", 5), ("d", "D", 3))
    assert diff_rows(old, entered) == Delta(((3, ("d", "D", 3)),), ("c",))
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

ROWS: Board = (("u1", "Zoë", 30), ("u2", "李", 20))
ROWS_JSON = [
    {"user_id": "u1", "username": "Zoë", "score": 30},
    {"user_id": "u2", "username": "李", "score": 20},
]


def test_snapshot_message() -> None:
    text = snapshot_message("ab12", 7, ROWS, "history_expired")
    assert json.loads(text) == {
        "event": "snapshot",
        "epoch": "ab12",
        "version": 7,
        "reason": "history_expired",
        "top_scores": ROWS_JSON,
    }
    assert json.loads(snapshot_message("ab12", 0, (), "new"))["top_scores"] == []


def test_update_message() -> None:
    assert json.loads(update_message("ab12", 8, ROWS)) == {
        "event": "update",
        "epoch": "ab12",
        "version": 8,
        "top_scores": ROWS_JSON,
    }


def test_delta_message() -> None:
    delta = Delta(((2, ("u2", "李", 21)),), ("u9", "u8"))
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
    text = update_message("ab12", 1, ROWS)
    assert ": " not in text and ", " not in text
    assert "Zoë" in text and "李" in text  # not \\u escapes: fewer bytes per client
    assert encode({"a": [1, "é"]}) == '{"a":[1,"é"]}'


# --- StreamHistory ---------------------------------------------------------------------------


def filled(size: int, versions: range) -> StreamHistory:
    history = StreamHistory(size)
    for version in versions:
        history.append(version, f"m{version}")
    return history


def test_an_empty_history_replays_nothing() -> None:
    history = StreamHistory(4)
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
    history = filled(10, range(1, 5))
    history.append(6, "m6")  # version 5 never recorded
    assert history.since(5) == ["m6"]
    assert history.since(4) is None  # 5 is missing: 4 can no longer be resumed
    assert history.since(1) is None
    history.append(7, "m7")
    assert history.since(5) == ["m6", "m7"]


@pytest.mark.parametrize("again", [3, 2, 1])
def test_a_duplicate_or_out_of_order_append_clears_the_history(again: int) -> None:
    history = filled(10, range(1, 4))
    history.append(again, "again")
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


def test_a_version_ahead_of_the_stream_gets_a_snapshot() -> None:
    history = filled(10, range(1, 6))
    assert plan_resume(Since(EPOCH, 6), EPOCH, 5, history) == Resync("unknown_version")
    assert plan_resume(Since(EPOCH, 10**40), EPOCH, 5, history) == Resync("unknown_version")


def test_the_current_version_resumes_with_nothing_missed() -> None:
    assert plan_resume(Since(EPOCH, 5), EPOCH, 5, filled(10, range(1, 6))) == Replay([])
    # Also before anything was published, and with an empty history.
    assert plan_resume(Since(EPOCH, 0), EPOCH, 0, StreamHistory(10)) == Replay([])


def test_a_version_in_history_replays_the_missed_deltas_in_order() -> None:
    history = filled(10, range(1, 6))
    assert plan_resume(Since(EPOCH, 2), EPOCH, 5, history) == Replay(["m3", "m4", "m5"])
    assert plan_resume(Since(EPOCH, 0), EPOCH, 5, history) == Replay(["m1", "m2", "m3", "m4", "m5"])


def test_a_version_older_than_the_history_gets_a_snapshot() -> None:
    history = filled(2, range(1, 6))  # keeps 4 and 5
    assert plan_resume(Since(EPOCH, 3), EPOCH, 5, history) == Replay(["m4", "m5"])
    assert plan_resume(Since(EPOCH, 2), EPOCH, 5, history) == Resync("history_expired")
    assert plan_resume(Since(EPOCH, 0), EPOCH, 5, history) == Resync("history_expired")
    # A stream that published without recording history cannot replay either.
    assert plan_resume(Since(EPOCH, 4), EPOCH, 5, StreamHistory(10)) == Resync("history_expired")


def test_a_history_behind_the_stream_is_not_replayed_as_if_complete() -> None:
    # The history's last version is 5 but the stream is at 7: replaying 3..5 would lose 6, 7.
    history = filled(10, range(1, 6))
    assert plan_resume(Since(EPOCH, 3), EPOCH, 7, history) == Resync("history_expired")
    assert plan_resume(Since(EPOCH, 5), EPOCH, 7, history) == Resync("history_expired")


@pytest.mark.parametrize("again", [5, 4, 2])
def test_duplicate_or_out_of_order_appends_never_replay_a_wrong_sequence(again: int) -> None:
    history = filled(10, range(1, 6))
    history.append(again, "again")  # a bug upstream: a version recorded twice
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
