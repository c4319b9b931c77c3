"""Prometheus metrics of one service instance, in a registry of its own.

A registry per instance (not the global default) lets several instances run in one
process, as the tests do.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterable
from typing import Any, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# The *_created series double the exposition and no alert or dashboard here uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

_METHODS = frozenset({"GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS"})
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# Every value of a label the alerts select on exists at zero from start: increase() over
# a series created by its first event misses that event (the first history loss, the
# first database_error of a pod).
# scoreboard_updates_total{outcome}: applied, replayed, and every error code the update
# route answers (tests/server/support/test_metrics.py checks them against the OpenAPI document).
UPDATE_OUTCOMES: Final = (
    "applied",
    "replayed",
    "invalid_json",
    "invalid_increment",
    "invalid_idempotency_key",
    "invalid_action",
    "missing_token",
    "invalid_token",
    "action_forbidden",
    "user_banned",
    "action_replayed",
    "idempotency_key_reused",
    "body_too_large",
    "unsupported_media_type",
    "auth_throttled",
    "rate_limited",
    "database_error",
    "internal_error",
    "busy",
    "shutting_down",
    "database_unavailable",
    "database_timeout",
)
# scoreboard_tokens_refused_total{reason}: each TokenRefused's reason (server/domain/tokens.py).
REFUSAL_REASONS: Final = (
    "missing",  # no token at all
    "malformed",  # not a JWT, or another scheme than Bearer
    "too_long",
    "unknown_issuer",  # an 'iss' no trusted issuer has
    "algorithm",  # an 'alg' the issuer (or the key) does not take
    "unknown_key",  # a 'kid' the issuer's keys lack (after a refetch), or none given
    "keys_unavailable",  # the issuer's keys have never loaded
    "signature",
    "expired",
    "claims",  # aud, iss, nbf, iat or a required claim wrong
    "subject",  # no usable user id
)
# scoreboard_jwks_fetches_total{outcome} (server/jwks_client.py)
FETCH_OUTCOMES: Final = ("ok", "unreachable", "http_error", "invalid")
# scoreboard_http_responses_total{status}: the server errors every route can answer.
SERVER_ERRORS: Final = ("500", "503")


class _Series:
    """One label set of a :class:`LoopHistogram`: counts per bucket (not cumulative) and sum."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self._bounds, value)] += 1
        self.sum += value


