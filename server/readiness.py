"""Readiness: whether this pod can serve what it has (``GET /readyz``).

A pod is ready while its board and its rank index are loaded, every trusted issuer's
signing keys have loaded once (a JWKS fetched), it is not shutting down,
and both its change feed was open and its store passed its probe (SQLite: a committed
write; MongoDB: the primary answers a ping) within the last ``max_staleness_s`` seconds.
A MongoDB failover (10-12 s unplanned) thus leaves every pod in the Service, serving its
cached top 10 and its WebSockets while writes fail fast; a pod cut off for longer, or an
embedded store that cannot write, is taken out. Pure: times in, a reason out.
"""

from __future__ import annotations


def not_ready_reason(
    now: float,
    *,
    draining: bool,
    loaded: bool,
    ranks_loading: bool,
    ranks_loaded: bool,
    feed_live_at: float | None,
    store_ok_at: float | None,
    max_staleness_s: float,
    keys_waiting: str | None = None,
) -> str | None:
    """Why the pod is not ready at ``now`` (``None``: it is ready).

    Args:
        now: the monotonic time.
        draining: the server is shutting down.
        loaded: the leaderboard holds the top K.
        ranks_loading: a load of the rank index is under way (a reload, once one was
            loaded, does not count: the index held keeps answering).
        ranks_loaded: the rank index was loaded whole.
        feed_live_at: when the change feed was last open (``now`` while it is); ``None``:
            never.
        store_ok_at: when the store was last known well (``now`` while its latest probe
            passed); ``None``: it never passed one.
        max_staleness_s: how long ago those two may be.
        keys_waiting: an issuer whose JWKS has not loaded yet (no token of it could be
            checked); ``None``: every issuer's keys are there.
    """
    if draining:
        return "the server is shutting down"
    if keys_waiting is not None:
        return f"issuer {keys_waiting!r}'s signing keys (JWKS) have not loaded yet"
    if ranks_loading and not ranks_loaded:
        return "the rank index is loading (ranks_loading)"
    if not loaded:
        return "the leaderboard is not loaded yet (the store has not answered)"
    if not ranks_loaded:
        return "the rank index is not loaded yet (ranks_loading)"
    if store_ok_at is None:
        return "the store has not passed a probe yet (SQLite: it cannot write)"
    if now - store_ok_at > max_staleness_s:
        return f"the store has failed its probe for {now - store_ok_at:.0f} s"
    if feed_live_at is None:
        return "the change feed has not been open yet"
    if now - feed_live_at > max_staleness_s:
        return f"the change feed has been down for {now - feed_live_at:.0f} s"
    return None
