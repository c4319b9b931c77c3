"""The OpenAPI 3.1 document of the API (placeholder until it is written in full)."""

from __future__ import annotations

import functools
import json
from typing import Any


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of every endpoint."""
    return {"openapi": "3.1.0", "info": {"title": "Scoreboard", "version": "0.1.0"}, "paths": {}}


@functools.cache
def openapi_body() -> bytes:
    """The document as JSON bytes, encoded once."""
    return json.dumps(openapi_document(), separators=(",", ":")).encode()
