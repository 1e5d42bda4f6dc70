"""Polling on schedule: one asyncio task per poll group, one batch per poll, into the ring.

* Each group runs at its interval on the monotonic clock without drift (next = previous
  scheduled time + interval). A poll slower than its interval is an overrun: counted, and
  the missed slots are skipped, never queued up.
* PLCs are independent tasks: a PLC that refuses, times out or is slow only delays its own
  groups (every wait of a source is bounded by its ``timeout_s``).
* One poll of a group becomes one ``Producer.publish`` of a numpy record array,
  timestamped with the wall clock in UTC microseconds at the start of the read.
* A stop request lets every poll in progress finish and publish; sleeps end at once.

Counters for the web process go to the ring header: ``poller.*`` and one PLC slot per PLC
(connected, last good poll, polls, errors, overruns, last duration, tags, values...).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Callable

import numpy as np

from pipeline.common import sdnotify, telemetry
from pipeline.common.latest import GroupRows, GroupSpec, LatestTable
from shm import RECORD_DTYPE
from shm.layout import FLAG_NULL, QUALITY_BAD
from shm.ring import now_us  # wall-clock us since 1970 UTC, the clock of every ring time

from .config import GroupConfig, PlantConfig, PlcConfig
from .deadband import Deadband
from . import gaps
from .sources.base import Source, SourceUnavailable

log = logging.getLogger("tagpipe.poller")

SOURCE_KIND = telemetry.SOURCE_KIND
HEARTBEAT_S = 0.25


def latest_groups(plant: PlantConfig) -> list[GroupSpec]:
    """The live-values table's blocks for ``plant``: every group of every PLC, in the
    order ``Poller`` makes its group pollers."""
    return [GroupSpec(plc.code, g.name, g.interval_s, tuple((t.address, t.unit, t.description) for t in g.tags))
            for plc in plant.plcs for g in plc.groups]


class GroupPoller:
    """Polls one group of one PLC and publishes what report-by-exception lets through."""

    def __init__(self, producer, source: Source, plc: PlcConfig, plc_index: int, group_index: int,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], int] = now_us,
                 latest: GroupRows | None = None) -> None:
        self.producer = producer
        self.latest = latest  # this group's rows of the live-values table (None: not kept)
        self.source = source
        self.plc = plc
        self.group: GroupConfig = plc.groups[group_index]
        self.group_index = group_index
        self.slot = telemetry.plc_slot(producer, plc_index)
        self.clock, self.wall = clock, wall
        tags = self.group.tags
        self.n = len(tags)
        self.addresses = np.array([t.address.encode("ascii") for t in tags], dtype="S16")
        self.code = plc.code.encode("ascii")
        self.deadband = Deadband([t.deadband for t in tags], [t.max_silence_s for t in tags])
        self.failing = False
        self.partial = False
        self.failed_polls = 0
        self.fail_since = 0.0
        self.episode: tuple[int, str] | None = None  # (first failed poll time in us, its error): gaps.py
        self.polls = self.overruns = 0

    @property
    def name(self) -> str:
        return f"{self.plc.code}/{self.group.name}"

    async def step(self) -> int:
        """Poll once and publish. Returns the number of records published. Never raises
        for a PLC that does not answer (that is a BAD episode, logged once)."""
        p, slot = self.producer, self.slot
        t0 = self.clock()
        ts = self.wall()
        error = ""
        try:
            reading = await self.source.read(self.group_index)
            values, quality = reading.values, reading.quality
            error = reading.error
            answered = True
        except SourceUnavailable as e:
            values = np.full(self.n, np.nan)
            quality = np.full(self.n, QUALITY_BAD, dtype=np.uint8)
            error = str(e)
            answered = False
        # A register holding NaN or infinity (float32) is not a measurement: no database
        # column takes it, so it is published as BAD with a NULL value like a failed read.
        nonfinite = ~np.isfinite(values) & (quality != QUALITY_BAD)
        if nonfinite.any():
            quality = np.where(nonfinite, QUALITY_BAD, quality).astype(np.uint8)
        if self.latest is not None:
            # Every poll, whatever the deadband lets into the ring: the live value and its
            # age must be right for a steady tag too (pipeline.common.latest).
            self.latest.write(np.where(quality == QUALITY_BAD, np.nan, values), quality, ts)
        now = self.clock()
        pub = self.deadband.select(values, quality, now)
        k = int(np.count_nonzero(pub))
        if k:
            q = quality[pub]
            bad = q == QUALITY_BAD
            recs = np.zeros(k, dtype=RECORD_DTYPE)
            recs["ts_us"] = ts
            recs["value"] = np.where(bad, np.nan, values[pub])
            recs["plc_code"] = self.code
            recs["tag_address"] = self.addresses[pub]
            recs["quality"] = q
            recs["flags"] = np.where(bad, FLAG_NULL, 0)
            p.publish(recs)
            nbad = int(np.count_nonzero(bad))
            p.add("poller.values", k)
            if nbad:
                p.add("poller.bad_values", nbad)
        suppressed = self.n - k
        if suppressed:
            p.add("poller.suppressed", suppressed)
        duration_us = int((now - t0) * 1e6)
        self.polls += 1
        p.add("poller.polls", 1)
        slot.add("polls", 1)
        slot.set("last_poll_us", ts)
        slot.set("last_duration_us", duration_us)
        slot.add("values", k)
        slot.set("connected", 1 if self.source.connected else 0)
        if answered:
            slot.set("last_good_poll_us", ts)
            slot.set("consecutive_errors", 0)
            if self.failing:
                self.failing = False
                log.info("%s answers again after %d failed polls (%.1f s)", self.name, self.failed_polls,
                         now - self.fail_since)
                self.failed_polls = 0
                self.end_episode(ts)
        else:
            slot.add("errors", 1)
            slot.add("consecutive_errors", 1)
            slot.set("last_error_us", ts)
            self.failed_polls += 1
            if not self.failing:
                self.failing = True
                self.fail_since = now
                self.episode = (ts, error)
                log.warning("%s does not answer (%s): its %d tags are BAD until it does", self.name, error, self.n)
        if error:
            p.add("poller.poll_errors", 1)
        if answered:
            # The PLC answered but refused part of the group (exception response): those
            # tags are BAD; said once per episode, like a PLC that does not answer.
            if error:
                slot.set("last_error_us", ts)
                if not self.partial:
                    log.warning("%s answers but refuses part of the group (%s): those tags are BAD", self.name, error)
            elif self.partial:
                log.info("%s: every tag reads again", self.name)
            self.partial = bool(error)
        return k

    def end_episode(self, end_us: int) -> None:
        """Publish the gap record of the unreachable episode that ends at ``end_us``."""
        if self.episode is not None:
            start_us, error = self.episode
            self.episode = None
            self.producer.publish(gaps.unreachable_record(self.plc.code, start_us, end_us, error))

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every ``interval_s`` until ``stop`` is set (the poll in progress finishes)."""
        interval = self.group.interval_s
        next_t = self.clock()
        while not stop.is_set():
            delay = next_t - self.clock()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    break
                except asyncio.TimeoutError:
                    pass
            await self.step()
            next_t += interval
            now = self.clock()
            if now > next_t:
                skipped = math.floor((now - next_t) / interval) + 1
                next_t += skipped * interval
                self.overruns += 1
                self.producer.add("poller.overruns", 1)
                self.slot.add("overruns", 1)


