"""The live page (``GET /``) in a real browser: Debian's Chromium driven by Playwright (by
its path: no browser is ever downloaded), in the same event loop as a real server, with
axe-core checking accessibility. These run in CI: without Chromium they fail, they do not
skip (``.ci/run`` installs it).

Screenshots go to a temporary directory, or to ``docs/screenshots/`` (the README shows
them) with ``SCOREBOARD_SAVE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Page, async_playwright

from tests.conftest import Client, make_token, scaled, serving, settings_for

pytestmark = pytest.mark.gen_test(timeout=scaled(60))

ROOT = Path(__file__).resolve().parents[3]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HOSTILE = "<img src=x onerror=alert(1)>"
HEBREW = "שחקן 1"
# Counts the polite live region's announcements (a MutationObserver on it).
COUNT_SUMMARIES = """() => {
  window.summaries = 0;
  new MutationObserver(() => { window.summaries += 1; }).observe(
    document.getElementById("summary"), { childList: true, characterData: true, subtree: true });
}"""
YOU_RANK = "document.getElementById('you-rank').textContent"
READ_TABLE = "rows => rows.map(r => [...r.cells].map(c => c.textContent))"


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


@asynccontextmanager
async def browser_page(
    width: int = 1280, color_scheme: Any = "light"
) -> AsyncIterator[tuple[Page, list[str]]]:
    """A page in Chromium, and the console errors and uncaught exceptions it reports."""
    assert shutil.which(CHROMIUM), "Chromium is missing: apt-get install -y chromium"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM)
        try:
            page = await browser.new_page(
                viewport={"width": width, "height": 800}, color_scheme=color_scheme
            )
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: errors.append(f"a dialog opened: {d.message}"))
            yield page, errors
        finally:
            await browser.close()


async def table(page: Page, selector: str = "#rows tr") -> list[list[str]]:
    rows: list[list[str]] = await page.eval_on_selector_all(selector, READ_TABLE)
    return rows


async def api_rows(client: Client) -> list[list[str]]:
    return [
        [str(rank), row["username"], str(row["score"])]
        for rank, row in enumerate(await client.top(), 1)
    ]


async def until(page: Page, expression: str, timeout_s: float = 5) -> None:
    """Wait until ``expression`` holds in the page. Polled from here: the page's CSP
    (rightly) forbids the string evaluation ``wait_for_function`` would do in it."""
    deadline = time.monotonic() + scaled(timeout_s)
    while not await page.evaluate(f"() => Boolean({expression})"):
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {expression}"
        await asyncio.sleep(0.02)


async def shows(page: Page, expected: list[list[str]], timeout_s: float = 5) -> None:
    """Wait until the page's table is ``expected``."""
    deadline = time.monotonic() + scaled(timeout_s)
    while (rows := await table(page)) != expected:
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {rows} != {expected}"
        await asyncio.sleep(0.02)


async def post(client: Client, user: str, increment: int, name: str | None = None) -> None:
    token = make_token(user, name=name if name is not None else user.title())
    response = await client.update(token, {"increment": increment})
    assert response.code == 200, response.body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_the_table_is_the_apis_and_a_post_shows_within_a_second() -> None:
    async with serving(rate_limit_per_minute=0) as client, browser_page() as (page, errors):
        await post(client, "alice", 5)
        await post(client, "bob", 3)
        await page.goto(client.base_url + "/")
        await shows(page, await api_rows(client))
        assert await page.inner_text("#state") == "Live"
        await post(client, "carol", 9)
        started = time.monotonic()
        await shows(page, await api_rows(client), timeout_s=1)
        assert time.monotonic() - started < scaled(1)
        assert errors == []


async def test_two_hundred_rapid_changes_end_equal_to_the_api() -> None:
    async with serving(rate_limit_per_minute=0) as client, browser_page() as (page, errors):
        await post(client, "seed", 1)
        await page.goto(client.base_url + "/")
        await shows(page, await api_rows(client))
        await page.evaluate(COUNT_SUMMARIES)
        started = time.monotonic()
        for i in range(200):
            await post(client, f"player{i % 23}", 1 + i % 7)
        await shows(page, await api_rows(client))
        # Announced as a summary, at most one per 5 s: not 200 announcements.
        await until(page, "window.summaries >= 1", timeout_s=7)
        announced = await page.evaluate("() => window.summaries")
        assert 1 <= announced <= 2 + (time.monotonic() - started) // 5, announced
        leader = (await client.top())[0]
        await until(
            page,
            f"document.getElementById('summary').textContent.includes('{leader['score']}')",
            timeout_s=7,
        )
        assert "leads with" in await page.inner_text("#summary")
        assert errors == []


