"""Which browser origins may use the API and the WebSocket (``SCOREBOARD_ALLOWED_ORIGINS``)."""

from __future__ import annotations


class AllowedOrigins:
    """An allow-list of origins (``scheme://host[:port]``), or ``*`` for any.

    Args:
        origins: the parsed setting; ``("*",)`` allows every origin.
    """

    def __init__(self, origins: tuple[str, ...]) -> None:
        self.any = "*" in origins
        self._origins = frozenset(normalize_origin(o) for o in origins if o != "*")

    def allows(self, origin: str) -> bool:
        """Whether a request carrying ``Origin: origin`` is allowed."""
        return self.any or normalize_origin(origin) in self._origins


def normalize_origin(origin: str) -> str:
    """Lower-case, without a trailing slash: how browsers send and operators write them."""
    return origin.strip().rstrip("/").lower()
