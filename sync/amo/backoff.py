"""Exponential back-off with jitter, bounded, honouring amoCRM's `retry_after`."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delay before retry number `attempt` (0 = the first retry).

    "Equal jitter": half the exponential step is fixed, half random, so clients that failed
    together spread out but none retries immediately. A 429 without `retry_after` starts at
    `throttle_base_s` (amoCRM's HTML 429 carries no hint; ~1-2 s is the community advice).
    """

    base_s: float = 0.5
    throttle_base_s: float = 2.0
    cap_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(
        self, attempt: int, *, throttled: bool = False, retry_after: float | None = None
    ) -> float:
        base = self.throttle_base_s if throttled else self.base_s
        step = min(self.cap_s, base * (2 ** max(0, attempt)))
        jittered: float = step / 2 + self.rng.uniform(0, step / 2)
        if retry_after is not None:
            # The server's figure is a floor; a little jitter stops threads waking in lockstep.
            return float(retry_after + self.rng.uniform(0, min(1.0, base)))
        return jittered
