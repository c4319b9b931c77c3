"""The Dockerfile, read as data: exec-form start, non-root user, a health check on /healthz,
and the same port, user and packages as the rest of the project says.

There is no Docker engine here, so the image is never built in the tests; hadolint lints
the file in ``./dev test``.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.deploy.support import (
    DOCKERFILE,
    ROOT,
    SETTING_ENVS,
    is_route,
    k8s_build,
    setting_default,
)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str

    def exec_form(self) -> list[str]:
        """The JSON-array form of the arguments (AssertionError: shell form)."""
        args = json.loads(self.value)
        assert isinstance(args, list), f"{self.keyword} is not in exec form: {self.value}"
        assert all(isinstance(a, str) for a in args)
        return args


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, value = line.strip().partition(" ")
            found.append(Instruction(keyword.upper(), value.strip()))
    return found


ALL = instructions(DOCKERFILE.read_text())


FINAL_STAGE_AT = max(i for i, ins in enumerate(ALL) if ins.keyword == "FROM")


def final_stage() -> list[Instruction]:
    return ALL[FINAL_STAGE_AT:]


def one(keyword: str) -> Instruction:
    (found,) = [i for i in final_stage() if i.keyword == keyword]
    return found


def env() -> dict[str, str]:
    values = {}
    for ins in final_stage():
        if ins.keyword == "ENV":
            for pair in re.findall(r"(\w+)=(\S+)", ins.value):
                values[pair[0]] = pair[1]
    return values


def test_base_images_are_pinned_slim_python_3_11() -> None:
    for ins in ALL:
        if ins.keyword == "FROM":
            image = ins.value.split()[0]
            assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", image), image


def test_starts_python_m_server_in_exec_form() -> None:
    # Exec form: python is PID 1 and receives SIGTERM itself, not through a shell.
    assert one("ENTRYPOINT").exec_form() == ["python", "-m", "server"]
    assert one("CMD").exec_form() == []


def test_runs_as_the_fixed_non_root_uid_the_deployment_expects() -> None:
    user, _, group = one("USER").value.partition(":")
    assert user.isdigit() and int(user) > 0, "a numeric uid lets runAsNonRoot verify it"
    deployment = k8s_build().get("Deployment", "scoreboard")
    pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsUser"] == int(user)
    assert pod_security["runAsGroup"] == int(group)


def test_environment() -> None:
    values = env()
    assert values["PYTHONDONTWRITEBYTECODE"] == "1"
    assert values["PYTHONUNBUFFERED"] == "1"
    assert values["SCOREBOARD_HOST"] == "0.0.0.0"
    assert {name for name in values if name.startswith("SCOREBOARD_")} <= SETTING_ENVS
    volumes = json.loads(one("VOLUME").value)
    assert any(values["SCOREBOARD_SQLITE_PATH"].startswith(v + "/") for v in volumes)


def test_exposes_the_configured_port() -> None:
    port = int(env()["SCOREBOARD_PORT"])
    assert port == setting_default("SCOREBOARD_PORT")
    assert one("EXPOSE").value == str(port)
    (container,) = k8s_build().get("Deployment", "scoreboard")["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["ports"][0]["containerPort"] == port


def healthcheck_command() -> list[str]:
    value = one("HEALTHCHECK").value
    options, _, command = value.partition("CMD ")
    assert "--timeout=" in options
    return Instruction("CMD", command).exec_form()


def test_healthcheck_requests_healthz_with_the_stdlib() -> None:
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"]
    assert "/healthz" in command[2]
    assert is_route("/healthz")
    compile(command[2], "HEALTHCHECK", "exec")


@pytest.fixture
def health_server() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def run_healthcheck(port: int) -> int:
    command = healthcheck_command()
    # A proxy in the environment must not catch the check's request to 127.0.0.1.
    environ = {**os.environ, "SCOREBOARD_PORT": str(port), "http_proxy": "http://127.0.0.1:9"}
    environ.pop("SCOREBOARD_TLS_CERT", None)
    done = subprocess.run(
        [sys.executable, *command[1:]], env=environ, capture_output=True, timeout=10, check=False
    )
    return done.returncode


def test_healthcheck_passes_on_an_answering_healthz(health_server: int) -> None:
    assert run_healthcheck(health_server) == 0


def test_healthcheck_fails_when_nothing_listens() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        assert run_healthcheck(unused.getsockname()[1]) != 0


# --- what goes into the image ----------------------------------------------------------------


def packages() -> set[str]:
    """The top-level packages pyproject.toml's setuptools discovery installs."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    found = {
        path.parent.name
        for path in ROOT.glob("*/__init__.py")
        if any(fnmatch.fnmatch(path.parent.name, pattern) for pattern in include)
    }
    return found


def test_the_installed_packages_are_the_service() -> None:
    assert packages() == {"server", "handlers", "actors"}


def test_the_build_copies_every_package_and_installs_from_pyproject() -> None:
    build_stage = ALL[:FINAL_STAGE_AT]
    sources = set()
    for ins in build_stage:
        if ins.keyword == "COPY":
            sources.update(ins.value.split()[:-1])
    assert packages() | {"pyproject.toml", "README.md"} <= sources
    (install,) = [i for i in build_stage if i.keyword == "RUN" and "pip install" in i.value]
    assert "--no-cache-dir" in install.value
    assert install.value.split()[-1] == "."


def dockerignore() -> list[str]:
    text = (ROOT / ".dockerignore").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def sent_to_the_build(path: str) -> bool:
    """Whether .dockerignore lets ``path`` into the build context (last match wins)."""
    sent = True
    for line in dockerignore():
        negated = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes) or (
            pattern.startswith("**/") and fnmatch.fnmatch(parts[-1], pattern[3:])
        ):
            sent = negated
    return sent


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    needed = ["pyproject.toml", "README.md", "server/__init__.py", "server/store/sqlite.py"]
    needed += [f"{package}/__init__.py" for package in packages()]
    for path in needed:
        assert sent_to_the_build(path), path
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        "tests/conftest.py",
        ".pytest_cache/README.md",
        "scoreboard.db",
        "server/__pycache__/app.cpython-311.pyc",
        "deploy/k8s/app/secret.example.yaml",
    ):
        assert not sent_to_the_build(path), path
