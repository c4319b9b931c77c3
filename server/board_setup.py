"""The boards a server runs: from ``SCOREBOARD_BOARDS_FILE``, or the one board ``main``.

The file is read and checked once, at start (:func:`served`); a mistake stops the server
with one line naming the board and field (docs/boards.md). Fields a board leaves out come
from the server's settings (:class:`~server.domain.boards.BoardDefaults`), and without a
file the single board ``main`` takes them all, so a deployment without a file behaves as
before.

With a file, every board applies its own rules and limits (:mod:`actors.boards`);
without one, ``main`` is the original board and the settings' limits are its own.
"""

from __future__ import annotations

import tomllib
from dataclasses import replace

from server.domain.boards import (
    BoardDefaults,
    BoardsError,
    BoardSpec,
    default_boards,
    parse_boards,
)
from server.settings import Settings, SettingsError


def board_defaults(settings: Settings) -> BoardDefaults:
    """What a board takes from the settings when its file does not say."""
    return BoardDefaults(
        top_n=settings.top_n,
        max_increment=settings.max_increment,
        rate_limit_per_minute=settings.rate_limit_per_minute,
        action_points=settings.action_points,
    )


def boards_of(settings: Settings) -> tuple[BoardSpec, ...]:
    """The boards ``settings`` name, the first being the default board.

    Raises:
        SettingsError: the boards file is missing, not TOML, or wrong (one line).
    """
    defaults = board_defaults(settings)
    if settings.boards_file is None:
        return default_boards(defaults)
    try:
        return read_boards_file(settings.boards_file, defaults)
    except BoardsError as exc:
        raise SettingsError("SCOREBOARD_BOARDS_FILE", str(exc)) from None


def read_boards_file(path: str, defaults: BoardDefaults) -> tuple[BoardSpec, ...]:
    """Read the boards file at ``path`` and check it (:func:`parse_boards`).

    Raises:
        BoardsError: unreadable, not UTF-8, not TOML, or a board is wrong; the message is
            one line and starts with ``path``.
    """
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise BoardsError(f"{path}: cannot read the file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise BoardsError(f"{path}: the file is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise BoardsError(f"{path}: not valid TOML: {' '.join(str(exc).split())}") from None
    try:
        return parse_boards(document, defaults)
    except BoardsError as exc:
        raise BoardsError(f"{path}: {exc}") from None


def served(settings: Settings) -> tuple[Settings, tuple[BoardSpec, ...]]:
    """The boards ``settings`` name, checked, and the settings to run with (without a
    file: with the one board's limits in place of the server-wide ones).

    Raises:
        SettingsError: the boards file is missing or wrong, or a board asks for proof
            of action without ``SCOREBOARD_ACTION_SECRET`` (one line each).
    """
    boards = boards_of(settings)
    for board in boards:
        if board.action_points and not settings.action_secret:
            raise SettingsError(
                "SCOREBOARD_BOARDS_FILE",
                f"{settings.boards_file}: board {board.id!r}: action_points: proof of action "
                "needs SCOREBOARD_ACTION_SECRET",
            )
    board = boards[0]
    if settings.boards_file is not None:
        return settings, boards  # each board applies its own limits (actors/boards.py)
    if settings.action_secret and not board.action_points:
        raise SettingsError(
            "SCOREBOARD_BOARDS_FILE",
            f"{settings.boards_file}: board {board.id!r}: action_points: required with "
            "SCOREBOARD_ACTION_SECRET",
        )
    effective = replace(
        settings,
        top_n=board.top_n,
        rate_limit_per_minute=board.rate_limit_per_minute,
        action_points=board.action_points,
        max_increment=board.max_increment or settings.max_increment,
    )
    return effective, boards
