"""One issuer's JWKS, fetched and kept current without blocking the event loop.

:class:`JwksClient` is the issuer's :class:`~server.domain.tokens.IssuerKeys`:

- a background task fetches the set at start, then again before its lifetime ends (the
  answer's ``Cache-Control`` max-age within bounds, :func:`server.domain.key_sets.cache_lifetime`);
- a token naming a ``kid`` the set lacks triggers one refetch at once (a rotation: the
  provider published a new key and signs with it), at most once per ``min_refetch_s``
  whatever the number of such tokens, so made-up ``kid``s cannot turn the service into a
  load generator against the provider; tokens arriving meanwhile wait for that same fetch;
- a fetch that fails (unreachable, an HTTP error, not a usable key set) keeps the last
  good keys, says so in the log and in ``scoreboard_jwks_fetches_total{outcome}``, and is
  retried after a backoff (1 s doubling to 5 min); ``scoreboard_jwks_age_seconds`` shows
  how old the keys in use are. Until a first set loads, every token of this issuer is
  refused (``/readyz`` says the pod is not ready).

Fetches are plain GETs with Tornado's own HTTP client: no redirects followed, 5 s to
connect, 10 s in all, at most ``MAX_BODY_BYTES``. No key material is ever logged.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from tornado.httpclient import HTTPRequest
from tornado.simple_httpclient import SimpleAsyncHTTPClient

from server.domain.errors import InvalidToken
from server.domain.key_sets import (
    KeySet,
    KeySetError,
    RefetchGate,
    cache_lifetime,
    parse_key_set,
    refresh_delay,
    withdrawn,
)
from server.domain.tokens import KeyNotLoaded, shown
from server.support.tasks import cancel_and_wait

log = logging.getLogger(__name__)

MIN_REFETCH_S: Final = 5.0
FIRST_RETRY_S: Final = 1.0
MAX_RETRY_S: Final = 300.0
MAX_BODY_BYTES: Final = 256 * 1024
CONNECT_TIMEOUT_S: Final = 5.0
REQUEST_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class Fetched:
    """A JWKS answer: its status, body and ``Cache-Control`` (status 599: none came)."""

    status: int
    body: bytes
    cache_control: str | None
    error: str | None = None  # why none came, for the log


Fetch = Callable[[str], Awaitable[Fetched]]


class HttpFetch:
    """GETs a JWKS URL with a Tornado HTTP client of its own (closed by :meth:`close`)."""

    def __init__(self) -> None:
        self._client: SimpleAsyncHTTPClient | None = None

    async def __call__(self, url: str) -> Fetched:
        if self._client is None:
            self._client = SimpleAsyncHTTPClient(force_instance=True, max_body_size=MAX_BODY_BYTES)
        request = HTTPRequest(
            url,
            headers={"Accept": "application/json", "User-Agent": "scoreboard-jwks"},
            follow_redirects=False,
            connect_timeout=CONNECT_TIMEOUT_S,
            request_timeout=REQUEST_TIMEOUT_S,
            decompress_response=True,
        )
        response = await self._client.fetch(request, raise_error=False)
        if response.code == 599:
            return Fetched(599, b"", None, type(response.error).__name__)
        return Fetched(response.code, response.body or b"", response.headers.get("Cache-Control"))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class JwksClient:
    """Keeps one issuer's JWKS current; see the module's text.

    Args:
        issuer: the issuer's name (metrics and logs).
        url: the JWKS URL (checked by the settings: HTTPS, or HTTP to loopback).
        count_fetch: called with each fetch's outcome (one of
            :data:`server.support.metrics.FETCH_OUTCOMES`).
        fetch: gets the URL (default: :class:`HttpFetch`).
        min_refetch_s: the least time between two fetches triggered by unknown ``kid``s.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        issuer: str,
        url: str,
        *,
        count_fetch: Callable[[str], None] = lambda outcome: None,
        fetch: Fetch | None = None,
        min_refetch_s: float = MIN_REFETCH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self.url = url
        self._count_fetch = count_fetch
        self._http: HttpFetch | None = None
        if fetch is None:
            fetch = self._http = HttpFetch()
        self._fetch: Fetch = fetch
        self.refetch_gate = RefetchGate(min_refetch_s)
        self._clock = clock
        self.key_set: KeySet | None = None
        self.fetched_at: float | None = None  # when the set in use was fetched (monotonic)
        self.lifetime_s = 0.0
        self.on_withdrawn: Callable[[], None] = lambda: None  # a kid left the set
        self._running: asyncio.Task[None] | None = None
        self._fetching: asyncio.Task[bool] | None = None
        self._loaded = asyncio.Event()
        self._stopped = False
        self._skipped_logged: tuple[str, ...] = ()

    # --- IssuerKeys ----------------------------------------------------------------------

    def key_for(self, kid: str | None, alg: str) -> Any:
        if kid is None:
            raise InvalidToken(
                "the token names no key ('kid')", bearer_sent=True, reason="unknown_key"
            )
        keys = self.key_set
        key = keys.keys.get(kid) if keys is not None else None
        if key is None:
            raise KeyNotLoaded(self, self.issuer, kid, loaded=keys is not None)
        if alg not in key.algorithms:
            raise InvalidToken(
                f"key {shown(kid)} does not verify alg {shown(alg)}",
                bearer_sent=True,
                reason="algorithm",
            )
        return key.key

    async def refetch(self, kid: str) -> bool:
        """Fetch the set again for an unknown ``kid``: join a fetch under way, else start
        one if the gate lets it; whether a fetch ended meanwhile."""
        fetching = self._fetching
        if fetching is None:
            if self._stopped or not self.refetch_gate.open(self._clock()):
                return False
            fetching = self._start_fetch()
        await asyncio.shield(fetching)
        return True

    # --- life ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return 0 if self.key_set is None else len(self.key_set)

    @property
    def loaded(self) -> bool:
        """Whether a key set was ever loaded."""
        return self.key_set is not None

    def age_s(self) -> float:
        """Seconds since the set in use was fetched (-1: none yet)."""
        return -1.0 if self.fetched_at is None else self._clock() - self.fetched_at

    def start(self) -> None:
        """Fetch now, then keep the set current in the background until :meth:`stop`."""
        if self._running is None and not self._stopped:
            self._running = asyncio.get_running_loop().create_task(
                self._keep_current(), name=f"jwks-{self.issuer}"
            )

    async def wait_loaded(self) -> None:
        """Return once a first set loaded."""
        await self._loaded.wait()

    async def stop(self) -> None:
        """Cancel the background task and a fetch under way; close the HTTP client. No
        fetch starts afterwards."""
        self._stopped = True
        running, self._running = self._running, None
        fetching, self._fetching = self._fetching, None
        for task in (running, fetching):
            if task is not None:
                await cancel_and_wait(task)
        if self._http is not None:
            self._http.close()

    async def _keep_current(self) -> None:
        failures = 0
        while True:
            fetching = self._fetching or self._start_fetch()
            try:
                ok = await asyncio.shield(fetching)
            except Exception:  # a bug, not the provider: logged, retried as a failure
                log.exception("JWKS refresh failed", extra={"issuer": self.issuer})
                ok = False
            if ok:
                failures = 0
                delay = refresh_delay(self.lifetime_s)
            else:
                cap = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** min(failures, 20))
                delay = cap / 2 + random.random() * cap / 2
                failures += 1
            await asyncio.sleep(delay)

    def _start_fetch(self) -> asyncio.Task[bool]:
        task = asyncio.get_running_loop().create_task(
            self._fetch_once(), name=f"jwks-fetch-{self.issuer}"
        )
        self._fetching = task
        task.add_done_callback(self._fetch_ended)
        return task

    def _fetch_ended(self, task: asyncio.Task[bool]) -> None:
        if self._fetching is task:
            self._fetching = None

    async def _fetch_once(self) -> bool:
        """One fetch: the new set in use, or the last good one kept; whether it worked."""
        started = self._clock()
        try:
            fetched = await self._fetch(self.url)
        except Exception as exc:  # any failure to fetch keeps the keys held
            fetched = Fetched(599, b"", None, type(exc).__name__)
        if fetched.status != 200:
            outcome = "unreachable" if fetched.status == 599 else "http_error"
            why = fetched.error if fetched.status == 599 else f"HTTP {fetched.status}"
            return self._failed(outcome, why or "no answer")
        try:
            key_set = parse_key_set(fetched.body)
        except KeySetError as exc:
            return self._failed("invalid", str(exc))
        replaced = self.key_set is not None and withdrawn(self.key_set, key_set)
        self.key_set = key_set
        self.fetched_at = started
        self.lifetime_s = cache_lifetime(fetched.cache_control)
        self._count_fetch("ok")
        if not self._loaded.is_set():
            self._loaded.set()
            log.info(
                "JWKS loaded",
                extra={"issuer": self.issuer, "url": self.url, "keys": sorted(key_set.keys)},
            )
        if key_set.skipped != self._skipped_logged:  # once, not at every refresh
            self._skipped_logged = key_set.skipped
            for reason in key_set.skipped:
                log.warning(
                    "JWKS key skipped",
                    extra={"issuer": self.issuer, "url": self.url, "reason": reason},
                )
        if replaced:
            self.on_withdrawn()
        return True

    def _failed(self, outcome: str, why: str) -> bool:
        self._count_fetch(outcome)
        age = self.age_s()
        log.warning(
            "JWKS fetch failed; %s",
            "keeping the last good keys" if self.key_set is not None else "no keys yet",
            extra={
                "issuer": self.issuer,
                "url": self.url,
                "outcome": outcome,
                "reason": why,
                "keys_age_s": round(age) if age >= 0 else None,
            },
        )
        return False
