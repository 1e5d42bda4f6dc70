"""Batch triggers and the adaptive batch limit: the policy alone, then a real ring + SQLite."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.common.settings import load_settings
from pipeline.writer.batching import BatchPolicy
from pipeline.writer.loop import Writer
from pipeline.writer.sinks.sqlite import SqliteSink
from pipeline.common.telemetry import open_consumer, open_producer
from shm import layout as L
from tests.writer_helpers.util import db_counts


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_batch_goes_when_size_reached_or_interval_passed():
    clock = FakeClock()
    p = BatchPolicy(500, 20_000, 0.5, 100_000, clock)
    assert not p.due(0)
    assert p.due(500)  # size trigger
    assert not p.due(499)  # not yet: interval not passed since the policy started
    p.taken(500, 0)
    p.limit = 4000  # a grown limit does not delay the next batch: the trigger stays 500
    assert p.due(500)
    clock.t += 0.49
    assert not p.due(1)
    clock.t += 0.02
    assert p.due(1)  # time trigger
    p.taken(1, 0)
    assert not p.due(1)


def test_limit_grows_under_backlog_up_to_the_bound_and_shrinks_back():
    p = BatchPolicy(500, 4000, 0.5, 100_000, FakeClock())
    seen = []
    for _ in range(6):
        seen.append(p.limit)
        p.taken(p.limit, 50_000)
    assert seen == [500, 1000, 2000, 4000, 4000, 4000]
    p.taken(4000, 1500)  # less than half a batch left: halve
    assert p.limit == 2000
    p.taken(1500, 0)  # caught up: back to the normal size
    assert p.limit == 500


def test_limit_is_capped_at_half_the_ring():
    p = BatchPolicy(500, 20_000, 0.5, 10_000, FakeClock())
    assert p.batch_max == 5000


def _records(n: int) -> np.ndarray:
    recs = np.zeros(n, dtype=L.RECORD_DTYPE)
    recs["ts_us"] = 1_700_000_000_000_000
    recs["value"] = np.arange(n)
    recs["plc_code"] = b"PLC1"
    recs["tag_address"] = b"D100"
    recs["quality"] = L.QUALITY_GOOD
    return recs


@pytest.fixture
def rig(ring_name, tmp_path):
    settings = load_settings(
        env={
            "RING_NAME": ring_name,
            "SQLITE_PATH": str(tmp_path / "t.db"),
            "BACKUP_FILE_PATH": str(tmp_path / "backup"),
            "BUFFER_BATCH_SIZE": "500",
            "BUFFER_BATCH_MAX": "8000",
            "BUFFER_WRITE_INTERVAL": "0.3",
        },
        env_file=None,
    )
    prod = open_producer(ring_name, 100_000)
    cons = open_consumer(ring_name, wait=False)
    w = Writer(cons, SqliteSink.from_settings(settings), settings)
    w.start()
    yield prod, cons, w, tmp_path / "t.db"
    w.close()
    cons.close()
    prod.close()


def test_real_ring_size_trigger_then_time_trigger(rig):
    prod, cons, w, db = rig
    prod.publish(_records(700))
    w.batching.last_batch = w.clock()  # start the interval now
    w.step()  # 700 >= 500: one full batch goes at once
    assert db_counts(db) == (500, 500)
    assert w.consumer.committed == 500
    w.step()  # 200 wait, interval not passed: nothing
    assert db_counts(db)[0] == 500
    import time

    time.sleep(0.35)
    w.step()
    assert db_counts(db) == (700, 700)


def test_real_ring_batches_grow_under_backlog_and_shrink_back(rig):
    prod, cons, w, db = rig
    prod.publish(_records(40_000))
    sizes = []
    while cons.committed < 40_000:
        before = cons.committed
        w.step()
        sizes.append(cons.committed - before)
    assert db_counts(db) == (40_000, 40_000)
    assert sizes[:5] == [500, 1000, 2000, 4000, 8000]
    assert max(sizes) == 8000
    assert w.batching.limit == 500  # back to the normal size once the backlog was gone
    f = w.metrics.c
    assert f.get("writer.batch_limit") == 500
    assert f.get("writer.rows_written") == 40_000
