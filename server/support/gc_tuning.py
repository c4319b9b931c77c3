"""Garbage-collector settings for a serving process.

Nearly everything a request allocates is freed by reference counting, but CPython's
default gen-0 threshold (700 net allocations) is crossed constantly by the objects of the
requests in flight (32 concurrent updates hold well over 700). Each collection then
promotes those short-lived objects, which soon triggers full collections that walk the
whole heap: under the update benchmark about 1,200 collections in 8 s, ten of them full
(about 19 ms each, every one a latency spike). Measured in ``docs/benchmarks.md``.

So a server, once started:

- collects once and freezes what startup allocated (modules, settings, routes, the
  leaderboard): full collections no longer walk it;
- raises the gen-0 threshold so requests in flight don't trigger collections. Cyclic
  garbage (an exception's traceback, say) is still collected, only in larger batches:
  at most :data:`GEN0_THRESHOLD` tracked objects wait for it.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Final

GEN0_THRESHOLD: Final = 10_000
GEN1_THRESHOLD: Final = 10  # CPython's default
GEN2_THRESHOLD: Final = 10  # CPython's default


@dataclass(frozen=True, slots=True)
class GcTuning:
    """What :func:`tune_for_serving` set, for the startup log line."""

    thresholds: tuple[int, int, int]
    frozen_objects: int


def tune_for_serving() -> GcTuning:
    """Freeze the objects allocated so far and raise the gen-0 threshold. Call once, after
    startup (an object frozen is never collected: freeze no garbage)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
    threshold = gc.get_threshold()
    return GcTuning((threshold[0], threshold[1], threshold[2]), gc.get_freeze_count())
