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


# --- a vanished database (issue 12 item 1) --------------------------------------------------
import os  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402

from pipeline.writer.sinks.base import SinkGoneError  # noqa: E402
from pipeline.writer.sinks.sqlite import MARKER_NAME  # noqa: E402


def _count(path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0]


def _opened(tmp_path):
    (tmp_path / "data").mkdir(exist_ok=True)
    path = str(tmp_path / "data" / "t.db")
    sink = SqliteSink(path, marker_dir=str(tmp_path / "backup"))
    sink.open()
    assert sink.write(7, records(range(0, 10))).written == 10
    return sink, path


@pytest.mark.parametrize("how", ["delete", "rename", "remove folder"])
def test_a_database_file_gone_while_open_fails_the_commit_and_is_never_created_again(tmp_path, how):
    sink, path = _opened(tmp_path)
    if how == "delete":
        os.unlink(path)
    elif how == "rename":
        os.rename(path, path + ".moved")
    else:
        shutil.rmtree(tmp_path / "data")
    # Before: the commit went into the unlinked file and counted as written.
    with pytest.raises(SinkGoneError, match="deleted or renamed"):
        sink.write(7, records(range(10, 20)))
    sink.close()
    again = SqliteSink(path, marker_dir=str(tmp_path / "backup"))
    with pytest.raises(SinkGoneError, match="missing, but this writer created it before"):
        again.open()
    assert not again.probe()
    assert not os.path.exists(path)  # no new empty database
    if how == "rename":
        os.rename(path + ".moved", path)  # the operator restores the file
        again.open()
        # The refused commit may have reached the file (its -wal stayed at the path): the
        # second write then finds the rows as duplicates; either way each row is there once.
        assert again.write(7, records(range(10, 20))).total == 10
        again.close()
        assert _count(path) == 20


def test_a_database_replaced_by_another_file_fails_the_commit_then_the_new_file_is_used(tmp_path):
    sink, path = _opened(tmp_path)
    shutil.copy(path, path + ".copy")
    os.replace(path + ".copy", path)  # a restore from a copy: same content, another inode
    with pytest.raises(SinkGoneError, match="replaced by another file"):
        sink.write(7, records(range(10, 20)))
    sink.open()
    assert sink.write(7, records(range(10, 20))).total == 10
    sink.close()
    assert _count(path) == 20


def test_a_database_replaced_by_one_without_the_table_is_refused(tmp_path):
    sink, path = _opened(tmp_path)
    sink.close()
    os.unlink(path)
    sqlite3.connect(path).close()  # an empty SQLite file where ours was
    with pytest.raises(SinkGoneError, match="no TAG_DATA table"):
        sink.open()
    assert not sink.probe()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0


def test_a_deleted_wal_fails_the_commit_and_nothing_committed_before_is_lost(tmp_path):
    sink, path = _opened(tmp_path)
    os.unlink(path + "-wal")
    with pytest.raises(SinkGoneError, match="-wal was deleted"):
        sink.write(7, records(range(10, 20)))
    sink.open()  # a fresh -wal: the database itself is still there
    assert sink.write(7, records(range(10, 20))).total == 10
    sink.close()
    assert _count(path) == 20


def test_the_marker_is_written_once_and_an_existing_database_is_adopted(tmp_path):
    path = str(tmp_path / "t.db")
    sqlite3.connect(path).close()  # made before this version wrote markers
    sink = SqliteSink(path)
    sink.open()
    sink.close()
    marker = tmp_path / MARKER_NAME
    assert marker.read_text().splitlines() == [os.path.abspath(path)]
    sink.open()
    sink.close()
    assert marker.read_text().splitlines() == [os.path.abspath(path)]
    # Removing the line is the operator's explicit "start a new empty database here".
    os.unlink(path)
    marker.write_text("")
    sink.open()
    sink.close()
    assert _count(path) == 0
