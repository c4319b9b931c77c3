"""``python -m server`` as a real process: help, bad settings, the demo start, ``token``.

:class:`ServerProcess` and :func:`post_update` are shared with ``test_shutdown.py``.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jwt
import pytest

from server.settings import OPTIONS, Settings
from server.support.gc_tuning import GEN0_THRESHOLD
from tests.conftest import SECRET, make_token, scaled

REPO = Path(__file__).resolve().parents[2]


def server_env(**settings: str) -> dict[str, str]:
    """The test process's environment without any ``SCOREBOARD_*`` variable, plus
    ``settings`` (``port="0"`` becomes ``SCOREBOARD_PORT=0``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOREBOARD_")}
    env.update({f"SCOREBOARD_{name.upper()}": value for name, value in settings.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(
    *args: str, env: Mapping[str, str], timeout_s: float = 20
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m server ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=REPO,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=scaled(timeout_s),
        check=False,
    )


class ServerProcess:
    """``python -m server`` in a subprocess; its stdout and stderr collected by threads."""

    def __init__(self, env: Mapping[str, str], *args: str) -> None:
        self._lock = threading.Lock()
        self._out: list[str] = []
        self._err: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", *args],
            cwd=REPO,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._collect, args=(stream, lines), daemon=True)
            for stream, lines in ((self.proc.stdout, self._out), (self.proc.stderr, self._err))
        ]
        for reader in self._readers:
            reader.start()
        self.port = 0

    def _collect(self, stream: Any, lines: list[str]) -> None:
        for line in stream:
            with self._lock:
                lines.append(line)

    @property
    def stdout(self) -> str:
        with self._lock:
            return "".join(self._out)

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self._err)

    def log_lines(self) -> list[dict[str, Any]]:
        """Every stdout line, each parsed as JSON (the logs are JSON lines)."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def wait_for(self, predicate: Any, what: str, timeout_s: float = 20) -> None:
        """Poll ``predicate()`` until true; fail if the process exits or time runs out."""
        deadline = time.monotonic() + scaled(timeout_s)
        while not predicate():
            if self.proc.poll() is not None:
                time.sleep(0.1)  # let the readers catch the last lines
                if predicate():
                    return
                pytest.fail(
                    f"server exited ({self.proc.returncode}) before {what}\n"
                    f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"no {what} in {timeout_s}s\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"
                )
            time.sleep(0.02)

    def wait_listening(self, timeout_s: float = 20) -> int:
        """Wait for the ``{"msg": "listening", "port": N}`` log line; return N."""

        def listening() -> bool:
            for line in self.stdout.splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("msg") == "listening":
                    self.port = int(entry["port"])
                    return True
            return False

        self.wait_for(listening, "'listening' log line", timeout_s)
        assert self.port > 0
        return self.port

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout_s: float) -> int:
        """The exit code; fails the test (the fixture then kills it) after ``timeout_s``."""
        try:
            return self.proc.wait(timeout=scaled(timeout_s))
        except subprocess.TimeoutExpired:
            pytest.fail(f"server still running after {timeout_s}s\nstderr:\n{self.stderr}")

    def close(self) -> None:
        """Kill the process if it still runs, reap it, and close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def launch() -> Iterator[Any]:
    """``launch(env, *args)`` starts a :class:`ServerProcess`; each is killed after the test."""
    started: list[ServerProcess] = []

    def start(env: Mapping[str, str], *args: str) -> ServerProcess:
        server = ServerProcess(env, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def post_update(
    port: int, token: str, body: bytes = b'{"increment": 1}', timeout_s: float = 10
) -> tuple[int, Any]:
    """POST /api/update-score on a fresh connection; return (status, parsed JSON body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(timeout_s))
    try:
        conn.request(
            "POST",
            "/api/update-score",
            body=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def get_json(port: int, path: str, token: str, timeout_s: float = 10) -> tuple[int, Any]:
    """GET ``path`` with a bearer token on a fresh connection; (status, parsed JSON body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(timeout_s))
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def expected_default(field: str) -> str:
    value = getattr(Settings(), field)
    if field == "jwt_algorithms":
        return "from key"  # the default follows the key given
    if value is None or value == ():
        return "unset"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, bool):
        return "true" if value else "false"  # as the variable is written, not Python's False
    return str(value)


