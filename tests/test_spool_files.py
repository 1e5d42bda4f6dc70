"""Backup files read back without trust, quarantine write-back, the prober's backoff,
retention of replayed files (in-process, real files)."""

from __future__ import annotations

import os
import time

import numpy as np

from pipeline.writer import backup as B
from pipeline.writer import records as R
from pipeline.writer.quarantine import Quarantine, parse_corrected, write_back
from pipeline.writer.sinks.base import RowError
from pipeline.writer.circuit import Prober
from pipeline.writer.spool import Spool
from shm import layout as L


def _recs(n: int, start: int = 0) -> np.ndarray:
    return R.make_records(
        [1_736_937_045_123_456 + i for i in range(n)], ["KRCWO12ELOA101"] * n, ["D100"] * n,
        [None if i % 4 == 0 else i * 1.5 for i in range(n)], [L.QUALITY_BAD if i % 4 == 0 else L.QUALITY_GOOD for i in range(n)],
        list(range(start, start + n)),
    )


def test_backup_file_round_trips_rows_with_identity(tmp_path):
    w = B.BackupWriter(str(tmp_path))
    w.append(42, _recs(10))
    w.close()
    text = (tmp_path / w.name).read_text().splitlines()
    assert text[0] == B.HEADER
    assert text[1] == "2025-01-15T10:30:45.123456,KRCWO12ELOA101,D100,,BAD,42,0"
    assert text[2] == "2025-01-15T10:30:45.123457,KRCWO12ELOA101,D100,1.5,GOOD,42,1"
    chunk = B.read_chunk(str(tmp_path / w.name))
    assert chunk.eof and not chunk.bad
    [(epoch, recs)] = chunk.groups
    assert epoch == 42
    orig = _recs(10)
    assert (recs["ts_us"] == orig["ts_us"]).all() and (recs["seq"] == orig["seq"]).all()
    assert (recs["flags"][::4] == L.FLAG_NULL).all()


def test_names_sort_by_time_then_suffix_and_never_go_back(tmp_path):
    t = time.time()
    a = B.BackupWriter(str(tmp_path), now=t)
    b = B.BackupWriter(str(tmp_path), now=t)
    c = B.BackupWriter(str(tmp_path), now=t - 3600, after=b.name)  # clock went back an hour
    names = [x.name for x in (a, b, c)]
    for x in (a, b, c):
        x.close()
    assert names[1] == names[0][:-4] + "_2.csv"
    assert B.list_backups(str(tmp_path)) == names


def test_corrupt_and_truncated_lines_come_back_as_bad_lines(tmp_path):
    p = tmp_path / "backup_20250115_103045.csv"
    good = "2025-01-15T10:30:45.123456,PLC1,D100,1.5,GOOD,7,{}\n"
    p.write_bytes(
        (B.HEADER + "\n" + good.format(1) + "not,a,row\n" + "2025-13-45T99:00:00,PLC1,D100,1,GOOD,7,3\n"
         + good.format(4) + "2025-01-15T10:30:45,PLC1,D100,1,EXCELLENT,7,5\n"
         + "2025-01-15T10:30:45,PLC_CODE_TOO_LONG_X,D100,1,GOOD,7,6\n").encode()
        + "2025-01-15T10:30:45,PLC\u00e91,D100,1,GOOD,7,7\n".encode("utf-8")
        + good.format(8).encode() + b"2025-01-15T10:30:45.1,PLC1,D1"
    )
    chunk = B.read_chunk(str(p))
    assert [int(s) for _, r in chunk.groups for s in r["seq"]] == [1, 4, 8]
    assert [b.line_no for b in chunk.bad] == [3, 4, 6, 7, 8, 10]
    assert "truncated" in chunk.bad[-1].reason
    assert chunk.eof


