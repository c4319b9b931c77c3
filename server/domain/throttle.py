"""Failed-authentication throttling per client address, and finding that address.

A flood of bad tokens costs signature checks; after ``limit`` failures in a minute an
address is refused (429 ``auth_throttled``) before any token is looked at. The state is
per process and bounded: the least recently failing addresses are forgotten first.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict, deque
from collections.abc import Iterable

WINDOW_S = 60.0
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Parse addresses or CIDR ranges (``10.0.0.0/8``).

    Raises:
        ValueError: an entry is neither.
    """
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def client_address(peer: str, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client's address: the socket peer, or, when the peer is a trusted proxy, the
    right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy.

    Entries left of an untrusted hop could be written by the client, so they never count.
    """
    if not trusted or not forwarded_for or not _is_trusted(peer, trusted):
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        if not _is_trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage in the header: fall back to the proxy's address
    return peer


def _is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


@functools.lru_cache(maxsize=4096)
def throttle_key(address: str) -> str:
    """What failures count against: the address, or its /64 for IPv6, since one IPv6
    client usually holds a whole /64 and could rotate through it."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return address


class FailedAuthThrottle:
    """Counts authentication failures per address over a sliding minute.

    Args:
        limit: failures allowed per address per minute (0: off).
        max_addresses: how many addresses are tracked at most.
    """

    def __init__(self, limit: int, *, max_addresses: int = 65536) -> None:
        self.limit = limit
        self._max = max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str, now: float) -> int | None:
        """Seconds until ``address`` may try again, or ``None`` if it may now."""
        if not self.limit or not self._failures:  # the usual case: nobody failed lately
            return None
        times = self._failures.get(throttle_key(address))
        if times is None:
            return None
        while times and times[0] <= now - WINDOW_S:
            times.popleft()
        if len(times) < self.limit:
            return None
        return max(1, int(times[0] + WINDOW_S - now + 0.999))

    def failed(self, address: str, now: float) -> None:
        """Record one failed authentication from ``address``."""
        if not self.limit:
            return
        address = throttle_key(address)
        times = self._failures.pop(address, None)
        if times is None:
            times = deque(maxlen=self.limit)
        times.append(now)
        self._failures[address] = times  # most recent last
        if len(self._failures) > self._max:
            self._failures.popitem(last=False)
