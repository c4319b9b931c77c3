"""The rank event's hand-written encoder gives json.dumps's very text, for any names."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from handlers.live.rank_stream import rank_event, rank_event_json
from server.domain.rank_watch import RankState

rows = st.lists(
    st.tuples(st.integers(1, 10**7), st.text(), st.text(), st.integers(-(2**53), 2**53)),
    max_size=21,
)


@given(rows, st.one_of(st.none(), st.integers(1, 10**7)), st.integers(0, 10**7))
def test_the_encoder_writes_what_json_dumps_writes(
    window: list[tuple[int, str, str, int]], previous: int | None, total: int
) -> None:
    ranked = RankState(window[0][0], window[0][3], tuple(window)) if window else None
    for state in (ranked, RankState(None, None, ())):
        if state is None:
            continue
        expected = json.dumps(
            rank_event(state, previous, total), separators=(",", ":"), ensure_ascii=False
        )
        assert rank_event_json(state, previous, total) == expected
