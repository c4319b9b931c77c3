"""Fixtures shared by the store suites: the ``backend`` of ``test_contract`` (every adapter)."""

from tests.server.store.test_contract import backend

__all__ = ["backend"]
