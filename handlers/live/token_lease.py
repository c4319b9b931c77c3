"""A live connection's hold on its token: the warning before it expires, the fresh token
the client sends, and the close when it lapses (:mod:`server.domain.token_lease` decides
the times and the messages).

One :class:`TokenLease` per WebSocket that needs its token (auth required, or
``watch=me``); public watchers have none. Its one timer is the connection's own and is
cancelled when the connection closes (:meth:`TokenLease.cancel`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

from server.domain.token_lease import (
    TOKEN_EXPIRED_CLOSE_CODE,
    TOKEN_EXPIRED_REASON,
    lease_times,
    token_expiring,
)


class TokenLease:
    """Warns ``send``\\ ing ``token_expiring`` before the token lapses, and ``close``\\ s the
    connection (4401) once it has, unless :meth:`renew` gave it a fresh one.

    Args:
        user_id: the player the connection's token names (a fresh token must name them).
        expires_at: the token's ``exp``, Unix seconds.
        leeway_s: the clock skew allowed on every token (the connection lives as long as
            its token would be accepted).
        send: writes one of the connection's own messages (under the fan-out's rules).
        close: closes the connection with a code and a reason.
        on_expired: called once, as a lapsed connection is closed (a metric).
        clock: Unix seconds.
    """

    def __init__(
        self,
        user_id: str,
        expires_at: float,
        *,
        leeway_s: float,
        send: Callable[[str], object],
        close: Callable[[int, str], None],
        on_expired: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.user_id = user_id
        self._leeway = leeway_s
        self._send = send
        self._close = close
        self._on_expired = on_expired
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._warned = False  # token_expiring was sent for the token held
        self.expires_at = 0.0  # the held token's exp
        self.close_at = 0.0
        self.renew(expires_at)

    def renew(self, expires_at: float) -> None:
        """Hold a (fresh) token expiring at ``expires_at``: warn, then close, by it."""
        now = self._clock()
        times = lease_times(expires_at, self._leeway, now)
        self.expires_at = expires_at
        self.close_at = times.close_at
        self._warned = False
        self._arm(times.warn_at - now, self._warn)

    def resynced(self) -> None:
        """The connection lagged and was resynced: its warning may have been skipped with
        the rest, so send it again (with the seconds left now)."""
        if self._warned and self._timer is not None:
            self._send(token_expiring(self.close_at, self._clock()))

    def cancel(self) -> None:
        """Stop the timer (the connection closed). Idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, delay_s: float, callback: Callable[[], None]) -> None:
        self.cancel()
        self._timer = asyncio.get_running_loop().call_later(max(0.0, delay_s), callback)

    def _warn(self) -> None:
        now = self._clock()
        self._warned = True
        self._send(token_expiring(self.close_at, now))
        self._arm(self.close_at - now, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._on_expired()
        self._close(TOKEN_EXPIRED_CLOSE_CODE, TOKEN_EXPIRED_REASON)


class TokenLeases:
    """The leases of one service's live connections, by connection: the fan-outs tell it
    of their resyncs (:meth:`resynced`), which a lease's warning must survive."""

    def __init__(self) -> None:
        self._by_watcher: dict[object, TokenLease] = {}

    def __len__(self) -> int:
        return len(self._by_watcher)

    def __iter__(self) -> Iterator[TokenLease]:
        return iter(list(self._by_watcher.values()))

    def hold(self, watcher: object, lease: TokenLease) -> None:
        self._by_watcher[watcher] = lease

    def release(self, watcher: object) -> TokenLease | None:
        """Forget ``watcher``'s lease (its connection closed) and cancel its timer."""
        lease = self._by_watcher.pop(watcher, None)
        if lease is not None:
            lease.cancel()
        return lease

    def resynced(self, watcher: object) -> None:
        lease = self._by_watcher.get(watcher)
        if lease is not None:
            lease.resynced()
