"""The OpenAPI document: valid OpenAPI 3.1, complete, and in step with the code and api.md."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import tornado.web
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from handlers import base as handler_base
from handlers import openapi as handler_module
from handlers.errors import HTTP_ANSWERS
from handlers.inflight import InFlight
from handlers.openapi_spec import openapi_body, openapi_document
from server.app import make_app
from server.service import Service
from server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
API_MD = (ROOT / "docs" / "api.md").read_text()
HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head")
# ApiError(<status>, "<code>", ...), also spread over lines.
API_ERROR = re.compile(r'ApiError\(\s*(\d{3})\s*,\s*"([a-z_]+)"')


def source_errors() -> set[tuple[int, str]]:
    """Every (status, code) an ``ApiError`` is raised with in handlers/ and server/, and
    every entry of the table that answers the layers below (domain errors, store and actor
    failures)."""
    found = {(answer.status, code) for code, answer in HTTP_ANSWERS.items()}
    for folder in ("handlers", "server"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for status, code in API_ERROR.findall(path.read_text()):
                found.add((int(status), code))
    return found


# An answer written without a handler: {"error": "<code>", ...} in the source.
RAW_ERROR = re.compile(r'"error":\s*"([a-z_]+)"')


def raw_error_codes() -> set[str]:
    """Codes of errors answered below the handlers (handlers/header_limit.py's 431)."""
    return {
        code
        for folder in ("handlers", "server")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for code in RAW_ERROR.findall(path.read_text())
    }


def tornado_error_codes() -> set[str]:
    """Codes of errors Tornado raises itself (unknown route, wrong method, ...)."""
    return set(handler_base._STATUS_CODES.values())


def documented_errors(document: dict[str, Any]) -> set[tuple[int, str]]:
    """Every (status, code) some response of the document lists."""
    found: set[tuple[int, str]] = set()
    for item in document["paths"].values():
        for method, operation in item.items():
            if method not in (*HTTP_METHODS, "options"):
                continue
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if schema is None or "allOf" not in schema:
                    continue
                for part in schema["allOf"]:
                    enum = part.get("properties", {}).get("error", {}).get("enum", [])
                    found.update((int(status), code) for code in enum)
    return found


def routes() -> list[tuple[str, type[tornado.web.RequestHandler]]]:
    """(OpenAPI-style path, handler class) of every route of the real application."""
    service = cast(Service, SimpleNamespace(settings=Settings(), board_runtime=None))
    app = make_app(service, InFlight())
    found = []
    for rule in app.wildcard_router.rules:
        pattern = rule.matcher.regex.pattern.removesuffix("$")
        # The live page's files: /client/(scoreboard\.js|page\.js|page\.css).
        if pattern.startswith("/client/("):
            pattern = "/client/{file}"
        # A board's routes: the first group is the board, any other a user id.
        if pattern.startswith(("/api/boards/(", "/ws/boards/(")):
            pattern = re.sub(r"\([^)]*\)", "{board}", pattern, count=1)
        path = re.sub(r"\([^)]*\)", "{user_id}", pattern)
        found.append((path, cast(type[tornado.web.RequestHandler], rule.target)))
    return found


def implemented_methods(handler: type[tornado.web.RequestHandler]) -> set[str]:
    """The HTTP methods ``handler`` answers other than with 405 (OPTIONS aside)."""
    return {
        method
        for method in HTTP_METHODS
        if getattr(handler, method) is not getattr(tornado.web.RequestHandler, method)
    }


DOCUMENT = openapi_document()


@pytest.mark.parametrize("limits", [{}, {"max_increment": 7, "top_n": 3}])
def test_the_document_is_valid_openapi_3_1(limits: dict[str, int]) -> None:
    document = openapi_document(**limits)
    assert document["openapi"].startswith("3.1.")
    OpenAPIV31SpecValidator(document).validate()
    validate(document)  # also picks the validator from the version


def test_the_served_body_is_the_document_and_cached() -> None:
    assert json.loads(openapi_body()) == DOCUMENT
    assert openapi_body() is openapi_body()
    custom = json.loads(openapi_body(7, 3))
    increment = custom["paths"]["/api/update-score"]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]["properties"]["increment"]
    assert increment["maximum"] == 7
    top = custom["paths"]["/api/top-scores"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]["anyOf"][0]["properties"]["top_scores"]
    assert top["maxItems"] == 3


def test_the_handler_serves_the_settings_limits() -> None:
    assert "max_increment" in inspect.getsource(handler_module.OpenApiHandler.get)


def test_every_route_and_method_is_documented() -> None:
    found = routes()
    assert len(found) >= 10
    for path, handler in found:
        assert path in DOCUMENT["paths"], f"route {path} is not in the OpenAPI document"
        documented = {m for m in DOCUMENT["paths"][path] if m in HTTP_METHODS}
        implemented = implemented_methods(handler)
        # Every GET route answers HEAD too (the document says so once, in its description);
        # the WebSocket's GET is an upgrade, not a resource.
        if not path.startswith("/ws/"):
            assert ("get" in implemented) == ("head" in implemented), path
        assert documented == implemented - {"head"}, path
    assert set(DOCUMENT["paths"]) == {path for path, _ in found}


