"""Pure arithmetic of the read plan: windows of `updated_at` seconds, their split, the cursor.

A span is a half-open interval `[lo, hi)` of whole unix seconds; `hi` None means open (no upper
bound). A run starts from a list of spans to read (`[start, None)` for an incremental pull,
`[0, None)` for a full resync, plus whatever a killed run left unfinished).

Two views of progress, kept apart on purpose:

* `Plan` — where the fetch stage reads next. A `Window` is `[pos, hi)` still to be read by one
  keyset walk; `pos` moves as answers *arrive*. When a worker is free and no window waits, the
  busiest window is split (`split_point`) and the far half goes to the free worker.
* `Coverage` — what committed pages *prove* stored. Each page carries the span it covers (a
  keyset page read from `p` whose last contact is at second `U` covers `[p, U)`; a last page
  covers `[p, hi)`); the remaining spans are the run's spans minus the union of those. The cursor
  is the lowest second not yet covered. Because it is a union, pages may be committed in any
  order and the cursor still never claims an unread second.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Span = tuple[int, int | None]

MIN_SPLIT_PAGES = 2  # a window is split only if it still holds about this many pages
SLACK_PAGES = 0.15  # the near half of a split ends this much of a page short of a page's end


def _end(hi: int | None) -> float:
    return float("inf") if hi is None else float(hi)


def normalize(spans: Iterable[Span]) -> list[Span]:
    """Sorted, disjoint, non-empty spans; overlapping or touching ones merged."""
    ordered = sorted(
        ((lo, hi) for lo, hi in spans if _end(hi) > lo), key=lambda s: (s[0], _end(s[1]))
    )
    merged: list[Span] = []
    for lo, hi in ordered:
        if merged and lo <= _end(merged[-1][1]):
            merged[-1] = (merged[-1][0], _max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _max(a: int | None, b: int | None) -> int | None:
    if a is None or b is None:
        return None
    return max(a, b)


def subtract(spans: Sequence[Span], cuts: Sequence[Span]) -> list[Span]:
    """`spans` without the seconds of `cuts` (both normalized first)."""
    result: list[Span] = []
    holes = normalize(cuts)
    for lo, hi in normalize(spans):
        start = lo
        for cut_lo, cut_hi in holes:
            if _end(cut_hi) <= start or cut_lo >= _end(hi):
                continue
            if cut_lo > start:
                result.append((start, cut_lo))
            if cut_hi is None:
                start = -1
                break
            start = max(start, cut_hi)
        if start >= 0 and _end(hi) > start:
            result.append((start, hi))
    return result


def skip_settled(spans: Sequence[Span], settled: Iterable[int], cursor: int) -> list[Span]:
    """An incremental run's spans less the settled tie seconds (`ties_settled`: each read whole
    by id, and too old to gain a contact): those seconds only, and only once the cursor has
    passed them. The overlap below, between and above them is read as if there were no tie: a
    version listed late there is read again; only a bulk second itself is never read twice
    (docs/pull.md, Ties)."""
    holes: list[Span] = [(s, s + 1) for s in sorted(set(settled)) if s < cursor]
    return subtract(spans, holes) if holes else list(spans)


@dataclass
class Coverage:
    """What committed pages prove stored, against the spans a run set out to read."""

    spans: list[Span]
    done: list[Span] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.spans = normalize(self.spans)

    def add(self, lo: int, hi: int | None) -> None:
        if _end(hi) > lo:
            self.done = normalize([*self.done, (lo, hi)])

    def remaining(self) -> list[Span]:
        return subtract(self.spans, self.done)

    def cursor(self, end: int) -> int:
        """The lowest second not proven stored, or `end` when everything is."""
        left = self.remaining()
        return min(left[0][0], end) if left else end


def split_point(pos: int, hi: int, rate: float | None, page_size: int) -> int | None:
    """Where to split a window `[pos, hi)` (hi: its end, or an estimate for an open one) being
    read from `pos`, or None if it is not worth it: the far half must be likely to hold at least
    a page, else the split costs an extra request for nothing. `rate` is the contacts per second
    the window's pages showed (None: unknown, assume dense: the middle).

    The near half keeps about half the pages left, as whole pages: it ends `SLACK_PAGES` short
    of the end of its last page by the density (an estimate), so its last page is nearly full
    instead of a part-page of any size. Each window ends in a part-page; this makes that page
    hold most of a page at least for the near half of every split."""
    width = hi - pos
    if width < 2:
        return None
    if rate is None:
        return pos + width // 2
    if rate * width < MIN_SPLIT_PAGES * page_size:
        return None
    near = max(1, round(rate * width / page_size / 2))
    at = pos + int((near - SLACK_PAGES) * page_size / rate)
    return at if pos < at < hi else pos + width // 2


@dataclass
class Window:
    """One keyset walk of the fetch stage: `[pos, hi)` is still to be read."""

    pos: int
    hi: int | None
    busy: bool = False
    pages: int = 0  # pages answered so far
    promised: bool = False  # the last page said more follows
    rate: float | None = None  # contacts per second seen by its last full page
    boundary: frozenset[int] = frozenset()  # ids at second `pos` of the last page
    asks: int = 0  # 204s in a row that no probe explained (`sync.pull.empty`)
    empties: int = 0  # 204s in a row on the newest page asked to prove it empty
    splittable: bool = True  # a final pass is read to its end by one walk


@dataclass
class Plan:
    """The windows of the fetch stage; `top` estimates where an open window's data ends."""

    windows: list[Window]
    top: int
    page_size: int
    may_split: bool = True

    @classmethod
    def of(cls, spans: Sequence[Span], top: int, page_size: int) -> Plan:
        return cls([Window(lo, hi) for lo, hi in normalize(spans)], top, page_size)

    def idle(self) -> Window | None:
        """A window nobody reads now (marked busy), or None."""
        for window in self.windows:
            if not window.busy:
                window.busy = True
                return window
        return None

    def steal(self) -> Window | None:
        """Split the busy window with the most left to read; the new far half (busy) or None.
        Only a window that has answered a page is split (its density places the split)."""
        if not self.may_split:
            return None
        best: tuple[float, Window, int] | None = None
        for window in self.windows:
            if window.rate is None or not window.splittable:
                continue  # no page yet: nothing known of its density
            end = window.hi if window.hi is not None else max(self.top, window.pos + 1)
            at = split_point(window.pos, end, window.rate, self.page_size)
            if at is None:
                continue
            left = (end - window.pos) * (window.rate or 1.0)
            if best is None or left > best[0]:
                best = (left, window, at)
        if best is None:
            return None
        _, window, at = best
        far = Window(at, window.hi, busy=True)
        window.hi = at
        self.windows.append(far)
        return far

    def finish(self, window: Window) -> None:
        self.windows = [w for w in self.windows if w is not window]

    def unfinished(self) -> bool:
        return bool(self.windows)
