"""Each stream's seqs reach the database in increasing order, through an outage, the
spill, the replay and the hand-over back to live writes (the Oracle sink's cursor treats
a seq below its NEXT_SEQ as already written, so a new row arriving late would be lost)."""

from __future__ import annotations

import sqlite3
import time

import numpy as np

from pipeline.common.settings import load_settings
from pipeline.writer.loop import Writer
from pipeline.writer.sinks.sqlite import SqliteSink
from shm import Consumer, Producer
from shm import layout as L
from tests.writer_helpers.util import db_counts


class OrderCheckingSink(SqliteSink):
    """The real SQLite sink, watched: every row written for the first time must come after
    every row of its stream written before (what a cursor-based sink requires)."""

    def __init__(self, *a, **k) -> None:
        super().__init__(*a, **k)
        self.seen: dict[int, set[int]] = {}
        self.top: dict[int, int] = {}
        self.violations: list[tuple[int, int, int]] = []

    def write(self, epoch, records, on_rejected=None):
        res = super().write(epoch, records, on_rejected)
        seen = self.seen.setdefault(epoch, set())
        for s in records["seq"].tolist():
            if s not in seen:
                if s < self.top.get(epoch, -1):
                    self.violations.append((epoch, s, self.top[epoch]))
                seen.add(s)
                self.top[epoch] = max(self.top.get(epoch, -1), s)
        return res


def _records(n: int) -> np.ndarray:
    recs = np.zeros(n, dtype=L.RECORD_DTYPE)
    recs["ts_us"] = time.time_ns() // 1000
    recs["plc_code"] = b"PLC1"
    recs["tag_address"] = b"D100"
    recs["quality"] = L.QUALITY_GOOD
    return recs


def test_seqs_reach_the_database_in_order_through_outage_replay_and_handover(ring_name, tmp_path):
    settings = load_settings(
        env={
            "RING_NAME": ring_name, "SQLITE_PATH": str(tmp_path / "t.db"), "BACKUP_FILE_PATH": str(tmp_path / "backup"),
            "BUFFER_BATCH_SIZE": "100", "BUFFER_BATCH_MAX": "400", "BUFFER_WRITE_INTERVAL": "0.01",
            "ORACLE_RETRY_MAX": "1", "SQLITE_BUSY_TIMEOUT": "0.05", "BACKUP_FILE_MAX_ROWS": "700",
            "DB_PROBE_MIN_INTERVAL": "0.05", "DB_PROBE_MAX_INTERVAL": "0.1",
        },
        env_file=None,
    )
    prod = Producer.open(ring_name, 4000)
    cons = Consumer.open(ring_name, wait=False)
    sink = OrderCheckingSink(settings.sqlite_path, settings.sqlite_busy_timeout_s)
    w = Writer(cons, sink, settings)
    w.start()
    try:
        def run(seconds: float, per_step: int) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                prod.publish(_records(per_step))
                if not w.step():
                    time.sleep(0.002)

        run(0.5, 20)
        locker = sqlite3.connect(settings.sqlite_path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        run(1.5, 20)  # outage: spilled to several files
        assert w.circuit.is_open and len(w.spool.pending) >= 2
        locker.execute("ROLLBACK")
        locker.close()
        run(3.0, 20)  # replay while live data keeps coming, then the hand-over
        deadline = time.monotonic() + 20
        while (w.spool.has_work() or cons.pending()) and time.monotonic() < deadline:
            if not w.step():
                time.sleep(0.002)
        assert not w.spool.has_work() and cons.pending() == 0
        total = prod.published
        assert db_counts(tmp_path / "t.db") == (total, total)
        assert sink.violations == []
        assert w.metrics.c.get("writer.rows_replayed") > 0
    finally:
        w.close()
        cons.close()
        prod.close()
