"""``decide()``: the pure rule behind every increment (score, version, idempotency, rate limit)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.increments import RATE_WINDOW_MS, IncrementPolicy, decide, decide_all
from server.domain.records import (
    ActionReplayed,
    Applied,
    Banned,
    Decision,
    IncrementCommand,
    KeyReused,
    RateLimited,
    RememberedKey,
    Replayed,
    SpentAction,
    UserRecord,
    keys_from_stored,
)

NO_LIMIT = IncrementPolicy(rate_limit_per_minute=0)


def cmd(
    amount: int = 1,
    now_ms: int = 1_000_000,
    key: str | None = None,
    *,
    user_id: str = "u1",
    username: str = "User One",
) -> IncrementCommand:
    return IncrementCommand(user_id, username, amount, now_ms, key)


def keys_of(record: UserRecord) -> tuple[tuple[str, int], ...]:
    """The remembered ``(key, score)`` pairs, oldest first (the ring's order is by seq)."""
    return tuple((k.key, k.score) for k in sorted(record.recent_keys, key=lambda k: k.seq))


def log_of(record: UserRecord, now_ms: int) -> tuple[int, ...]:
    """The accepted update times that still count at ``now_ms``, in time order."""
    return tuple(sorted(t for t in record.accepted_ms if t > now_ms - RATE_WINDOW_MS))


def applied(decision: Decision) -> UserRecord:
    assert isinstance(decision, Applied), decision
    return decision.record


def run(
    commands: list[IncrementCommand],
    policy: IncrementPolicy,
    record: UserRecord | None = None,
) -> tuple[UserRecord | None, list[Decision]]:
    """Feed ``commands`` through ``decide`` as a store would: keep only what is applied."""
    decisions = []
    for command in commands:
        decision = decide(record, command, policy)
        if isinstance(decision, Applied):
            record = decision.record
        decisions.append(decision)
    return record, decisions


# --- score, version, reached_ms, username ---------------------------------------------------


def test_new_user_gets_a_record_with_the_amount_as_score() -> None:
    decision = decide(None, cmd(5, now_ms=1234), IncrementPolicy())
    assert decision == Applied(
        UserRecord(
            user_id="u1",
            username="User One",
            score=5,
            v=1,
            reached_ms=1234,
            recent_keys=(),
            accepted_ms=(1234,),
        )
    )
    assert isinstance(decision, Applied)
    assert decision.new_score == 5


def test_increment_adds_to_the_score_bumps_the_version_and_sets_reached_ms() -> None:
    record = UserRecord("u1", "User One", score=40, v=7, reached_ms=10)
    after = applied(decide(record, cmd(3, now_ms=5000), NO_LIMIT))
    assert (after.score, after.v, after.reached_ms) == (43, 8, 5000)
    again = applied(decide(after, cmd(2, now_ms=6000), NO_LIMIT))
    assert (again.score, again.v, again.reached_ms) == (45, 9, 6000)


def test_the_input_record_is_not_modified() -> None:
    record = UserRecord("u1", "User One", score=1, v=1, reached_ms=0, accepted_ms=(0,))
    before = replace(record)
    decide(record, cmd(1, now_ms=10, key="k"), IncrementPolicy())
    assert record == before


def test_username_follows_the_latest_command() -> None:
    record = applied(decide(None, cmd(1, now_ms=1, username="Old Name"), NO_LIMIT))
    assert record.username == "Old Name"
    renamed = applied(decide(record, cmd(1, now_ms=2, username="New Name"), NO_LIMIT))
    assert renamed.username == "New Name"
    assert renamed.score == 2


# --- idempotency ----------------------------------------------------------------------------


def test_a_replayed_key_answers_the_first_new_score_and_changes_nothing() -> None:
    first = applied(decide(None, cmd(5, now_ms=1, key="k1"), NO_LIMIT))
    assert keys_of(first) == (("k1", 5),)
    second = applied(decide(first, cmd(2, now_ms=2, key="k2"), NO_LIMIT))
    assert second.score == 7
    # A retry of k1 (even with another amount) answers k1's result, not the current score.
    assert decide(second, cmd(100, now_ms=3, key="k1"), NO_LIMIT) == Replayed(new_score=5)
    assert decide(second, cmd(100, now_ms=3, key="k2"), NO_LIMIT) == Replayed(new_score=7)


def test_commands_without_a_key_are_never_replays() -> None:
    record, decisions = run([cmd(1, now_ms=t) for t in range(3)], NO_LIMIT)
    assert all(isinstance(d, Applied) for d in decisions)
    assert record is not None
    assert record.score == 3
    assert record.recent_keys == ()


def test_a_replay_is_answered_even_when_the_user_is_now_rate_limited() -> None:
    policy = IncrementPolicy(rate_limit_per_minute=2)
    record, decisions = run([cmd(3, now_ms=0, key="a"), cmd(4, now_ms=1, key="b")], policy)
    assert [type(d) for d in decisions] == [Applied, Applied]
    # A new key is refused: the limit is reached...
    assert isinstance(decide(record, cmd(1, now_ms=2, key="c"), policy), RateLimited)
    # ...but a retry of an earlier update is not a new update.
    assert decide(record, cmd(1, now_ms=2, key="a"), policy) == Replayed(new_score=3)
    assert decide(record, cmd(1, now_ms=2, key="b"), policy) == Replayed(new_score=7)


def test_a_rate_limited_key_is_not_remembered() -> None:
    policy = IncrementPolicy(rate_limit_per_minute=1)
    record = applied(decide(None, cmd(1, now_ms=0, key="a"), policy))
    assert isinstance(decide(record, cmd(1, now_ms=1, key="b"), policy), RateLimited)
    # "b" was refused, so once the window has passed it is applied (not replayed).
    later = applied(decide(record, cmd(1, now_ms=RATE_WINDOW_MS + 1, key="b"), policy))
    assert later.score == 2
    assert keys_of(later) == (("a", 1), ("b", 2))


def test_only_the_last_n_keys_are_kept_oldest_first() -> None:
    policy = IncrementPolicy(rate_limit_per_minute=0, idempotency_keys=3)
    record, _ = run([cmd(1, now_ms=i, key=f"k{i}") for i in range(5)], policy)
    assert record is not None
    assert keys_of(record) == (("k2", 3), ("k3", 4), ("k4", 5))
    assert len(record.recent_keys) == 3  # the oldest key's slot is reused
    # k0 and k1 fell out: they are new updates again; k2..k4 still replay.
    assert isinstance(decide(record, cmd(1, now_ms=9, key="k0"), policy), Applied)
    assert isinstance(decide(record, cmd(1, now_ms=9, key="k1"), policy), Applied)
    for i in (2, 3, 4):
        assert decide(record, cmd(1, now_ms=9, key=f"k{i}"), policy) == Replayed(i + 1)


def test_each_key_is_kept_with_the_score_it_produced() -> None:
    policy = IncrementPolicy(rate_limit_per_minute=0, idempotency_keys=64)
    amounts = [5, 1, 10, 3]
    record, _ = run([cmd(a, now_ms=i, key=f"k{i}") for i, a in enumerate(amounts)], policy)
    assert record is not None
    assert keys_of(record) == (("k0", 5), ("k1", 6), ("k2", 16), ("k3", 19))
    # An update without a key leaves the kept keys as they were.
    plain = applied(decide(record, cmd(1, now_ms=9), policy))
    assert plain.recent_keys == record.recent_keys


def test_keys_bounded_at_the_default_of_64() -> None:
    policy = IncrementPolicy(rate_limit_per_minute=0)
    record, _ = run([cmd(1, now_ms=i, key=f"k{i}") for i in range(70)], policy)
    assert record is not None
    assert len(record.recent_keys) == 64
    assert keys_of(record)[0] == ("k6", 7)
    assert keys_of(record)[-1] == ("k69", 70)


# --- sliding-log rate limit ----------------------------------------------------------------


def test_exactly_the_limit_is_accepted_in_60_seconds_and_the_next_is_refused() -> None:
    policy = IncrementPolicy(rate_limit_per_minute=10)
    times = [i * 5_000 for i in range(10)]  # 0 .. 45 s
    record, decisions = run([cmd(1, now_ms=t) for t in times], policy)
    assert all(isinstance(d, Applied) for d in decisions)
    assert record is not None
    assert record.score == 10
    assert record.accepted_ms == tuple(times)
    refused = decide(record, cmd(1, now_ms=50_000), policy)
    # The oldest update (at 0) leaves the window at 60 s: 10 s from now.
    assert refused == RateLimited(retry_after_s=10)


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    policy = IncrementPolicy(rate_limit_per_minute=1)
    record = applied(decide(None, cmd(now_ms=0), policy))
    assert decide(record, cmd(now_ms=30_500), policy) == RateLimited(retry_after_s=30)
    assert decide(record, cmd(now_ms=30_499), policy) == RateLimited(retry_after_s=30)
    assert decide(record, cmd(now_ms=30_000), policy) == RateLimited(retry_after_s=30)
    assert decide(record, cmd(now_ms=29_999), policy) == RateLimited(retry_after_s=31)


def test_retry_after_is_at_least_one_second() -> None:
    policy = IncrementPolicy(rate_limit_per_minute=1)
    record = applied(decide(None, cmd(now_ms=0), policy))
    # 1 ms before the window frees a slot: still "retry after 1 s", never 0.
    assert decide(record, cmd(now_ms=RATE_WINDOW_MS - 1), policy) == RateLimited(1)
    assert decide(record, cmd(now_ms=RATE_WINDOW_MS - 999), policy) == RateLimited(1)
    assert decide(record, cmd(now_ms=RATE_WINDOW_MS - 1000), policy) == RateLimited(1)
    assert decide(record, cmd(now_ms=RATE_WINDOW_MS - 1001), policy) == RateLimited(2)


def test_an_update_exactly_60_seconds_old_has_left_the_window() -> None:
    policy = IncrementPolicy(rate_limit_per_minute=2)
    record, _ = run([cmd(now_ms=0), cmd(now_ms=30_000)], policy)
    assert isinstance(decide(record, cmd(now_ms=59_999), policy), RateLimited)
    after = applied(decide(record, cmd(now_ms=60_000), policy))
    # The update at 0 is out of the log (its slot reused); the one at 30 s is still in.
    assert log_of(after, 60_000) == (30_000, 60_000)
    assert len(after.accepted_ms) == 2
    assert decide(after, cmd(now_ms=60_001), policy) == RateLimited(retry_after_s=30)


def test_retry_after_waits_for_the_right_update_to_leave() -> None:
    policy = IncrementPolicy(rate_limit_per_minute=3)
    record, _ = run([cmd(now_ms=t) for t in (0, 20_000, 40_000)], policy)
    assert decide(record, cmd(now_ms=45_000), policy) == RateLimited(15)  # waits for 0
    record = applied(decide(record, cmd(now_ms=60_000), policy))
    assert decide(record, cmd(now_ms=61_000), policy) == RateLimited(19)  # waits for 20 s


def test_no_double_burst_at_a_fixed_window_edge() -> None:
    # A fixed per-minute window would accept 3 at 59 s and 3 more at 60 s.
    policy = IncrementPolicy(rate_limit_per_minute=3)
    commands = [cmd(now_ms=59_000 + i) for i in range(3)] + [
        cmd(now_ms=60_000 + i) for i in range(3)
    ]
    record, decisions = run(commands, policy)
    assert [type(d) for d in decisions] == [Applied] * 3 + [RateLimited] * 3
    assert record is not None
    assert record.score == 3


def test_a_lowered_limit_counts_the_updates_already_in_the_window() -> None:
    record, _ = run([cmd(now_ms=t) for t in (0, 10_000, 20_000)], IncrementPolicy(5))
    lowered = IncrementPolicy(rate_limit_per_minute=2)
    # Three in the window: two must leave (0 and 10 s) before one more fits.
    assert decide(record, cmd(now_ms=30_000), lowered) == RateLimited(retry_after_s=40)


def test_limit_zero_turns_the_rate_limit_off() -> None:
    record, decisions = run([cmd(now_ms=1000) for _ in range(500)], NO_LIMIT)
    assert all(isinstance(d, Applied) for d in decisions)
    assert record is not None
    assert record.score == 500
    assert record.accepted_ms == ()  # nothing to remember when there is no limit


def test_the_accepted_log_holds_only_the_window() -> None:
    policy = IncrementPolicy(rate_limit_per_minute=5)
    record, _ = run([cmd(now_ms=t) for t in range(0, 600_000, 13_000)], policy)
    assert record is not None
    assert log_of(record, 598_000) == (546_000, 559_000, 572_000, 585_000, 598_000)
    assert len(record.accepted_ms) == 5  # never more slots than the limit


# --- properties ----------------------------------------------------------------------------

gaps_ms = st.lists(
    st.one_of(
        st.integers(min_value=0, max_value=2_000),
        st.integers(min_value=0, max_value=70_000),
        st.sampled_from([0, 1, 999, 1_000, 59_999, 60_000, 60_001]),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(gaps=gaps_ms, limit=st.integers(min_value=1, max_value=6))
def test_no_60_second_window_ever_holds_more_than_the_limit(gaps: list[int], limit: int) -> None:
    """For any request times (a clock: never going back), accepted updates never exceed the
    limit in any 60 s window, and an update is refused only when the limit is really reached.
    A refusal's retry_after_s is >= 1 and exact to the second."""
    policy = IncrementPolicy(rate_limit_per_minute=limit)
    record: UserRecord | None = None
    accepted: list[int] = []
    now = 0
    for gap in gaps:
        now += gap
        in_window = sum(1 for t in accepted if t > now - RATE_WINDOW_MS)
        decision = decide(record, cmd(now_ms=now), policy)
        if isinstance(decision, Applied):
            assert in_window < limit
            record = decision.record
            accepted.append(now)
            assert log_of(record, now) == tuple(t for t in accepted if t > now - RATE_WINDOW_MS)
            assert len(record.accepted_ms) <= limit
        else:
            assert isinstance(decision, RateLimited)
            assert in_window >= limit
            retry = decision.retry_after_s
            assert retry >= 1
            # Retrying after retry_after_s is accepted; a second earlier is still refused.
            assert isinstance(decide(record, cmd(now_ms=now + retry * 1000), policy), Applied)
            if retry > 1:
                earlier = decide(record, cmd(now_ms=now + (retry - 1) * 1000), policy)
                assert isinstance(earlier, RateLimited)
    assert record is not None
    assert record.score == len(accepted)
    for start in accepted:
        # Any 60 s window [start, start + 60 s) holding updates can start at one of them.
        assert sum(1 for t in accepted if start <= t < start + RATE_WINDOW_MS) <= limit


# --- decide_all: a batch of one user's increments --------------------------------------------
#
# A hot user's queued increments are decided together (one store write). Each must be
# decided on the state the previous one left, exactly as if they had been applied one by
# one, and the record to write is the state after the last applied one (None: no write).


def batch(
    record: UserRecord | None, commands: list[IncrementCommand], policy: IncrementPolicy
) -> tuple[list[Decision], UserRecord | None]:
    """``decide_all``, checked to leave its input record alone."""
    before = replace(record) if record is not None else None
    decisions, final = decide_all(record, commands, policy)
    assert record == before
    return decisions, final


def test_decide_all_gives_each_command_the_score_after_the_ones_before_it() -> None:
    start = UserRecord("u1", "User One", score=10, v=4, reached_ms=0)
    commands = [cmd(a, now_ms=100 + i) for i, a in enumerate([1, 5, 2, 7])]
    decisions, final = batch(start, commands, NO_LIMIT)
    records = [applied(d) for d in decisions]
    assert [r.score for r in records] == [11, 16, 18, 25]
    assert [r.v for r in records] == [5, 6, 7, 8]  # each applied one is its own write
    assert [r.reached_ms for r in records] == [100, 101, 102, 103]
    assert final == records[-1]


def test_decide_all_of_a_new_user_starts_at_version_one() -> None:
    decisions, final = batch(None, [cmd(2, now_ms=1), cmd(3, now_ms=2)], NO_LIMIT)
    assert [(applied(d).score, applied(d).v) for d in decisions] == [(2, 1), (5, 2)]
    assert final is not None and (final.score, final.v) == (5, 2)


def test_decide_all_rate_limits_mid_batch_and_writes_the_last_accepted_state() -> None:
    policy = IncrementPolicy(rate_limit_per_minute=3)
    decisions, final = batch(None, [cmd(1, now_ms=1_000 + i) for i in range(5)], policy)
    assert [type(d) for d in decisions] == [Applied] * 3 + [RateLimited] * 2
    assert [applied(d).score for d in decisions[:3]] == [1, 2, 3]
    # The oldest accepted (at 1000) leaves the window at 61000: 59.997 s after 1003.
    assert decisions[3:] == [RateLimited(retry_after_s=60), RateLimited(retry_after_s=60)]
    assert final == applied(decisions[2])
    assert final.accepted_ms == (1_000, 1_001, 1_002)


def test_decide_all_counts_updates_already_in_the_window() -> None:
    policy = IncrementPolicy(rate_limit_per_minute=3)
    start = UserRecord("u1", "User One", score=2, v=2, reached_ms=0, accepted_ms=(0, 10))
    decisions, final = batch(start, [cmd(now_ms=20), cmd(now_ms=30)], policy)
    assert [type(d) for d in decisions] == [Applied, RateLimited]
    assert final is not None and (final.score, final.v, final.accepted_ms) == (3, 3, (0, 10, 20))


def test_decide_all_replays_a_key_repeated_inside_one_batch() -> None:
    commands = [cmd(5, now_ms=1, key="k"), cmd(2, now_ms=2), cmd(9, now_ms=3, key="k")]
    decisions, final = batch(None, commands, NO_LIMIT)
    assert applied(decisions[0]).score == 5
    assert applied(decisions[1]).score == 7
    assert decisions[2] == Replayed(new_score=5)  # the first one's score, not the current
    assert final == applied(decisions[1])
    assert final.score == 7 and final.v == 2
    assert keys_of(final) == (("k", 5),)


def test_decide_all_replays_a_key_from_the_stored_record() -> None:
    old = (RememberedKey("old", 6, 2),)
    start = UserRecord("u1", "User One", score=8, v=3, reached_ms=0, recent_keys=old)
    decisions, final = batch(start, [cmd(1, now_ms=5, key="old"), cmd(1, now_ms=6)], NO_LIMIT)
    assert decisions[0] == Replayed(new_score=6)
    assert applied(decisions[1]).score == 9
    assert final is not None and final.v == 4


def test_decide_all_on_a_banned_record_refuses_all_and_writes_nothing() -> None:
    banned = UserRecord("u1", "User One", score=0, v=5, reached_ms=0, banned=True)
    decisions, final = batch(banned, [cmd(1, now_ms=i, key=f"k{i}") for i in range(3)], NO_LIMIT)
    assert decisions == [Banned(), Banned(), Banned()]
    assert final is None


def test_decide_all_writes_nothing_when_nothing_applied() -> None:
    assert batch(None, [], NO_LIMIT) == ([], None)
    start = UserRecord(
        "u1", "User One", score=3, v=1, reached_ms=0, recent_keys=(RememberedKey("a", 3, 1),)
    )
    decisions, final = batch(start, [cmd(1, key="a"), cmd(4, key="a")], NO_LIMIT)
    assert decisions == [Replayed(3), Replayed(3)]
    assert final is None
    limited = UserRecord("u1", "User One", score=1, v=1, reached_ms=0, accepted_ms=(0,))
    decisions, final = batch(limited, [cmd(now_ms=1), cmd(now_ms=2)], IncrementPolicy(1))
    assert [type(d) for d in decisions] == [RateLimited, RateLimited]
    assert final is None


def test_decide_all_final_is_the_last_applied_even_when_later_ones_are_refused() -> None:
    policy = IncrementPolicy(rate_limit_per_minute=2)
    commands = [cmd(1, now_ms=0, key="a"), cmd(1, now_ms=1, key="b"), cmd(1, now_ms=2, key="a")]
    commands.append(cmd(1, now_ms=3, key="c"))
    decisions, final = batch(None, commands, policy)
    assert [type(d) for d in decisions] == [Applied, Applied, Replayed, RateLimited]
    assert final == applied(decisions[1])


keys = st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d"]))
commands_st = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=100),  # amount
        st.integers(min_value=0, max_value=40_000),  # gap to the previous command, ms
        keys,
        st.sampled_from(["User One", "Renamed"]),
    ),
    max_size=20,
)
records = st.one_of(
    st.none(),
    st.builds(
        UserRecord,
        user_id=st.just("u1"),
        username=st.just("User One"),
        score=st.integers(min_value=0, max_value=1_000),
        v=st.integers(min_value=1, max_value=50),
        reached_ms=st.just(0),
        recent_keys=st.lists(
            st.tuples(st.sampled_from(["a", "b", "x"]), st.integers(0, 1_000)),
            max_size=3,
            unique_by=lambda kv: kv[0],
        ).map(lambda kvs: tuple(RememberedKey(k, s, seq) for seq, (k, s) in enumerate(kvs))),
        accepted_ms=st.lists(st.integers(0, 1_000), max_size=4).map(lambda t: tuple(sorted(t))),
        banned=st.booleans(),
    ),
)
policies = st.builds(
    IncrementPolicy,
    rate_limit_per_minute=st.integers(min_value=0, max_value=4),
    idempotency_keys=st.integers(min_value=0, max_value=3),
)


