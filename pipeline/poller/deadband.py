"""Report by exception for one group of tags: which values of a poll get published.

Per tag, a value is published when

* its quality changed since the last published record (so a PLC that stops answering
  produces exactly one BAD record per tag per failure episode, and the first good value
  after it is always published), or
* it is good and moved by more than its absolute ``deadband`` from the last published
  value (a tag without a deadband publishes every poll), or
* it is good and nothing was published for ``max_silence_s`` (a flat value still shows,
  so "no data" is never mistaken for "flat value").

A BAD tag is not repeated while it stays BAD: the BAD record marks the start of the gap,
the next GOOD record its end. Vectorised over the group; ``select`` is O(tags).
"""

from __future__ import annotations

import numpy as np

from shm.layout import QUALITY_BAD


class Deadband:
    def __init__(self, deadband: list[float | None], max_silence_s: list[float]) -> None:
        n = len(deadband)
        # -inf: "no deadband", any finite move (even 0) counts as moved.
        self.band = np.array([-np.inf if d is None else d for d in deadband], dtype=np.float64)
        self.silence = np.array(max_silence_s, dtype=np.float64)
        self.last_value = np.full(n, np.nan)
        self.last_quality = np.zeros(n, dtype=np.uint8)  # 0: nothing published yet
        self.last_time = np.full(n, -np.inf)
        self.filtering = bool(np.any(self.band > -np.inf))

    def select(self, values: np.ndarray, quality: np.ndarray, now_s: float) -> np.ndarray:
        """Mask of the tags to publish for this poll (and remember them as published).

        ``now_s`` is a monotonic time in seconds.
        """
        q_changed = quality != self.last_quality
        good = quality != QUALITY_BAD
        if self.filtering:
            with np.errstate(invalid="ignore"):
                moved = np.abs(values - self.last_value) > self.band
            moved |= np.isnan(self.last_value) & ~np.isnan(values)
            silent = (now_s - self.last_time) >= self.silence
            pub = q_changed | (good & (moved | silent))
        else:
            pub = q_changed | good
        self.last_value[pub] = values[pub]
        self.last_quality[pub] = quality[pub]
        self.last_time[pub] = now_s
        return pub
