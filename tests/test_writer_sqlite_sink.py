"""The SQLite sink on its own: multi-row statements keep exact counts and per-row rejection."""

from __future__ import annotations

import sqlite3

import numpy as np

from pipeline.writer.sinks.sqlite import ROWS_PER_STATEMENT, TABLE, SqliteSink
from shm.layout import QUALITY_GOOD, RECORD_DTYPE


def records(seqs) -> np.ndarray:
    recs = np.zeros(len(seqs), dtype=RECORD_DTYPE)
    recs["seq"] = seqs
    recs["ts_us"] = 1_700_000_000_000_000 + np.asarray(seqs, dtype=np.int64)
    recs["value"] = np.asarray(seqs, dtype=np.float64) * 0.5
    recs["plc_code"] = b"KRCWO12ELOA101"
    recs["tag_address"] = b"D100"
    recs["quality"] = QUALITY_GOOD
    return recs


def test_batch_across_statement_boundaries_counts_written_duplicates_and_rejected(tmp_path):
    path = str(tmp_path / "t.db")
    sink = SqliteSink(path)
    sink.open()
    # The table refuses negative values, as a plant's CHECK constraint might.
    with sqlite3.connect(path) as conn:
        conn.execute(f"DROP VIEW IF EXISTS {TABLE}_LOCAL")
        conn.execute(f"ALTER TABLE {TABLE} RENAME TO OLD")
        ddl = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'OLD'").fetchone()[0]
        conn.execute(ddl.replace("OLD", TABLE, 1).replace("TAG_VALUE REAL", "TAG_VALUE REAL CHECK (TAG_VALUE >= 0)"))
        conn.execute("DROP TABLE OLD")
    sink.close()
    sink = SqliteSink(path)
    sink.open()
    try:
        n = 2 * ROWS_PER_STATEMENT + 37  # two full statements and a remainder
        first = records(range(0, 60))
        assert sink.write(7, first).written == 60
        batch = records(range(0, n))  # rows 0..59 are already there
        bad = [ROWS_PER_STATEMENT + 30, n - 2]  # one in a full statement, one in the remainder
        batch["value"][bad] = -1.0
        seen = []
        res = sink.write(7, batch, lambda rows, errors: seen.append((rows["seq"].tolist(), [e.index for e in errors])))
        assert sorted(r.index for r in res.rejected) == bad
        assert seen == [([int(batch["seq"][i]) for i in bad], bad)]
        assert res.duplicates == 60
        assert res.written == n - 60 - len(bad)
        with sqlite3.connect(path) as conn:
            got = [s for (s,) in conn.execute(f"SELECT SEQ FROM {TABLE} WHERE RING_EPOCH = 7 ORDER BY SEQ")]
        assert got == [s for s in range(n) if s not in bad]
    finally:
        sink.close()


def test_flat_row_values_lays_rows_out_in_column_order_with_nulls():
    from pipeline.writer.records import ROW_WIDTH, flat_row_values
    from shm.layout import FLAG_NULL, QUALITY_BAD

    recs = records([5, 6, 7])
    recs["value"][1] = np.nan
    recs["quality"][2] = QUALITY_BAD
    recs["flags"][0] = FLAG_NULL
    recs["tag_address"][2] = b"D7"
    flat = flat_row_values(recs, -3)
    assert len(flat) == 3 * ROW_WIDTH
    rows = [tuple(flat[i : i + ROW_WIDTH]) for i in range(0, len(flat), ROW_WIDTH)]
    ts0 = 1_700_000_000_000_000
    assert rows == [
        (ts0 + 5, "KRCWO12ELOA101", "D100", None, "GOOD", -3, 5),
        (ts0 + 6, "KRCWO12ELOA101", "D100", None, "GOOD", -3, 6),
        (ts0 + 7, "KRCWO12ELOA101", "D7", None, "BAD", -3, 7),
    ]
    recs["flags"][0] = 0
    assert flat_row_values(recs[:1], 1)[3] == 2.5
