"""How many WebSockets each client address has open, against a per-address limit.

Pure bookkeeping, no I/O: the handler asks :meth:`OpenPerAddress.full` before the upgrade
and reports each connection's open and close.
"""

from __future__ import annotations


class OpenPerAddress:
    """Open WebSockets per client address.

    Args:
        limit: the most open per address; 0 for no limit.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def __len__(self) -> int:
        """Addresses with a connection open."""
        return len(self._open)

    def full(self, address: str) -> bool:
        """Whether ``address`` may not open another connection."""
        return self.limit > 0 and self._open.get(address, 0) >= self.limit

    def opened(self, address: str) -> None:
        """Count a connection from ``address``; call :meth:`closed` once when it ends."""
        self._open[address] = self._open.get(address, 0) + 1

    def closed(self, address: str) -> None:
        """Forget one connection from ``address`` (an address with none left is dropped)."""
        left = self._open.get(address, 0) - 1
        if left > 0:
            self._open[address] = left
        else:
            self._open.pop(address, None)
