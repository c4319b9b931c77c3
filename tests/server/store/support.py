"""Helpers shared by the store tests."""

from __future__ import annotations

from server.domain.records import Decision, IncrementCommand
from server.store.port import ScoreStore


async def apply_one(store: ScoreStore, cmd: IncrementCommand) -> Decision:
    """Apply one increment through the port (a batch of one) and return its decision."""
    (decision,) = await store.apply_increments([cmd])
    return decision
