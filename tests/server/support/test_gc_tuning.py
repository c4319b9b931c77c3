"""The serving process's collector settings (server/support/gc_tuning.py)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from server.support.gc_tuning import GEN0_THRESHOLD, tune_for_serving


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_tuning_freezes_what_exists_and_raises_the_young_threshold() -> None:
    survivor = [object() for _ in range(10)]  # alive at startup: frozen
    tuning = tune_for_serving()
    assert gc.get_threshold() == (GEN0_THRESHOLD, 10, 10)
    assert tuning.thresholds == (GEN0_THRESHOLD, 10, 10)
    assert tuning.frozen_objects == gc.get_freeze_count() > 0
    # Frozen: out of every generation, so no collection walks it again.
    assert not any(o is survivor for o in gc.get_objects())


@pytest.mark.usefixtures("restored_gc")
def test_garbage_made_before_tuning_is_collected_not_frozen() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector frees it

    gc.disable()  # no automatic collection may free it before the tuning does
    try:
        garbage = weakref.ref(Node())
        assert garbage() is not None
        tune_for_serving()
        assert garbage() is None  # frozen garbage would live for good
    finally:
        gc.enable()


@pytest.mark.usefixtures("restored_gc")
def test_cyclic_garbage_made_while_serving_is_still_collected() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    tune_for_serving()
    for _ in range(3 * GEN0_THRESHOLD):  # more than a young generation's worth
        Node()
    alive = sum(1 for o in gc.get_objects() if type(o) is Node)
    assert alive <= GEN0_THRESHOLD  # the raised threshold still triggers collections
