"""HTTPS and WSS served directly, security headers, and the JSON-only body rule."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from pathlib import Path

import pytest
import tornado.httpclient
import tornado.websocket
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from server.store.records import IncrementCommand
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
        assert body_of(response) == {"status": "success", "new_score": 4}
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
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
