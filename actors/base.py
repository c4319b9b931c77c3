"""The actor base: a mailbox (``asyncio.Queue``), one task, ``tell``/``ask`` and an orderly stop.

Like pykka's actors, ``stop()`` is itself a message, so everything sent before it is still
processed; when the actor ends, every ask still waiting fails with :class:`ActorStopped`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final, Generic, TypeVar

log = logging.getLogger(__name__)

M = TypeVar("M")


class ActorStopped(Exception):
    """The actor is stopping or stopped: the message was not (and will not be) processed."""


class ActorCancelled(ActorStopped):
    """The actor was cancelled while it handled this message: the outcome is unknown
    (the work may have completed, e.g. a store write already queued)."""


class MailboxFull(Exception):
    """The mailbox is at its bound: back-pressure; the message was not queued."""


class _Envelope:
    __slots__ = ("message", "reply")

    def __init__(self, message: Any, reply: asyncio.Future[Any] | None) -> None:
        self.message = message
        self.reply = reply


_STOP: Final = _Envelope(None, None)


class Actor(Generic[M]):
    """Subclasses implement :meth:`receive`; one message at a time, in arrival order.

    Args:
        name: for logs and the task name.
        mailbox_size: the most queued messages (0: unbounded). A full mailbox makes
            :meth:`tell` and :meth:`ask` raise :class:`MailboxFull` at once.
    """

    def __init__(self, name: str, mailbox_size: int = 0) -> None:
        self.name = name
        # The queue itself is unbounded so the stop marker always fits; _put enforces the bound.
        self._mailbox: asyncio.Queue[_Envelope] = asyncio.Queue()
        self._mailbox_size = mailbox_size
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def depth(self) -> int:
        """Messages waiting in the mailbox."""
        return self._mailbox.qsize()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the actor's task. Call once, from the event loop."""
        if self._task is not None:
            raise RuntimeError(f"actor {self.name} already started")
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"actor:{self.name}")

    def tell(self, message: M) -> None:
        """Queue ``message``; no reply.

        Raises:
            ActorStopped: the actor is stopping.
            MailboxFull: back-pressure; nothing was queued.
        """
        self._put(_Envelope(message, None))

    def ask(self, message: M) -> asyncio.Future[Any]:
        """Queue ``message`` and return a future for :meth:`receive`'s result (or its error).

        Raises:
            ActorStopped: the actor is stopping.
            MailboxFull: back-pressure; nothing was queued.
        """
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._put(_Envelope(message, reply))
        return reply

    async def stop(self) -> None:
        """Process what is queued, then end. Idempotent; returns once the task ended."""
        if self._task is None:
            self._stopping = True
            return
        if not self._stopping:
            self._stopping = True
            self._mailbox.put_nowait(_STOP)
        # wait(), not shield(): it neither re-raises the task's cancellation (after kill)
        # nor cancels the task when the caller is cancelled.
        await asyncio.wait({self._task})

    async def kill(self) -> None:
        """Cancel the actor now; queued asks fail with :class:`ActorStopped`."""
        self._stopping = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        # A task cancelled before it first ran never reached _run's finally.
        self._fail_pending()

    async def receive(self, message: M) -> Any:
        """Handle one message; the return value answers an ``ask``."""
        raise NotImplementedError

    async def on_stop(self) -> None:
        """Called once after the last message, before pending asks are failed."""

    def _put(self, envelope: _Envelope) -> None:
        if self._stopping:
            raise ActorStopped(f"actor {self.name} is stopping")
        if self._mailbox_size and self._mailbox.qsize() >= self._mailbox_size:
            raise MailboxFull(f"actor {self.name} has {self._mailbox_size} queued messages")
        self._mailbox.put_nowait(envelope)

    async def _run(self) -> None:
        try:
            while True:
                envelope = await self._mailbox.get()
                if envelope is _STOP:
                    break
                await self._deliver(envelope)
            await self.on_stop()
        finally:
            self._stopping = True
            self._fail_pending()

    async def _deliver(self, envelope: _Envelope) -> None:
        reply = envelope.reply
        try:
            result = await self.receive(envelope.message)
        except asyncio.CancelledError:
            if reply is not None and not reply.done():
                reply.set_exception(ActorCancelled(f"actor {self.name} was cancelled mid-message"))
            raise
        except Exception as exc:
            if reply is None:
                log.exception("actor %s failed on a told message", self.name)
            elif not reply.done():
                reply.set_exception(exc)
            return
        if reply is not None and not reply.done():
            reply.set_result(result)

    def _fail_pending(self) -> None:
        while not self._mailbox.empty():
            envelope = self._mailbox.get_nowait()
            if envelope.reply is not None and not envelope.reply.done():
                envelope.reply.set_exception(ActorStopped(f"actor {self.name} stopped"))