@settings(max_examples=300, deadline=None)
@given(record=records, specs=commands_st, policy=policies)
def test_decide_all_equals_deciding_one_by_one(
    record: UserRecord | None,
    specs: list[tuple[int, int, str | None, str]],
    policy: IncrementPolicy,
) -> None:
    """Any batch: the same decisions as ``decide`` applied in turn (each on what the
    previous one left), and the record to write is the one-by-one end state, or None
    when nothing applied."""
    now = 1_000
    commands = []
    for amount, gap, key, username in specs:
        now += gap
        commands.append(cmd(amount, now_ms=now, key=key, username=username))
    end, expected = run(commands, policy, record)
    decisions, final = batch(record, commands, policy)
    assert decisions == expected
    applied_ones = [d for d in decisions if isinstance(d, Applied)]
    if applied_ones:
        assert final == end == applied_ones[-1].record
        first_v = record.v if record is not None else 0
        assert [d.record.v for d in applied_ones] == list(
            range(first_v + 1, first_v + 1 + len(applied_ones))
        )
    else:
        assert final is None
        assert end is record


# --- rings: the same rule as the lists they replaced --------------------------------------
#
# The logs used to be lists rewritten on every write (expired entries dropped, the oldest
# key trimmed). They are rings now, so a write changes a few slots. ``reference_decide`` is
# the list version, kept here as the specification: for any commands on a clock that does
# not go back, ``decide`` must give the same decisions and remember the same things.


