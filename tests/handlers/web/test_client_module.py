"""The live client module (``handlers/web/scoreboard.js``): its unit tests under Node's
own test runner, and how the service serves it (``GET /client/scoreboard.js``)."""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from handlers.web_client import MODULE_VERSION, WEB_DIR, module_url
from tests.conftest import close_websocket, make_token, scaled, serving, settings_for

ROOT = Path(__file__).resolve().parents[3]


def test_the_modules_unit_tests_pass_under_node() -> None:
    node = shutil.which("node")
    assert node is not None, "Node is needed for the client module's unit tests"
    result = subprocess.run(
        [node, "--test", str(Path(__file__).with_name("scoreboard.test.mjs"))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Some ran, none failed (no count to bump by hand whenever a test is added).
    assert "# fail 0" in result.stdout, result.stdout
    assert re.search(r"^# pass [1-9]\d*$", result.stdout, re.M), result.stdout


def test_every_web_file_goes_into_the_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["handlers"]
    for path in WEB_DIR.iterdir():
        relative = f"web/{path.name}"
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative


@pytest.mark.gen_test(timeout=scaled(20))
async def test_the_module_is_served_with_an_etag_cors_and_its_caching() -> None:
    async with serving() as client:
        plain = await client.request("GET", "/client/scoreboard.js")
        assert plain.code == 200
        assert plain.body == (WEB_DIR / "scoreboard.js").read_bytes()
        assert plain.headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert plain.headers["Cache-Control"] == "no-cache"
        assert plain.headers["Access-Control-Allow-Origin"] == "*"
        assert plain.headers["X-Content-Type-Options"] == "nosniff"
        etag = plain.headers["Etag"]
        again = await client.request(
            "GET", "/client/scoreboard.js", headers={"If-None-Match": etag}
        )
        assert again.code == 304
        pinned = await client.request("GET", module_url())
        assert pinned.code == 200 and MODULE_VERSION in module_url()
        assert pinned.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        stale = await client.request("GET", "/client/scoreboard.js?v=0000")
        assert stale.headers["Cache-Control"] == "no-cache"
        assert (await client.request("GET", "/client/other.js")).code == 404


@pytest.mark.gen_test(timeout=scaled(20))
async def test_the_page_has_a_strict_policy_and_no_inline_code() -> None:
    async with serving() as client:
        page = await client.request("GET", "/")
        assert page.code == 200
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        policy = page.headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives == {
            "default-src": "'none'",
            "script-src": "'self'",
            "style-src": "'self'",
            "connect-src": "'self'",
            "img-src": "'self'",
            "base-uri": "'none'",
            "form-action": "'self'",
            "frame-ancestors": "'none'",
        }
        html = page.body.decode()
        # Every script has a src and there is no style element or attribute, no handler.
        assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
        assert "<style" not in html and " style=" not in html
        assert re.search(r"\son[a-z]+=", html) is None
        for method, path in (("POST", "/"), ("DELETE", "/client/scoreboard.js")):
            refused = await client.request(method, path, b"" if method == "POST" else None)
            assert (refused.code, refused.headers["Allow"]) == (405, "GET, HEAD")
            assert json.loads(refused.body)["error"] == "method_not_allowed"  # as the API's
    framed = settings_for(frame_ancestors=("https://game.example", "https://cdn.game.example"))
    async with serving(framed) as client:
        policy = (await client.request("GET", "/?embed=1")).headers["Content-Security-Policy"]
        assert "frame-ancestors https://game.example https://cdn.game.example" in policy


@pytest.mark.gen_test(timeout=scaled(20))
async def test_a_token_in_the_streams_query_is_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = make_token("alice", name="Alice")
    async with serving() as client:
        ws = await client.websocket(f"?format=delta&watch=me&token={token}")
        await ws.read_message()
        await close_websocket(ws)
        bad = await client.websocket(f"?token={token}x")  # an invalid one is logged as such
        await bad.read_message()
        await close_websocket(bad)
    assert caplog.records, "nothing was logged: the check would prove nothing"
    for record in caplog.records:
        assert token not in record.getMessage() and token not in str(record.__dict__)
