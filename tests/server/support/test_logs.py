"""Log output: JSON lines, written in batches (warnings at once) by BatchedStreamHandler,
and ``configure()`` installing it as the only root handler."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from server.support import logs
from server.support.logs import BatchedStreamHandler, JsonFormatter
from tests.conftest import eventually, scaled

LONG_S = 3600.0  # a flush interval no test waits for


class Logged:
    """A logger of its own writing through one handler to a StringIO (not the root)."""

    def __init__(self, handler: BatchedStreamHandler, stream: io.StringIO) -> None:
        self.handler = handler
        self.stream = stream
        self.logger = logging.getLogger(f"tests.logs.{id(self)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(handler)

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def detach(self) -> None:
        self.logger.removeHandler(self.handler)
        self.handler.close()


def new_handler_and_thread(
    stream: io.StringIO, flush_interval_s: float
) -> tuple[BatchedStreamHandler, threading.Thread]:
    """A handler, and the flush thread it started."""
    before = set(threading.enumerate())
    handler = BatchedStreamHandler(stream, flush_interval_s=flush_interval_s)
    started = [t for t in threading.enumerate() if t not in before]
    assert len(started) == 1, started
    return handler, started[0]


@pytest.fixture
def batched() -> Iterator[Logged]:
    stream = io.StringIO()
    logged = Logged(BatchedStreamHandler(stream, flush_interval_s=LONG_S, max_lines=5), stream)
    yield logged
    logged.detach()


def test_info_lines_wait_for_a_flush_and_come_out_in_order(batched: Logged) -> None:
    batched.logger.info("one")
    batched.logger.debug("two")
    assert batched.lines() == []  # not written line by line
    batched.handler.flush()
    assert batched.lines() == ["one", "two"]
    batched.logger.info("three")
    batched.handler.flush()
    batched.handler.flush()  # nothing pending: writes nothing
    assert batched.lines() == ["one", "two", "three"]


def test_a_warning_writes_everything_pending_at_once_in_order(batched: Logged) -> None:
    batched.logger.info("first")
    batched.logger.info("second")
    batched.logger.warning("careful")
    assert batched.lines() == ["first", "second", "careful"]
    batched.logger.info("after")
    batched.logger.error("bad")
    batched.logger.critical("worse")
    assert batched.lines() == ["first", "second", "careful", "after", "bad", "worse"]


def test_max_lines_pending_are_written_as_one_batch(batched: Logged) -> None:
    writes: list[str] = []
    real_write = batched.stream.write

    def counting_write(text: str) -> int:
        writes.append(text)
        return real_write(text)

    batched.stream.write = counting_write  # type: ignore[method-assign]
    for i in range(4):
        batched.logger.info("line %d", i)
    assert batched.lines() == []
    batched.logger.info("line 4")  # the fifth: max_lines
    assert batched.lines() == [f"line {i}" for i in range(5)]
    assert len(writes) == 1  # one write for the batch
    batched.logger.info("line 5")
    assert len(batched.lines()) == 5  # a new batch starts


@pytest.mark.gen_test(timeout=scaled(10))
async def test_pending_lines_are_written_by_the_background_thread_within_the_interval() -> None:
    stream = io.StringIO()
    handler, thread = new_handler_and_thread(stream, flush_interval_s=0.05)
    logged = Logged(handler, stream)
    try:
        assert thread.daemon  # never holds the process open
        started = time.monotonic()
        logged.logger.info("soon")
        await eventually(logged.lines, "soon written", until=lambda lines: lines == ["soon"])
        assert time.monotonic() - started < scaled(1)
        logged.logger.info("again")
        await eventually(
            logged.lines, "again written", until=lambda lines: lines == ["soon", "again"]
        )
    finally:
        logged.detach()
    thread.join(scaled(1))
    assert not thread.is_alive()


def test_close_writes_what_is_pending_and_stops_the_thread() -> None:
    stream = io.StringIO()
    handler, thread = new_handler_and_thread(stream, flush_interval_s=LONG_S)
    logged = Logged(handler, stream)
    logged.logger.info("last words")
    assert logged.lines() == []
    logged.detach()  # closes the handler
    assert logged.lines() == ["last words"]
    thread.join(scaled(1))  # it does not sleep out its hour-long interval
    assert not thread.is_alive()


def test_close_of_a_closed_stream_does_not_raise() -> None:
    stream = io.StringIO()
    handler, thread = new_handler_and_thread(stream, flush_interval_s=LONG_S)
    handler.handle(logging.makeLogRecord({"msg": "lost", "levelno": logging.INFO}))
    stream.close()
    handler.close()
    thread.join(scaled(1))
    assert not thread.is_alive()


def test_a_closed_handler_survives_logging_shutdown() -> None:
    handler = BatchedStreamHandler(io.StringIO(), flush_interval_s=LONG_S)
    try:
        handler.close()
        logging.shutdown([weakref.ref(handler)])  # what runs at exit, for every live handler
    finally:
        # Keep the real logging.shutdown at the end of the test run from tripping on it.
        handlers: list[Any] = getattr(logging, "_handlerList")  # noqa: B009
        with contextlib.suppress(ValueError):
            handlers.remove(weakref.ref(handler))


def test_json_lines_through_the_batched_handler(batched: Logged) -> None:
    batched.handler.setFormatter(JsonFormatter())
    batched.logger.info("hello", extra={"user_id": "alice"})
    batched.logger.warning("careful")
    first, second = (json.loads(line) for line in batched.lines())
    assert (first["level"], first["msg"], first["user_id"]) == ("info", "hello", "alice")
    assert (second["level"], second["msg"]) == ("warning", "careful")


@pytest.fixture
def own_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Logger]:
    """The root logger with no handlers, and logging's global switches, restored after."""
    root = logging.getLogger()
    level = root.level
    monkeypatch.setattr(root, "handlers", [])
    for flag in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, flag, getattr(logging, flag))
    try:
        yield root
    finally:
        for handler in root.handlers:
            handler.close()
        root.setLevel(level)