@dataclass(frozen=True)
class Lists:
    """A user's state as the lists of the previous record format."""

    score: int = 0
    v: int = 0
    keys: tuple[tuple[str, int, str | None], ...] = ()  # oldest first
    accepted: tuple[int, ...] = ()
    used: tuple[tuple[str, int], ...] = ()


def reference_decide(
    state: Lists | None, c: IncrementCommand, policy: IncrementPolicy
) -> tuple[Decision, Lists | None]:
    """The rule on lists (the code before rings), with the fingerprint check added."""
    if state is not None and c.idempotency_key is not None:
        for key, score, fingerprint in state.keys:
            if key == c.idempotency_key:
                if fingerprint and c.fingerprint and fingerprint != c.fingerprint:
                    return KeyReused(), None
                return Replayed(score), None
    used = tuple((j, e) for j, e in (state.used if state else ()) if e > c.now_ms)
    if c.action is not None:
        if any(j == c.action.jti for j, _ in used):
            return ActionReplayed(), None
        if len(used) >= policy.used_actions:
            soonest = min(e for _, e in used)
            return RateLimited(max(1, -(-(soonest - c.now_ms) // 1000))), None
        used = (*used, (c.action.jti, c.action.expires_ms))
    accepted: tuple[int, ...] = ()
    if policy.rate_limit_per_minute > 0:
        window_start = c.now_ms - RATE_WINDOW_MS
        accepted = tuple(sorted(t for t in (state.accepted if state else ()) if t > window_start))
        if len(accepted) >= policy.rate_limit_per_minute:
            blocker = accepted[len(accepted) - policy.rate_limit_per_minute]
            return RateLimited(max(1, -(-(blocker + RATE_WINDOW_MS - c.now_ms) // 1000))), None
        accepted = (*accepted, c.now_ms)
    score = (state.score if state else 0) + c.amount
    keys = state.keys if state else ()
    if c.idempotency_key is not None and policy.idempotency_keys > 0:
        keys = (*keys, (c.idempotency_key, score, c.fingerprint))[-policy.idempotency_keys :]
    new = Lists(score, (state.v if state else 0) + 1, keys, accepted, used)
    return Applied(UserRecord("u1", "User One", score, new.v, c.now_ms)), new


def remembered(record: UserRecord, now_ms: int) -> Lists:
    """What a ring record remembers at ``now_ms``, as the lists would hold it."""
    keys = tuple(
        (k.key, k.score, k.fingerprint) for k in sorted(record.recent_keys, key=lambda k: k.seq)
    )
    used = tuple(sorted((j, e) for j, e in record.used_actions if e > now_ms))
    return Lists(record.score, record.v, keys, log_of(record, now_ms), used)


def from_lists(state: Lists) -> UserRecord:
    """A record stored by the previous version: its lists, read as rings."""
    return UserRecord(
        "u1",
        "User One",
        state.score,
        state.v,
        0,
        recent_keys=keys_from_stored([k, s] for k, s, _ in state.keys),
        accepted_ms=state.accepted,
        used_actions=state.used,
    )


ring_commands = st.lists(
    st.tuples(
        st.integers(0, 30_000),  # gap to the previous command, ms (the clock never goes back)
        st.sampled_from(["a", "b", "c", "d", "e", None]),  # idempotency key
        st.sampled_from(["f1", "f2", None]),  # fingerprint
        st.one_of(st.none(), st.tuples(st.sampled_from("wxyz"), st.integers(-5_000, 90_000))),
        st.booleans(),  # decide with the second policy (a policy changed between releases)
    ),
    max_size=40,
)
small_policies = st.builds(
    IncrementPolicy,
    rate_limit_per_minute=st.integers(0, 4),
    idempotency_keys=st.integers(0, 4),
    used_actions=st.integers(1, 3),
)
legacy_lists = st.builds(
    Lists,
    score=st.just(10),
    v=st.just(5),
    keys=st.lists(st.sampled_from("abcq"), unique=True, max_size=3).map(
        lambda ks: tuple((k, i, None) for i, k in enumerate(ks))
    ),
    accepted=st.lists(st.integers(0, 1_000), max_size=3).map(lambda ts: tuple(sorted(ts))),
    used=st.lists(st.tuples(st.sampled_from("wxyz"), st.integers(0, 60_000)), max_size=2).map(
        tuple
    ),
)


@settings(max_examples=500, deadline=None)
@given(
    specs=ring_commands,
    policies=st.tuples(small_policies, small_policies),
    start=st.one_of(st.none(), legacy_lists),
)
def test_rings_decide_exactly_as_the_lists_did(
    specs: list[tuple[int, str | None, str | None, tuple[str, int] | None, bool]],
    policies: tuple[IncrementPolicy, IncrementPolicy],
    start: Lists | None,
) -> None:
    """Same decisions, same keys (and scores, fingerprints) in the same order, same
    accepted times and spent actions that still count: from a new user or from a record
    the previous version stored, under a policy that changes in between."""
    record = from_lists(start) if start is not None else None
    state = start
    now = 1_000
    for gap, key, fingerprint, action, second in specs:
        now += gap
        spent = None if action is None else SpentAction(action[0], now + action[1])
        command = IncrementCommand("u1", "User One", 1, now, key, spent, fingerprint)
        policy = policies[second]
        expected, expected_state = reference_decide(state, command, policy)
        decision = decide(record, command, policy)
        if isinstance(expected, Applied):
            assert isinstance(decision, Applied)
            assert (decision.new_score, decision.record.v) == (
                expected.new_score,
                expected.record.v,
            )
            record, state = decision.record, expected_state
            assert state is not None
            live_used = tuple(sorted((j, e) for j, e in state.used if e > now))
            assert remembered(record, now) == replace(state, used=live_used)
            # A ring never holds more slots than it needs.
            first = start or Lists()
            limits = [p.rate_limit_per_minute for p in policies]
            assert len(record.accepted_ms) <= max(len(first.accepted), *limits)
            assert len(record.used_actions) <= max(
                len(first.used), *(p.used_actions for p in policies)
            )
        else:
            assert decision == expected


def test_a_full_ring_of_spent_actions_still_refuses_until_one_expires() -> None:
    policy = IncrementPolicy(rate_limit_per_minute=0, used_actions=2)
    record: UserRecord | None = None
    for jti, expires in (("j1", 10_000), ("j2", 20_000)):
        action = SpentAction(jti, expires)
        record = applied(decide(record, IncrementCommand("u1", "U", 1, 0, action=action), policy))
    assert record is not None
    third = IncrementCommand("u1", "U", 1, 5_000, action=SpentAction("j3", 30_000))
    assert decide(record, third, policy) == RateLimited(retry_after_s=5)  # j1 expires at 10 s
    later = applied(decide(record, replace(third, now_ms=10_000), policy))
    assert later.used_actions == (("j3", 30_000), ("j2", 20_000))  # j1's slot, reused
    # j2 is still live: replaying it is refused, whichever slots the ring used.
    replay = IncrementCommand("u1", "U", 1, 10_000, action=SpentAction("j2", 20_000))
    assert isinstance(decide(later, replay, policy), ActionReplayed)


def test_a_stepped_back_clock_does_not_revive_a_spent_action() -> None:
    """An expired entry stays in its slot until reused: if the clock steps back, it
    counts again. That is stricter than the lists (which had dropped it), never laxer."""
    policy = IncrementPolicy(rate_limit_per_minute=0)
    spend = IncrementCommand("u1", "U", 1, 0, action=SpentAction("j", 10_000))
    record = applied(decide(None, spend, policy))
    record = applied(decide(record, IncrementCommand("u1", "U", 1, 20_000), policy))
    replay = replace(spend, now_ms=9_000)  # a clock 11 s behind: the token looks valid again
    assert isinstance(decide(record, replay, policy), ActionReplayed)


# --- idempotency keys reused with another request ------------------------------------------


def keyed(
    amount: int,
    now_ms: int,
    key: str,
    fingerprint: str | None,
    *,
    action: SpentAction | None = None,
) -> IncrementCommand:
    return IncrementCommand("u1", "User One", amount, now_ms, key, action, fingerprint)


def test_a_key_reused_with_another_fingerprint_is_refused_and_stores_nothing() -> None:
    policy = IncrementPolicy(rate_limit_per_minute=1)
    record = applied(decide(None, keyed(5, 0, "k", "f-five"), policy))
    assert record.recent_keys == (RememberedKey("k", 5, 1, "f-five"),)
    assert decide(record, keyed(5, 1, "k", "f-five"), policy) == Replayed(5)
    # Refused before the rate limit, like a replay: it is not a new update either.
    assert decide(record, keyed(7, 1, "k", "f-seven"), policy) == KeyReused()
    decisions, final = decide_all(record, [keyed(7, 1, "k", "f-seven")], policy)
    assert (decisions, final) == ([KeyReused()], None)


def test_a_key_without_a_fingerprint_matches_any_request() -> None:
    """Keys stored before fingerprints were (and commands that carry none) are answered as
    replays: the previous version's keys keep working across the upgrade."""
    stored = keys_from_stored([["k", 5]])  # as the previous version stored it
    record = UserRecord("u1", "User One", score=5, v=1, reached_ms=0, recent_keys=stored)
    assert decide(record, keyed(9, 1, "k", "f-nine"), NO_LIMIT) == Replayed(5)
    fresh = applied(decide(None, keyed(5, 0, "k", "f-five"), NO_LIMIT))
    assert decide(fresh, keyed(9, 1, "k", None), NO_LIMIT) == Replayed(5)


def test_a_key_reused_inside_one_batch_is_refused() -> None:
    commands = [keyed(5, 0, "k", "f-five"), keyed(2, 1, "k", "f-two"), keyed(5, 2, "k", "f-five")]
    decisions, final = decide_all(None, commands, NO_LIMIT)
    assert decisions[1:] == [KeyReused(), Replayed(5)]
    assert final == applied(decisions[0])


def test_legacy_keys_are_evicted_first_in_their_stored_order() -> None:
    policy = IncrementPolicy(rate_limit_per_minute=0, idempotency_keys=3)
    stored = keys_from_stored([["a", 1], ["b", 2], ["c", 3]])
    record = UserRecord("u1", "User One", score=3, v=3, reached_ms=0, recent_keys=stored)
    record = applied(decide(record, keyed(1, 1, "d", "f"), policy))
    assert keys_of(record) == (("b", 2), ("c", 3), ("d", 4))
    assert record.recent_keys[0] == RememberedKey("d", 4, 4, "f")  # "a"'s slot
