"""The original design written for the side-by-side benchmark counts what it drops and
stores everything it does not drop (otherwise its lossless rate would mean nothing)."""

from __future__ import annotations

import sqlite3

from bench.original_design import Buffer, run


def test_buffer_drops_the_oldest_and_counts_them():
    buf = Buffer(maxlen=5)
    buf.extend([1, 2, 3])
    buf.extend([4, 5, 6, 7])
    assert buf.dropped == 2
    assert buf.take(10) == [3, 4, 5, 6, 7]
    assert buf.take(10) == [] and buf.dropped == 2


def test_a_short_run_stores_every_value_once_with_the_original_columns(tmp_path):
    db = str(tmp_path / "o.db")
    r = run(2_000.0, 1.2, db, drain_s=20.0)
    assert r["produced"] == 2_400 and r["dropped"] == 0 and r["undrained"] == 0
    assert r["rows"] == 2_400
    with sqlite3.connect(db) as conn:
        cols = [c[1] for c in conn.execute("PRAGMA table_info(TAG_DATA)")]
        distinct = conn.execute("SELECT COUNT(DISTINCT PLC_CODE || TAG_ADDRESS) FROM TAG_DATA").fetchone()[0]
    assert cols == ["TS", "PLC_CODE", "TAG_ADDRESS", "TAG_VALUE", "QUALITY"]
    assert distinct == 1_000


def test_rates_step_up_until_a_loss_then_bisect():
    from bench.bench_original import next_rate

    assert next_rate(0, None, 100_000, 5_000) == 100_000
    assert next_rate(100_000, None, 100_000, 5_000) == 150_000
    assert next_rate(100_000, 150_000, 100_000, 5_000) == 125_000
    assert next_rate(0, 100_000, 100_000, 5_000) == 50_000
