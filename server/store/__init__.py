"""The store port (:mod:`server.store.port`) and its adapters (SQLite, MongoDB)."""

from server.store.port import ScoreStore, StoreError
from server.store.records import (
    Applied,
    Decision,
    IncrementCommand,
    RateLimited,
    Replayed,
    UserRecord,
)

__all__ = [
    "Applied",
    "Decision",
    "IncrementCommand",
    "RateLimited",
    "Replayed",
    "ScoreStore",
    "StoreError",
    "UserRecord",
]
