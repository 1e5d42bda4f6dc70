"""The writer's side of the ring header: every ``writer.*`` word and the 5-minute buckets.

The web process and ``python -m pipeline status`` read these words (read-only mapping);
this class is the only code that writes them. Totals are added to (they survive a
writer restart because they live in the ring); gauges are set.

``writer.last_error_code``: 0 none, 1 database unreachable / timed out (transient),
2 database refused the configuration (permanent), 3 backup disk full, 4 quarantine write
failed.
"""

from __future__ import annotations

from shm import layout as L
from shm.ring import Consumer, now_us

ERR_NONE, ERR_TRANSIENT, ERR_PERMANENT, ERR_DISK_FULL, ERR_QUARANTINE = 0, 1, 2, 3, 4


class WriterMetrics:
    """Publishes the writer's state into the ring it consumes (main thread only)."""

    def __init__(self, consumer: Consumer) -> None:
        self.c = consumer

    def attach(self, consumer: Consumer, sink_kind: str) -> None:
        self.c = consumer
        self.c.set("writer.sink_kind", {v: k for k, v in L.SINK_KIND.items()}.get(sink_kind, 0))
        self.c.set("writer.started_us", now_us())

    def db_state(self, name: str) -> None:
        self.c.set("writer.db_state", L.DB_STATE_CODES[name])

    def stuck(self, call: str | None, since_us: int = 0) -> None:
        """The database call not answering (``shm.layout.STUCK_CALL`` name) and when it
        started; None clears both."""
        self.c.set("writer.stuck_call", L.STUCK_CALL_CODES[call] if call else 0)
        self.c.set("writer.stuck_since_us", since_us if call else 0)

    def error(self, code: int) -> None:
        self.c.set("writer.last_error_code", code)

    def committed(self, items: int, written: int, duplicates: int, latency_us: int) -> None:
        """One batch committed to the database (live or replay)."""
        c = self.c
        c.record_write(True, items, latency_us)
        c.add("writer.batches_ok", 1)
        c.add("writer.rows_written", written)
        c.add("writer.rows_duplicate", duplicates)
        c.set("writer.last_commit_us", now_us())
        c.set("writer.last_batch_size", items)
        c.set("writer.last_latency_us", latency_us)

    def failed(self, code: int) -> None:
        """One batch attempt that failed."""
        self.c.record_write(False, 0, 0)
        self.c.add("writer.batches_failed", 1)
        self.error(code)

    def retry(self) -> None:
        self.c.add("writer.retries", 1)

    def spilled(self, rows: int, new_files: int) -> None:
        self.c.add("writer.rows_spilled", rows)
        if new_files:
            self.c.add("writer.backup_files_written", new_files)

    def quarantined(self, rows: int) -> None:
        self.c.add("writer.rows_quarantined", rows)

    def corrupt_lines(self, n: int) -> None:
        self.c.add("writer.corrupt_lines", n)

    def replayed(self, rows: int) -> None:
        self.c.add("writer.rows_replayed", rows)

    def replay_file_done(self) -> None:
        self.c.add("writer.replay_files_done", 1)

    def probes(self, total_in_this_process: int) -> None:
        # The prober thread counts; the main thread publishes the difference.
        delta = total_in_this_process - getattr(self, "_probes_seen", 0)
        if delta > 0:
            self.c.add("writer.probes", delta)
            self._probes_seen = total_in_this_process

    def backlog(self, files: int, rows: int, size: int, oldest_us: int) -> None:
        c = self.c
        c.set("writer.backup_files_pending", files)
        c.set("writer.backup_rows_pending", rows)
        c.set("writer.backup_bytes_pending", size)
        c.set("writer.backup_oldest_us", oldest_us)

    def outage(self, started_us: int) -> None:
        self.c.set("writer.outage_started_us", started_us)

    def disk(self, free_bytes: int, state: int) -> None:
        self.c.set("writer.disk_free_bytes", max(0, free_bytes))
        self.c.set("writer.disk_state", state)

    def batch_limit(self, limit: int) -> None:
        self.c.set("writer.batch_limit", limit)

    def oldest_unwritten(self) -> None:
        """Poll time of the first record not yet durable (0 when the ring is drained)."""
        c = self.c
        ts = 0
        if c.pending() > 0:
            ts = c.peek_ts_us(c.committed) or 0
        c.set("writer.oldest_unwritten_us", ts)
