"""Repeated identical log lines: the first at once, then one per interval with a count.

A full disk fails every write the same way; logged one line per failure, it wrote about
27,000 lines in 10 s. :class:`LogThrottle` is the pure rule (keys and times in,
decisions out); :func:`log_throttled` applies it to a logger.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable
from typing import Final

DEFAULT_INTERVAL_S: Final = 10.0
DEFAULT_MAX_KEYS: Final = 256


class LogThrottle:
    """Decides which of many identical lines to write.

    Not thread-safe: give each thread its own.

    Args:
        interval_s: the least time between two lines of one key.
        max_keys: keys remembered; past it the oldest is forgotten (its next line is
            written at once), so varied messages cannot grow it without bound.
    """

    __slots__ = ("_interval_s", "_keys", "_max_keys")

    def __init__(
        self, interval_s: float = DEFAULT_INTERVAL_S, max_keys: int = DEFAULT_MAX_KEYS
    ) -> None:
        if interval_s < 0 or max_keys < 1:
            raise ValueError("interval_s must be >= 0 and max_keys >= 1")
        self._interval_s = interval_s
        self._max_keys = max_keys
        # key -> [time of its last line written, lines left out since]
        self._keys: dict[Hashable, list[float]] = {}

    def admit(self, key: Hashable, now: float) -> int | None:
        """Whether to write a line of ``key`` at ``now``.

        Returns:
            ``None``: leave it out (it is counted). Otherwise write it, saying that this
            many identical lines were left out since the previous one.
        """
        entry = self._keys.get(key)
        if entry is None:
            if len(self._keys) >= self._max_keys:
                del self._keys[next(iter(self._keys))]  # the oldest key
            self._keys[key] = [now, 0]
            return 0
        if now - entry[0] >= self._interval_s:
            left_out = int(entry[1])
            entry[0], entry[1] = now, 0
            return left_out
        entry[1] += 1
        return None


def error_key(exc: BaseException) -> tuple[str, str]:
    """What makes two errors "identical" for the throttle: class and text (truncated)."""
    return type(exc).__name__, str(exc)[:200]


def log_throttled(
    logger: logging.Logger,
    throttle: LogThrottle,
    level: int,
    msg: str,
    *args: object,
    key: Hashable = None,
    exc_info: BaseException | bool | None = None,
    extra: dict[str, object] | None = None,
) -> None:
    """Log ``msg`` unless ``throttle`` leaves it out; a line written after some were left
    out carries their number in the field ``suppressed``.

    Args:
        key: what else, besides the logger and ``msg``, makes lines identical (e.g.
            :func:`error_key` of the exception).
        extra: fields of the line written (those of the first line of an interval).
    """
    left_out = throttle.admit((logger.name, msg, key), time.monotonic())
    if left_out is None:
        return
    fields = dict(extra or {})
    if left_out:
        fields["suppressed"] = left_out
    logger.log(level, msg, *args, exc_info=exc_info, extra=fields or None)
