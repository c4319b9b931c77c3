"""Per-user actors: one mailbox per user serializes that user's writes to the store.

The :class:`UserRegistry` creates an actor on a user's first request and evicts it after
it has been idle for a while, so memory follows the users active right now, up to a cap:
when the registry is full, the least recently used idle actor makes room, and with none
idle a new user is refused (:class:`RegistryFull`) rather than let memory grow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actors.base import Actor, ActorStopped, QueuedCount
from actors.leaderboard import LeaderboardActor, ScoreChanged, UserRemoved
from actors.ranks import RankUpdates
from server.domain.admin import AdminAction
from server.domain.records import Applied, BoardRow, Decision, IncrementCommand, UserRecord
from server.store.port import ScoreStore
from server.support.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# How many of the least recently used actors a full registry looks at for an idle one,
# per new user; the busy ones it passes go to the back, so the next look starts further.
_ROOM_SCAN = 16
# Actors the idle sweeper looks at between two yields to the event loop.
_SWEEP_SLICE = 1000


class RegistryFull(Exception):
    """The registry holds its most actors and none of those it looked at is idle: the
    message was not queued (back-pressure, like a full mailbox)."""


@dataclass(frozen=True, slots=True)
class AdminCommand:
    """An admin action on this user, at ``now_ms``; ``blank``: the record to act on when
    the user has none (a boards file's player, banned on every board)."""

    action: AdminAction
    now_ms: int
    blank: UserRecord | None = None


class UserActor(Actor[IncrementCommand | AdminCommand]):
    """Applies one user's increments in order and reports each change to the leaderboard
    and the rank index (``ranks``).

    Increments queued behind each other (a hot user) are written together, up to
    :attr:`max_batch` in one store call; each request still gets its own decision (its own
    new score), exactly as if they had been applied one by one.
    """

    max_batch = 64

    def __init__(
        self,
        user_id: str,
        store: ScoreStore,
        leaderboard: LeaderboardActor,
        mailbox_size: int,
        clock: Callable[[], float],
        *,
        ranks: RankUpdates,
        queued: QueuedCount | None = None,
    ) -> None:
        super().__init__(f"user:{user_id}", mailbox_size, queued=queued)
        self.user_id = user_id
        self._store = store
        self._leaderboard = leaderboard
        self._ranks = ranks
        self._clock = clock
        self._busy = False
        self.last_active = clock()
        # The record this actor last wrote: lets the store skip reading it first.
        self._known: UserRecord | None = None

    @property
    def idle(self) -> bool:
        """Nothing in progress and nothing queued: stopping it loses no work."""
        return not self._busy and not self.depth

    def idle_since(self, now: float) -> float:
        """Seconds since the last message finished; 0 while busy or with mail queued."""
        if self._busy or self.depth:
            return 0.0
        return now - self.last_active

    async def receive(
        self, message: IncrementCommand | AdminCommand
    ) -> Decision | UserRecord | None:
        """Apply an increment (answers the :data:`Decision`) or an admin action (answers
        the new record, or ``None`` for an unknown user), then tell the leaderboard."""
        self._busy = True
        try:
            if isinstance(message, AdminCommand):
                change = message.action.change(message.now_ms)
                self._known = None
                record = await self._store.apply_admin(self.user_id, change, message.blank)
                self._known = record
                self._report(record)
                return record
            return (await self._apply([message]))[0]
        finally:
            self._busy = False
            self.last_active = self._clock()

    async def _apply(self, cmds: list[IncrementCommand]) -> list[Decision]:
        known, self._known = self._known, None  # unknown again if the store fails
        decisions = await self._store.apply_increments(cmds, known)
        applied = [d.record for d in decisions if isinstance(d, Applied)]
        if applied:
            self._known = applied[-1]
            self._report(applied[-1])  # the board and the ranks need the last state
        return decisions

    def saw_version(self, v: int) -> None:
        """Another writer (a pod) wrote this user at version ``v``: a record older than
        that is no use to the store, which would miss its compare-and-set and read anyway."""
        if self._known is not None and self._known.v < v:
            self._known = None

    def forget_known(self) -> None:
        """Read the record afresh next time (the change feed lost track of the store)."""
        self._known = None

    def batchable(self, message: IncrementCommand | AdminCommand) -> bool:
        return isinstance(message, IncrementCommand)

    async def receive_batch(self, messages: list[IncrementCommand | AdminCommand]) -> list[Any]:
        self._busy = True
        try:
            cmds = [m for m in messages if isinstance(m, IncrementCommand)]
            return list(await self._apply(cmds))
        finally:
            self._busy = False
            self.last_active = self._clock()

    def _report(self, r: UserRecord | None) -> None:
        if r is None:
            return
        change: ScoreChanged | UserRemoved
        if r.banned:
            self._ranks.remove(r.user_id, r.v)
            change = UserRemoved(r.user_id, r.v)
        else:
            row = BoardRow(r.user_id, r.username, r.score, r.reached_ms, r.v)
            self._ranks.apply(row)  # every ranked player, on the board's view or not
            if not self._leaderboard.view.wants(row):
                return  # stays outside the board: nothing to show
            change = ScoreChanged(row)
        try:
            self._leaderboard.tell(change)
        except ActorStopped:
            log.warning("leaderboard stopped before a change of %s reached it", self.user_id)


class UserRegistry:
    """Creates user actors on demand, evicts idle ones, and stops them all on shutdown.

    Args:
        ranks: where every actor reports its user's changes (the rank index).
        idle_s: an actor idle this long (empty mailbox, nothing in progress) is stopped.
        max_actors: the most live actors; a new user past it displaces the least recently
            used idle actor.
        on_displaced: called for each actor displaced that way (a metric).
    """

    def __init__(
        self,
        store: ScoreStore,
        leaderboard: LeaderboardActor,
        *,
        ranks: RankUpdates,
        mailbox_size: int,
        idle_s: float,
        max_actors: int = 1_000_000,
        on_displaced: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._leaderboard = leaderboard
        self._ranks = ranks
        self._mailbox_size = mailbox_size
        self._idle_s = idle_s
        self._max_actors = max_actors
        self._on_displaced = on_displaced
        self._clock = clock
        self._queued = QueuedCount()  # shared by every actor's mailbox
        # Least recently asked first: a full registry displaces from the front.
        self._actors: OrderedDict[str, UserActor] = OrderedDict()
        self._sweeper: asyncio.Task[None] | None = None
        self._evicting: set[asyncio.Task[None]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._actors)

    def mailbox_depth(self) -> int:
        """Messages queued in all user mailboxes, in O(1)."""
        return self._queued.n

    def saw_version(self, user_id: str, v: int) -> None:
        """A write of ``user_id`` at version ``v`` went by on the change feed."""
        actor = self._actors.get(user_id)
        if actor is not None:
            actor.saw_version(v)

    def forget_known(self) -> None:
        """Every actor reads its user's record afresh next time."""
        for actor in self._actors.values():
            actor.forget_known()

    def actor_for(self, user_id: str) -> UserActor:
        """The user's actor, started if it was not running; it becomes the most recently used.

        Raises:
            ActorStopped: the registry is shutting down.
            RegistryFull: the registry is full and the actors it looked at are all busy.
        """
        actors = self._actors
        actor = actors.get(user_id)
        if actor is not None:
            actors.move_to_end(user_id)
            return actor
        if self._closed:
            raise ActorStopped("the service is shutting down")
        if len(actors) >= self._max_actors:
            self._make_room()
        actor = self._new_actor(user_id)
        actor.start()
        actors[user_id] = actor
        return actor

    def _new_actor(self, user_id: str) -> UserActor:
        """A new actor for ``user_id`` (not started)."""
        return UserActor(
            user_id,
            self._store,
            self._leaderboard,
            self._mailbox_size,
            self._clock,
            ranks=self._ranks,
            queued=self._queued,
        )

    def _make_room(self) -> None:
        actors = self._actors
        for _ in range(min(_ROOM_SCAN, len(actors))):
            user_id, actor = next(iter(actors.items()))
            if actor.idle:
                self._evict(actor)
                self._on_displaced()
                return
            actors.move_to_end(user_id)  # busy: in use, as good as recently used
        raise RegistryFull(f"{len(actors)} users are active; their actors are all busy")

    def start(self) -> None:
        """Start the idle sweeper."""
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="user-sweeper")

    def _evict_idle_among(self, actors: list[UserActor]) -> int:
        now = self._clock()
        evicted = 0
        for actor in actors:
            # Still the user's actor (not displaced meanwhile) and idle long enough.
            if actor.idle_since(now) >= self._idle_s and self._actors.get(actor.user_id) is actor:
                self._evict(actor)
                evicted += 1
        return evicted

    def _evict(self, actor: UserActor) -> None:
        # Out of the map first: no message can reach it once it is gone from there.
        del self._actors[actor.user_id]
        # Its own task ends it (a task per eviction to await stop() cost about 2.5 KB
        # each: +245 MiB at once when 100,000 idle actors went in one sweep).
        task = actor.stop_soon()
        if task is not None:
            self._evicting.add(task)
            task.add_done_callback(self._evicting.discard)

    async def stop(self) -> None:
        """Refuse new users, drain every mailbox into the store, and stop every actor."""
        self._closed = True
        await self._stop_sweeper()
        actors = list(self._actors.values())
        await asyncio.gather(*(a.stop() for a in actors))
        if self._evicting:  # their own tasks: wait(), which never raises their outcome
            await asyncio.wait(set(self._evicting))
        self._actors.clear()

    async def kill_all(self) -> None:
        """Cancel every actor now (after a shutdown timeout); queued asks fail."""
        self._closed = True
        await self._stop_sweeper()
        actors = list(self._actors.values())
        self._actors.clear()
        await asyncio.gather(*(a.kill() for a in actors))

    async def _stop_sweeper(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        await cancel_and_wait(sweeper)

    async def sweep(self) -> int:
        """Stop every actor idle for ``idle_s``, yielding to the event loop between slices
        of them (looking at 50,000 actors at once held the loop for 15-50 ms, stopping
        many of them for longer); return how many were stopped."""
        actors = list(self._actors.values())
        evicted = 0
        for start in range(0, len(actors), _SWEEP_SLICE):
            evicted += self._evict_idle_among(actors[start : start + _SWEEP_SLICE])
            await asyncio.sleep(0)
        return evicted

    async def _sweep(self) -> None:
        period = max(0.01, self._idle_s / 2)
        while True:
            await asyncio.sleep(period)
            await self.sweep()
