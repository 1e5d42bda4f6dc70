"""Load mode: ``python -m pipeline.poller --rate N --duration S`` (the original throughput check).

Publishes N values per second for S seconds into the ring, then stops. Every tick
(``tick_s``, 10 ms by default) it publishes whatever brings the total up to
``rate x elapsed``: the rate is exact over the run, a late tick catches up instead of
drifting, and the last tick tops the total up to ``rate x duration``. Records are built
vectorised from a template (1,000 tags on 10 PLCs, ``LOADPLC00``..``LOADPLC09`` /
``D0``..``D99``), so one core reaches well over a million values per second.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline.common import sdnotify
from shm import RECORD_DTYPE
from shm.layout import QUALITY_GOOD
from shm.ring import now_us

from pipeline.common.latest import GroupSpec, LatestTable

log = logging.getLogger("tagpipe.poller.load")

LOAD_PLCS = 10
LOAD_TAGS_PER_PLC = 100
MAX_TEMPLATE = 2_000_000  # records (128 MB)


def load_groups(rate: float, tick_s: float = 0.01) -> list[GroupSpec]:
    """The live-values table's blocks in load mode: one group per load PLC, its interval
    the time between two values of one tag at ``rate`` values/s (a tick at most)."""
    ntags = LOAD_PLCS * LOAD_TAGS_PER_PLC
    interval = max(tick_s, ntags / rate) if rate > 0 else tick_s
    return [GroupSpec(f"LOADPLC{i:02d}", "load", interval,
                      tuple((f"D{t}", "", "load mode sine") for t in range(LOAD_TAGS_PER_PLC)))
            for i in range(LOAD_PLCS)]


@dataclass
class LoadResult:
    published: int
    elapsed_s: float
    target_rate: float
    late_ticks: int  # ticks that started more than one tick late (the machine could not keep up)

    @property
    def rate(self) -> float:
        return self.published / self.elapsed_s if self.elapsed_s > 0 else 0.0


class LoadGenerator:
    """Publishes ``rate`` values/s for ``duration_s`` (``rate`` 0: as fast as possible)."""

    def __init__(self, producer, rate: float, duration_s: float, stop_requested: Callable[[], bool] = lambda: False,
                 tick_s: float = 0.01, clock: Callable[[], float] = time.monotonic, latest: LatestTable | None = None) -> None:
        self.producer = producer
        self.rate = float(rate)
        self.duration_s = float(duration_s)
        self.stop_requested = stop_requested
        self.tick_s = tick_s
        self.clock = clock
        self.watchdog = sdnotify.Watchdog()
        ntags = LOAD_PLCS * LOAD_TAGS_PER_PLC
        per_tick = int(self.rate * tick_s) + 1 if self.rate > 0 else 10_000
        # Template long enough for a tick's batch (each batch is a slice of it), capped so
        # an absurd rate cannot eat the memory: a bigger backlog goes out in several slices.
        size = min(max(per_tick * 4, ntags), MAX_TEMPLATE)
        self.template = np.zeros(size, dtype=RECORD_DTYPE)
        idx = np.arange(size)
        codes = np.array([f"LOADPLC{i:02d}".encode() for i in range(LOAD_PLCS)], dtype="S16")
        addrs = np.array([f"D{i}".encode() for i in range(LOAD_TAGS_PER_PLC)], dtype="S16")
        self.template["plc_code"] = codes[(idx // LOAD_TAGS_PER_PLC) % LOAD_PLCS]
        self.template["tag_address"] = addrs[idx % LOAD_TAGS_PER_PLC]
        self.template["quality"] = QUALITY_GOOD
        self.phase = (idx % ntags) * (2 * np.pi / ntags)
        self.published = 0
        # Live tag values (issue 15): the last value of each of the 1,000 tags, kept here and
        # written to the table after every publish (template record i is tag i % 1,000).
        self.latest = latest
        self._blocks = [latest.block(i) for i in range(LOAD_PLCS)] if latest is not None else []
        self._last_value = np.full(ntags, np.nan)
        self._last_us = np.zeros(ntags, dtype=np.int64)
        self._quality = np.full(LOAD_TAGS_PER_PLC, QUALITY_GOOD, dtype=np.uint8)

    def batch(self, n: int, ts_us: int) -> np.ndarray:
        """``n`` (at most the template's length) records stamped ``ts_us`` (a fresh array:
        publish fills in ``seq``)."""
        off = self.published % (len(self.template) - n + 1)
        recs = self.template[off : off + n].copy()
        phase = self.phase[off : off + n]
        recs["ts_us"] = ts_us
        recs["value"] = 50.0 + 40.0 * np.sin(phase + ts_us * 1e-6)
        return recs

    def run(self) -> LoadResult:
        p = self.producer
        start = self.clock()
        end = start + self.duration_s
        next_tick = start
        late = 0
        total_target = int(round(self.rate * self.duration_s)) if self.rate > 0 else None
        last_beat = start
        while not self.stop_requested():
            now = self.clock()
            if now >= end:
                break
            if self.rate > 0:
                want = min(int(self.rate * (now - start)), total_target)  # type: ignore[type-var]
                n = want - self.published
            else:
                n = len(self.template) // 4
            if n > 0:
                self._publish(min(n, len(self.template)))
            if now - last_beat >= 0.5:
                p.heartbeat()
                self.watchdog.tick()
                last_beat = now
            if self.rate > 0:
                next_tick += self.tick_s
                delay = next_tick - self.clock()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -self.tick_s:
                    late += 1
                    next_tick = self.clock()
        while total_target is not None and not self.stop_requested() and self.published < total_target:
            self._publish(min(total_target - self.published, len(self.template)))  # the last tick's share
        # Measured to the end of the last publish: a machine that fell behind and topped
        # up at the end shows a lower rate, not a perfect one.
        elapsed = self.clock() - start
        return LoadResult(self.published, max(elapsed, 1e-9), self.rate, late)

    def _publish(self, n: int) -> None:
        off = self.published % (len(self.template) - n + 1)
        recs = self.batch(n, now_us())
        self.producer.publish(recs)
        if self._blocks:
            self._note_latest(off, recs)
        self.published += n
        self.producer.add("poller.values", n)
        self.producer.add("poller.polls", 1)

    def _note_latest(self, off: int, recs: np.ndarray) -> None:
        ntags = len(self._last_value)
        tail = max(0, len(recs) - ntags)  # the last 1,000 records hold each tag's last value
        tags = (off + np.arange(tail, len(recs))) % ntags
        self._last_value[tags] = recs["value"][tail:]
        self._last_us[tags] = recs["ts_us"][tail:]
        per = LOAD_TAGS_PER_PLC
        for i, blk in enumerate(self._blocks):
            blk.write(self._last_value[i * per:(i + 1) * per], self._quality, self._last_us[i * per:(i + 1) * per])