def test_original_format_rows_get_a_stable_synthetic_identity(tmp_path):
    p = tmp_path / "backup_20250115_103045.csv"
    p.write_text(
        "timestamp,plc_code,tag_address,tag_value,quality\n"
        "2025-01-15T10:30:45.123,KRCWO12ELOA101,D100,1234.5,GOOD\n"
        "2025-01-15T10:30:45.123,KRCWO12ELOA101,D102,,BAD\n"
    )
    c1 = B.read_chunk(str(p))
    c2 = B.read_chunk(str(p))
    [(epoch, recs)] = c1.groups
    assert epoch == c2.groups[0][0] == R.synthetic_epoch(p.name)
    assert R.is_synthetic(epoch) and R.signed64(epoch) < 0
    assert recs["seq"].tolist() == [2, 3]  # line numbers
    assert recs["ts_us"][0] == 1_736_937_045_123_000
    assert recs["value"][0] == 1234.5 and recs["flags"][1] == L.FLAG_NULL


def test_failed_append_leaves_no_partial_line(tmp_path):
    w = B.BackupWriter(str(tmp_path))
    w.append(1, _recs(3))
    size = w.size
    os.close(w._fd)  # make the next write fail
    try:
        w.append(1, _recs(3, 3))
    except OSError:
        pass
    assert os.path.getsize(w.path) == size


def test_quarantine_then_corrected_file_written_back_for_replay(tmp_path):
    q = Quarantine(str(tmp_path / "backup" / "quarantine"))
    recs = _recs(3)
    recs["value"][1] = 1e12
    q.add_rows(99, recs[1:2], [RowError(0, "SQLITE_CONSTRAINT_CHECK", "CHECK constraint failed")], "ring")
    q.add_lines([B.BadLine(5, "2025-01-15T10:30:45,PLC1,D100,2.5,GOOD,7", "6 fields")], "backup_x.csv")
    [qfile] = list((tmp_path / "backup" / "quarantine").iterdir())
    rows, problems = parse_corrected(str(qfile))
    assert len(rows) == 1 and len(problems) == 1  # the corrupt line needs fixing first
    name, n, problems = write_back(str(qfile), str(tmp_path / "backup"))
    assert name is None and n == 0
    text = qfile.read_text().replace("1000000000000.0", "1.5")
    text = text.replace("2025-01-15T10:30:45,PLC1,D100,2.5,GOOD,7", "2025-01-15T10:30:45,PLC1,D100,2.5,GOOD")
    qfile.write_text(text)
    name, n, problems = write_back(str(qfile), str(tmp_path / "backup"))
    assert (n, problems) == (2, [])
    chunk = B.read_chunk(str(tmp_path / "backup" / name))
    [(epoch, back)] = chunk.groups
    assert R.is_synthetic(epoch) and back["value"].tolist() == [1.5, 2.5]
    assert (tmp_path / "backup" / "quarantine" / "written-back" / qfile.name).exists()


def test_prober_backs_off_exponentially_up_to_the_bound():
    calls = []
    p = Prober(lambda: calls.append(time.monotonic()) or False, 0.05, 0.2, rand=lambda: 0.5)
    p.start()
    time.sleep(1.2)
    p.stop()
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    # 0.05, 0.1, 0.2, 0.2, ... : about 7 probes in 1.2 s, never a burst
    assert 4 <= len(calls) <= 9, calls
    assert all(g >= 0.09 for g in gaps)
    assert p.probes == len(calls)


def test_prober_stops_once_the_database_answers():
    answers = iter([False, False, True])
    p = Prober(lambda: next(answers), 0.02, 0.05)
    p.start()
    deadline = time.monotonic() + 5
    while not p.answered() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.answered() and p.probes == 3 and not p.running()


def test_replayed_files_removed_after_retention(tmp_path):
    s = Spool(str(tmp_path), 1000, retention_s=3600)
    os.makedirs(s.replayed_dir)
    old = os.path.join(s.replayed_dir, "backup_20250101_000000.csv")
    new = os.path.join(s.replayed_dir, "backup_20250102_000000.csv")
    for p in (old, new):
        open(p, "w").close()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert s.remove_expired() == 1
    assert not os.path.exists(old) and os.path.exists(new)


