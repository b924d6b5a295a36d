"""`sync.pull.windows`, by property: span arithmetic, the cursor never claims an unread second,
splits keep every second in exactly one window."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from sync.pull.windows import Coverage, Plan, Span, normalize, skip_settled, split_point, subtract

TOP = 200  # seconds 0..199 stand for every second; None (open) reaches past it

spans = st.lists(
    st.tuples(st.integers(0, TOP - 1), st.one_of(st.none(), st.integers(1, TOP))).map(
        lambda t: (t[0], t[1] if t[1] is None or t[1] > t[0] else None)
    ),
    max_size=6,
)


def seconds(items: list[Span]) -> set[int]:
    out: set[int] = set()
    for lo, hi in items:
        out.update(range(lo, TOP + 10 if hi is None else hi))
    return out


@given(spans)
def test_normalize_keeps_the_seconds_and_makes_them_disjoint_and_sorted(items: list[Span]) -> None:
    merged = normalize(items)
    assert seconds(merged) == seconds(items)
    for (lo1, hi1), (lo2, _hi2) in itertools.pairwise(merged):
        assert hi1 is not None
        assert hi1 < lo2  # touching spans are merged too
        assert lo1 < lo2


@given(spans, spans)
def test_subtract_is_set_difference(items: list[Span], cuts: list[Span]) -> None:
    assert seconds(subtract(items, cuts)) == seconds(items) - seconds(cuts)


@given(spans, st.lists(st.integers(0, TOP), max_size=5), st.integers(0, TOP + 5))
def test_skip_settled_drops_only_the_settled_seconds_and_only_below_the_cursor(
    items: list[Span], settled: list[int], cursor: int
) -> None:
    """Everything else of the overlap is read as without a tie (the audit: every second below
    the settled one was dropped too, and a version listed late there was never read); every
    settled second is dropped, not only the newest (the soak audit: an older bulk second in the
    overlap was read whole again by every pull once a newer one settled)."""
    dropped = {s for s in settled if s < cursor}
    assert seconds(skip_settled(items, settled, cursor)) == seconds(items) - dropped


@given(st.integers(1, 60), st.integers(0, 80), st.integers(100, TOP))
def test_a_settled_second_in_the_overlap_keeps_the_overlap_on_both_sides(
    overlap: int, age: int, cursor: int
) -> None:
    """The incremental run's spans `[C - overlap, ∞)` and a killed run's (its windows above
    C and the head `[R - overlap, ∞)`) lose exactly second U."""
    settled = cursor - 1 - age  # settled below the cursor, as a completed run stores it
    start = cursor - overlap
    plain = skip_settled([(start, None)], [settled], cursor)
    killed = skip_settled(
        [(cursor, cursor + 20), (cursor + 30, None), (start, None)], [settled], cursor
    )
    for got in (plain, killed):
        expected = [(start, None)] if settled < start else [(start, settled), (settled + 1, None)]
        assert normalize(got) == [s for s in expected if s[1] is None or s[1] > s[0]]


@given(
    spans,
    st.lists(st.tuples(st.integers(0, TOP), st.integers(0, 30)), max_size=12),
    st.integers(0, TOP + 5),
)
def test_the_cursor_is_the_lowest_second_not_covered_whatever_the_order(
    items: list[Span], pages: list[tuple[int, int]], end: int
) -> None:
    """Pages (their spans) arrive in any order; the cursor never passes an uncovered second of
    the run's spans, and is `end` once nothing is left."""
    coverage = Coverage(items)
    covered: set[int] = set()
    for lo, width in pages:
        coverage.add(lo, lo + width)
        covered.update(range(lo, lo + width))
        left = seconds(items) - covered
        cursor = coverage.cursor(end)
        assert all(s >= cursor for s in left)
        if left:
            assert cursor == min(*left, end)
        else:
            assert cursor == end
        assert seconds(coverage.remaining()) == left


@given(st.integers(0, 1000), st.integers(0, 1000), st.one_of(st.none(), st.floats(0, 50)))
def test_a_split_point_lies_strictly_inside(pos: int, width: int, rate: float | None) -> None:
    at = split_point(pos, pos + width, rate, 25)
    if at is not None:
        assert pos < at < pos + width
        assert rate is None or rate * width >= 50


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.integers(0, 150), st.integers(1, 50)), min_size=1, max_size=4),
    st.lists(st.integers(0, 3), max_size=20),
)
def test_steals_keep_every_second_in_exactly_one_window(
    raw: list[tuple[int, int]], order: list[int]
) -> None:
    plan = Plan.of([(lo, lo + w) for lo, w in raw], top=TOP, page_size=1)
    before = seconds([(w.pos, w.hi) for w in plan.windows])
    for window in plan.windows:
        window.busy, window.rate = True, 1.0
    for pick in order:
        far = plan.steal()
        if far is None:
            break
        far.rate = 1.0
        if pick % 2 and plan.windows:  # a walk moves on inside one of the windows
            window = plan.windows[pick % len(plan.windows)]
            if window.hi is not None and window.hi - window.pos > 1:
                before -= {window.pos}
                window.pos += 1
        held = [seconds([(w.pos, w.hi)]) for w in plan.windows]
        assert set().union(*held) == before
        assert sum(len(h) for h in held) == len(before)  # disjoint
