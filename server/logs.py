"""Structured logs: one JSON object a line, with the fields a log pipeline indexes."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
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
        second = int(record.created)
        if second != self._second:  # one strftime a second, not one a line
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        entry: dict[str, Any] = {
            "ts": f"{self._second_text}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        attributes = record.__dict__
        fields = attributes.get("fields")
        if type(fields) is dict:
            entry.update(fields)  # extra={"fields": {...}}: merged as they are, no scan
        else:
            for key in sorted(attributes.keys() - _STANDARD):  # what was passed with extra=
                if not key.startswith("_"):
                    entry[key] = attributes[key]
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _ENCODER.encode(entry)


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
        self._pending: list[str] = []
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

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()

    def _write_pending(self) -> None:
        if self._pending:
            lines, self._pending = self._pending, []
            try:
                self.stream.write(self.terminator.join(lines) + self.terminator)
            except Exception:
                # Keep the lines for the next try (bounded: the oldest go first).
                self._pending = (lines + self._pending)[-MAX_KEPT_LINES:]
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