class LoopHistogram(Collector):
    """A labelled histogram observed from the event loop's thread only: ``observe`` is a
    bisect and two additions. (``prometheus_client``'s takes a lock per bucket it updates
    and one for the sum: a few microseconds on every request.) Scraped as a regular
    Prometheus histogram.
    """

    def __init__(
        self, name: str, documentation: str, labelnames: tuple[str, ...], buckets: tuple[float, ...]
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = labelnames
        self._bounds = (*sorted(buckets), math.inf)
        self._series: dict[tuple[str, ...], _Series] = {}

    def labels(self, *values: str) -> _Series:
        series = self._series.get(values)
        if series is None:
            if len(values) != len(self._labelnames):
                raise ValueError(f"{self._name} takes labels {self._labelnames}")
            series = self._series[values] = _Series(self._bounds)
        return series

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(
            self._name, self._documentation, labels=list(self._labelnames)
        )
        for values, series in self._series.items():
            cumulative = itertools.accumulate(series.counts)
            buckets = [
                (floatToGoString(bound), float(count))  # type: ignore[no-untyped-call]
                for bound, count in zip(self._bounds, cumulative, strict=True)
            ]
            family.add_metric(list(values), buckets, series.sum)
        yield family


class Metrics:
    """The service's metrics. Gauges of live state read their value when scraped."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # python_gc_collections_total{generation} and friends, read from gc.get_stats()
        # when scraped (server/support/gc_tuning.py is why they matter).
        GCCollector(registry=self.registry)
        self.updates = Counter(
            "scoreboard_updates",
            "Score update requests by outcome (the error code, or 'applied' / 'replayed').",
            ["outcome"],
            registry=self.registry,
        )
        # Labelled by board: boards come from the file (at most 100), so the series are
        # bounded; created at zero for each board by expect_boards().
        self.board_updates = Counter(
            "scoreboard_board_updates",
            "Score updates of a board of the boards file by board and outcome.",
            ["board", "outcome"],
            registry=self.registry,
        )
        self.board_players = Gauge(
            "scoreboard_board_players",
            "Players ranked in the current season of each board and period.",
            ["board", "period"],
            registry=self.registry,
        )
        self.board_seasons_started = Counter(
            "scoreboard_board_seasons_started",
            "Seasons this pod started, by board and period.",
            ["board", "period"],
            registry=self.registry,
        )
        self.request_seconds = LoopHistogram(
            "scoreboard_request_duration_seconds",
            "HTTP request latency by route and method.",
            ("route", "method"),
            LATENCY_BUCKETS,
        )
        self.registry.register(self.request_seconds)
        self.responses = Counter(
            "scoreboard_http_responses",
            "HTTP responses by route and status code (5xx rate alerts use it).",
            ["route", "status"],
            registry=self.registry,
        )
        self.websockets = Gauge(
            "scoreboard_websocket_connections",
            "Open WebSocket connections.",
            registry=self.registry,
        )
        self.ws_messages = Counter(
            "scoreboard_ws_messages",
            "Broadcast messages written to WebSocket clients.",
            registry=self.registry,
        )
        self.ws_skipped = Counter(
            "scoreboard_ws_skipped",
            "Broadcast messages not written because the client's buffer was over the bound.",
            registry=self.registry,
        )
        self.ws_resyncs = Counter(
            "scoreboard_ws_resyncs",
            "Snapshots sent to clients that had been skipped and drained.",
            registry=self.registry,
        )
        self.ws_slow_closes = Counter(
            "scoreboard_ws_slow_closes",
            "WebSocket clients closed (1013) for staying over the buffer bound.",
            registry=self.registry,
        )
        self.ws_ignored_tokens = Counter(
            "scoreboard_ws_ignored_tokens",
            "Invalid ?token= values ignored on WebSocket upgrades (auth not required: the "
            "connection opened anonymously).",
            registry=self.registry,
        )
        self.tokens_refused = Counter(
            "scoreboard_tokens_refused",
            "Bearer tokens refused, by reason (missing, malformed, too_long, unknown_issuer, "
            "algorithm, unknown_key, keys_unavailable, signature, expired, claims, subject).",
            ["reason"],
            registry=self.registry,
        )
        for reason in REFUSAL_REASONS:
            self.tokens_refused.labels(reason)
        self.jwks_fetches = Counter(
            "scoreboard_jwks_fetches",
            "Fetches of an issuer's JWKS by outcome: ok, unreachable, http_error, invalid "
            "(the last good keys are kept on every failure).",
            ["issuer", "outcome"],
            registry=self.registry,
        )
        self.jwks_age = Gauge(
            "scoreboard_jwks_age_seconds",
            "Seconds since the issuer's key set in use was fetched (-1: none loaded yet).",
            ["issuer"],
            registry=self.registry,
        )
        self.jwks_keys = Gauge(
            "scoreboard_jwks_keys",
            "Signing keys held for the issuer.",
            ["issuer"],
            registry=self.registry,
        )
        self.ws_token_refreshes = Counter(
            "scoreboard_ws_token_refreshes",
            "Fresh tokens sent on live connections, by outcome (accepted, refused).",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("accepted", "refused"):
            self.ws_token_refreshes.labels(outcome)
        self.ws_token_expired = Counter(
            "scoreboard_ws_token_expired",
            "Live connections closed (4401) because their token expired unrefreshed.",
            registry=self.registry,
        )
        self.broadcast_seconds = Histogram(
            "scoreboard_broadcast_duration_seconds",
            "Time to write one publication to every WebSocket client.",
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.user_actors = Gauge(
            "scoreboard_user_actors", "Live per-user actors.", registry=self.registry
        )
        self.mailbox_depth = Gauge(
            "scoreboard_mailbox_depth",
            "Increments queued in all user mailboxes.",
            registry=self.registry,
        )
        self.leaderboard_version = Gauge(
            "scoreboard_leaderboard_version",
            "Version of the last broadcast top N.",
            registry=self.registry,
        )

        self.stream_events = Counter(
            "scoreboard_change_stream_events",
            "Store change events received from the change stream (all pods' writes).",
            registry=self.registry,
        )
        self.stream_lag = Gauge(
            "scoreboard_change_stream_lag_seconds",
            "Time between the store write and this pod receiving its change event, last event.",
            registry=self.registry,
        )
        self.stream_restarts = Counter(
            "scoreboard_change_stream_restarts",
            "Change stream restarts by reason: 'interrupted' (resumed from the token); "
            "'history_lost', 'invalidated', 'not_resumable' or 'error' (reopened from "
            "now, the top K reloaded); 'reload_failed' (the store could not be read; "
            "retried).",
            ["reason"],
            registry=self.registry,
        )
        self.stream_watching = Gauge(
            "scoreboard_change_stream_watching",
            "1 while the change stream is open and delivering, 0 while it reconnects.",
            registry=self.registry,
        )
        self.store_available = Gauge(
            "scoreboard_store_available",
            "1 while writes go to the store, 0 while they are refused at once (503 "
            "database_unavailable: a recent StoreUnavailable or a failing probe).",
            registry=self.registry,
        )
        for outcome in UPDATE_OUTCOMES:
            self.updates.labels(outcome)

        # Bounds under heavy or hostile clients (issue 11).
        self.broadcast_step_seconds = Histogram(
            "scoreboard_broadcast_step_seconds",
            "Time one step of a broadcast held the event loop (a broadcast to many clients "
            "is written in steps that yield in between).",
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
            registry=self.registry,
        )
        self.broadcast_step_cpu_seconds = Histogram(
            "scoreboard_broadcast_step_cpu_seconds",
            "CPU time of one step of a broadcast (the thread's): the step's own cost, "
            "without time the process was not running.",
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
            registry=self.registry,
        )
        self.event_loop_lag = Histogram(
            "scoreboard_event_loop_lag_seconds",
            "How late the event loop ran a timer (sampled every 0.1 s): how long any request "
            "may have waited behind other work.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        # The live rank stream (issue 13).
        self.rank_watchers = Gauge(
            "scoreboard_rank_watchers",
            "WebSocket clients following a player's rank (?watch=me).",
            registry=self.registry,
        )
        self.rank_events = Counter(
            "scoreboard_rank_events",
            "Rank events written to WebSocket clients (a player's rank, score or window changed).",
            registry=self.registry,
        )
        self.rank_waiting = Gauge(
            "scoreboard_rank_watchers_waiting",
            "Rank watchers found changed but left for the next tick: the last tick spent its "
            "share of the broadcast interval (their events come less often, coalesced).",
            registry=self.registry,
        )
        self.rank_tick_seconds = Histogram(
            "scoreboard_rank_tick_seconds",
            "Time one broadcast interval's rank events took to find, compute and write.",
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
            registry=self.registry,
        )
        self.user_actors_displaced = Counter(
            "scoreboard_user_actors_displaced",
            "Idle user actors stopped before their idle time because the registry was full "
            "(SCOREBOARD_MAX_USER_ACTORS).",
            registry=self.registry,
        )
        self.ws_address_refusals = Counter(
            "scoreboard_ws_address_refusals",
            "WebSocket upgrades refused (429) because their address had "
            "SCOREBOARD_WS_MAX_PER_ADDRESS connections open.",
            registry=self.registry,
        )

        # Labelled children, looked up once: labels() costs microseconds per call.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._outcome_children: dict[str, Any] = {}
        self._board_children: dict[tuple[str, str], Any] = {}

    def request_done(self, route: str, method: str | None, status: int, seconds: float) -> None:
        """Count one answered HTTP request: its latency and its status."""
        key = (route, method if method in _METHODS else "other", status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.request_seconds.labels(key[0], key[1]),
                self.responses.labels(route, str(status)),
            )
            self._request_children[key] = children
        children[0].observe(seconds)
        children[1].inc()

    def board_update(self, board: str, outcome: str) -> None:
        """Count one update of a board of the boards file by its outcome (the children
        are cached: ``labels()`` takes a lock and builds a key on every call)."""
        key = (board, outcome)
        child = self._board_children.get(key)
        if child is None:
            child = self._board_children[key] = self.board_updates.labels(board, outcome)
        child.inc()

    def expect_boards(self, boards: Iterable[tuple[str, Iterable[str]]]) -> None:
        """Create each board's series at zero (``boards``: board id, period names)."""
        for board, periods in boards:
            for outcome in ("applied", "replayed"):
                self.board_updates.labels(board, outcome)
            for period in periods:
                self.board_seasons_started.labels(board, period)

    def track_key_set(
        self, issuer: str, *, age_s: Callable[[], float], keys: Callable[[], float]
    ) -> None:
        """Bind an issuer's JWKS gauges, and create its fetch series at zero."""
        self.jwks_age.labels(issuer).set_function(age_s)
        self.jwks_keys.labels(issuer).set_function(keys)
        for outcome in FETCH_OUTCOMES:
            self.jwks_fetches.labels(issuer, outcome)

    def update_outcome(self, outcome: str) -> None:
        """Count one update request by its outcome (an error code, applied, replayed)."""
        child = self._outcome_children.get(outcome)
        if child is None:
            child = self._outcome_children[outcome] = self.updates.labels(outcome)
        child.inc()

    def expect_requests(self, route: str, methods: Iterable[str]) -> None:
        """Create the series of ``route`` at zero: its latency for each of ``methods``,
        and its count of the server errors it can answer (500, 503)."""
        for method in methods:
            self.request_seconds.labels(route, method if method in _METHODS else "other")
        for status in SERVER_ERRORS:
            self.responses.labels(route, status)

    def track(
        self,
        *,
        user_actors: Callable[[], float],
        mailbox_depth: Callable[[], float],
        leaderboard_version: Callable[[], float],
        store_available: Callable[[], float],
    ) -> None:
        """Bind the gauges of live state to the functions that read it."""
        self.user_actors.set_function(user_actors)
        self.mailbox_depth.set_function(mailbox_depth)
        self.leaderboard_version.set_function(leaderboard_version)
        self.store_available.set_function(store_available)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