def test_replay_skips_a_file_that_disappeared(tmp_path):
    from pipeline.writer.replay import Replay

    s = Spool(str(tmp_path), 1000, 3600)
    w = B.BackupWriter(str(tmp_path))
    w.append(5, _recs(3))
    w.close()
    s.scan()
    os.unlink(w.path)

    class Nothing:
        def __getattr__(self, name):
            raise AssertionError(f"{name} must not be used")

    assert Replay(s, Nothing(), Nothing(), Nothing(), 100, lambda *a: None, lambda *a: None).step() == 1
    assert s.pending == [] and s.totals()[:2] == (0, 0)


def _one_line_chunk(tmp_path, line: str) -> B.Chunk:
    p = tmp_path / "backup_20250115_103000.csv"
    p.write_text(B.HEADER + "\n" + line + "\n")
    return B.read_chunk(str(p))


def test_backup_reader_refuses_values_that_are_not_finite_numbers_in_the_writers_syntax(tmp_path):
    # Before: inf / 1e400 / nan with GOOD quality were stored as NULL GOOD, and 1_0 as 10.
    for value in ("inf", "-inf", "nan", "NaN", "1e400", "-1e400", "1_0", "0x10", "+-1", "１２", "1,5", " 1.0e", "Infinity"):
        chunk = _one_line_chunk(tmp_path, f'2025-01-15T10:30:45.123456,PLC1,D100,"{value}",GOOD,42,1')
        assert chunk.rows == 0 and len(chunk.bad) == 1, value
        assert "tag_value" in chunk.bad[0].reason or value == "１２", chunk.bad[0].reason
    # What the writer itself writes (repr of a finite float, empty for NULL) is read back exactly.
    for text, expected in (("1.5", 1.5), ("-0.0", -0.0), ("1e+300", 1e300), ("1.5e-07", 1.5e-07), ("12", 12.0), ("", None)):
        chunk = _one_line_chunk(tmp_path, f"2025-01-15T10:30:45.123456,PLC1,D100,{text},GOOD,42,1")
        assert not chunk.bad, (text, chunk.bad)
        [(_, recs)] = chunk.groups
        if expected is None:
            assert recs["flags"][0] & L.FLAG_NULL
        else:
            assert recs["value"][0] == expected and not recs["flags"][0] & L.FLAG_NULL


def test_backup_reader_refuses_nanosecond_times_and_loose_integers(tmp_path):
    bad = (
        "2025-01-15T10:30:45.123456789,PLC1,D100,1.0,GOOD,42,1",  # nanoseconds: was silently cut to us
        "2025-01-15T10:30:45.1234567,PLC1,D100,1.0,GOOD,42,1",
        "2025-01-15T10:30:45.123456+02:00,PLC1,D100,1.0,GOOD,42,1",  # the writer writes UTC, naive
        "2025-01-15T10:30:45.123456,PLC1,D100,1.0,GOOD,4_2,1",
        "2025-01-15T10:30:45.123456,PLC1,D100,1.0,GOOD,42,+1",
        "2025-01-15T10:30:45.123456,PLC1,D100,1.0,GOOD,42, 1",
        "2025-01-15T10:30:61.000000,PLC1,D100,1.0,GOOD,42,1",
    )
    for line in bad:
        chunk = _one_line_chunk(tmp_path, line)
        assert chunk.rows == 0 and len(chunk.bad) == 1, line
    # The original design's millisecond form and a spreadsheet's space for the T are read.
    for line, us in (("2025-01-15T10:30:45.123,PLC1,D100,1.0,GOOD", 123_000), ("2025-01-15 10:30:45.5,PLC1,D100,1.0,GOOD", 500_000)):
        chunk = _one_line_chunk(tmp_path, line)
        assert not chunk.bad, chunk.bad
        [(_, recs)] = chunk.groups
        assert int(recs["ts_us"][0]) == 1_736_937_045_000_000 + us