async def test_a_restart_shows_reconnecting_then_the_right_board(tmp_path: Path) -> None:
    settings = settings_for(
        port=free_port(), sqlite_path=str(tmp_path / "s.db"), rate_limit_per_minute=0
    )
    async with browser_page() as (page, errors):
        async with serving(settings) as client:
            await post(client, "alice", 5)
            await page.goto(client.base_url + "/")
            await shows(page, await api_rows(client))
        await until(page, "document.getElementById('state').dataset.state === 'reconnecting'")
        assert await page.inner_text("#state") == "Reconnecting…"
        await page.context.set_offline(True)  # the browser loses its network too
        await until(page, "document.getElementById('state').dataset.state === 'offline'")
        assert await page.inner_text("#state") == "Offline"
        await page.context.set_offline(False)
        await until(page, "document.getElementById('state').dataset.state === 'reconnecting'")
        async with serving(settings) as client:
            await post(client, "bob", 7)
            await shows(page, await api_rows(client), timeout_s=20)
            assert await page.inner_text("#state") == "Live"
        # The server going away is reported by the browser itself (a failed WebSocket).
        assert all("WebSocket" in e or "ERR_CONNECTION_REFUSED" in e for e in errors), errors


async def test_a_new_season_replaces_the_board(tmp_path: Path) -> None:
    boards = tmp_path / "boards.toml"
    boards.write_text(
        '[boards.kills]\ntitle = "Kills today"\nperiods = ["daily"]\n'
        'timezone = "Europe/Berlin"\nrate_limit_per_minute = 0\n'
    )
    clock = Clock(1_772_492_399_000)  # 2026-03-02 23:59:59 in Berlin
    settings = settings_for(boards_file=str(boards))
    async with serving(settings, clock_ms=clock) as client, browser_page() as (page, errors):
        await post(client, "alice", 5)
        await page.goto(client.base_url + "/")
        await shows(page, [["1", "Alice", "5"]])
        assert "2026-03-02" in await page.inner_text("#caption")
        clock.now_ms += 2000  # the server's ticker starts the next day
        await shows(page, [])
        await until(page, "document.getElementById('caption').textContent.includes('2026-03-03')")
        await post(client, "bob", 2)
        await shows(page, [["1", "Bob", "2"]])
        assert errors == []


async def test_the_players_own_rank_shows_from_a_token_in_the_fragment() -> None:
    async with serving(rate_limit_per_minute=0) as client, browser_page() as (page, errors):
        await post(client, "alice", 5)
        await post(client, "bob", 3)
        token = make_token("bob", name="Bob")
        sent: list[str] = []  # every HTTP request's URL, and every WebSocket's
        page.on("request", lambda r: sent.append(r.url))
        page.on("websocket", lambda ws: sent.append(ws.url))
        await page.goto(f"{client.base_url}/#token={token}")
        assert token not in page.url  # taken out of the address at once
        await page.wait_for_selector("#you:not([hidden])", timeout=scaled(5) * 1000)
        await until(page, f"{YOU_RANK} === 'Rank 2 of 2, score 3.'")
        assert await table(page, "#around-rows tr") == [["1", "Alice", "5"], ["2", "Bob", "3"]]
        await post(client, "bob", 10)
        await until(page, f"{YOU_RANK} === 'Rank 1 of 2, score 13.'")
        # Only the WebSocket's request carries the token.
        carrying = [url for url in sent if token in url]
        assert carrying and all(url.startswith("ws://") for url in carrying), sent
        await page.reload()  # kept for this tab, not in the address
        await until(page, f"{YOU_RANK} === 'Rank 1 of 2, score 13.'")
        assert token not in page.url
        assert errors == []


async def test_an_expired_token_says_so_and_the_public_board_stays_live() -> None:
    async with serving(rate_limit_per_minute=0) as client, browser_page() as (page, errors):
        await post(client, "alice", 5)
        expired = make_token("alice", name="Alice", ttl_s=-120)
        await page.goto(f"{client.base_url}/#token={expired}")
        await shows(page, await api_rows(client))
        notice = await page.inner_text("#notice")
        assert "expired" in notice and "stays live" in notice
        assert await page.is_hidden("#you")
        await post(client, "bob", 9)
        await shows(page, await api_rows(client))
        assert errors == []


async def test_names_are_shown_as_text_whatever_they_hold() -> None:
    async with serving(rate_limit_per_minute=0) as client, browser_page() as (page, errors):
        await post(client, "mallory", 5, name=HOSTILE)
        await post(client, "dana", 3, name=HEBREW)
        token = make_token("mallory", name=HOSTILE)  # in the "You" panel too
        await page.goto(f"{client.base_url}/#token={token}")
        await shows(page, [["1", HOSTILE, "5"], ["2", HEBREW, "3"]])
        await page.wait_for_selector("#you:not([hidden])", timeout=scaled(5) * 1000)
        assert await table(page, "#around-rows tr") == [["1", HOSTILE, "5"], ["2", HEBREW, "3"]]
        assert await page.locator("img").count() == 0
        assert await page.locator("#rows bdi").count() == 2  # isolated from the row's order
        assert errors == []  # no dialog, no error


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [320, 1280])
async def test_axe_finds_nothing_and_screenshots_are_saved(
    width: int, scheme: str, tmp_path: Path
) -> None:
    save = os.environ.get("SCOREBOARD_SAVE_SCREENSHOTS") == "1"
    folder = ROOT / "docs" / "screenshots" if save else tmp_path
    async with (
        serving(rate_limit_per_minute=0) as client,
        browser_page(width, scheme) as (
            page,
            errors,
        ),
    ):
        for user, score, name in [
            ("u1", 97, "Ayla"),
            ("u2", 88, "Bartholomew the Unyielding"),
            ("u3", 75, HEBREW),
            ("u4", 60, "Zoë Ångström"),
            ("u5", 42, "Dmitri"),
        ]:
            await post(client, user, score, name=name)
        token = make_token("u4", name="Zoë Ångström")
        await page.goto(f"{client.base_url}/#token={token}")
        await shows(page, await api_rows(client))
        await page.wait_for_selector("#you:not([hidden])", timeout=scaled(5) * 1000)
        results = await Axe().run(page)
        assert results.violations_count == 0, results.generate_report()
        path = folder / f"page-{width}-{scheme}.png"
        await page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 1000
        assert errors == []


