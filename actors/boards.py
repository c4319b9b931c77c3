"""The boards of a boards file, live on this pod (issue 14).

Each board has, per period, a :class:`PeriodLive`: the current season's rank index
(:class:`~actors.ranks.LiveRanks`, loaded from the store's season rows), a top-K
leaderboard actor reading from that index, and a fan-out to the period's WebSocket
watchers. Writes go through one actor per (board, player) (:class:`BoardWriter`), which
serializes them into the store (one atomic write for every period) and hands the record
written to :meth:`BoardsRuntime.took`; other pods' writes come the same way from the change
feed (:meth:`BoardsRuntime.saw`).

Seasons follow the clock, with no coordinator: every pod computes the same seasons from the
board's schedule. A period starts its new season (:meth:`BoardsRuntime.check_seasons`) when
the clock reaches it (a ticker looks every ``tick_s``), or at once when a write of the new
season arrives first (another pod's clock was a little ahead). The new season starts
empty: the ended index is kept as an archive (readable, ranks included), the leaderboard
starts a new epoch, and every watcher gets a ``snapshot`` with reason ``season_started``.

Ended seasons: the archives of the seasons this pod saw end stay in memory (at most
``max_archives``, the least recently read dropped first); an older one is read from the
store's season rows (an indexed range read, not a scan) on its first read and kept the
same way. A bounded background job deletes seasons past each board's ``keep_seasons``
and spent proof-of-action tokens past their expiry, a page at a time.

Bans hold on every board: a banned player's writes are refused by the store, and this pod
keeps the banned players (from the change feed) off every index.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from actors.base import ActorStopped, QueuedCount
from actors.leaderboard import LeaderboardActor, NewSeason, ReloadTop, ScoreChanged
from actors.ranks import LiveRanks
from actors.user import UserActor, UserRegistry
from server.domain.board_view import TopScores
from server.domain.board_writes import (
    BoardApplied,
    BoardCommand,
    BoardRecord,
    BoardRules,
    row_of,
)
from server.domain.boards import BoardSpec
from server.domain.rank_index import RankIndex
from server.domain.records import BoardRow
from server.domain.seasons import Period, Season, previous_seasons, season_start
from server.domain.standings import SeasonClock
from server.store.changes import BoardChange, Change
from server.store.port import ScoreStore, StoreError
from server.support.tasks import cancel_and_wait

log = logging.getLogger(__name__)

TICK_S: Final = 0.5  # how often the clock is looked at for seasons that ended
RETIRE_EVERY_S: Final = 300.0  # how often the retirement job runs
RETIRE_PAGE: Final = 1000  # rows deleted per store call by the retirement job
MAX_ARCHIVES: Final = 8  # ended seasons' indexes kept in memory, per pod


@dataclass(frozen=True, slots=True)
class LiveSettings:
    """How the boards' live parts are sized (from the server's settings)."""

    broadcast_interval_s: float = 0.1
    history_size: int = 256
    mailbox_size: int = 64
    idle_s: float = 60.0
    max_actors: int = 50_000


# An ended season's players' count and its final top N (rank, row).
SeasonFinal = tuple[int, list[tuple[int, BoardRow]]]


class SeasonRows:
    """One season's rows from the store, for a :class:`LiveRanks` to load (as
    :meth:`ScoreStore.ranked_rows` pages the original board)."""

    def __init__(self, store: ScoreStore, spec: BoardSpec, period: str, season: str) -> None:
        self._store = store
        self._spec = spec
        self._period = period
        self.season = season

    async def ranked_rows(self, after_user_id: str | None, limit: int) -> list[BoardRow]:
        rows = await self._store.season_rows(
            self._spec.id, self._period, self.season, after_user_id, limit
        )
        if self._spec.order == "asc":
            return [BoardRow(r.user_id, r.username, r.score, r.reached_ms, r.v, True) for r in rows]
        return rows


class IndexTop:
    """The top K of a period's current season, for its leaderboard: from the rank index,
    which holds every player of the season, so a refill never reads the store."""

    def __init__(self, ranks: LiveRanks) -> None:
        self._ranks = ranks

    async def top(self, limit: int) -> list[BoardRow]:
        return [row for _, row in self._ranks.index.page(1, limit)]


class PeriodLive:
    """One period of one board on this pod: its current season, rank index and
    leaderboard (its watchers' fan-out is the web layer's, told of a new season through
    :attr:`BoardsRuntime.on_season_started`)."""

    def __init__(
        self,
        spec: BoardSpec,
        period: Period,
        season: Season,
        store: ScoreStore,
        live: LiveSettings,
    ) -> None:
        self.spec = spec
        self.period = period
        self.season = season
        self.rows = SeasonRows(store, spec, period.name, season.season_id)
        self.ranks = LiveRanks(self.rows)
        self.leaderboard = LeaderboardActor(
            IndexTop(self.ranks),
            spec.top_n,
            live.broadcast_interval_s,
            history_size=live.history_size,
        )
        self._plain: tuple[TopScores, str, bytes, str] | None = None
        self._ended: tuple[str, list[Season], frozenset[str]] | None = None

    def ended_kept(self) -> list[Season]:
        """The ended seasons kept (``keep_seasons``, newest first): computed once per
        season, not per request (a cron period's are a croniter walk each)."""
        return self._ended_kept()[0]

    def keeps(self, season_id: str) -> bool:
        """Whether ``season_id`` is the current season or one of the kept ended ones."""
        return season_id == self.season.season_id or season_id in self._ended_kept()[1]

    def _ended_kept(self) -> tuple[list[Season], frozenset[str]]:
        cached = self._ended
        if cached is None or cached[0] != self.season.season_id:
            kept = previous_seasons(self.period, self.season, self.spec.keep_seasons)
            cached = self._ended = (
                self.season.season_id,
                kept,
                frozenset(s.season_id for s in kept),
            )
        return cached[1], cached[2]

    def take(self, row: BoardRow) -> None:
        """A player's row in the current season: into the index, and to the leaderboard
        when it could change what is shown."""
        self.ranks.apply(row)
        if self.leaderboard.view.wants(row):
            with contextlib.suppress(ActorStopped):  # shutting down
                self.leaderboard.tell(ScoreChanged(row))

    def drop(self, user_id: str) -> None:
        """Take a player off (banned)."""
        held = self.ranks.index.get(user_id)
        if held is None:
            return
        self.ranks.remove(user_id, held.v)
        # The leaderboard reads its top K again from the index (which no longer holds the
        # player): a removal at the row's own version would not take (it needs a newer
        # one), and a made-up newer one would hide the player's next writes after an unban.
        with contextlib.suppress(ActorStopped):
            self.leaderboard.tell(ReloadTop())

    def plain_top(self) -> tuple[bytes, str]:
        """The answer to a plain read of this period's top N (no season, limit or cursor),
        and its ETag: the leaderboard's published rows, as ``GET /api/top-scores`` answers
        them, after the board, period and season. Encoded once per published view."""
        top = self.leaderboard.view.top_scores
        cached = self._plain
        if cached is not None and cached[0] is top and cached[1] == self.season.season_id:
            return cached[2], cached[3]
        scope = (
            f'{{"board":"{self.spec.id}","period":"{self.period.name}",'
            f'"season":"{self.season.season_id}",'
        ).encode()
        body = scope + top.body[1:]
        etag = f'"{hashlib.sha1(body, usedforsecurity=False).hexdigest()}"'
        self._plain = (top, self.season.season_id, body, etag)
        return body, etag

    def begin(self, season: Season) -> RankIndex:
        """Start ``season``, empty; return the ended season's index (its archive)."""
        ended = self.ranks.index
        self.season = season
        self.rows.season = season.season_id
        self.ranks.index = RankIndex()
        if self.ranks.moves is not None:
            self.ranks.moves.replaced()
        return ended


class BoardWriter(UserActor):
    """Applies one player's updates to one board in order, several queued ones in one
    store call, and hands each record written to the runtime."""

    def __init__(  # noqa: PLR0917 (UserActor's, and what a writer adds)
        self,
        key: str,
        store: ScoreStore,
        runtime: BoardsRuntime,
        rules: BoardRules,
        mailbox_size: int,
        clock: Callable[[], float],
        queued: QueuedCount,
    ) -> None:
        super().__init__(
            key,
            store,
            runtime.any_leaderboard,
            mailbox_size,
            clock,
            ranks=runtime.any_ranks,
            queued=queued,
        )
        self._runtime = runtime
        self._rules = rules
        # The record this writer last wrote: lets the store skip reading it first.
        self._board_known: BoardRecord | None = None

    def batchable(self, message: Any) -> bool:
        return isinstance(message, BoardCommand)

    def saw_version(self, v: int) -> None:
        if self._board_known is not None and self._board_known.v < v:
            self._board_known = None

    def forget_known(self) -> None:
        self._board_known = None

    async def receive(self, message: Any) -> Any:
        return (await self.receive_batch([message]))[0]

    async def receive_batch(self, messages: list[Any]) -> list[Any]:
        self._busy = True
        known, self._board_known = self._board_known, None  # unknown again if it fails
        try:
            decisions = await self._store.apply_board_writes(self._rules, list(messages), known)
            applied = [d.record for d in decisions if isinstance(d, BoardApplied)]
            if applied:
                self._board_known = applied[-1]
                self._runtime.took(applied[-1])
            return list(decisions)
        finally:
            self._busy = False
            self.last_active = self._clock()


class BoardWriters(UserRegistry):
    """One :class:`BoardWriter` per (board, player), created on demand and evicted when
    idle, as user actors are."""

    def __init__(self, runtime: BoardsRuntime, store: ScoreStore, live: LiveSettings) -> None:
        super().__init__(
            store,
            runtime.any_leaderboard,
            ranks=runtime.any_ranks,
            mailbox_size=live.mailbox_size,
            idle_s=live.idle_s,
            max_actors=live.max_actors,
        )
        self._runtime = runtime

    def _new_actor(self, user_id: str) -> UserActor:
        board, _, _ = user_id.partition("\0")
        return BoardWriter(
            user_id,
            self._store,
            self._runtime,
            self._runtime.rules[board],
            self._mailbox_size,
            self._clock,
            self._queued,
        )


class BoardsRuntime:
    """Every board of the file, live on this pod.

    Args:
        boards: the boards served.
        store: the store (guarded).
        seasons: the service's season clock (each period's current season).
        clock_ms: wall-clock milliseconds (injected in tests).
        live: how the live parts are sized.
        on_season_started: called with the board, period and new season's id once the
            period's leaderboard started it (its watchers then get a snapshot).
    """

    def __init__(
        self,
        boards: tuple[BoardSpec, ...],
        store: ScoreStore,
        seasons: SeasonClock,
        clock_ms: Callable[[], int],
        live: LiveSettings,
        *,
        on_season_started: Callable[[str, str, str], None] = lambda b, p, s: None,
        tick_s: float = TICK_S,
        retire_every_s: float = RETIRE_EVERY_S,
        max_archives: int = MAX_ARCHIVES,
    ) -> None:
        self.specs = {b.id: b for b in boards}
        self.rules = {b.id: BoardRules(b, seasons) for b in boards}
        self._store = store
        self._seasons = seasons
        self._clock_ms = clock_ms
        self.on_season_started = on_season_started
        now = clock_ms()
        self.periods: dict[tuple[str, str], PeriodLive] = {
            (b.id, p.name): PeriodLive(b, p, seasons.current(p, now), store, live)
            for b in boards
            for p in b.periods
        }
        first = next(iter(self.periods.values()))
        self.any_leaderboard = first.leaderboard  # unused by board writers: they report here
        self.any_ranks = first.ranks
        self.writers = BoardWriters(self, store, live)
        self.banned: set[str] = set()
        self._loaded = False
        self._archives: OrderedDict[tuple[str, str, str], RankIndex] = OrderedDict()
        self._loading: dict[tuple[str, str, str], asyncio.Future[RankIndex]] = {}
        # Each ended season's players' count and final top N, once computed: small (top N
        # rows per kept season), so kept for every kept season, while whole archives are
        # few. Dropped when a late write or a ban changes the season.
        self._finals: dict[tuple[str, str, str], SeasonFinal] = {}
        self._max_archives = max_archives
        self._tick_s = tick_s
        self._retire_every_s = retire_every_s
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._retirer: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def load(self) -> None:
        """Load every period's current season from the store, and its top K.

        Raises:
            StoreError: the store could not be read.
        """
        self.banned = set(await self._store.banned_users())
        for live in self.periods.values():
            if not live.ranks.loaded:
                await self._load_current(live)
            await live.leaderboard.load()

    def start(self) -> None:
        """Start the leaderboards, writers, the season ticker and the retirement job."""
        for live in self.periods.values():
            live.leaderboard.start()
        self.writers.start()
        loop = asyncio.get_running_loop()
        self._ticker = loop.create_task(self._tick(), name="board-seasons")
        self._retirer = loop.create_task(self._retire_loop(), name="board-retirement")

    async def stop(self, *, drain: bool = True) -> None:
        """Stop the writers (``drain``: each first writes what its mailbox holds; else
        they are cancelled, as on a shutdown past its timeout), then everything else.
        Idempotent."""
        await (self.writers.stop() if drain else self.writers.kill_all())
        ticker, self._ticker = self._ticker, None
        retirer, self._retirer = self._retirer, None
        await cancel_and_wait(ticker)
        await cancel_and_wait(retirer)
        for task in list(self._tasks):
            await cancel_and_wait(task)
        for live in self.periods.values():
            await (live.leaderboard.stop() if drain else live.leaderboard.kill())

    @property
    def loaded(self) -> bool:
        """Every period's leaderboard is loaded (once true, for good: asked per request)."""
        if not self._loaded:
            self._loaded = all(live.leaderboard.view.loaded for live in self.periods.values())
        return self._loaded

    # --- writes ----------------------------------------------------------------------------

    def writer_key(self, board: str, user_id: str) -> str:
        return f"{board}\0{user_id}"

    def took(self, record: BoardRecord) -> None:
        """A record this pod wrote, or another pod's from the feed: into every index it
        changes. Costs O(periods) per write (O(log n) each), plus the kept ended seasons
        while an archive of one is in memory."""
        if record.user_id in self.banned:
            return
        spec = self.specs.get(record.board)
        if spec is None:
            return  # a board no longer in the file
        standings = record.standings
        taken: set[str] = set()
        for held in standings.current:
            live = self.periods.get((spec.id, held.period))
            if live is None:
                continue
            season = live.season
            if held.season != season.season_id and season.end_ms is not None:
                start = season_start(live.period, held.season)
                if start > season.start_ms:
                    # A newer season than this pod's: its clock is behind the writer's.
                    self.check_seasons(max(self._clock_ms(), start))
            if held.season == live.season.season_id:
                live.take(row_of(spec, record, held))
                taken.add(held.period)
        for period in spec.periods:
            if period.name in taken:
                continue
            live = self.periods[(spec.id, period.name)]
            if record.user_id in live.ranks.index and (
                standings.in_season(period.name, live.season.season_id) is None
            ):
                live.drop(record.user_id)  # a standing the record no longer holds (a reset)
        if self._archives:  # a late write into an ended season this pod keeps in memory
            for held in (*standings.current, *standings.ended):
                key = (spec.id, held.period, held.season)
                archive = self._archives.get(key)
                if archive is None:
                    continue
                row = row_of(spec, record, held)
                before = archive.get(record.user_id)
                # Every write carries the player's ended standings at its new version: the
                # season's final stands unless the row itself changed.
                if archive.apply(row) and (
                    before is None
                    or (before.score, before.reached_ms, before.username)
                    != (row.score, row.reached_ms, row.username)
                ):
                    self._finals.pop(key, None)

    def saw(self, event: BoardChange | Change) -> None:
        """A change on the feed: another pod's board write, or a user's ban or unban."""
        if isinstance(event, BoardChange):
            record = event.record
            # Another pod wrote it (or this one): the writer's record may be stale.
            self.writers.saw_version(self.writer_key(record.board, record.user_id), record.v)
            self.took(record)
            return
        user_id = event.row.user_id
        if event.banned:
            if user_id not in self.banned:
                self.banned.add(user_id)
                for live in self.periods.values():
                    live.drop(user_id)
                for archive in self._archives.values():  # ended seasons are shown too
                    held = archive.get(user_id)
                    if held is not None:
                        archive.remove(user_id, held.v)
                self._finals.clear()
        elif user_id in self.banned:  # an unban (bans are loaded at start and reload)
            self.banned.discard(user_id)
            self._own(self._restore(user_id), "board-unban")

    async def _restore(self, user_id: str) -> None:
        """An unbanned player's standings come back on every board (from the store)."""
        self._finals.clear()
        for archive in self._archives.values():
            archive.forget_removal(user_id)
        for board_id, rules in self.rules.items():
            for period in rules.spec.periods:
                self.periods[(board_id, period.name)].ranks.index.forget_removal(user_id)
            try:
                record = await self._store.get_board_record(rules, user_id)
            except StoreError:
                log.warning("could not restore %s on board %s after an unban", user_id, board_id)
                continue
            if record is not None:
                self.took(record)

    async def reload(self) -> None:
        """Read every period's current season again (the change feed lost its place).

        Raises:
            StoreError: the store could not be read.
        """
        self.writers.forget_known()
        self.banned = set(await self._store.banned_users())  # a ban or unban may be missed
        for live in self.periods.values():
            await self._load_current(live)
            if not await live.leaderboard.ask(ReloadTop()):
                raise StoreError(f"could not reload board {live.spec.id!r}")

    async def _load_current(self, live: PeriodLive) -> None:
        """Load ``live``'s current season into its index; again if a new season started
        during the load (its pages would mix two seasons)."""
        while True:
            season = live.season
            await live.ranks.load()
            if live.season == season:
                return
            log.info("a season started while its period loaded; loading it again")

    # --- seasons ---------------------------------------------------------------------------

    def check_seasons(self, now_ms: int) -> None:
        """Start the new season of every period whose season ended by ``now_ms``."""
        for (board_id, _), live in self.periods.items():
            season = self._seasons.current(live.period, now_ms)
            if season.start_ms <= live.season.start_ms:
                continue
            ended = live.season
            archive = live.begin(season)
            self._keep_archive((board_id, live.period.name, ended.season_id), archive)
            log.info(
                "season started",
                extra={"board": board_id, "period": live.period.name, "season": season.season_id},
            )
            # Queued now, ahead of the new season's rows: the leaderboard starts the new
            # epoch, and its watchers move to the new season, before it shows any of them.
            started = NewSeason(partial(self._started, live, season))
            self._own(self._announce(live.leaderboard.ask(started)), "board-season")

    def _started(self, live: PeriodLive, season: Season) -> None:
        if live.season == season:
            self.on_season_started(live.spec.id, live.period.name, season.season_id)

    async def _announce(self, reply: asyncio.Future[bool]) -> None:
        if not await reply:  # the leaderboard could not read the new season's top
            log.warning("a board's leaderboard did not start its new season")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                self.check_seasons(self._clock_ms())
            except Exception:
                log.exception("checking the boards' seasons failed")

    # --- reads -----------------------------------------------------------------------------

    def period(self, board: str, period: str) -> PeriodLive:
        return self.periods[(board, period)]

    async def final(self, board: str, period: str, season_id: str) -> SeasonFinal:
        """An ended season's players' count and final top N (of the board's ``top_n``),
        read from the store once per pod (:meth:`season_index`), then from memory.

        Raises:
            StoreError: the store could not be read.
        """
        key = (board, period, season_id)
        final = self._finals.get(key)
        if final is None:
            index = await self.season_index(board, period, season_id)
            final = self._finals[key] = (len(index), index.page(1, self.specs[board].top_n))
        return final

    def held_index(self, board: str, period: str, season_id: str) -> RankIndex | None:
        """The index of a season this pod holds in memory (the current one, or an
        archive), or ``None``."""
        live = self.periods[(board, period)]
        if season_id == live.season.season_id:
            return live.ranks.index
        return self._archives.get((board, period, season_id))

    async def season_index(self, board: str, period: str, season_id: str) -> RankIndex:
        """The rank index of one season: the live one, an archive, or read from the store
        (once; concurrent readers wait for the same read).

        Raises:
            StoreError: the store could not be read.
        """
        live = self.periods[(board, period)]
        if season_id == live.season.season_id:
            return live.ranks.index
        key = (board, period, season_id)
        archive = self._archives.get(key)
        if archive is not None:
            self._archives.move_to_end(key)
            return archive
        loading = self._loading.get(key)
        if loading is None:
            loading = asyncio.get_running_loop().create_future()
            self._loading[key] = loading
            self._own(self._load_archive(live, key, loading), "board-archive")
        return await asyncio.shield(loading)

    async def _load_archive(
        self, live: PeriodLive, key: tuple[str, str, str], done: asyncio.Future[RankIndex]
    ) -> None:
        try:
            ranks = LiveRanks(SeasonRows(self._store, live.spec, key[1], key[2]))
            await ranks.load()
            self._keep_archive(key, ranks.index)
            done.set_result(ranks.index)
        except BaseException as exc:
            if not done.done():
                done.set_exception(exc if isinstance(exc, Exception) else StoreError(str(exc)))
            if not isinstance(exc, Exception):
                raise
        finally:
            self._loading.pop(key, None)

    def _keep_archive(self, key: tuple[str, str, str], index: RankIndex) -> None:
        self._archives[key] = index
        self._archives.move_to_end(key)
        while len(self._archives) > self._max_archives:
            self._archives.popitem(last=False)

    # --- retirement ------------------------------------------------------------------------

    async def retire(self) -> int:
        """Delete the seasons past each board's ``keep_seasons`` and the expired spent
        tokens, a page at a time; return how many rows went."""
        gone = 0
        now = self._clock_ms()
        for live in self.periods.values():
            if live.season.end_ms is None:
                continue  # all_time: one season, never ended
            kept = live.ended_kept()
            oldest = kept[-1] if kept else live.season
            while True:
                n = await self._store.retire_seasons(
                    live.spec.id, live.period.name, oldest.start_ms, RETIRE_PAGE
                )
                gone += n
                if n < RETIRE_PAGE:
                    break
                await asyncio.sleep(0)  # between pages, the loop serves requests
            for key in [k for k in self._archives if k[:2] == (live.spec.id, live.period.name)]:
                if not live.keeps(key[2]):
                    del self._archives[key]
            for key in [k for k in self._finals if k[:2] == (live.spec.id, live.period.name)]:
                if not live.keeps(key[2]):
                    del self._finals[key]
        while (n := await self._store.expire_spent_actions(now, RETIRE_PAGE)) > 0:
            gone += n
            if n < RETIRE_PAGE:
                break
            await asyncio.sleep(0)
        return gone

    async def _retire_loop(self) -> None:
        while True:
            await asyncio.sleep(self._retire_every_s)
            try:
                gone = await self.retire()
                if gone:
                    log.info("retired ended seasons", extra={"rows": gone})
            except StoreError as exc:
                log.warning("retiring ended seasons failed; next run retries: %s", exc)

    # --- tasks -----------------------------------------------------------------------------

    def _own(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
