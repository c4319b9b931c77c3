"""BoardView as data: built from loads, changes and publications; readers' answers in it."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from server.domain.board_view import BoardView, TopScores
from server.domain.deltas import SNAPSHOT_REASONS, Replay, Since, plan_resume
from server.domain.records import BoardRow
from server.domain.topk import ADMITS_ALL, Admission, rank_key

EPOCH = "ab12cd34"


def row(user_id: str, score: int, v: int = 1, username: str | None = None) -> BoardRow:
    return BoardRow(user_id, username or user_id.title(), score, 1_000 + v, v)


def shown(rows: tuple[BoardRow, ...]) -> list[tuple[str, str, int]]:
    return [(r.user_id, r.username, r.score) for r in rows]


def top_json(rows: tuple[BoardRow, ...]) -> list[dict[str, object]]:
    return [{"user_id": u, "username": n, "score": s} for u, n, s in shown(rows)]


LOADED = (row("a", 9), row("b", 5))
SOME = Admission(False, frozenset({"a", "b"}), rank_key(row("b", 5)))


def loaded_view(history_size: int = 4) -> BoardView:
    return BoardView.empty(EPOCH, history_size).loaded_with(LOADED, SOME)


def change_to(view: BoardView, rows: tuple[BoardRow, ...]) -> BoardView:
    return view.changed(TopScores(rows), view.admission)


def test_an_empty_view_is_not_loaded_and_wants_every_change() -> None:
    view = BoardView.empty(EPOCH, 4)
    assert not view.loaded
    assert (view.epoch, view.version, view.rows) == (EPOCH, 0, ())
    assert view.wants(row("z", 0))
    assert json.loads(view.top_scores.body) == {"top_scores": []}
    assert view.history.since(0) is None


def test_a_loaded_view_shows_the_rows_at_version_zero() -> None:
    view = loaded_view()
    assert view.loaded
    assert view.version == 0
    assert view.rows == view.top_scores.rows == LOADED
    assert json.loads(view.top_scores.body) == {"top_scores": top_json(LOADED)}
    for reason in SNAPSHOT_REASONS:
        assert json.loads(view.snapshot(reason)) == {
            "event": "snapshot",
            "epoch": EPOCH,
            "version": 0,
            "reason": reason,
            "top_scores": top_json(LOADED),
        }


def test_the_top_scores_answer_is_its_body_and_the_bodys_sha1_encoded_once() -> None:
    top = TopScores(LOADED)
    body, etag = top.answer
    assert body == json.dumps({"top_scores": top_json(LOADED)}, separators=(",", ":")).encode()
    assert etag == f'"{hashlib.sha1(body, usedforsecurity=False).hexdigest()}"'
    assert top.body is body and top.etag is etag  # the same objects for every read
    assert top.answer is top.answer


def test_a_change_shows_in_top_scores_at_once_and_in_the_version_only_once_published() -> None:
    view = loaded_view()
    new = (row("c", 12), row("a", 9))
    changed = change_to(view, new)
    # GET /api/top-scores: the latest rows; WebSocket clients: still version 0.
    assert changed.top_scores.rows == new
    assert (changed.version, changed.rows) == (0, LOADED)
    assert changed.snapshot("new") == view.snapshot("new")
    publication, published = changed.published()
    assert (publication.epoch, publication.version, publication.rows) == (EPOCH, 1, new)
    assert (published.version, published.rows) == (1, new)
    assert json.loads(publication.update) == {
        "event": "update",
        "epoch": EPOCH,
        "version": 1,
        "top_scores": top_json(new),
    }
    assert json.loads(publication.delta) == {
        "event": "delta",
        "epoch": EPOCH,
        "version": 1,
        "changed": [
            {"rank": 1, "user_id": "c", "username": "C", "score": 12},
            {"rank": 2, "user_id": "a", "username": "A", "score": 9},
        ],
        "removed": ["b"],
    }
    assert json.loads(published.snapshot("resync")) == {
        **json.loads(publication.update),
        "event": "snapshot",
        "reason": "resync",
    }
    assert published.history.since(0) == [publication.delta]
    assert published.top_scores is changed.top_scores  # encoded once per change, kept


def test_publications_number_versions_and_keep_the_last_deltas_for_resuming() -> None:
    view = loaded_view(history_size=2)
    deltas = []
    for score in range(10, 14):
        publication, view = change_to(view, (row("a", score, v=score),)).published()
        deltas.append(publication.delta)
    assert view.version == 4
    assert view.history.since(2) == deltas[2:]
    assert view.history.since(1) is None  # version 2 is no longer kept
    # What a resuming client is sent comes from the view alone.
    plan = plan_resume(Since(EPOCH, 2), view.epoch, view.version, view.history)
    assert plan == Replay(deltas[2:])


def test_wants_follows_the_admission_of_the_view() -> None:
    view = loaded_view()
    assert view.wants(row("a", 0, v=2))  # a member, even falling
    assert view.wants(row("c", 6))  # ranks above the last row
    assert not view.wants(row("c", 4))  # stays outside
    owed = view.changed(view.top_scores, ADMITS_ALL)  # e.g. a refill is owed
    assert owed.wants(row("c", 4))
    assert not view.wants(row("c", 4))  # the older view answers as it did


def test_views_are_frozen_and_old_views_stay_as_they_were() -> None:
    first = loaded_view()
    body, snapshot = first.top_scores.body, first.snapshot("new")
    _, later = change_to(first, (row("c", 12),)).published()
    _, later = change_to(later, (row("d", 13),)).published()
    assert later.version == 2
    # The first view answers exactly what it answered before.
    assert (first.version, first.rows) == (0, LOADED)
    assert first.top_scores.body is body
    assert first.snapshot("new") is snapshot
    assert first.history.since(0) is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.version = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        first.snapshots["new"] = "changed"  # type: ignore[index]
    with pytest.raises(AttributeError):
        first.top_scores.rows = ()  # type: ignore[misc]
