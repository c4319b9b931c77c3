"""Structured logs: one JSON object a line, with the fields a log pipeline indexes."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Final, TextIO

# One encoder for every line: json.dumps() with options builds a new one per call.
_ENCODER: Final = json.JSONEncoder(default=str, ensure_ascii=False)
FLUSH_INTERVAL_S: Final = 0.1
MAX_PENDING_LINES: Final = 256
MAX_KEPT_LINES: Final = 10_000  # kept while the stream refuses writes, newest last

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is a field.
_STANDARD: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """Formats a record as ``{"ts", "level", "logger", "msg", ...extra fields}``.

    Extra fields are what was passed with ``extra=``; a hot log line may pass them as one
    dict, ``extra={"fields": {...}}``, which is merged without scanning the record.
    """

    _second = -1
    _second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        attributes = record.__dict__
        fields = attributes.get("fields")
        if type(fields) is not dict:
            fields = {
                key: attributes[key]  # what was passed with extra=
                for key in sorted(attributes.keys() - _STANDARD)
                if not key.startswith("_")
            }
        exc = self.formatException(record.exc_info) if record.exc_info else None
        return self.safe_line(
            record.created, record.levelname, record.name, record.getMessage(), fields, exc=exc
        )

    def safe_line(
        self,
        created: float,
        levelname: str,
        logger: str,
        msg: str,
        fields: dict[str, Any],
        *,
        exc: str | None = None,
    ) -> str:
        """:meth:`line`, which never raises: a field JSON cannot hold (a cycle, say) is
        written as the ``repr()`` of the fields, so the line still says what it was."""
        try:
            return self.line(created, levelname, logger, msg, fields, exc=exc)
        except Exception:
            try:
                shown = {"fields": repr(fields)}
            except Exception:  # even its repr() fails
                shown = {"fields": "<unprintable>"}
            return self.line(created, levelname, logger, msg, shown, exc=exc)

    def line(
        self,
        created: float,
        levelname: str,
        logger: str,
        msg: str,
        fields: dict[str, Any],
        *,
        exc: str | None = None,
    ) -> str:
        """The JSON line of one entry (what :meth:`format` makes of a record)."""
        second = int(created)
        if second != self._second:  # one strftime a second, not one a line
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        millis = int((created - second) * 1000)
        entry: dict[str, Any] = {
            "ts": f"{self._second_text}.{millis:03d}Z",
            "level": levelname.lower(),
            "logger": logger,
            "msg": msg,
        }
        entry.update(fields)
        if exc is not None:
            entry["exc"] = exc
        return _ENCODER.encode(entry)


@dataclass(slots=True)
class _Entry:
    """A line queued by :func:`log_fields`, made into text when its batch is written:
    encoding the lines of a batch together, off the request, costs less than one by one."""

    formatter: JsonFormatter
    created: float
    levelname: str
    logger: str
    msg: str
    fields: dict[str, Any]

    def text(self) -> str:
        """The line; never raises, so one odd entry cannot cost its batch."""
        return self.formatter.safe_line(
            self.created, self.levelname, self.logger, self.msg, self.fields
        )


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes warnings and errors at once, and other lines in
    batches: at most ``flush_interval_s`` later (from a background thread), or once
    ``max_lines`` are waiting.

    With one audit line per update request, one ``write()`` system call per line (what
    ``StreamHandler`` does, and what ``PYTHONUNBUFFERED`` containers get) was about a tenth
    of the server's time under load. The cost: on ``kill -9`` up to ``flush_interval_s``
    of info lines are lost; a normal exit (``logging.shutdown``) writes everything.
    """

    def __init__(
        self,
        stream: TextIO,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        max_lines: int = MAX_PENDING_LINES,
    ) -> None:
        super().__init__(stream)
        self._interval = flush_interval_s
        self._max_lines = max_lines
        self._pending: list[str | _Entry] = []
        self._stopped = threading.Event()
        threading.Thread(target=self._flush_periodically, name="log-flush", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        # Called by handle() with the handler's lock held.
        try:
            self._pending.append(self.format(record))
            if record.levelno >= logging.WARNING or len(self._pending) >= self._max_lines:
                self._write_pending()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def emit_entry(self, entry: _Entry, levelno: int) -> None:
        """Queue a :func:`log_fields` line, as :meth:`emit` queues a record's."""
        with self.lock:  # type: ignore[union-attr]
            self._pending.append(entry)
            if levelno >= logging.WARNING or len(self._pending) >= self._max_lines:
                self._write_pending()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()

    def _write_pending(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            lines = [line if type(line) is str else line.text() for line in pending]  # type: ignore[union-attr]
            try:
                self.stream.write(self.terminator.join(lines) + self.terminator)
            except Exception:
                # Keep the lines for the next try (bounded: the oldest go first).
                self._pending = [*lines, *self._pending][-MAX_KEPT_LINES:]
                raise
        self.stream.flush()

    def _flush_periodically(self) -> None:
        while not self._stopped.wait(self._interval):
            if self._pending:
                try:
                    self.flush()
                except Exception:  # reported, kept, and tried again next time
                    self.handleError(logging.makeLogRecord({"msg": "log flush failed"}))

    def close(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError, ValueError):
            self.flush()
        super().close()


def log_fields(logger: logging.Logger, level: int, msg: str, fields: dict[str, Any]) -> None:
    """``logger.log(level, msg, extra={"fields": fields})``, cheaper, for a line logged
    on every request (the update audit line: 18.5 µs in the server through ``logging``,
    about 7 µs this way; ``docs/benchmarks.md``).

    When the line would reach only the handler :func:`configure` installs (no other
    handler or filter on the way, as in production), it is queued directly, without a
    ``LogRecord`` and the logging module's dispatch, and encoded with its batch: ``fields``
    must not change after the call. Otherwise (a handler added by an operator, or a
    test's log capture) it goes through ``logger.log``. The output is the same either way.
    """
    if not logger.isEnabledFor(level):
        return
    handler = _sole_json_handler(logger, level)
    if handler is None:
        logger.log(level, msg, extra={"fields": fields})
        return
    formatter = handler.formatter
    assert isinstance(formatter, JsonFormatter)
    entry = _Entry(formatter, time.time(), logging.getLevelName(level), logger.name, msg, fields)
    try:
        handler.emit_entry(entry, level)
    except Exception:
        handler.handleError(logging.makeLogRecord({"msg": msg, "levelno": level}))


def _sole_json_handler(logger: logging.Logger, level: int) -> BatchedStreamHandler | None:
    """The handler :func:`configure` installs, if a line of ``logger`` at ``level`` would
    go to it and nowhere else, through no filter; else ``None``."""
    found: BatchedStreamHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters or current.disabled:
            return None
        for handler in current.handlers:
            if (
                found is not None
                or type(handler) is not BatchedStreamHandler
                or type(handler.formatter) is not JsonFormatter
                or handler.filters
            ):
                return None
            found = handler
        current = current.parent if current.propagate else None
    if found is None or level < found.level:
        return None
    return found


def configure(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send every log record to ``stream`` (stdout) as JSON lines, at ``level`` and above."""
    handler = BatchedStreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    # Nothing here prints the caller's file and line, thread or process: skip finding
    # them for every record (a stack walk and several lookups per line).
    logging._srcfile = None  # documented in logging's source
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    root.setLevel(level)