def test_every_operation_has_an_id_a_summary_and_json_errors() -> None:
    ids = []
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            ids.append(operation["operationId"])
            assert operation.get("summary"), (method, path)
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema["allOf"][0] == {"$ref": "#/components/schemas/Error"}
    assert len(ids) == len(set(ids))
    error = DOCUMENT["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "message"]
    assert error["additionalProperties"] is False


def test_update_score_is_described_in_full() -> None:
    operation = DOCUMENT["paths"]["/api/update-score"]["post"]
    assert operation["security"] == [{"bearerAuth": []}]
    scheme = DOCUMENT["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is False
    assert body["properties"]["increment"]["type"] == "integer"
    assert body["properties"]["increment"]["minimum"] == 1
    assert body["properties"]["increment"]["maximum"] == Settings().max_increment
    assert body["properties"]["action_token"]["type"] == "string"
    headers = set()
    for given in operation["parameters"]:
        parameter = given
        if "$ref" in given:
            parameter = DOCUMENT["components"]["parameters"][given["$ref"].rsplit("/", 1)[1]]
        headers.add(parameter["name"])
    assert headers == {"Idempotency-Key", "X-Request-ID"}
    statuses = {int(s) for s in operation["responses"]}
    assert statuses == {200, 400, 401, 403, 409, 413, 415, 422, 429, 431, 500, 503}
    for status in (429, 503):
        assert "Retry-After" in operation["responses"][str(status)]["headers"]
    assert "Idempotent-Replayed" in operation["responses"]["200"]["headers"]


def test_admin_operations_need_the_admin_scope() -> None:
    admin_paths = [p for p in DOCUMENT["paths"] if p.startswith("/api/users/")]
    assert sorted(admin_paths) == [
        "/api/users/{user_id}",
        "/api/users/{user_id}/ban",
        "/api/users/{user_id}/reset",
    ]
    for path in admin_paths:
        for operation in DOCUMENT["paths"][path].values():
            assert operation["security"] == [{"bearerAuth": ["scores:admin"]}]
            responses = operation["responses"]
            assert {"200", "401", "403", "404", "429"} <= set(responses)
    user_id = DOCUMENT["components"]["parameters"]["UserId"]["schema"]
    assert (user_id["minLength"], user_id["maxLength"]) == (1, 128)


def test_every_error_raised_in_the_source_is_documented() -> None:
    raised = source_errors()
    assert len(raised) >= 20, raised  # the pattern still finds them
    documented = documented_errors(DOCUMENT)
    missing = sorted(raised - documented)
    assert not missing, f"(status, code) raised but not in the OpenAPI document: {missing}"


def test_every_error_answered_below_the_handlers_is_documented() -> None:
    raw = raw_error_codes()
    assert "headers_too_large" in raw  # the pattern still finds them
    assert raw <= {code for _, code in documented_errors(DOCUMENT)}


def test_every_documented_error_is_raised_somewhere() -> None:
    known = {code for _, code in source_errors()} | tornado_error_codes() | raw_error_codes()
    stale = sorted({code for _, code in documented_errors(DOCUMENT)} - known)
    assert not stale, f"codes in the OpenAPI document that nothing raises: {stale}"


PROTOCOL_MD = (ROOT / "docs" / "protocol.md").read_text()
# Known gaps in docs/api.md: none now; a code or path added here is a gap to fill.
API_MD_MISSING_CODES: set[str] = set()
API_MD_MISSING_PATHS: set[str] = set()


def websocket_only_codes() -> set[str]:
    """Codes only the WebSocket upgrade answers: api.md defers to protocol.md for them."""
    streams = {p: i for p, i in DOCUMENT["paths"].items() if p.startswith("/ws/")}
    ws = documented_errors({"paths": streams})
    rest = documented_errors(
        {"paths": {p: i for p, i in DOCUMENT["paths"].items() if p not in streams}}
    )
    return {code for _, code in ws} - {code for _, code in rest}


def test_every_error_code_is_in_api_md() -> None:
    codes = {code for _, code in source_errors() | documented_errors(DOCUMENT)}
    codes |= raw_error_codes()
    codes |= tornado_error_codes() - {"bad_request", "internal_error", "unavailable"}
    ws_codes = websocket_only_codes()
    assert ws_codes == {
        "invalid_format",
        "invalid_since",
        "invalid_watch",
        "websocket_required",
        "too_many_connections",
    }
    missing = sorted(
        code
        for code in codes - API_MD_MISSING_CODES
        if f"`{code}`" not in API_MD and not (code in ws_codes and f"`{code}`" in PROTOCOL_MD)
    )
    assert not missing, f"error codes missing from docs/api.md: {missing}"


def test_every_http_path_is_in_api_md() -> None:
    for path in set(DOCUMENT["paths"]) - API_MD_MISSING_PATHS:
        assert path in API_MD, f"{path} is not described in docs/api.md"


def test_api_md_known_gaps_are_filled() -> None:
    assert all(f"`{code}`" in API_MD for code in API_MD_MISSING_CODES)
    assert all(path in API_MD for path in API_MD_MISSING_PATHS)
