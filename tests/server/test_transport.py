"""HTTPS and WSS served directly, security headers, and the JSON-only body rule."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import tornado.httpclient
import tornado.websocket
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import handlers.base
import handlers.header_limit
from server.domain.increments import IncrementPolicy
from server.domain.records import Decision, IncrementCommand, UserRecord
from server.store.sqlite import SqliteStore
from tests.conftest import body_of, make_token, scaled, serving

pytestmark = pytest.mark.gen_test(timeout=scaled(30))


def self_signed(directory: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


async def test_https_and_wss_round_trip_with_hsts(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=cert)
    async with serving(tls_cert=cert, tls_key=key) as client:
        base = f"https://127.0.0.1:{client.running.port}"
        http = tornado.httpclient.AsyncHTTPClient()
        response = await http.fetch(
            base + "/api/update-score",
            method="POST",
            body=json.dumps({"increment": 4}),
            headers={
                "Authorization": f"Bearer {make_token('secure')}",
                "Content-Type": "application/json",
            },
            ssl_options=trust,
            raise_error=False,
        )
        assert body_of(response) == {"status": "success", "new_score": 4, "rank": 1, "total": 1}
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
        read = await http.fetch(base + "/api/top-scores", ssl_options=trust, raise_error=False)
        assert read.code == 200  # a plain read, answered by handlers/router.py
        hsts = read.headers["Strict-Transport-Security"]
        assert hsts == response.headers["Strict-Transport-Security"]
        ws = await tornado.websocket.websocket_connect(
            tornado.httpclient.HTTPRequest(
                f"wss://127.0.0.1:{client.running.port}/ws/scoreboard", ssl_options=trust
            )
        )
        snapshot = json.loads(await ws.read_message())  # type: ignore[arg-type]
        assert snapshot["top_scores"] == [{"user_id": "secure", "username": "secure", "score": 4}]
        service = client.running.service  # a live change, seen over WSS
        change = IncrementCommand("secure", "secure", 1, service.clock_ms())
        await service.users.actor_for("secure").ask(change)
        update = json.loads(await ws.read_message())  # type: ignore[arg-type]
        assert update["event"] == "update" and update["top_scores"][0]["score"] == 5
        ws.close()


async def test_plain_http_sends_no_hsts_and_writes_are_not_cached() -> None:
    async with serving() as client:
        response = await client.update(make_token("a"))
        assert "Strict-Transport-Security" not in response.headers
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        refused = await client.update(None)
        assert refused.headers["Cache-Control"] == "no-store"
        admin = {"Authorization": f"Bearer {make_token('ops', scope='scores:admin')}"}
        for method, path in [
            ("GET", "/api/users/a"),
            ("DELETE", "/api/users/a/ban"),
            ("DELETE", "/api/users/a"),
        ]:
            answer = await client.request(method, path, None, admin)
            assert answer.code == 200, (method, path, answer.body)
            assert answer.headers["Cache-Control"] == "no-store", (method, path)


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("application/json; charset=utf-8", 200),
        ("application/vnd.game+json", 200),
    ],
)
async def test_a_body_must_be_sent_as_json(content_type: str, status: int) -> None:
    async with serving() as client:
        response = await client.update(
            make_token("typed"), {"increment": 1}, headers={"Content-Type": content_type}
        )
        assert response.code == status
        if status == 415:
            assert body_of(response)["error"] == "unsupported_media_type"


# --- slow bodies ---------------------------------------------------------------------------

SHORT_BODY_TIMEOUT_S = 0.3


@pytest.fixture
def body_timeout(monkeypatch: pytest.MonkeyPatch) -> float:
    """A short body time limit for every server started in the test (read at start and by
    the update route per request)."""
    timeout = scaled(SHORT_BODY_TIMEOUT_S)
    monkeypatch.setattr(handlers.base, "BODY_TIMEOUT_S", timeout)
    return timeout


def post_head(path: str, content_length: int, token: str | None = None) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {content_length}",
    ]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@asynccontextmanager
async def raw_connection(
    port: int,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def seconds_until_closed(reader: asyncio.StreamReader, limit_s: float) -> float:
    """How long until the server closes the connection without answering (fails after
    ``limit_s``)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        rest = await asyncio.wait_for(reader.read(), limit_s)
    except ConnectionResetError:
        rest = b""
    assert rest == b"", rest
    return loop.time() - started


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(5))
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines if line)
    body = await reader.readexactly(int(headers["Content-Length"]))
    return int(status_line.split()[1]), body


