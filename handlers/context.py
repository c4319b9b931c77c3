"""What the web layer uses of the running service.

The composition root (:mod:`server.service`) builds the parts and hands them to the
handlers as one object (route kwargs); this protocol names the parts, so that the web
layer depends on the layers below it (actors, store port, domain, support) and never on
the module that wires them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from actors.boards import BoardsRuntime
    from actors.deadlines import AskDeadlines
    from actors.leaderboard import BoardViews
    from actors.user import UserRegistry
    from handlers.live.addresses import OpenPerAddress
    from handlers.live.fanout import Fanout
    from handlers.live.rank_stream import RankStream
    from handlers.live.token_lease import TokenLeases
    from server.domain.actions import ActionVerifier
    from server.domain.boards import BoardSpec
    from server.domain.origins import AllowedOrigins
    from server.domain.rank_index import RankIndex
    from server.domain.standings import SeasonClock
    from server.domain.throttle import FailedAuthThrottle, Network
    from server.domain.tokens import TokenVerifier
    from server.settings import Settings
    from server.store.guard import GuardedStore
    from server.support.log_throttle import LogThrottle
    from server.support.metrics import Metrics


class Backend(Protocol):
    """The running service as the handlers see it (``server.service.Service``)."""

    settings: Settings
    store: GuardedStore
    clock_ms: Callable[[], int]
    metrics: Metrics
    verifier: TokenVerifier
    origins: AllowedOrigins
    trusted_proxies: tuple[Network, ...]
    auth_throttle: FailedAuthThrottle
    actions: ActionVerifier | None
    boards: tuple[BoardSpec, ...]  # from SCOREBOARD_BOARDS_FILE; the first is the default
    seasons: SeasonClock  # each period's current season, computed again once it ended
    fanout: Fanout
    rank_stream: RankStream
    token_leases: TokenLeases  # the live connections that hold their token
    # With a boards file (issue 14): every board live, and each period's watchers.
    board_runtime: BoardsRuntime | None
    board_fanouts: dict[tuple[str, str], Fanout]
    board_rank_streams: dict[tuple[str, str], RankStream]
    users: UserRegistry
    ws_addresses: OpenPerAddress
    ask_deadlines: AskDeadlines
    log_throttle: LogThrottle

    @property
    def leaderboard(self) -> BoardViews:
        """The board, read only through its published view."""

    @property
    def ranks(self) -> RankIndex:
        """Every ranked player in board order, as this pod has them now: read it afresh
        for each answer (a reload swaps in a new index). Loaded before the board: once
        ``leaderboard.view.loaded``, it holds every ranked player; before, it is empty."""

    def not_ready_reason(self, *, draining: bool) -> str | None:
        """Why ``/readyz`` answers 503 now (``None``: ready); ``draining``: the server is
        shutting down (:class:`handlers.inflight.InFlight`)."""