def test_configure_replaces_and_closes_the_previous_root_handler(
    own_root: logging.Logger,
) -> None:
    first_stream, second_stream = io.StringIO(), io.StringIO()
    before = set(threading.enumerate())
    logs.configure("INFO", first_stream)
    (first,) = own_root.handlers
    assert isinstance(first, BatchedStreamHandler)
    (first_thread,) = (t for t in threading.enumerate() if t not in before)
    logging.getLogger("tests.logs.configure").info("to the first")
    logs.configure("WARNING", second_stream)
    (second,) = own_root.handlers
    assert second is not first and isinstance(second, BatchedStreamHandler)
    assert own_root.level == logging.WARNING
    first_thread.join(scaled(1))
    assert not first_thread.is_alive()  # no flush thread left behind per configure()
    assert [json.loads(x)["msg"] for x in first_stream.getvalue().splitlines()] == [
        "to the first"  # written when it was closed
    ]
    logging.getLogger("tests.logs.configure").warning("to the second")
    assert json.loads(second_stream.getvalue())["msg"] == "to the second"
    assert first_stream.getvalue().count("\n") == 1


class FlakyStream(io.StringIO):
    """Refuses the next ``failures`` writes, as a full pipe would."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def write(self, text: str) -> int:
        if self.failures:
            self.failures -= 1
            raise BlockingIOError("the pipe is full")
        return super().write(text)


@pytest.mark.gen_test(timeout=scaled(10))
async def test_lines_a_failed_write_refused_are_kept_and_written_later() -> None:
    stream = FlakyStream(failures=1)
    handler = BatchedStreamHandler(stream, flush_interval_s=0.02)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # handleError reports the failure
            handler.handle(logging.makeLogRecord({"msg": "one", "levelno": logging.INFO}))
            await eventually(
                stream.getvalue, "the refused line written", until=lambda text: "one" in text
            )
            handler.handle(logging.makeLogRecord({"msg": "two", "levelno": logging.INFO}))
            await eventually(  # the flush thread is still running
                stream.getvalue, "flushing after a failure", until=lambda text: "two" in text
            )
    finally:
        handler.close()


# --- log_fields: the hot-line path ------------------------------------------------------

FIELDS: dict[str, Any] = {"user_id": 'ålice "q"', "n": 3, "none": None}


@pytest.fixture
def direct(batched: Logged) -> Logged:
    """A logger whose only handler is a JSON BatchedStreamHandler, as in production: the
    direct path. Each test calls :func:`sole` first: pytest adds its capture handlers to
    loggers when the test body starts."""
    batched.handler.setFormatter(JsonFormatter())
    return batched


def sole(logged: Logged, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logged.logger, "handlers", [logged.handler])


def record_free(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a LogRecord is made (the direct path makes none)."""

    def refuse(*args: Any, **kwargs: Any) -> logging.LogRecord:
        raise AssertionError("a LogRecord was made")

    monkeypatch.setattr(logging.Logger, "makeRecord", refuse)


def test_log_fields_writes_the_line_logger_log_writes_without_a_record(
    direct: Logged, monkeypatch: pytest.MonkeyPatch
) -> None:
    sole(direct, monkeypatch)
    direct.logger.info("update", extra={"fields": FIELDS})
    with monkeypatch.context() as patched:
        record_free(patched)
        logs.log_fields(direct.logger, logging.INFO, "update", FIELDS)
    direct.handler.flush()
    through_logging, direct_line = (json.loads(line) for line in direct.lines())
    assert abs(_ts(through_logging) - _ts(direct_line)) < 1.0
    del through_logging["ts"], direct_line["ts"]
    assert (
        direct_line
        == through_logging
        == {
            "level": "info",
            "logger": direct.logger.name,
            "msg": "update",
            **FIELDS,
        }
    )


def _ts(entry: dict[str, Any]) -> float:
    return time.mktime(time.strptime(entry["ts"][:19], "%Y-%m-%dT%H:%M:%S")) + float(
        entry["ts"][19:-1]
    )