async def test_the_embed_mode_drops_the_picker_and_stays_accessible() -> None:
    async with serving() as client, browser_page(width=400) as (page, errors):
        await post(client, "alice", 5)
        await page.goto(client.base_url + "/?embed=1")
        await shows(page, [["1", "Alice", "5"]])
        assert await page.is_hidden("#picker")
        results = await Axe().run(page)
        assert results.violations_count == 0, results.generate_report()
        assert errors == []


async def test_a_token_lapsing_on_a_live_connection_leaves_the_public_board_live() -> None:
    async with (
        serving(rate_limit_per_minute=0, jwt_leeway_s=0) as client,
        browser_page() as (page, errors),
    ):
        await post(client, "alice", 5)
        short = make_token("alice", name="Alice", ttl_s=3)  # no way to a fresh one here
        await page.goto(f"{client.base_url}/#token={short}")
        await page.wait_for_selector("#you:not([hidden])", timeout=scaled(5) * 1000)
        # The server closes the connection (4401) as the token lapses: the page goes on
        # without it, saying why, rather than retrying with it until it gives up.
        await page.wait_for_selector("#you", state="hidden", timeout=scaled(8) * 1000)
        notice = await page.inner_text("#notice")
        assert "expired" in notice and "stays live" in notice
        await post(client, "bob", 9)
        await shows(page, await api_rows(client))
        assert errors == []


async def test_a_token_the_server_refuses_leaves_the_public_board_live() -> None:
    async with serving(rate_limit_per_minute=0) as client, browser_page() as (page, errors):
        await post(client, "alice", 5)
        forged = make_token("alice", name="Alice", secret="not-the-servers-secret-0123456789")
        await page.goto(f"{client.base_url}/#token={forged}")
        await until(page, "!document.getElementById('notice').hidden")
        assert "not accepted" in await page.inner_text("#notice")
        await shows(page, await api_rows(client))
        assert await page.inner_text("#state") == "Live"
        assert await page.is_hidden("#you")
        # The refused upgrades are the browser's own console errors; nothing else.
        assert all("WebSocket" in e for e in errors), errors


async def test_changed_rows_are_marked_without_motion_when_asked() -> None:
    async with serving(rate_limit_per_minute=0) as client, browser_page() as (page, errors):
        await page.emulate_media(reduced_motion="reduce")
        await post(client, "alice", 5)
        await page.goto(client.base_url + "/")
        await shows(page, await api_rows(client))
        await post(client, "bob", 9)
        await until(page, "document.querySelector('#rows tr.changed')")
        marked = "document.querySelector('#rows tr.changed')"
        duration = await page.evaluate(f"() => getComputedStyle({marked}).transitionDuration")
        assert duration == "0s"
        await until(page, "!document.querySelector('#rows tr.changed')")  # briefly
        assert errors == []


async def test_the_picker_switches_board_and_keeps_it_in_the_url(tmp_path: Path) -> None:
    boards = tmp_path / "boards.toml"
    boards.write_text(
        '[boards.kills]\ntitle = "Kills"\nrate_limit_per_minute = 0\n'
        '[boards.laps]\ntitle = "Best lap"\noperator = "best"\norder = "asc"\n'
        "min_score = 1\nmax_score = 100000\nrate_limit_per_minute = 0\n"
    )
    async with (
        serving(settings_for(boards_file=str(boards))) as client,
        browser_page() as (
            page,
            errors,
        ),
    ):
        await post(client, "alice", 5)  # the default board: kills
        lap = await client.request(
            "POST",
            "/api/boards/laps/scores",
            json.dumps({"score": 9000}),
            {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {make_token('bob', name='Bob')}",
            },
        )
        assert lap.code == 200, lap.body
        await page.goto(client.base_url + "/")
        await shows(page, [["1", "Alice", "5"]])
        await page.focus("#board")
        await page.keyboard.press("ArrowDown")  # the keyboard alone picks the next board
        await shows(page, [["1", "Bob", "9000"]])
        assert "board=laps" in page.url and "period=all_time" in page.url
        await page.reload()  # remembered in the URL
        await shows(page, [["1", "Bob", "9000"]])
        assert await page.inner_text("#caption") == "Best lap"
        assert errors == []
