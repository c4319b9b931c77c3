"""``GET /api/boards``: the boards, their rules and each period's current season."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from handlers.boards import boards_answer, instant
from server.domain.standings import SeasonClock
from tests.conftest import eventually, make_token, scaled, serving, settings_for
from tests.server.domain.test_boards import WORKED_EXAMPLE, boards


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_each_board_with_its_rules_and_the_current_season_of_each_period() -> None:
    # 23:30 UTC on 4 December is already the 5th in Berlin.
    season_of = SeasonClock().at(ms("2026-12-04T23:30:00+00:00"))
    answer = boards_answer(boards(WORKED_EXAMPLE), season_of)
    kills, laps, level = answer["boards"]
    assert (kills["id"], kills["default"], laps["default"], level["default"]) == (
        "kills",
        True,
        False,
        False,
    )
    assert kills["operator"] == "incr" and kills["value_field"] == "increment"
    assert kills["proof_of_action"] is True and kills["timezone"] == "Europe/Berlin"
    assert [(p["name"], p["season"]["id"]) for p in kills["periods"]] == [
        ("weekly", "2026-11-30"),
        ("all_time", "all"),
        ("daily", "2026-12-05"),
    ]
    daily = kills["periods"][2]["season"]
    assert (daily["start"], daily["end"]) == (
        "2026-12-04T23:00:00.000Z",
        "2026-12-05T23:00:00.000Z",
    )
    assert kills["periods"][1]["season"] == {
        "id": "all",
        "start": "1970-01-01T00:00:00.000Z",
        "end": None,
    }
    assert laps["order"] == "asc" and laps["value_field"] == "score"
    assert laps["limits"] == {"min_score": 1000, "max_score": 600000}
    cup = laps["periods"][1]
    assert (cup["kind"], cup["cron"], cup["season"]["id"]) == (
        "cron",
        "0 0 1 * *",
        "2026-12-01T00:00",
    )
    assert level["operator"] == "set" and level["title"] == "level"


def test_instants_are_rfc3339_utc_to_the_millisecond() -> None:
    assert instant(0) == "1970-01-01T00:00:00.000Z"
    assert instant(1_767_225_600_123) == "2026-01-01T00:00:00.123Z"
    assert instant(None) is None


@pytest.mark.gen_test(timeout=scaled(30))
async def test_the_route_lists_main_without_a_file_and_the_files_boards_with_one(
    tmp_path: Path,
) -> None:
    async with serving() as client:
        answer = json.loads((await client.request("GET", "/api/boards")).body)
        (main,) = answer["boards"]
        assert (main["id"], main["operator"], main["default"]) == ("main", "incr", True)
        assert [p["name"] for p in main["periods"]] == ["all_time"]
    path = tmp_path / "boards.toml"
    path.write_text(SERVED)
    async with serving(replace(settings_for(), boards_file=str(path))) as client:
        listed = json.loads((await client.request("GET", "/api/boards")).body)["boards"]
        assert [(b["id"], b["title"], b["top_n"]) for b in listed] == [("arena", "Arena", 2)]
        # The board's limits are the ones applied: its top 2, its largest increment.
        for user in ("a", "b", "c", "c"):  # c: 6, then a and b: 3 each
            assert (await client.update(make_token(user), {"increment": 3})).code == 200
        refused = await client.update(make_token("d"), {"increment": 4})
        assert (refused.code, json.loads(refused.body)["error"]) == (400, "invalid_increment")
        top = await eventually(
            client.top, "the top 2", until=lambda rows: [r["user_id"] for r in rows][:1] == ["c"]
        )
        assert [r["user_id"] for r in top] == ["c", "a"]


SERVED = """
[boards.arena]
title = "Arena"
top_n = 2
max_increment = 3
rate_limit_per_minute = 0
"""