def test_log_fields_is_batched_like_other_lines_and_a_warning_writes_at_once(
    direct: Logged, monkeypatch: pytest.MonkeyPatch
) -> None:
    sole(direct, monkeypatch)
    record_free(monkeypatch)
    logs.log_fields(direct.logger, logging.INFO, "one", {})
    assert direct.lines() == []  # waits for a flush, as an info record would
    logs.log_fields(direct.logger, logging.WARNING, "two", {})
    assert [json.loads(x)["msg"] for x in direct.lines()] == ["one", "two"]


def test_log_fields_below_the_level_writes_nothing(
    direct: Logged, monkeypatch: pytest.MonkeyPatch
) -> None:
    sole(direct, monkeypatch)
    direct.logger.setLevel(logging.WARNING)
    logs.log_fields(direct.logger, logging.INFO, "quiet", FIELDS)
    direct.handler.flush()
    assert direct.lines() == []


def test_log_fields_goes_through_logging_when_another_handler_or_a_filter_is_on_the_way(
    direct: Logged, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    sole(direct, monkeypatch)
    # A second handler (here the test's capture): every handler must see the line.
    with caplog.at_level(logging.INFO, logger=direct.logger.name):
        direct.logger.addHandler(caplog.handler)
        try:
            logs.log_fields(direct.logger, logging.INFO, "seen", FIELDS)
        finally:
            direct.logger.removeHandler(caplog.handler)
    assert [(r.getMessage(), r.__dict__["fields"]) for r in caplog.records] == [("seen", FIELDS)]
    # Two JSON handlers (say, an operator's second file): both get the line.
    other_stream = io.StringIO()
    other = BatchedStreamHandler(other_stream, flush_interval_s=LONG_S)
    other.setFormatter(JsonFormatter())
    direct.logger.addHandler(other)
    try:
        logs.log_fields(direct.logger, logging.INFO, "twice", FIELDS)
    finally:
        direct.logger.removeHandler(other)
        other.close()
    assert json.loads(other_stream.getvalue())["msg"] == "twice"
    # A filter: it must be able to drop the line.
    direct.logger.addFilter(lambda record: record.getMessage() != "dropped")
    logs.log_fields(direct.logger, logging.INFO, "dropped", FIELDS)
    logs.log_fields(direct.logger, logging.INFO, "kept", FIELDS)
    direct.handler.flush()
    assert [json.loads(x)["msg"] for x in direct.lines()] == ["seen", "twice", "kept"]


def test_log_fields_respects_a_handler_level_and_a_plain_formatter(
    direct: Logged, monkeypatch: pytest.MonkeyPatch
) -> None:
    sole(direct, monkeypatch)
    direct.handler.setLevel(logging.ERROR)
    logs.log_fields(direct.logger, logging.INFO, "below the handler", FIELDS)
    direct.handler.flush()
    assert direct.lines() == []
    direct.handler.setLevel(logging.NOTSET)
    direct.handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logs.log_fields(direct.logger, logging.INFO, "plain", FIELDS)
    direct.handler.flush()
    assert direct.lines() == ["INFO plain"]  # formatted by the operator's formatter


def test_log_fields_with_a_field_json_cannot_hold_still_writes_its_line(
    direct: Logged, monkeypatch: pytest.MonkeyPatch
) -> None:
    sole(direct, monkeypatch)
    cycle: list[Any] = []
    cycle.append(cycle)
    logs.log_fields(direct.logger, logging.INFO, "odd", {"cycle": cycle})
    logs.log_fields(direct.logger, logging.INFO, "next", {"n": 1})
    direct.handler.flush()
    odd, following = (json.loads(line) for line in direct.lines())
    assert (odd["msg"], odd["fields"]) == ("odd", "{'cycle': [[...]]}")
    assert (following["msg"], following["n"]) == ("next", 1)  # the batch went on


def test_a_record_with_a_field_json_cannot_hold_still_writes_its_line(
    direct: Logged, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Through logging's own path (an operator's handler or a test's capture beside ours).
    sole(direct, monkeypatch)
    cycle: list[Any] = []
    cycle.append(cycle)
    direct.logger.info("odd", extra={"fields": {"cycle": cycle}})
    direct.handler.flush()
    (odd,) = (json.loads(line) for line in direct.lines())
    assert (odd["msg"], odd["fields"]) == ("odd", "{'cycle': [[...]]}")


def test_a_field_whose_repr_fails_costs_its_batch_nothing(
    direct: Logged, monkeypatch: pytest.MonkeyPatch
) -> None:
    sole(direct, monkeypatch)

    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    logs.log_fields(direct.logger, logging.INFO, "before", {})
    logs.log_fields(direct.logger, logging.INFO, "odd", {"thing": Unprintable()})
    logs.log_fields(direct.logger, logging.INFO, "after", {})
    direct.handler.flush()
    entries = [json.loads(line) for line in direct.lines()]
    assert [e["msg"] for e in entries] == ["before", "odd", "after"]
    assert entries[1]["fields"] == "<unprintable>"
