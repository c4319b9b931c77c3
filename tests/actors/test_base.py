"""The actor base: mailbox, tell/ask, order, back-pressure, stop and kill."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from actors.base import Actor, ActorStopped, MailboxFull
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