def test_help_lists_every_setting_with_its_env_name_and_default() -> None:
    result = run_cli("--help", env=server_env())
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines at whitespace
    assert len(OPTIONS) >= 20
    for option in OPTIONS:
        assert f"env {option.env}; default {expected_default(option.field)}]" in text, option.env
        assert option.flag in text


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SCOREBOARD_PORT", "abc"),
        ("SCOREBOARD_TOP_N", "0"),
        ("SCOREBOARD_SHUTDOWN_TIMEOUT_S", "-1"),
        ("SCOREBOARD_LOG_LEVEL", "LOUD"),
        ("SCOREBOARD_JWT_SECRET", "tooshort-7f3a"),
    ],
)
def test_an_invalid_setting_exits_2_with_one_line_naming_it(variable: str, value: str) -> None:
    env = server_env(port="0", host="127.0.0.1", sqlite_path=":memory:")
    env[variable] = value
    result = run_cli(env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert lines[0].startswith("error: ")
    assert "listening" not in result.stdout
    if variable == "SCOREBOARD_JWT_SECRET":
        assert value not in lines[0]  # a secret is never echoed back


def test_a_wrong_boards_file_exits_2_with_one_line_naming_the_board_and_field(
    tmp_path: Path,
) -> None:
    boards = tmp_path / "boards.toml"
    boards.write_text("[boards.laps]\noperator = 'best'\nmax_increment = 5\n")
    env = server_env(port="0", host="127.0.0.1", sqlite_path=":memory:", boards_file=str(boards))
    result = run_cli(env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: invalid setting SCOREBOARD_BOARDS_FILE: {boards}: board 'laps': "
        "max_increment: applies to incr boards only"
    ]
    assert "listening" not in result.stdout


def test_an_invalid_flag_exits_2_naming_the_flag_not_the_variable() -> None:
    env = server_env(host="127.0.0.1", sqlite_path=":memory:")
    result = run_cli("--port", "abc", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: invalid setting --port: must be a whole number from 0 to 65535 (got 'abc')"
    ]


def test_mongodb_without_a_jwt_key_refuses_to_start_without_connecting() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        env = server_env(
            port="0",
            host="127.0.0.1",
            mongodb_uri=f"mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=5000",
        )
        started = time.monotonic()
        result = run_cli(env=env)
        elapsed = time.monotonic() - started
        assert result.returncode == 2, (result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "SCOREBOARD_JWT_SECRET" in lines[0]
        assert "SCOREBOARD_MONGODB_URI" in lines[0]
        assert "key is required" in lines[0]
        assert elapsed < scaled(4)  # it did not wait for a server selection
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            conn, _ = listener.accept()  # nothing connected to the "MongoDB" port
            conn.close()


def test_zero_config_start_prints_a_working_demo_token_and_stops_on_sigterm(
    launch: Any, tmp_path: Path
) -> None:
    db = tmp_path / "demo.db"
    server = launch(server_env(port="0", host="127.0.0.1", sqlite_path=str(db)))
    port = server.wait_listening()
    server.wait_for(lambda: "/api/top-scores" in server.stderr, "demo banner")
    banner = server.stderr
    assert "SCOREBOARD_JWT_SECRET" in banner
    match = re.search(r"Demo token for user 'demo'.*:\s+(\S+)", banner)
    assert match, banner
    token = match.group(1)
    assert f"curl -X POST http://127.0.0.1:{port}/api/update-score" in banner
    assert f"Authorization: Bearer {token}" in banner
    assert token not in server.stdout  # the banner is for humans, on stderr only

    status, body = post_update(port, token, b'{"increment": 3}')
    assert (status, body) == (200, {"status": "success", "new_score": 3, "rank": 1, "total": 1})
    # The key is random: a token signed with any other key is refused.
    status, body = post_update(port, make_token("demo", secret=SECRET))
    assert status == 401, body

    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0, server.stderr
    entries = server.log_lines()  # every stdout line is a JSON log entry
    assert [e["msg"] for e in entries if e["msg"] in ("listening", "stopping")] == [
        "listening",
        "stopping",
    ]
    listening = next(e for e in entries if e["msg"] == "listening")
    # The serving process tuned its collector once started (server/support/gc_tuning.py).
    assert listening["gc_thresholds"] == [GEN0_THRESHOLD, 10, 10]
    assert listening["gc_frozen_objects"] > 10_000  # modules, routes, settings...
    assert db.exists()


def test_token_subcommand_mints_a_token_the_server_accepts(launch: Any, tmp_path: Path) -> None:
    result = run_cli(
        "token",
        "--sub",
        "alice",
        "--name",
        "Alice",
        "--ttl",
        "60",
        env=server_env(jwt_secret=SECRET),
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert len(token.splitlines()) == 1
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["name"] == "Alice"
    assert abs(claims["exp"] - (time.time() + 60)) <= 5

    server = launch(
        server_env(
            port="0", host="127.0.0.1", sqlite_path=str(tmp_path / "t.db"), jwt_secret=SECRET
        )
    )
    port = server.wait_listening()
    assert "Demo token" not in server.stderr  # a configured key: no demo banner
    assert post_update(port, token, b'{"increment": 2}') == (
        200,
        {"status": "success", "new_score": 2, "rank": 1, "total": 1},
    )
    # Minted with another secret: refused by this server.
    other = run_cli("token", "--sub", "alice", env=server_env(jwt_secret="x" * 40))
    assert other.returncode == 0, other.stderr
    status, _ = post_update(port, other.stdout.strip())
    assert status == 401
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0, server.stderr


def test_token_subcommand_mints_an_admin_token_with_scope(launch: Any, tmp_path: Path) -> None:
    env = server_env(jwt_secret=SECRET)
    minted = run_cli(
        "token", "--sub", "ops", "--scope", "scores:admin", "--scope", "a b a", env=env
    )
    assert minted.returncode == 0, minted.stderr
    admin = minted.stdout.strip()
    claims = jwt.decode(admin, SECRET, algorithms=["HS256"])
    assert claims["scope"] == "scores:admin a b"  # space-separated, each once
    player = run_cli("token", "--sub", "alice", env=env).stdout.strip()
    assert "scope" not in jwt.decode(player, SECRET, algorithms=["HS256"])

    server = launch(
        server_env(
            port="0", host="127.0.0.1", sqlite_path=str(tmp_path / "t.db"), jwt_secret=SECRET
        )
    )
    port = server.wait_listening()
    assert post_update(port, player)[0] == 200
    status, user = get_json(port, "/api/users/alice", admin)
    assert (status, user["user_id"], user["score"]) == (200, "alice", 1)
    assert get_json(port, "/api/users/alice", player) == (
        403,
        {"error": "forbidden", "message": "this needs a token with the scores:admin scope"},
    )
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0, server.stderr


def test_token_subcommand_without_a_secret_exits_2_and_says_why() -> None:
    result = run_cli("token", "--sub", "alice", env=server_env())
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "SCOREBOARD_JWT_SECRET is not set" in lines[0]


def test_a_second_server_on_the_same_sqlite_file_exits_1_naming_the_file(
    launch: Any, tmp_path: Path
) -> None:
    db = tmp_path / "shared.db"
    env = server_env(port="0", host="127.0.0.1", sqlite_path=str(db), jwt_secret=SECRET)
    first = launch(env)
    port = first.wait_listening()
    second = run_cli(env=env)
    assert second.returncode == 1, second.stdout + second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith("error: cannot start: ")
    assert str(db) in lines[0] and "another process" in lines[0]
    # The first one never noticed, and its board is its own.
    assert post_update(port, make_token("alice"))[0] == 200
    first.signal(signal.SIGTERM)
    assert first.wait(15) == 0, first.stderr


def test_a_store_that_cannot_be_opened_exits_1_with_one_line_naming_it(tmp_path: Path) -> None:
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("not a database " * 100)
    result = run_cli(
        env=server_env(port="0", host="127.0.0.1", sqlite_path=str(not_a_db), jwt_secret=SECRET)
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot start: ") and str(not_a_db) in lines[0]