class Poller:
    """All groups of all PLCs, the heartbeat and the stop request, on one event loop."""

    def __init__(self, producer, plant: PlantConfig, sources: list[Source], stop_requested: Callable[[], bool],
                 clock: Callable[[], float] = time.monotonic, latest: LatestTable | None = None) -> None:
        self.producer = producer
        self.plant = plant
        self.sources = sources
        self.stop_requested = stop_requested
        self.clock = clock
        # Group k of this list is block k of the live-values table (latest_groups' order).
        self.groups = [
            GroupPoller(producer, src, plc, i, g, clock=clock)
            for i, (plc, src) in enumerate(zip(plant.plcs, sources))
            for g in range(len(plc.groups))
        ]
        if latest is not None:
            for k, gp in enumerate(self.groups):
                gp.latest = latest.block(k)
        self.watchdog = sdnotify.Watchdog()
        self.ring_lost = False
        self._init_header()
        gaps.publish_start_gap(producer)

    def _init_header(self) -> None:
        p = self.producer
        kinds = self.plant.protocols
        p.set("poller.source_kind", SOURCE_KIND[kinds.pop() if len(kinds) == 1 else "mixed"])
        p.set("poller.started_us", now_us())
        # poller.* counters keep growing across restarts (a restart shows in started_us);
        # the PLC slots start from zero because slot i may now hold another PLC.
        for i, plc in enumerate(self.plant.plcs):
            slot = telemetry.plc_slot(p, i)
            slot.set_code(plc.code)
            for f in ("connected", "last_good_poll_us", "last_poll_us", "polls", "errors", "overruns",
                      "last_duration_us", "values", "consecutive_errors", "last_error_us"):
                slot.set(f, 0)
            slot.set("tags", plc.tag_count)
        p.set("poller.plc_count", len(self.plant.plcs))

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        # Beats even when every group is in a slow poll, so the web process can tell a
        # slow PLC from a dead poller.
        beats = 0
        while not stop.is_set():
            self.producer.heartbeat()
            self.watchdog.tick()
            if self.stop_requested():
                stop.set()
                break
            beats += 1
            if beats % 4 == 0 and self.producer.replaced():
                # Someone deleted the ring (delete-ring --force): records written now
                # would reach nobody. Stop; the restarted poller creates a new ring.
                self.ring_lost = True
                log.error("ring %r was deleted or replaced under the poller: stopping so it is recreated",
                          self.producer.name)
                stop.set()
                break
            try:
                await asyncio.wait_for(stop.wait(), HEARTBEAT_S)
            except asyncio.TimeoutError:
                pass

    async def run(self, shutdown_timeout_s: float = 10.0) -> bool:
        """Poll until a stop is requested. True if every poll in progress finished in time."""
        stop = asyncio.Event()
        hb = asyncio.create_task(self._heartbeat(stop))
        tasks = [asyncio.create_task(g.run(stop), name=g.name) for g in self.groups]
        stopped = asyncio.create_task(stop.wait())
        try:
            # A group task only ends early on a bug: stop everything and let the process
            # exit non-zero (systemd restarts it) rather than poll with a group missing.
            await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
            crashed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
            stop.set()
            done, pending = await asyncio.wait(tasks, timeout=shutdown_timeout_s)
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    log.error("group %s failed: %r", t.get_name(), t.exception())
            for t in pending:
                log.warning("group %s still polling after %.1f s: abandoning that poll", t.get_name(),
                            shutdown_timeout_s)
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
            if crashed:
                raise RuntimeError(f"group {crashed[0].get_name()} failed") from crashed[0].exception()
            return not pending
        finally:
            stop.set()
            stopped.cancel()
            for t in tasks:
                if not t.done():
                    t.cancel()
            await asyncio.wait([hb], timeout=1.0)
            if not self.ring_lost:
                for g in self.groups:  # an episode still open ends with the poller
                    g.end_episode(now_us())
            for s in self.sources:
                await s.close()
            self.producer.heartbeat()
