"""The writer loop: ring -> database, exactly once, riding out outages on disk.

``Writer.run()`` is the process: steps until stopped, follows the ring when it is
replaced, then flushes. One ``step()`` does at most one live batch and one replay chunk:

* **live**: when a batch is due (``batching``), read it from the ring and deliver it:
  to the database (retried ``DB_RETRY_MAX`` times in all, waiting 1 s, 2 s, 4 s ...),
  or to a backup file.
* **durable**: ``Writer._durable`` is the one place where records count as durable: after
  the database commit, after the backup file and its folder are fsynced, or (replay) after
  rows of a backup file are committed to the database. Only there do records leave the
  ring (``Consumer.commit``); a writer killed at any instant leaves them in the ring, and
  the database ignores a second copy.
* **circuit**: after a batch used its retries it goes to a backup file and the circuit
  opens: later batches go straight to backup files (no retry time spent), and one
  background ``Prober`` asks the database with backoff and jitter.
* **order**: the seqs of a stream must reach the database in increasing order (the Oracle
  sink keeps a per-stream cursor). So while backup files wait, live batches keep going to
  backup files, and replay writes files oldest first. When only the file being appended
  to is left, it is closed and replayed while live records wait in the ring (spilling
  again if the ring passes half full); then live data goes to the database again.
  Replay (tens of thousands of rows per second) outpaces the input, so the backlog and
  live lag shrink in bounded time (BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable

import numpy as np

from pipeline.common import sdnotify
from shm.ring import Consumer, ReadBatch

from . import disk as D
from .batching import BatchPolicy
from .metrics import ERR_DB_GONE, ERR_DISK_FULL, ERR_NONE, ERR_PERMANENT, ERR_QUARANTINE, ERR_TRANSIENT, WriterMetrics
from .quarantine import Quarantine
from .replay import Replay
from .circuit import Circuit
from .sinks.base import OnRejected, PermanentSinkError, SinkError, SinkGoneError, WriteResult
from .spool import Spool

log = logging.getLogger("tagpipe.writer.loop")

DISK_RETRY_S = 2.0  # after a failed backup write, wait this long before trying again
RETENTION_SWEEP_S = 600.0
RESCAN_S = 2.0  # how often the backup folder is listed for files placed by others
REPLACED_CHECK_S = 1.0  # how often the ring is checked for having been replaced

# How records became durable (``Writer._durable``).
DB = "database"  # the database committed a ring batch
FILE = "backup file"  # a ring batch is in a backup file, file and folder fsynced
NOTHING = "nothing to write"  # a ring batch of only lost or padding records
REPLAY = "replay"  # rows of a backup file committed to the database (already durable on disk)


def error_code(e: BaseException) -> int:
    """The ``ERR_*`` code of a failed database write or replay (an OSError is the quarantine
    file's: nothing could be committed)."""
    if isinstance(e, SinkGoneError):
        return ERR_DB_GONE
    if isinstance(e, PermanentSinkError):
        return ERR_PERMANENT
    if isinstance(e, OSError):
        return ERR_QUARANTINE
    return ERR_TRANSIENT


class Writer:
    """Moves records from one ring consumer to one sink. Main-thread object; ``step()``
    never blocks longer than a sink call, a retry wait (interruptible by ``stop``) or
    ``max_wait_s``."""

    def __init__(
        self,
        consumer: Consumer,
        sink,
        settings,
        stop: Callable[[], bool] = lambda: False,
        tick: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.s = settings
        self.stop = stop
        self.tick = tick
        self.clock = clock
        folder = settings.backup_file_path
        self.spool = Spool(folder, settings.backup_file_max_rows, settings.backup_retention_days * 86400.0)
        self.quarantine = Quarantine(os.path.join(folder, "quarantine"))
        self.disk = D.DiskWatch(folder, settings.backup_min_free_mb, clock=clock)
        self.metrics = WriterMetrics(consumer)
        self.circuit = Circuit(sink, self.metrics, settings.db_probe_min_interval_s, settings.db_probe_max_interval_s, folder)
        self.consumer = consumer
        self.batching = self._policy(consumer)
        self.replay = Replay(self.spool, sink, self.quarantine, self.metrics, self.batching.batch_max, self._on_rejected_for,
                             lambda rows, res, lat_us: self._durable(None, REPLAY, rows, res, lat_us))
        self.max_wait_s = 0.25
        self._disk_retry_at = 0.0
        self._replay_retry_at = 0.0
        self._next_sweep = 0.0
        self._next_rescan = clock() + RESCAN_S
        self._last_gauges = 0.0

    def _policy(self, consumer: Consumer) -> BatchPolicy:
        return BatchPolicy(self.s.buffer_batch_size, self.s.buffer_batch_max, self.s.buffer_write_interval_s, consumer.capacity, self.clock)

    # --- start / stop -------------------------------------------------------------------

    def start(self) -> None:
        """Scan the backup folder and open the sink (a database that is down opens the
        circuit: not an error). Raises OSError if BACKUP_FILE_PATH cannot be created."""
        self.metrics.attach(self.consumer, self.sink.kind)
        self.spool.scan()
        self.disk.check(force=True)
        try:
            self.circuit.ensure_sink()
            self.metrics.db_state("replaying" if self.spool.has_work() else "up")
            self.metrics.error(ERR_NONE)
        except SinkError as e:
            log.error("database not available at start (%s); spilling to %s until it answers", e, self.s.backup_file_path)
            self.circuit.trip(error_code(e))
        self.publish_gauges(force=True)

    def attach(self, consumer: Consumer) -> None:
        """Continue with a new consumer (the ring was replaced by a new one)."""
        self.consumer = consumer
        self.metrics.attach(consumer, self.sink.kind)
        self.batching = self._policy(consumer)
        self.publish_gauges(force=True)

    def close(self) -> None:
        """Stop the prober, close the backup file, the sink and the ring consumer."""
        self.circuit.stop()
        self.spool.close()
        if self.consumer is not None:
            self.publish_gauges(force=True)
        try:
            self.sink.close()
        except Exception as e:  # closing must not hide the stop
            log.warning("closing the %s sink: %s", self.sink.kind, e)
        if self.consumer is not None:
            self.consumer.close()

    def run(self, reattach: Callable[[], Consumer | None], shutdown_timeout_s: float) -> int:
        """Write until ``stop()``; then deliver what was published, within
        ``shutdown_timeout_s`` seconds. When the ring is replaced, ``reattach()`` gives the
        consumer of the new one (None: stopped while waiting for it). Returns how many
        published records were not made durable (they stay in the ring)."""
        next_check = self.clock() + REPLACED_CHECK_S
        while not self.stop():
            if not self.step():
                self.run_once_idle()
            if self.clock() >= next_check:
                next_check = self.clock() + REPLACED_CHECK_S
                if self.consumer.replaced():
                    log.warning("ring %r was replaced; attaching to the new one", self.consumer.name)
                    self.consumer.close()
                    self.consumer = reattach()
                    if self.consumer is None:
                        return 0
                    self.attach(self.consumer)
        sdnotify.stopping("flushing")
        self.consumer.set("consumer.state", 2)  # ROLE_STATE "stopping", for the status page
        if self.flush(self.clock() + shutdown_timeout_s):
            return 0
        return self.consumer.pending()

    # --- the loop -----------------------------------------------------------------------

    def step(self) -> bool:
        """One iteration. Returns True if it did work (the caller may then loop at once)."""
        self._alive()
        self._housekeeping()
        self.circuit.try_close(self.spool.has_work)
        worked = False
        backlog = self.consumer.backlog()
        if self.batching.due(backlog):
            worked = self._live() or worked
        if not self.circuit.is_open and self.spool.has_work() and not self.stop():
            worked = self._replay_some() or worked
        self.publish_gauges()
        return worked

    def run_once_idle(self) -> None:
        """Wait (bounded) for records when a step did nothing."""
        backlog = self.consumer.backlog()
        # With records waiting but no batch due yet (interval running, or a backup write to
        # retry later) the doorbell still wakes us for new records; never a busy loop.
        timeout = self.batching.wait_s(backlog) if backlog else self.max_wait_s
        now = self.clock()
        if now < self._disk_retry_at:
            timeout = max(timeout, self._disk_retry_at - now)
        # A signal interrupting this wait just ends it early; the loop then sees the stop flag.
        self.consumer.doorbell.wait(min(self.max_wait_s, max(0.002, timeout)))

    def flush(self, deadline: float) -> bool:
        """Deliver what was published up to now (database or backup file) before
        ``deadline`` (monotonic). True if everything was made durable."""
        target = self.consumer.published
        while self.consumer.committed < target:
            if self.clock() >= deadline:
                return False
            self.circuit.try_close(self.spool.has_work)
            batch = self.consumer.read(self.batching.batch_max)
            if batch.end == batch.start:
                break
            if not self._deliver(batch, stopping=True, deadline=deadline):
                self.consumer.rewind()
                return False
            self.publish_gauges()
        return self.consumer.committed >= target

    # --- live batches -------------------------------------------------------------------

    def _route(self) -> str:
        if self.circuit.is_open:
            return "spill"
        if self.spool.active is not None:
            return "spill"
        if self.spool.pending:
            # Handover: the last files are being replayed; live waits in the ring unless
            # the ring passes half full.
            return "spill" if self._ring_pressed() else "hold"
        return "db"

    def _live(self) -> bool:
        route = self._route()
        if route == "hold":
            return False
        if route == "spill" and self.clock() < self._disk_retry_at:
            return False
        batch = self.consumer.read(self.batching.limit)
        self.batching.taken(batch.end - batch.start, self.consumer.backlog())
        self.metrics.batch_limit(self.batching.limit)
        if not self._deliver(batch, route=route):
            self.consumer.rewind()
        return True

    def _deliver(self, batch: ReadBatch, route: str | None = None, stopping: bool = False, deadline: float = 0.0) -> bool:
        """Make ``batch`` durable and commit it in the ring. False if it stays in the ring."""
        if len(batch.records) == 0:
            self._durable(batch, NOTHING, 0)
            return True
        route = route or self._route()
        if route == "hold":
            route = "spill"  # stopping: do not leave it for a replay that will not run now
        if route == "db" and self._write_db(batch, stopping, deadline):
            return True
        return self._spill(batch)

    def _write_db(self, batch: ReadBatch, stopping: bool, deadline: float) -> bool:
        """Write with retries. True if committed; False after the last failed attempt (the
        circuit is then open and the caller spills the batch)."""
        attempts = self.s.db_retry_max
        on_rejected = self._on_rejected_for("ring", batch.epoch)
        for attempt in range(attempts):
            t0 = time.perf_counter()
            try:
                self.circuit.ensure_sink()
                res = self.sink.write(batch.epoch, batch.records, on_rejected)
            except (SinkError, OSError) as e:
                code = error_code(e)
                self.metrics.failed(code)
                last = attempt == attempts - 1
                wait = float(2**attempt)
                if not last and stopping and self.clock() + wait >= deadline:
                    last = True
                log.warning(
                    "batch of %d records failed (attempt %d of %d): %s%s", len(batch.records), attempt + 1, attempts, e,
                    "" if last else f"; retrying in {wait:.0f} s",
                )
                if last or isinstance(e, SinkGoneError):
                    # A vanished file does not come back by waiting 1, 2, 4 s: spill now.
                    self.circuit.trip(code)
                    return False
                self.metrics.retry()
                if self._sleep(wait, give_up=self._ring_pressed):
                    # Stop requested, or the ring passed half full while we waited (retries
                    # must not make it overflow): spill now instead of waiting.
                    self.circuit.trip(code)
                    return False
                continue
            self._durable(batch, DB, len(batch.records), res, int((time.perf_counter() - t0) * 1e6))
            if res.rejected:
                log.warning("%d rows of a batch of %d were refused by the database and quarantined", len(res.rejected), len(batch.records))
            return True
        return False

    def _spill(self, batch: ReadBatch) -> bool:
        try:
            created = self.spool.spill(batch.epoch, batch.records)
        except OSError as e:
            if self.disk.write_failed(e, len(batch.records)):
                self.metrics.error(ERR_DISK_FULL)
                # Replayed files are already in the database: give their space to new data.
                if self.spool.remove_expired(now=float("inf")):
                    self._disk_retry_at = 0.0
                    return False
            self._disk_retry_at = self.clock() + DISK_RETRY_S
            self.publish_gauges(force=True)
            return False
        self._durable(batch, FILE, len(batch.records), created=created)
        return True

    # --- where records become durable ------------------------------------------------------

    def _durable(self, batch: ReadBatch | None, how: str, rows: int, res: WriteResult | None = None, lat_us: int = 0,
                 created: int = 0) -> None:
        """The one place where records count as durable, called right after it happened.

        ``how``: DB (the database committed ``batch``; ``res`` and ``lat_us`` say how it
        went), FILE (``batch`` is in a backup file, file and folder fsynced; ``created``
        new files), NOTHING (``batch`` held only lost or padding records), REPLAY (``rows``
        of a backup file committed to the database; no ring batch). The ring's committed
        cursor moves past ``batch`` here and nowhere else: its records leave the ring.
        """
        if batch is not None:
            self.consumer.commit(batch)
        if how in (DB, REPLAY):
            self.metrics.committed(rows, res.written, res.duplicates, lat_us)
        if how == REPLAY:
            self.metrics.replayed(rows)
        elif how == FILE:
            self.disk.write_ok()
            self.metrics.spilled(rows, created)
            if created:
                self.metrics.batch_limit(self.batching.limit)

    def _on_rejected_for(self, source: str, epoch: int) -> OnRejected:
        def on_rejected(rows: np.ndarray, errors: list) -> None:
            # Runs inside the sink's transaction, before its commit: if this raises, nothing commits.
            n = self.quarantine.add_rows(epoch, rows, errors, source)
            self.metrics.quarantined(n)
            log.warning("quarantined %d rows refused by the database (first: %s %s)", n, errors[0].code, errors[0].message)

        return on_rejected

    # --- replay ---------------------------------------------------------------------------

    def _replay_some(self) -> bool:
        if not self.spool.pending and self.spool.active is not None:
            # Everything older is in the database: close the file being appended to so it
            # can be replayed; live records wait in the ring meanwhile (see _route).
            self.spool.close_active()
        if self.clock() < self._replay_retry_at:
            return False
        pending = len(self.spool.pending)
        try:
            n = self.replay.step()
        except OSError as e:
            # The backup folder (quarantine file, move to replayed/), not the database,
            # failed: say so in the disk state and try again later; the circuit stays
            # closed, since tripping it would report a database outage that is not there.
            log.warning("replay of %s stopped: %s", self.replay.name, e)
            if self.disk.write_failed(e, 0):
                self.metrics.error(ERR_DISK_FULL)
            # Its own timer: the spill path's (reset by every failed spill) would otherwise
            # hold replay back for good while a full disk keeps refusing live batches.
            self._replay_retry_at = self.clock() + DISK_RETRY_S
            self.publish_gauges(force=True)
            return False
        except SinkError as e:
            log.warning("replay of %s stopped: %s", self.replay.name, e)
            self.metrics.failed(error_code(e))
            self.circuit.trip(error_code(e))
            return False
        if len(self.spool.pending) < pending:
            self.disk.write_ok()  # a file moved to replayed/: the folder takes writes again
        if not self.spool.has_work():
            log.warning("all backup files replayed; live data goes to the database again")
            self.metrics.db_state("up")
        return n > 0

    # --- housekeeping ---------------------------------------------------------------------

    def _housekeeping(self) -> None:
        now = self.clock()
        self.disk.check()
        if now >= self._next_rescan:
            self._next_rescan = now + RESCAN_S
            try:
                if self.spool.rescan() and not self.circuit.is_open:
                    self.metrics.db_state("replaying")
            except OSError as e:
                log.warning("cannot list %s: %s", self.s.backup_file_path, e)
        if now >= self._next_sweep:
            self._next_sweep = now + RETENTION_SWEEP_S
            self.spool.remove_expired()

    def publish_gauges(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last_gauges < 0.2:
            return
        self._last_gauges = now
        m = self.metrics
        m.backlog(*self.spool.totals())
        m.disk(self.disk.free, self.disk.state, self.disk.errno if self.disk.state == D.UNWRITABLE else 0)
        m.batch_limit(self.batching.limit)
        m.oldest_unwritten()
        self.circuit.publish()

    def _alive(self) -> None:
        """Sign of life for systemd's watchdog and the ring's heartbeat (which the
        supervisor and the health checks read): both say the loop turns."""
        self.tick()
        self.consumer.heartbeat()

    def _ring_pressed(self) -> bool:
        """More than half the ring waits: retries and the replay hand-over give way to spilling."""
        return self.consumer.pending() > self.consumer.capacity // 2

    def _sleep(self, seconds: float, give_up: Callable[[], bool] = lambda: False) -> bool:
        """Sleep up to ``seconds`` (ticking the watchdog). True if a stop was requested or
        ``give_up()`` became true."""
        end = self.clock() + seconds
        while not self.stop() and not give_up():
            left = end - self.clock()
            if left <= 0:
                return False
            self._alive()
            time.sleep(min(0.05, left))
        return True
