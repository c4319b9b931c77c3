"""The boards a server runs: the file read and checked at start, errors on one line naming
the file, the board and the field; without a file, the one board ``main``."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from server.board_setup import board_defaults, boards_of, read_boards_file, served
from server.domain.boards import BoardsError, default_boards, parse_boards
from server.settings import Settings, SettingsError
from tests.server.domain.test_boards import DEFAULTS, WORKED_EXAMPLE, boards


def test_the_file_is_read_and_its_errors_start_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "boards.toml"
    path.write_text(WORKED_EXAMPLE)
    assert read_boards_file(str(path), DEFAULTS) == boards(WORKED_EXAMPLE)

    path.write_text("[boards.k]\ntop_n = 0\n")
    with pytest.raises(BoardsError) as refused:
        read_boards_file(str(path), DEFAULTS)
    assert str(refused.value) == f"{path}: board 'k': top_n: 0 is not from 1 to 1000"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        # tomllib's own words follow (they vary between Python versions), with the line.
        (b"[boards.k]\ntop_n = \n", "not valid TOML: "),
        (b"[boards.k]\ntitle = 'a\n'\n", "not valid TOML: "),
        (b"[boards.k]\ntitle = '\xff'\n", "the file is not UTF-8"),
    ],
)
def test_a_file_that_is_not_toml_is_refused_on_one_line(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "boards.toml"
    path.write_bytes(content)
    with pytest.raises(BoardsError) as refused:
        read_boards_file(str(path), DEFAULTS)
    assert str(refused.value).startswith(f"{path}: {message}")
    assert "TOML" not in message or "line 2" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_missing_file_is_refused_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    with pytest.raises(BoardsError) as refused:
        read_boards_file(str(path), DEFAULTS)
    assert str(refused.value) == f"{path}: cannot read the file (No such file or directory)"


def test_without_a_file_the_server_runs_main_from_its_settings() -> None:
    settings = Settings(top_n=7, max_increment=3, rate_limit_per_minute=0)
    (main,) = boards_of(settings)
    assert main == default_boards(board_defaults(settings))[0]
    assert (main.id, main.top_n, main.max_increment, main.rate_limit_per_minute) == (
        "main",
        7,
        3,
        0,
    )


def test_a_wrong_file_stops_the_server_with_one_line_naming_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "boards.toml"
    path.write_text("[boards.laps]\noperator = 'fastest'\n")
    with pytest.raises(SettingsError) as refused:
        boards_of(replace(Settings(), boards_file=str(path)))
    message = str(refused.value)
    assert message.startswith(f"invalid setting SCOREBOARD_BOARDS_FILE: {path}: board 'laps': ")
    assert "operator" in message and "\n" not in message
    path.write_text(WORKED_EXAMPLE)
    expected = parse_boards(tomllib.loads(WORKED_EXAMPLE), board_defaults(Settings()))
    assert boards_of(replace(Settings(), boards_file=str(path))) == expected


def settings_with(tmp_path: Path, text: str, **overrides: object) -> Settings:
    path = tmp_path / "boards.toml"
    path.write_text(text)
    return replace(Settings(), boards_file=str(path), **overrides)  # type: ignore[arg-type]


def test_a_board_asking_for_proof_of_action_needs_the_action_secret(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as refused:
        served(settings_with(tmp_path, "[boards.k]\naction_points = { kill = 1 }\n"))
    assert "proof of action needs SCOREBOARD_ACTION" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert str(refused.value).startswith("invalid setting SCOREBOARD_BOARDS_FILE: ")


def test_every_board_of_the_worked_example_is_served(tmp_path: Path) -> None:
    settings, boards = served(settings_with(tmp_path, WORKED_EXAMPLE, action_secret="s" * 32))
    assert [b.id for b in boards] == ["kills", "laps", "level"]
    assert settings.boards_file is not None


def test_each_board_of_a_file_keeps_its_own_limits(tmp_path: Path) -> None:
    text = "[boards.arena]\ntop_n = 3\nmax_increment = 7\nrate_limit_per_minute = 0\n"
    settings, (board,) = served(settings_with(tmp_path, text, top_n=10, max_increment=100))
    assert (board.id, board.top_n, board.max_increment, board.rate_limit_per_minute) == (
        "arena",
        3,
        7,
        0,
    )
    assert (settings.top_n, settings.max_increment) == (10, 100)  # the server's, unchanged
    # Without a file: the settings as they are, and the one board main.
    plain, (main,) = served(Settings(top_n=4))
    assert plain == Settings(top_n=4) and main.id == "main"
