"""The actor base: mailbox, tell/ask, order, back-pressure, stop and kill."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from actors.base import (
    Actor,
    ActorCancelled,
    ActorStopped,
    MailboxFull,
    QueuedCount,
    _Envelope,
    _Mailbox,
)
from tests.conftest import scaled

pytestmark = pytest.mark.gen_test(timeout=scaled(10))

SHORT = scaled(0.5)


class Recorder(Actor[Any]):
    """Records every message; ``("fail", x)`` raises, ``("wait", event)`` blocks on it."""

    def __init__(self, mailbox_size: int = 0) -> None:
        super().__init__("recorder", mailbox_size)
        self.seen: list[Any] = []
        self.stopped_after: list[Any] | None = None
        self.on_stop_calls = 0
        self.started = asyncio.Event()

    async def receive(self, message: Any) -> Any:
        self.started.set()
        self.seen.append(message)
        if isinstance(message, tuple) and message[0] == "fail":
            raise ValueError(message[1])
        if isinstance(message, tuple) and message[0] == "wait":
            await message[1].wait()
        await asyncio.sleep(0)  # let other tasks run between messages
        return ("echo", message)

    async def on_stop(self) -> None:
        self.on_stop_calls += 1
        self.stopped_after = list(self.seen)


async def test_ask_answers_with_receives_result() -> None:
    actor = Recorder()
    actor.start()
    assert actor.running
    assert await actor.ask("hello") == ("echo", "hello")
    await actor.stop()


async def test_tell_delivers_without_a_reply() -> None:
    actor = Recorder()
    actor.start()
    assert actor.tell("fire") is None  # type: ignore[func-returns-value]
    await actor.ask("sync")
    assert actor.seen == ["fire", "sync"]
    await actor.stop()


async def test_messages_are_processed_one_at_a_time_in_arrival_order() -> None:
    actor = Recorder()
    actor.start()
    replies = []
    for i in range(50):
        if i % 3 == 0:
            replies.append(actor.ask(i))
        else:
            actor.tell(i)
    answers = await asyncio.gather(*replies)
    assert answers == [("echo", i) for i in range(0, 50, 3)]
    assert actor.seen == list(range(50))
    await actor.stop()


async def test_ask_gets_the_exception_receive_raised_and_the_actor_goes_on() -> None:
    actor = Recorder()
    actor.start()
    with pytest.raises(ValueError, match=r"^boom$"):
        await actor.ask(("fail", "boom"))
    assert await actor.ask("after") == ("echo", "after")
    assert actor.running
    await actor.stop()


async def test_a_told_message_that_raises_is_logged_and_the_actor_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    actor = Recorder()
    actor.start()
    with caplog.at_level(logging.ERROR, logger="actors.base"):
        actor.tell(("fail", "kaput"))
        assert await actor.ask("after") == ("echo", "after")
    failures = [r for r in caplog.records if r.name == "actors.base"]
    assert len(failures) == 1
    assert "recorder" in failures[0].getMessage()
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], ValueError)
    assert str(failures[0].exc_info[1]) == "kaput"
    assert actor.seen == [("fail", "kaput"), "after"]
    await actor.stop()


async def test_a_full_mailbox_refuses_tell_and_ask_and_queues_nothing() -> None:
    actor = Recorder(mailbox_size=2)
    actor.tell("one")
    actor.tell("two")
    assert actor.depth == 2
    with pytest.raises(MailboxFull):
        actor.tell("three")
    with pytest.raises(MailboxFull):
        actor.ask("four")
    assert actor.depth == 2
    actor.start()
    await actor.stop()
    assert actor.seen == ["one", "two"]


async def test_the_bound_counts_queued_messages_not_the_one_in_progress() -> None:
    actor = Recorder(mailbox_size=1)
    actor.start()
    gate = asyncio.Event()
    actor.tell(("wait", gate))
    await asyncio.wait_for(actor.started.wait(), SHORT)
    assert actor.depth == 0
    queued = actor.ask("queued")
    with pytest.raises(MailboxFull):
        actor.tell("refused")
    assert actor.depth == 1
    gate.set()
    assert await queued == ("echo", "queued")  # out of the mailbox: room for one again
    assert await actor.ask("next") == ("echo", "next")
    await actor.stop()
    assert actor.seen == [("wait", gate), "queued", "next"]


async def test_mailbox_size_zero_is_unbounded() -> None:
    actor = Recorder(mailbox_size=0)
    for i in range(1000):
        actor.tell(i)
    assert actor.depth == 1000
    actor.start()
    await actor.stop()
    assert actor.seen == list(range(1000))


async def test_stop_processes_what_was_queued_before_it_then_ends() -> None:
    actor = Recorder()
    actor.start()
    for i in range(5):
        actor.tell(i)
    last = actor.ask("last")
    await actor.stop()
    assert last.done()
    assert last.result() == ("echo", "last")
    assert actor.seen == [0, 1, 2, 3, 4, "last"]
    assert actor.stopped_after == actor.seen  # on_stop ran after the last message
    assert actor.on_stop_calls == 1
    assert not actor.running
    assert actor.depth == 0


async def test_tell_and_ask_after_stop_raise_actor_stopped() -> None:
    actor = Recorder()
    actor.start()
    await actor.stop()
    with pytest.raises(ActorStopped):
        actor.tell("late")
    with pytest.raises(ActorStopped):
        actor.ask("late")
    assert actor.seen == []


async def test_tell_while_stopping_is_refused() -> None:
    actor = Recorder()
    actor.start()
    gate = asyncio.Event()
    actor.tell(("wait", gate))
    stopping = asyncio.ensure_future(actor.stop())
    await asyncio.sleep(0)
    with pytest.raises(ActorStopped):
        actor.tell("late")
    assert not stopping.done()  # still draining the message in progress
    gate.set()
    await stopping
    assert actor.seen == [("wait", gate)]


async def test_stop_is_idempotent() -> None:
    actor = Recorder()
    actor.start()
    actor.tell("x")
    await asyncio.gather(actor.stop(), actor.stop())
    await actor.stop()
    assert actor.on_stop_calls == 1
    assert actor.seen == ["x"]


async def test_stop_soon_returns_the_actors_own_task_which_ends_after_the_queue() -> None:
    never_started = Recorder()
    assert never_started.stop_soon() is None
    with pytest.raises(ActorStopped):
        never_started.tell("late")
    actor = Recorder()
    actor.start()
    actor.tell("x")
    tasks_before = len(asyncio.all_tasks())
    task = actor.stop_soon()
    assert task is not None and actor.stop_soon() is task  # idempotent
    assert len(asyncio.all_tasks()) == tasks_before  # no task to wait on the stop
    with pytest.raises(ActorStopped):
        actor.tell("late")
    await task
    assert actor.seen == ["x"]
    assert actor.on_stop_calls == 1


async def test_stop_before_start_refuses_messages() -> None:
    actor = Recorder()
    await actor.stop()
    with pytest.raises(ActorStopped):
        actor.tell("x")


async def test_start_twice_is_an_error() -> None:
    actor = Recorder()
    actor.start()
    with pytest.raises(RuntimeError, match="already started"):
        actor.start()
    await actor.stop()


async def test_kill_fails_the_ask_in_progress_and_the_queued_asks() -> None:
    actor = Recorder()
    actor.start()
    gate = asyncio.Event()  # never set: the first message blocks until killed
    in_progress = actor.ask(("wait", gate))
    queued = [actor.ask(i) for i in range(3)]
    await asyncio.wait_for(actor.started.wait(), SHORT)
    await actor.kill()
    for reply in (in_progress, *queued):
        with pytest.raises(ActorStopped):
            await asyncio.wait_for(reply, SHORT)
    assert actor.seen == [("wait", gate)]  # nothing after the kill was processed
    assert not actor.running
    with pytest.raises(ActorStopped):
        actor.tell("late")
    with pytest.raises(ActorStopped):
        actor.ask("late")


async def test_kill_right_after_start_fails_the_queued_asks() -> None:
    actor = Recorder()
    actor.start()
    reply = actor.ask("queued")
    await actor.kill()  # the actor's task has not had a turn yet
    with pytest.raises(ActorStopped):
        await asyncio.wait_for(reply, SHORT)


async def test_stop_after_kill_returns() -> None:
    actor = Recorder()
    actor.start()
    await asyncio.sleep(0)
    await actor.kill()
    try:
        await actor.stop()
    except asyncio.CancelledError:
        pytest.fail("stop() after kill() raised CancelledError")


# --- batching --------------------------------------------------------------------------
#
# An actor with max_batch > 1 takes consecutive batchable messages together
# (receive_batch); each ask still gets its own answer, and every rule above (order,
# stop, kill, logging of told failures) still holds.


class Batcher(Actor[Any]):
    """Batches tuples: ``("ok", n)`` answers ``n * 10``, ``("bad", n)`` answers a
    ValueError instance (that ask alone fails), ``("raise", n)`` makes receive_batch raise,
    ``("block", event)`` waits on the event. Anything else goes through receive."""

    max_batch = 3

    def __init__(self, mailbox_size: int = 0) -> None:
        super().__init__("batcher", mailbox_size)
        self.log: list[tuple[str, Any]] = []
        self.in_batch = asyncio.Event()
        self.stopped_after: list[tuple[str, Any]] | None = None

    def batchable(self, message: Any) -> bool:
        return isinstance(message, tuple)

    async def receive(self, message: Any) -> Any:
        self.log.append(("one", message))
        if isinstance(message, tuple):
            result = (await self._handle([message]))[0]
            if isinstance(result, Exception):
                raise result
            return result
        await asyncio.sleep(0)
        return ("echo", message)

    async def receive_batch(self, messages: list[Any]) -> list[Any]:
        self.log.append(("batch", list(messages)))
        self.in_batch.set()
        return await self._handle(messages)

    async def _handle(self, messages: list[Any]) -> list[Any]:
        results: list[Any] = []
        for kind, arg in messages:
            if kind == "raise":
                raise RuntimeError(f"batch failed at {arg}")
            if kind == "block":
                await arg.wait()
            results.append(ValueError(arg) if kind == "bad" else arg * 10 if kind == "ok" else kind)
        await asyncio.sleep(0)
        return results

    async def on_stop(self) -> None:
        self.stopped_after = list(self.log)


def ok(*ns: int) -> list[tuple[str, int]]:
    return [("ok", n) for n in ns]


async def outcomes(replies: list[asyncio.Future[Any]]) -> list[tuple[str, Any]]:
    """Each reply as ("result", value) or ("raised", exception): an exception instance
    *answered* as a result must not pass for a failed ask."""
    await asyncio.wait_for(asyncio.wait(replies), SHORT)
    return [
        ("raised", f.exception()) if f.exception() is not None else ("result", f.result())
        for f in replies
    ]


async def test_queued_batchable_messages_go_in_groups_of_at_most_max_batch_in_order() -> None:
    actor = Batcher()
    asks = [actor.ask(m) for m in ok(*range(1, 8))]
    assert actor.depth == 7
    actor.start()
    assert await asyncio.gather(*asks) == [n * 10 for n in range(1, 8)]
    # A lone batchable message goes through receive (a batch of one).
    assert actor.log == [("batch", ok(1, 2, 3)), ("batch", ok(4, 5, 6)), ("one", ("ok", 7))]
    assert actor.depth == 0
    await actor.stop()


async def test_a_non_batchable_message_breaks_a_batch() -> None:
    actor = Batcher()
    messages = [*ok(1, 2), "x", *ok(3, 4, 5, 6), "y", "z", *ok(7)]
    asks = [actor.ask(m) for m in messages]
    actor.start()
    answers = await asyncio.gather(*asks)
    assert answers == [10, 20, ("echo", "x"), 30, 40, 50, 60, ("echo", "y"), ("echo", "z"), 70]
    assert actor.log == [
        ("batch", ok(1, 2)),
        ("one", "x"),
        ("batch", ok(3, 4, 5)),
        ("one", ("ok", 6)),
        ("one", "y"),
        ("one", "z"),
        ("one", ("ok", 7)),
    ]
    await actor.stop()


async def test_messages_arriving_during_a_batch_form_the_next_batches() -> None:
    actor = Batcher()
    actor.start()
    gate = asyncio.Event()
    first = [actor.ask(("block", gate)), *(actor.ask(m) for m in ok(1, 2))]
    await asyncio.wait_for(actor.in_batch.wait(), SHORT)
    later = [actor.ask(m) for m in ok(3, 4, 5, 6)]
    assert actor.depth == 4  # queued behind the batch in progress
    gate.set()
    assert await asyncio.gather(*first, *later) == ["block", 10, 20, 30, 40, 50, 60]
    assert [entry[1] for entry in actor.log] == [
        [("block", gate), *ok(1, 2)],
        ok(3, 4, 5),
        ("ok", 6),
    ]
    await actor.stop()


async def test_an_exception_instance_in_the_results_fails_that_ask_alone() -> None:
    actor = Batcher()
    asks = [actor.ask(m) for m in [("ok", 1), ("bad", 2), ("ok", 3)]]
    actor.start()
    results = await outcomes(asks)
    assert results[0] == ("result", 10) and results[2] == ("result", 30)
    kind, error = results[1]
    assert kind == "raised" and isinstance(error, ValueError) and error.args == (2,)
    assert actor.log == [("batch", [("ok", 1), ("bad", 2), ("ok", 3)])]
    assert await actor.ask(("ok", 9)) == 90  # the actor goes on
    await actor.stop()


async def test_receive_batch_raising_fails_every_ask_of_the_batch_and_no_other() -> None:
    actor = Batcher()
    failing = [actor.ask(m) for m in [("ok", 1), ("raise", 2), ("ok", 3)]]
    after = [actor.ask(m) for m in ok(4, 5)]
    actor.start()
    results = await outcomes(failing)
    assert [kind for kind, _ in results] == ["raised"] * 3, results
    assert all(isinstance(e, RuntimeError) and str(e) == "batch failed at 2" for _, e in results)
    assert await asyncio.gather(*after) == [40, 50]
    assert actor.running
    await actor.stop()


async def test_told_messages_failing_in_a_batch_are_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    actor = Batcher()
    with caplog.at_level(logging.ERROR, logger="actors.base"):
        actor.tell(("bad", 1))
        reply = actor.ask(("ok", 2))
        actor.tell(("bad", 3))
        actor.tell(("raise", 4))  # receive_batch raises: each told message is logged
        actor.tell(("ok", 5))
        actor.start()
        assert await reply == 20
        assert await actor.ask("sync") == ("echo", "sync")
    assert actor.log[:2] == [
        ("batch", [("bad", 1), ("ok", 2), ("bad", 3)]),
        ("batch", [("raise", 4), ("ok", 5)]),
    ]
    failures = [r for r in caplog.records if r.name == "actors.base"]
    assert len(failures) == 4
    assert all("batcher" in r.getMessage() for r in failures)
    errors = [r.exc_info[1] for r in failures if r.exc_info is not None]
    assert [type(e) for e in errors] == [ValueError, ValueError, RuntimeError, RuntimeError]
    assert [e.args for e in errors[:2] if e is not None] == [(1,), (3,)]
    assert actor.running
    await actor.stop()


async def _stop_behind(actor: Batcher) -> list[asyncio.Future[Any]]:
    """Hold ``actor`` in a first batch, queue two batchable asks and then the stop marker
    right behind them, release it and wait for the stop; return the asks."""
    gate = asyncio.Event()
    actor.start()
    asks = [actor.ask(m) for m in [("block", gate), *ok(1, 2, 3, 4)]]
    await asyncio.wait_for(actor.in_batch.wait(), SHORT)
    stopping = asyncio.ensure_future(actor.stop())
    for _ in range(3):
        await asyncio.sleep(0)
    assert actor.depth == 3  # ("ok", 3), ("ok", 4) and the stop marker
    gate.set()
    await asyncio.wait_for(stopping, SHORT)
    return asks


async def test_stop_processes_every_batch_queued_before_it() -> None:
    actor = Batcher()
    asks = await _stop_behind(actor)
    assert [f.result() for f in asks] == ["block", 10, 20, 30, 40]
    assert [entry[1] for entry in actor.log][1:] == [ok(3, 4)]
    assert actor.stopped_after == actor.log
    assert not actor.running
    assert actor.depth == 0


class Greedy(Batcher):
    """Batches every message, whatever it is: the stop marker must still not be taken."""

    def batchable(self, message: Any) -> bool:
        return True


async def test_the_stop_marker_is_never_taken_into_a_batch() -> None:
    actor = Greedy()
    asks = await _stop_behind(actor)
    assert [f.result() for f in asks] == ["block", 10, 20, 30, 40]
    assert [entry[1] for entry in actor.log][1:] == [ok(3, 4)]
    assert actor.stopped_after == actor.log
    assert not actor.running


async def test_kill_during_a_batch_fails_its_asks_with_actor_cancelled() -> None:
    actor = Batcher()
    actor.start()
    never = asyncio.Event()
    in_batch = [actor.ask(("block", never)), actor.ask(("ok", 1)), actor.ask(("ok", 2))]
    await asyncio.wait_for(actor.in_batch.wait(), SHORT)
    queued = [actor.ask(("ok", 3)), actor.ask("x")]
    await actor.kill()
    for reply in in_batch:
        with pytest.raises(ActorCancelled):
            await asyncio.wait_for(reply, SHORT)
    for reply in queued:  # never started: stopped, not cancelled mid-message
        exc = await asyncio.wait_for(asyncio.gather(reply, return_exceptions=True), SHORT)
        assert type(exc[0]) is ActorStopped
    assert not actor.running
    assert len(actor.log) == 1


async def test_an_actor_without_max_batch_takes_one_message_at_a_time() -> None:
    class Single(Batcher):
        max_batch = 1

    actor = Single()
    asks = [actor.ask(m) for m in ok(1, 2, 3)]
    actor.start()
    assert await asyncio.gather(*asks) == [10, 20, 30]
    assert actor.log == [("one", m) for m in ok(1, 2, 3)]
    await actor.stop()


async def test_depth_counts_the_queued_messages_not_those_in_a_batch() -> None:
    actor = Batcher()
    gate = asyncio.Event()
    for m in [("block", gate), *ok(1, 2, 3, 4)]:
        actor.tell(m)
    assert actor.depth == 5
    actor.start()
    await asyncio.wait_for(actor.in_batch.wait(), SHORT)
    assert actor.depth == 2  # three taken into the batch in progress
    gate.set()
    await actor.stop()
    assert actor.depth == 0


async def test_the_mailbox_wakes_its_waiting_reader_on_put() -> None:
    mailbox = _Mailbox(QueuedCount())
    reader = asyncio.ensure_future(mailbox.get())
    for _ in range(3):
        await asyncio.sleep(0)
    assert not reader.done()  # waiting on an empty mailbox
    first, second = _Envelope("a", None), _Envelope("b", None)
    mailbox.put(first)
    mailbox.put(second)  # a second put before the reader ran: no error, both kept
    assert await asyncio.wait_for(reader, SHORT) is first
    assert len(mailbox) == 1
    assert await asyncio.wait_for(mailbox.get(), SHORT) is second  # no waiting when not empty
    assert len(mailbox) == 0 and mailbox.peek() is None
    # Waiting again after a wake-up works too.
    again = asyncio.ensure_future(mailbox.get())
    await asyncio.sleep(0)
    third = _Envelope("c", None)
    mailbox.put(third)
    assert await asyncio.wait_for(again, SHORT) is third


async def test_an_idle_actor_answers_a_new_message_at_once() -> None:
    actor = Batcher()
    actor.start()
    for _ in range(3):
        await asyncio.sleep(0)  # the actor is now waiting on its empty mailbox
    assert await asyncio.wait_for(actor.ask("wake"), SHORT) == ("echo", "wake")
    assert await asyncio.wait_for(actor.ask(("ok", 1)), SHORT) == 10
    await actor.stop()


class ShortAnswers(Actor[Any]):
    """A buggy batcher: receive_batch answers fewer results than it was given."""

    max_batch = 8

    def __init__(self) -> None:
        super().__init__("short")

    def batchable(self, message: Any) -> bool:
        return True

    async def receive(self, message: Any) -> Any:
        return message

    async def receive_batch(self, messages: list[Any]) -> list[Any]:
        return messages[:1]


async def test_a_batch_answered_short_fails_every_ask_and_the_actor_goes_on() -> None:
    actor = ShortAnswers()
    asks = [actor.ask(n) for n in range(3)]  # queued before the task runs: one batch
    actor.start()
    done, pending = await asyncio.wait(asks, timeout=SHORT)
    assert not pending, "an ask of a short-answered batch was left hanging"
    assert all(isinstance(f.exception(), RuntimeError) for f in done)
    assert await asyncio.wait_for(actor.ask("later"), SHORT) == "later"
    await actor.stop()


async def test_actors_sharing_a_count_add_up_their_queued_messages() -> None:
    queued = QueuedCount()
    gate = asyncio.Event()
    first, second = Recorder(), Recorder()
    first._mailbox = _Mailbox(queued)
    second._mailbox = _Mailbox(queued)
    for actor in (first, second):
        actor.start()
        actor.tell(("wait", gate))
    await asyncio.wait_for(first.started.wait(), SHORT)
    await asyncio.wait_for(second.started.wait(), SHORT)
    for _ in range(3):
        first.tell("x")
    second.tell("y")
    assert queued.n == first.depth + second.depth == 4
    stopping = asyncio.ensure_future(first.stop())
    await asyncio.sleep(0)
    assert queued.n == 4  # the stop marker is no message
    gate.set()
    await asyncio.gather(stopping, second.stop())
    assert queued.n == 0
    killed = Recorder()
    killed._mailbox = _Mailbox(queued)
    killed.start()
    pending = [killed.ask(i) for i in range(3)]
    await killed.kill()  # queued asks failed: no longer queued
    assert queued.n == 0
    results = await asyncio.gather(*pending, return_exceptions=True)
    assert all(isinstance(e, ActorStopped) for e in results)
