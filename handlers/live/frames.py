"""WebSocket frames built once and written to many connections (RFC 6455, section 5.2).

A server's frames are not masked, so one text frame's bytes are the same for every
client: the fan-out builds them once per message instead of once per client.
"""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81


def text_frame(payload: str | bytes) -> bytes:
    """One final, unmasked, uncompressed text frame carrying ``payload``."""
    data = payload.encode() if isinstance(payload, str) else payload
    length = len(data)
    if length < 126:
        header = struct.pack("!BB", _FIN_TEXT, length)
    elif length <= 0xFFFF:
        header = struct.pack("!BBH", _FIN_TEXT, 126, length)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, 127, length)
    return header + data