async def test_an_update_body_trickling_past_the_time_limit_is_cut_off(
    body_timeout: float,
) -> None:
    async with serving() as client:
        token = make_token("slow")
        async with raw_connection(client.running.port) as (reader, writer):
            writer.write(post_head("/api/update-score", 100, token) + b'{"increment": ')
            await writer.drain()
            waited = await seconds_until_closed(reader, scaled(2))
        assert waited >= body_timeout * 0.8  # the time limit closed it, not some error
        # The same server answers a quick update, and a body completed within the limit.
        response = await client.update(token, {"increment": 2})
        assert body_of(response) == {"status": "success", "new_score": 2, "rank": 1, "total": 1}
        body = b'{"increment": 3}'
        async with raw_connection(client.running.port) as (reader, writer):
            writer.write(post_head("/api/update-score", len(body), token) + body[:5])
            await writer.drain()
            await asyncio.sleep(body_timeout / 3)
            writer.write(body[5:])
            status, answer = await read_response(reader)
        assert (status, json.loads(answer)) == (
            200,
            {"status": "success", "new_score": 5, "rank": 1, "total": 1},
        )
    assert client.running.clean_exit  # the cut-off request did not stay in flight


async def test_a_slow_body_to_a_route_that_is_not_streamed_is_cut_off(
    body_timeout: float,
) -> None:
    async with serving() as client:
        async with raw_connection(client.running.port) as (reader, writer):
            writer.write(post_head("/api/top-scores", 100) + b"{")
            await writer.drain()
            waited = await seconds_until_closed(reader, scaled(2))
        assert waited >= body_timeout * 0.8
        assert (await client.request("GET", "/api/top-scores")).code == 200


async def test_an_answered_update_leaves_no_timer_behind_on_a_kept_alive_connection(
    body_timeout: float,
) -> None:
    async with serving() as client:
        token = make_token("kept")
        body = b'{"increment": 1}'
        async with raw_connection(client.running.port) as (reader, writer):
            for expected in (1, 2):
                writer.write(post_head("/api/update-score", len(body), token) + body)
                await writer.drain()
                status, answer = await read_response(reader)
                assert (status, json.loads(answer)["new_score"]) == (200, expected)
                if expected == 1:
                    await asyncio.sleep(body_timeout * 1.5)  # a timer left would close it now


class SlowStore(SqliteStore):
    """Increments that take a while, as a busy database's would."""

    delay_s = 0.0

    async def apply_increments(
        self, cmds: list[IncrementCommand], known: UserRecord | None = None
    ) -> list[Decision]:
        await asyncio.sleep(self.delay_s)
        return await super().apply_increments(cmds, known)


async def test_the_body_time_limit_does_not_cover_answering(body_timeout: float) -> None:
    store = SlowStore(":memory:", IncrementPolicy())
    store.delay_s = body_timeout * 1.5  # the body is in: only its arrival was timed
    async with serving(store=store) as client:
        response = await client.update(make_token("patient"), {"increment": 7})
        assert body_of(response) == {"status": "success", "new_score": 7, "rank": 1, "total": 1}


# --- headers over the limit ------------------------------------------------------------


def get_head(path: str, header_bytes: int) -> bytes:
    """A GET whose ``X-Padding`` header makes the request head about ``header_bytes`` long."""
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: "
    return (head + "p" * max(0, header_bytes - len(head) - 4) + "\r\n\r\n").encode()


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(5))
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in header_lines if line)}
    body = await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("header_bytes", [16 * 1024 + 100, 64 * 1024, 512 * 1024])
async def test_headers_over_16_kib_get_431_with_the_json_error(header_bytes: int) -> None:
    async with serving() as client:
        async with raw_connection(client.running.port) as (reader, writer):
            # Everything is written before anything is read, as curl does.
            writer.write(get_head("/api/top-scores", header_bytes))
            status, headers, body = await read_answer(reader)
            assert status == 431
            assert json.loads(body)["error"] == "headers_too_large"
            assert "16384 bytes" in json.loads(body)["message"]
            assert headers["content-type"] == "application/json; charset=utf-8"
            assert headers["connection"] == "close"
            assert headers["x-request-id"]
            assert "strict-transport-security" not in headers
            assert await asyncio.wait_for(reader.read(), scaled(5)) == b""  # then it ends
        # Just under the limit is served as usual.
        async with raw_connection(client.running.port) as (reader, writer):
            writer.write(get_head("/api/top-scores", 16 * 1024 - 100))
            status, _, body = await read_answer(reader)
            assert (status, json.loads(body)) == (200, {"top_scores": []})
    assert client.running.clean_exit


async def test_a_kept_alive_connection_gets_431_for_its_second_request() -> None:
    async with serving() as client, raw_connection(client.running.port) as (reader, writer):
        writer.write(get_head("/healthz", 200))
        assert (await read_answer(reader))[0] == 200
        writer.write(get_head("/healthz", 40 * 1024))
        status, _, body = await read_answer(reader)
        assert (status, json.loads(body)["error"]) == (431, "headers_too_large")


