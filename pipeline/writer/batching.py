"""When a batch goes, and how large it may be.

A batch goes when ``BUFFER_BATCH_SIZE`` records wait or ``BUFFER_WRITE_INTERVAL`` has
passed since the last batch, whichever comes first (the original design's two triggers).
Under a backlog the limit doubles after every full batch, up to ``BUFFER_BATCH_MAX``
(never more than half the ring, so one batch in flight cannot hold the whole ring), and
halves back towards ``BUFFER_BATCH_SIZE`` once the backlog is gone: big batches amortise
the per-commit fsync while catching up, small ones keep latency low in steady state.
"""

from __future__ import annotations

import time
from typing import Callable


class BatchPolicy:
    """Size/time triggers and the adaptive batch limit. Pure logic: no I/O, injectable clock."""

    def __init__(
        self,
        batch_size: int,
        batch_max: int,
        interval_s: float,
        capacity: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.batch_size = max(1, int(batch_size))
        self.batch_max = max(self.batch_size, min(int(batch_max), max(1, capacity // 2)))
        self.batch_size = min(self.batch_size, self.batch_max)
        self.interval_s = float(interval_s)
        self.clock = clock
        self.limit = self.batch_size
        self.last_batch = clock()

    def due(self, backlog: int) -> bool:
        """True if a batch should be taken now, given ``backlog`` records waiting."""
        if backlog <= 0:
            return False
        # The trigger is the normal size, not the grown limit: under a backlog the next
        # batch goes at once, with up to ``limit`` records.
        if backlog >= self.batch_size:
            return True
        return self.clock() - self.last_batch >= self.interval_s

    def wait_s(self, backlog: int) -> float:
        """How long the loop may sleep before a batch is due (seconds, >= 0)."""
        if backlog <= 0:
            return self.interval_s
        return max(0.0, self.interval_s - (self.clock() - self.last_batch))

    def taken(self, n: int, backlog_after: int) -> None:
        """Record that a batch of ``n`` records was taken with ``backlog_after`` still waiting.

        Grows the limit when a full batch left at least another full batch behind; halves
        it when less than half a batch is left, and returns to the normal size once what
        is left would not fill a normal batch.
        """
        self.last_batch = self.clock()
        if n >= self.limit and backlog_after >= self.limit:
            self.limit = min(self.limit * 2, self.batch_max)
        elif backlog_after < self.batch_size:
            self.limit = self.batch_size  # caught up: small batches, low latency again
        elif backlog_after < self.limit // 2:
            self.limit = max(self.limit // 2, self.batch_size)
