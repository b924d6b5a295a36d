"""The knobs of webhook delivery: how late, how lossy, how batched hooks reach their destination.

Starting values come from `EmulatorSettings.webhooks`; `Emulator.webhooks.set_controls(...)`
(`PATCH /_emulator/webhooks/controls`) changes them while the emulator runs. Time here is real
elapsed time (like the rate limit), not the emulator clock: a test that freezes the clock still
sees its hooks arrive.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

# amoCRM's rule (fact sheet §16): more than 100 failures within 2 hours, the latest one failed
# → the hook is disabled until re-enabled by hand.
VENDOR_DISABLE_AFTER = 100
VENDOR_DISABLE_WINDOW_S = 2 * 3600.0
VENDOR_TIMEOUT_S = 2.0  # amoCRM waits at most this long for the answer


@dataclass(frozen=True)
class HookControls:
    """How the emulator delivers hooks (defaults: amoCRM's documented behaviour, no faults)."""

    delay_ms: float = 0.0  # a post leaves at the earliest this long after its first change
    loss_rate: float = 0.0  # share of posts never sent (recorded as "lost", not a failure)
    duplicate_rate: float = 0.0  # share of posts sent a second time right after the first
    batch_max: int = 50  # entities in one post at most; changes beyond wait for the next
    batch_window_ms: float = 0.0  # after the first change, wait this long for more to batch
    timeout_s: float = VENDOR_TIMEOUT_S  # no answer within this is a failure
    retry: bool = True  # a failed post is sent again later (as amoCRM does)
    retry_after_s: float = 60.0  # how much later
    max_attempts: int = 5  # sends of one post at most, the first included
    disable_after: int = VENDOR_DISABLE_AFTER  # more failures than this within the window,
    disable_window_s: float = VENDOR_DISABLE_WINDOW_S  # the latest one failed: disabled

    def changed(self, changes: dict[str, Any]) -> HookControls:
        """A copy with `changes` applied; ValueError names an unknown key or a bad value."""
        known = {f.name: f for f in fields(self)}
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ValueError(f"unknown webhook controls: {', '.join(unknown)}")
        typed = {name: _typed(name, known[name].type, value) for name, value in changes.items()}
        result = replace(self, **typed)
        result.check()
        return result

    def check(self) -> None:
        """ValueError when a value is out of range."""
        for name in ("loss_rate", "duplicate_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in ("delay_ms", "batch_window_ms", "retry_after_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.timeout_s <= 0 or self.disable_window_s <= 0:
            raise ValueError("timeout_s and disable_window_s must be greater than 0")
        if self.batch_max < 1 or self.max_attempts < 1 or self.disable_after < 0:
            raise ValueError("batch_max and max_attempts must be at least 1, disable_after >= 0")


def _typed(name: str, kind: Any, value: Any) -> Any:
    """JSON values into the field's type: bool stays bool, ints and floats are numbers."""
    kind = kind if isinstance(kind, str) else kind.__name__
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if kind == "int":
        if value != int(value):
            raise ValueError(f"{name} must be a whole number")
        return int(value)
    return float(value)


def parse_assignments(pairs: tuple[str, ...]) -> HookControls:
    """`("delay_ms=500", "loss_rate=0.1")` (the emulator command's `--webhook` options)."""
    changes: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise ValueError(f"--webhook takes KEY=VALUE, got {pair!r}")
        text = raw.strip().lower()
        changes[name.strip()] = (
            text in ("1", "true", "yes", "on") if text in _BOOL_WORDS else _number(name, raw)
        )
    return HookControls().changed(changes)


_BOOL_WORDS = frozenset({"1", "0", "true", "false", "yes", "no", "on", "off"}) - {"1", "0"}


def _number(name: str, raw: str) -> float | int:
    try:
        number = float(raw)
    except ValueError as exc:
        raise ValueError(f"--webhook {name} must be a number, got {raw!r}") from exc
    return int(number) if number.is_integer() and "." not in raw else number