async def test_a_refused_client_that_keeps_sending_does_not_hold_up_a_shutdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handlers.header_limit, "LINGER_S", 3600.0)  # only the shutdown ends it
    async with contextlib.AsyncExitStack() as stack:
        async with serving() as client:
            reader, writer = await asyncio.open_connection("127.0.0.1", client.running.port)
            stack.push_async_callback(close_writer, writer)  # after the server stopped
            writer.write(get_head("/healthz", 20 * 1024)[:-4])  # the head never ends
            assert (await read_answer(reader))[0] == 431
            writer.write(b"more" * 1000)
            await writer.drain()
        assert client.running.clean_exit  # the lingering connection was closed, not waited for


def send_all_then_read(port: int, request: bytes) -> bytes:
    """What a plain client gets that writes all of ``request`` before it reads, to the end
    of the stream (a blocking socket: run it in a thread). Its small send buffer stands in
    for a slow network: it is still sending when the server answers."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.settimeout(scaled(10))
        sock.connect(("127.0.0.1", port))
        sock.sendall(request)
        received = []
        while chunk := sock.recv(64 * 1024):
            received.append(chunk)
        return b"".join(received)


async def test_a_refused_client_still_sending_reads_the_whole_431_then_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server drains what the client still sends after the 431: closing with unread
    input would make the kernel answer a reset, which fails the client's send or throws
    away the answer it has not read yet."""
    monkeypatch.setattr(handlers.header_limit, "LINGER_S", scaled(30))  # however loaded
    async with serving() as client:
        request = get_head("/healthz", 20 * 1024) + b"x" * (600 * 1024)  # under the 1 MiB cap
        answer = await asyncio.to_thread(send_all_then_read, client.running.port, request)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431 ")
        assert json.loads(body)["error"] == "headers_too_large"  # all of it, then the end
    assert client.running.clean_exit


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def test_headers_over_16_kib_get_431_over_tls_too(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=cert)
    async with serving(tls_cert=cert, tls_key=key) as client:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.running.port, ssl=trust)
        try:
            writer.write(get_head("/healthz", 20 * 1024))
            status, headers, body = await read_answer(reader)
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
        assert (status, json.loads(body)["error"]) == (431, "headers_too_large")
        assert headers["strict-transport-security"] == "max-age=31536000"


# --- bodies over the 1 MiB bound (what docs/api.md says of them) ---------------------------

OVER_1_MIB = 2 * 1024 * 1024


async def test_an_update_announcing_a_body_over_1_mib_gets_the_json_413_unread() -> None:
    async with serving() as client, raw_connection(client.running.port) as (reader, writer):
        writer.write(post_head("/api/update-score", OVER_1_MIB, make_token("big")))
        status, _, body = await read_answer(reader)  # no byte of the body was sent
        assert (status, json.loads(body)["error"]) == (413, "body_too_large")
        assert await asyncio.wait_for(reader.read(), scaled(5)) == b""  # then closed


@pytest.mark.parametrize(
    ("path", "chunked"),
    [("/healthz", False), ("/api/users/u1/reset", False), ("/api/update-score", True)],
)
async def test_other_bodies_over_1_mib_get_a_bare_400_and_the_connection_closed(
    path: str, chunked: bool
) -> None:
    async with serving() as client, raw_connection(client.running.port) as (reader, writer):
        if chunked:
            head = post_head(path, 0, make_token("big")).replace(
                b"Content-Length: 0", b"Transfer-Encoding: chunked"
            )
            chunk = b"%x\r\n" % (64 * 1024) + b" " * (64 * 1024) + b"\r\n"
            writer.write(head + chunk * 17)  # 1.06 MiB
        else:
            writer.write(post_head(path, OVER_1_MIB))
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(5))
        assert answer == b"HTTP/1.1 400 Bad Request\r\n\r\n"  # Tornado's, not JSON
        with contextlib.suppress(ConnectionResetError):  # the rest of the body was unread
            assert await asyncio.wait_for(reader.read(), scaled(5)) == b""


async def test_a_stream_closed_twice_through_its_guard_closes_once_and_keeps_no_cycle() -> None:
    async with serving() as client, raw_connection(client.running.port) as (reader, writer):
        writer.write(get_head("/healthz", 100))
        assert (await read_answer(reader))[0] == 200
        (connection,) = client.running.http._connections  # type: ignore[attr-defined]
        stream = connection.stream
        guard = stream.close
        guard()  # as a callback Tornado scheduled earlier would
        guard()
        assert stream.closed()
        assert "close" not in vars(stream)  # the class's close again
        assert await asyncio.wait_for(reader.read(), scaled(5)) == b""
