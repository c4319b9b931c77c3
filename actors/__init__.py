"""asyncio actors: a mailbox and one task each. Per-user writers and the leaderboard."""
