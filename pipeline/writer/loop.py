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
from pipeline.common.telemetry import record_losses
from shm.ring import Consumer, ReadBatch, now_us

from . import disk as D
from .batching import BatchPolicy
from .gaps import GapFinder, quarantine_record
from .metrics import ERR_DB_GONE, ERR_DISK_FULL, ERR_NONE, ERR_PERMANENT, ERR_QUARANTINE, ERR_TRANSIENT, WriterMetrics
from .quarantine import Quarantine
from .replay import Replay
from .circuit import Circuit
from .guard import CallBusy, CallGuard, GuardedSink, RateMeter, StuckCall, budget_s, fit_chunk
from .sinks.base import OnRejected, PermanentSinkError, SinkError, SinkGoneError, TransientSinkError, WriteResult
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
        # Database calls run on worker threads, waited for at most a budget (guard.py).
        self.rate = RateMeter()
        self.guard = CallGuard(tick=self._alive, on_wait=self._call_waiting, clock=clock)
        self.sink = sink = GuardedSink(sink, self.guard, self._budget)
        self._contacted = False  # "connecting" until the database answered once
        self._stuck_info: tuple[str, int] | None = None  # (call, start time in us) shown as not answering
        self.s = settings
        self.stop = stop
        self.tick = tick
        self.clock = clock
        folder = settings.backup_file_path
        self.spool = Spool(folder, settings.backup_file_max_rows, settings.backup_retention_days * 86400.0)
        self.quarantine = Quarantine(os.path.join(folder, "quarantine"))
        self.disk = D.DiskWatch(folder, settings.backup_min_free_mb, clock=clock)
        self.metrics = WriterMetrics(consumer)
        self.gaps = GapFinder()  # gap-ledger records found in ring batches (gaps.py)
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
        self.metrics.db_state("connecting")  # not "up" before the database has answered once
        try:
            self.circuit.ensure_sink()
            if not self.sink.contact():
                raise self.sink.probe_error or TransientSinkError("the database did not answer the first probe")
            self._contacted = True
            self.metrics.db_state("replaying" if self.spool.has_work() else "up")
            self.metrics.error(ERR_NONE)
        except (PermanentSinkError, StuckCall, SinkGoneError) as e:
            # A refused login / configuration, a database that does not answer at all, or a
            # database file that vanished (never re-created: see sinks/sqlite.py): spill
            # from the start, and show why at once.
            log.error("database not available at start (%s); spilling to %s until it answers", e, self.s.backup_file_path)
            self.circuit.trip(error_code(e), e)
        except SinkError as e:
            # Unreachable or slow right now: still "connecting"; the first batch retries as
            # usual and trips the circuit if the database stays away.
            log.warning("first contact with the database failed (%s); the first batch will try again", e)
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
            self.sink.close_now()
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
                    old_heartbeat = int(self.consumer.get("producer.heartbeat_us"))
                    self.consumer.close()
                    self.consumer = reattach()
                    if self.consumer is None:
                        return 0
                    self.attach(self.consumer)
                    c = self.consumer
                    self.gaps.replaced(old_heartbeat, c.epoch, int(c.get("created_us")), c.committed)
        sdnotify.stopping("flushing")
        self.consumer.set("consumer.state", 2)  # ROLE_STATE "stopping", for the status page
        if self.flush(self.clock() + shutdown_timeout_s):
            return 0
        return self.consumer.pending()

    # --- the loop -----------------------------------------------------------------------

    def step(self) -> bool:
        """One iteration. Returns True if it did work (the caller may then loop at once)."""
        self._alive()
        self.rate.update(self.clock(), self.consumer.published)
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
        recs = self.gaps.records_for(batch)  # the batch's records and the gaps it reveals
        if len(recs) == 0:
            self._durable(batch, NOTHING, 0)
            return True
        route = route or self._route()
        if route == "hold":
            route = "spill"  # stopping: do not leave it for a replay that will not run now
        if route == "db" and self._write_db(batch, recs, stopping, deadline):
            return True
        return self._spill(batch, recs)

    def _write_db(self, batch: ReadBatch, recs: np.ndarray, stopping: bool, deadline: float) -> bool:
        """Write with retries. True if committed; False after the last failed attempt (the
        circuit is then open and the caller spills the batch)."""
        attempts = self.s.db_retry_max
        on_rejected = self._on_rejected_for("ring", batch.epoch)
        for attempt in range(attempts):
            t0 = time.perf_counter()
            try:
                self.circuit.ensure_sink()
                res = self.sink.write(batch.epoch, recs, on_rejected)
            except (SinkError, OSError) as e:
                code = error_code(e)
                self.metrics.failed(code)
                # Not retried: a call that outlived the ring's budget (the ring cannot wait for
                # another one) and a vanished database file (it does not come back by waiting
                # 1, 2, 4 s). Spill now; the prober finds out when the database answers.
                last = attempt == attempts - 1 or isinstance(e, (StuckCall, CallBusy, SinkGoneError))
                wait = float(2**attempt)
                if not last and stopping and self.clock() + wait >= deadline:
                    last = True
                log.warning(
                    "batch of %d records failed (attempt %d of %d): %s%s", len(batch.records), attempt + 1, attempts, e,
                    "" if last else f"; retrying in {wait:.0f} s",
                )
                if last:
                    self.circuit.trip(code, e)
                    return False
                self.metrics.retry()
                if self._sleep(wait, give_up=self._ring_pressed):
                    # Stop requested, or the ring passed half full while we waited (retries
                    # must not make it overflow): spill now instead of waiting.
                    self.circuit.trip(code, e)
                    return False
                continue
            lat = int((time.perf_counter() - t0) * 1e6)
            if not self._contacted:
                self._contacted = True
                self.metrics.db_state("up")
            self._durable(batch, DB, len(batch.records), res, lat)
            if res.rejected:
                log.warning("%d rows of a batch of %d were refused by the database and quarantined", len(res.rejected), len(batch.records))
            return True
        return False

    def _spill(self, batch: ReadBatch, recs: np.ndarray) -> bool:
        try:
            created = self.spool.spill(batch.epoch, recs)
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
            record_losses(self.consumer)  # the commit is where losses are counted: bucket them by minute
            self.gaps.durable(batch)
        if res is not None and res.gaps:
            self.metrics.gaps_recorded(res.gaps)
            self.metrics.gap_rows(res.gap_rows)  # the web lists recent gaps from the ring (any sink)
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
            return quarantine_record(rows, n, self.quarantine.last_path)  # the sink writes it in this transaction

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
        t0 = self.clock()
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
            if isinstance(e, TransientSinkError) and not isinstance(e, CallBusy):
                # Abandoned, or timed out / broken inside the driver: try smaller chunks.
                self._fit_replay_chunk(float("inf"))
            log.warning("replay of %s stopped: %s", self.replay.name, e)
            self.metrics.failed(error_code(e))
            self.circuit.trip(error_code(e), e)
            return False
        self._fit_replay_chunk(self.clock() - t0)
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
        self._publish_stuck()

    # --- database calls (guard.py) ---------------------------------------------------------

    def _budget(self) -> float:
        """Seconds the main loop may wait for one database call: see guard.budget_s."""
        free = self.consumer.capacity - self.consumer.pending()
        return budget_s(free, self.rate.update(self.clock(), self.consumer.published))

    def _call_waiting(self, name: str, waited_s: float) -> None:
        # The database is "not answering" after a few seconds, not only once the budget is out.
        if self._stuck_info is None:
            self._stuck_info = (name, now_us() - int(waited_s * 1e6))
            self.metrics.stuck(*self._stuck_info)
            self.metrics.db_state("not_answering")

    def _publish_stuck(self) -> None:
        """The stuck-call fields and the state: kept while an abandoned call runs or the
        circuit it tripped is open; cleared once the database answers again."""
        stuck = self.guard.stuck()
        self.circuit.publish(stuck=stuck is not None)
        if stuck is not None or (self.circuit.is_open and self.circuit.not_answering):
            if self._stuck_info is None and stuck is not None:
                self._stuck_info = (stuck[0], now_us() - int((self.clock() - stuck[1]) * 1e6))
            if self._stuck_info is not None:
                self.metrics.stuck(*self._stuck_info)
        elif self._stuck_info is not None:
            self._stuck_info = None
            self.metrics.stuck(None)
            if not self.circuit.is_open:
                self.metrics.db_state("replaying" if self.spool.has_work() else "up")

    def _fit_replay_chunk(self, took_s: float) -> None:
        # Live records wait in the ring during a replay call: a chunk must fit the budget.
        self.replay.chunk_rows = fit_chunk(self.replay.chunk_rows, took_s, self._budget(), hi=self.batching.batch_max)

    def _alive(self) -> None:
        """Sign of life for systemd's watchdog and the ring's heartbeat (which the
        supervisor and the health checks read): both say the loop turns. Also called every
        few ms while the main thread waits for a database call (guard.py)."""
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
            self._alive()  # the heartbeat too: a retry wait is not a dead writer
            time.sleep(min(0.05, left))
        return True
