"""Store and forward with real processes: outages longer than the ring, replay after
SIGKILL, bad rows, corrupt and original-format backup files, a full disk, the prober."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time

import pytest

from tests.conftest import REQUIRE_ALL, run
from tests.writer_helpers.util import (
    backup_files,
    db_counts,
    db_path,
    db_seqs,
    finish,
    halt,
    log_text,
    producer_done,
    ring_fields,
    ring_value,
    start_producer,
    start_writer,
    wait_until,
)

FAST = {"ORACLE_RETRY_MAX": "1", "SQLITE_BUSY_TIMEOUT": "0.2", "DB_PROBE_MIN_INTERVAL": "0.2", "DB_PROBE_MAX_INTERVAL": "1.0", "BUFFER_WRITE_INTERVAL": "0.1"}


def _lock(db) -> sqlite3.Connection:
    """Another connection holding SQLite's write lock: the database is 'down' for the writer."""
    conn = sqlite3.connect(str(db), isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


def _unlock(conn: sqlite3.Connection) -> None:
    conn.execute("ROLLBACK")
    conn.close()


def _replayed(tmp_path) -> list[str]:
    d = tmp_path / "backup" / "replayed"
    return sorted(os.listdir(d)) if d.exists() else []


def _ready(writer, db) -> None:
    wait_until(lambda: db.exists() and "writing ring" in log_text(writer), 30, "writer ready")


def test_outage_longer_than_the_ring_loses_nothing_and_duplicates_nothing(ring_name, tmp_path):
    """A 2,000-record ring, 2,000 records/s, the database locked for ~5 s (5 rings' worth):
    everything reaches the table once, in order, after the replay."""
    db = db_path(tmp_path)
    total = 18_000
    prod = start_producer(ring_name, tmp_path, count=total, rate=2000, capacity=2000, batch=100)
    writer = start_writer(ring_name, tmp_path, **FAST)
    try:
        _ready(writer, db)
        wait_until(lambda: db_counts(db)[0] > 1000, 30, "first rows")
        locker = _lock(db)
        wait_until(lambda: ring_fields(ring_name)["writer.db_state"] in (2, 3), 20, "circuit open")
        time.sleep(5)
        f = ring_fields(ring_name)
        assert f["writer.rows_spilled"] > 4 * 2000
        assert f["writer.outage_started_us"] > 0 and f["writer.backup_files_pending"] >= 1
        _unlock(locker)
        assert producer_done(prod) == total
        wait_until(lambda: db_counts(db)[0] >= total, 60, "every record in the table")
        assert db_counts(db) == (total, total)
        assert db_seqs(db) == list(range(total))
        wait_until(lambda: ring_fields(ring_name)["writer.db_state"] == 1, 20, "state up")
        f = ring_fields(ring_name)
        assert f["consumer.lost"] == 0 and f["producer.overwritten"] == 0
        assert f["writer.backup_files_pending"] == 0 and f["writer.backup_rows_pending"] == 0
        assert f["writer.rows_replayed"] >= f["writer.rows_spilled"] > 0
        assert f["writer.outage_started_us"] == 0
        assert backup_files(tmp_path) == [] and _replayed(tmp_path)
        rc, log = finish(writer)
        assert rc == 0, log
    finally:
        halt(writer)
        halt(prod)


def test_writer_killed_during_replay_then_restarted_delivers_exactly_once(ring_name, tmp_path):
    db = db_path(tmp_path)
    total = 60_000
    env = dict(FAST, BACKUP_FILE_MAX_ROWS="4000", BUFFER_BATCH_MAX="2000")
    prod = start_producer(ring_name, tmp_path, count=0)
    writer = start_writer(ring_name, tmp_path, **env)
    try:
        _ready(writer, db)
        locker = _lock(db)
        halt(prod)
        prod = start_producer(ring_name, tmp_path, count=total, batch=1000)
        assert producer_done(prod) == total
        wait_until(lambda: ring_fields(ring_name)["consumer.committed"] == total, 60, "all spilled")
        assert len(backup_files(tmp_path)) >= 10
        _unlock(locker)
        wait_until(lambda: ring_fields(ring_name)["writer.replay_files_done"] >= 2, 60, "replay under way", step=0.005)
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
        assert backup_files(tmp_path), "replay finished before the kill; the test proves nothing"
        writer = start_writer(ring_name, tmp_path, **env)
        wait_until(lambda: not backup_files(tmp_path), 60, "replay finished after restart")
        assert db_counts(db) == (total, total)
        assert db_seqs(db) == list(range(total))
        rc, log = finish(writer)
        assert rc == 0, log
    finally:
        halt(writer)
        halt(prod)


def test_bad_rows_are_quarantined_while_the_good_rows_commit(ring_name, tmp_path):
    db = db_path(tmp_path)
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(str(db))
    conn.executescript(
        "CREATE TABLE TAG_DATA (TS INTEGER NOT NULL, PLC_CODE TEXT NOT NULL, TAG_ADDRESS TEXT NOT NULL,"
        " TAG_VALUE REAL CHECK (TAG_VALUE IS NULL OR TAG_VALUE < 1e9), QUALITY TEXT NOT NULL,"
        " RING_EPOCH INTEGER NOT NULL, SEQ INTEGER NOT NULL, PRIMARY KEY (RING_EPOCH, SEQ)) WITHOUT ROWID"
    )
    conn.close()
    prod = start_producer(ring_name, tmp_path, count=5000, batch=500, bad_every=100)
    writer = start_writer(ring_name, tmp_path)
    try:
        assert producer_done(prod) == 5000
        wait_until(lambda: ring_fields(ring_name)["consumer.committed"] == 5000, 30, "all committed")
        assert db_counts(db) == (4950, 4950)
        f = ring_fields(ring_name)
        assert f["writer.rows_quarantined"] == 50 and f["writer.rows_written"] == 4950
        assert f["writer.batches_failed"] == 0 and f["writer.rows_spilled"] == 0
        qdir = tmp_path / "backup" / "quarantine"
        [qfile] = list(qdir.iterdir())
        lines = qfile.read_text().splitlines()
        assert len(lines) == 51 and all("SQLITE_CONSTRAINT_CHECK" in line for line in lines[1:])
        # The operator corrects the values and writes the file back; the writer replays it.
        qfile.write_text(qfile.read_text().replace("1000000000000.0", "7.0"))
        out = run(["-m", "pipeline", "quarantine", "write-back", str(qfile)], tmp_path, BACKUP_FILE_PATH=str(tmp_path / "backup"))
        assert out.returncode == 0, out.stderr
        assert "wrote 50 rows" in out.stdout
        wait_until(lambda: db_counts(db)[0] == 5000, 30, "corrected rows replayed")
        conn = sqlite3.connect(str(db))
        assert conn.execute("SELECT COUNT(*) FROM TAG_DATA WHERE TAG_VALUE = 7.0 AND RING_EPOCH < 0").fetchone()[0] == 50
        conn.close()
        listed = run(["-m", "pipeline", "quarantine", "list"], tmp_path, BACKUP_FILE_PATH=str(tmp_path / "backup"))
        assert listed.returncode == 0 and "no quarantined rows" in listed.stdout
    finally:
        halt(writer)
        halt(prod)


ORIGINAL = (
    "timestamp,plc_code,tag_address,tag_value,quality\n"
    "2025-01-15T10:30:45.123,KRCWO12ELOA101,D100,1234.5,GOOD\n"
    "2025-01-15T10:30:45.123,KRCWO12ELOA101,D102,,BAD\n"
    "2025-01-15T10:30:46.123,KRCWO12ELOA101,D100,1235.5,UNCERTAIN\n"
)
CURRENT = (
    "timestamp,plc_code,tag_address,tag_value,quality,ring_epoch,seq\n"
    "2025-01-15T10:31:00.000001,PLC1,D100,1.0,GOOD,77,0\n"
    "2025-01-15T10:31:00.000002,PLC1,D100,2.0,GOOD,77,1,extra\n"
    "garbage \x01 line\n"
    "2025-01-15T10:31:00.000003,PLC1,D100,3.0,GOOD,77,2\n"
    "2025-01-15T10:31:00.000004,PLC1,D1"
)


def test_corrupt_truncated_and_original_format_backup_files_are_replayed(ring_name, tmp_path):
    db = db_path(tmp_path)
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "backup_20250115_103045.csv").write_text(ORIGINAL)
    (backup / "backup_20250115_103100.csv").write_text(CURRENT)
    prod = start_producer(ring_name, tmp_path, count=100)
    writer = start_writer(ring_name, tmp_path)
    try:
        assert producer_done(prod) == 100
        wait_until(lambda: db_counts(db)[0] == 105, 30, "live rows and the 5 good backup rows")
        wait_until(lambda: not backup_files(tmp_path), 30, "backup files moved to replayed/")
        conn = sqlite3.connect(str(db))
        rows = conn.execute("SELECT TS, TAG_ADDRESS, TAG_VALUE, QUALITY, RING_EPOCH, SEQ FROM TAG_DATA WHERE RING_EPOCH < 0 ORDER BY SEQ").fetchall()
        assert [(r[1], r[2], r[3], r[5]) for r in rows] == [("D100", 1234.5, "GOOD", 2), ("D102", None, "BAD", 3), ("D100", 1235.5, "UNCERTAIN", 4)]
        assert rows[0][0] == 1_736_937_045_123_000
        assert conn.execute("SELECT SEQ FROM TAG_DATA WHERE RING_EPOCH = 77 ORDER BY SEQ").fetchall() == [(0,), (2,)]
        conn.close()
        f = ring_fields(ring_name)
        assert f["writer.corrupt_lines"] == 3 and f["writer.rows_quarantined"] == 3
        [qfile] = list((backup / "quarantine").iterdir())
        q = qfile.read_text()
        assert q.count("CORRUPT") == 3 and "truncated" in q and "8 fields" in q
        assert sorted(_replayed(tmp_path)) == ["backup_20250115_103045.csv", "backup_20250115_103100.csv"]
        # Replaying the same files again (an operator copies them back) inserts nothing twice.
        rc, log = finish(writer)
        assert rc == 0, log
        shutil.copy(backup / "replayed" / "backup_20250115_103045.csv", backup / "backup_20250115_103045.csv")
        writer = start_writer(ring_name, tmp_path)
        wait_until(lambda: not backup_files(tmp_path), 30, "second replay")
        assert db_counts(db) == (105, 105)
        assert ring_fields(ring_name)["writer.rows_duplicate"] >= 3
    finally:
        halt(writer)
        halt(prod)


def _mount_tmpfs(path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    return r.returncode == 0


def test_full_backup_disk_keeps_records_in_the_ring_and_says_so(ring_name, tmp_path):
    backup = tmp_path / "backup"
    if not shutil.which("mount") or not _mount_tmpfs(backup, "256k"):
        msg = "cannot mount a tmpfs here (needs root and mount permission)"
        if REQUIRE_ALL:
            pytest.fail(msg + " and TAGPIPE_REQUIRE_ALL=1")
        pytest.skip(msg)
    db = db_path(tmp_path)
    prod = start_producer(ring_name, tmp_path, count=0, capacity=3000)
    writer = start_writer(ring_name, tmp_path, BACKUP_MIN_FREE_MB="1", **FAST)
    try:
        _ready(writer, db)
        locker = _lock(db)
        halt(prod)
        total = 12_000  # ~1 MB of CSV: four times what the 256 kB disk holds
        prod = start_producer(ring_name, tmp_path, count=total, rate=3000, capacity=3000, batch=100)
        wait_until(lambda: ring_fields(ring_name)["writer.disk_state"] == 2, 30, "disk state full")
        assert producer_done(prod) == total
        f = ring_fields(ring_name)
        assert f["writer.last_error_code"] == 3
        assert f["consumer.committed"] < total  # what did not fit stayed in the ring
        assert "BACKUP DISK FULL" in log_text(writer)
        assert "BACKUP_MIN_FREE_MB" in log_text(writer)  # the low-space warning came first
        _unlock(locker)
        wait_until(lambda: ring_fields(ring_name)["consumer.committed"] == total, 60, "ring drained once the database is back")
        f = ring_fields(ring_name)
        lost = f["consumer.lost"]
        assert lost > 0  # the ring overflowed while the disk was full: counted, not hidden
        rows, distinct = db_counts(db)
        assert rows == distinct == total - lost
        rc, log = finish(writer)
        assert rc == 0, log
    finally:
        halt(writer)
        halt(prod)
        subprocess.run(["umount", "-l", str(backup)], capture_output=True)


def test_prober_does_not_hammer_a_down_database(ring_name, tmp_path):
    db = db_path(tmp_path)
    prod = start_producer(ring_name, tmp_path, count=0)
    writer = start_writer(ring_name, tmp_path, ORACLE_RETRY_MAX="1", SQLITE_BUSY_TIMEOUT="0.1", DB_PROBE_MIN_INTERVAL="0.25", DB_PROBE_MAX_INTERVAL="1.0")
    try:
        _ready(writer, db)
        locker = _lock(db)
        halt(prod)
        prod = start_producer(ring_name, tmp_path, count=100_000, rate=5000, batch=250)
        wait_until(lambda: ring_fields(ring_name)["writer.outage_started_us"] > 0, 20, "circuit open")
        t0 = time.monotonic()
        time.sleep(6)
        f = ring_fields(ring_name)
        elapsed = time.monotonic() - t0
        probes = f["writer.probes"]
        # 0.25 + 0.5 + 1 + 1 + ... s (x0.8-1.2): about 6 in 6 s; a retry loop would make 60.
        assert 2 <= probes <= elapsed / 0.8 + 3, probes
        assert f["writer.batches_failed"] == 1  # batches after the first went straight to disk
        assert f["writer.rows_spilled"] > 10_000
        _unlock(locker)
        wait_until(lambda: ring_fields(ring_name)["writer.db_state"] == 1 and not backup_files(tmp_path), 30, "back up")
    finally:
        halt(writer)
        halt(prod)


def test_stop_while_database_down_spills_within_the_deadline_then_replays(ring_name, tmp_path):
    """The database is locked from the start; SIGTERM: the writer puts what was published in
    backup files within SHUTDOWN_TIMEOUT and exits 0; the next writer replays them."""
    db = db_path(tmp_path)
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(str(db))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    locker = _lock(db)
    prod = start_producer(ring_name, tmp_path, count=20_000, batch=1000)
    writer = start_writer(ring_name, tmp_path, SHUTDOWN_TIMEOUT="8", SQLITE_BUSY_TIMEOUT="0.5", BUFFER_WRITE_INTERVAL="30")
    try:
        assert producer_done(prod) == 20_000
        wait_until(lambda: "batch of" in log_text(writer) or "not available at start" in log_text(writer), 30, "first failure")
        t0 = time.monotonic()
        writer.send_signal(signal.SIGTERM)
        rc = writer.wait(20)
        assert rc == 0, log_text(writer)
        assert time.monotonic() - t0 < 8 + 3
        f = ring_fields(ring_name)
        assert f["consumer.committed"] == 20_000 and f["writer.rows_spilled"] == 20_000
        assert backup_files(tmp_path)
        _unlock(locker)
        writer = start_writer(ring_name, tmp_path)
        wait_until(lambda: db_counts(db) == (20_000, 20_000), 30, "replayed after restart")
        wait_until(lambda: not backup_files(tmp_path), 30, "files moved to replayed/")
    finally:
        halt(writer)
        halt(prod)


def test_database_disk_full_is_an_outage_and_nothing_is_lost(ring_name, tmp_path):
    """The database's own disk fills (the SQLite file on a 512 kB tmpfs, like a full
    tablespace): batches go to backup files; once the disk is enlarged they are replayed.
    Probes answer while writes fail, so the circuit flaps: its backoff must keep growing."""
    data = tmp_path / "data"
    if not shutil.which("mount") or not _mount_tmpfs(data, "512k"):
        msg = "cannot mount a tmpfs here (needs root and mount permission)"
        if REQUIRE_ALL:
            pytest.fail(msg + " and TAGPIPE_REQUIRE_ALL=1")
        pytest.skip(msg)
    db = db_path(tmp_path)
    total = 40_000
    prod = start_producer(ring_name, tmp_path, count=total, rate=4000, capacity=20_000, batch=200)
    writer = start_writer(ring_name, tmp_path, **FAST)
    try:
        wait_until(lambda: ring_value(ring_name, "writer.rows_spilled", 0) > 0, 60, "the database disk to fill and batches to spill")
        assert "full" in log_text(writer)
        time.sleep(4)  # the circuit flaps meanwhile: probes answer, writes fail
        probes = ring_fields(ring_name)["writer.probes"]
        assert probes <= 4 / 0.2 * 0.5, probes  # not every 0.2 s: the backoff kept growing
        assert producer_done(prod) == total
        r = subprocess.run(["mount", "-o", "remount,size=64m", str(data)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        wait_until(lambda: db_counts(db)[0] >= total, 60, "every record in the table after the disk grew")
        assert db_counts(db) == (total, total)
        assert db_seqs(db) == list(range(total))
        assert ring_fields(ring_name)["consumer.lost"] == 0
        rc, log = finish(writer)
        assert rc == 0, log
    finally:
        halt(writer)
        halt(prod)
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


def test_retry_waits_are_cut_short_before_the_ring_overflows(ring_name, tmp_path):
    """ORACLE_RETRY_MAX=6 would wait 1+2+4+8+16 s on one batch: far longer than a
    2,000-record ring lasts at 1,000 records/s. Past half full the batch is spilled."""
    db = db_path(tmp_path)
    prod = start_producer(ring_name, tmp_path, count=0, capacity=2000)
    writer = start_writer(ring_name, tmp_path, ORACLE_RETRY_MAX="6", SQLITE_BUSY_TIMEOUT="0.1", DB_PROBE_MIN_INTERVAL="5", DB_PROBE_MAX_INTERVAL="5")
    try:
        _ready(writer, db)
        locker = _lock(db)
        halt(prod)
        prod = start_producer(ring_name, tmp_path, count=8000, rate=1000, capacity=2000, batch=50)
        assert producer_done(prod) == 8000
        f = ring_fields(ring_name)
        assert f["consumer.lost"] == 0 and f["producer.overwritten"] == 0
        assert f["writer.batches_failed"] < 6  # gave up retrying early
        wait_until(lambda: ring_fields(ring_name)["writer.rows_spilled"] == 8000, 20, "everything spilled")
        _unlock(locker)
        wait_until(lambda: db_counts(db) == (8000, 8000), 30, "replayed")
    finally:
        halt(writer)
        halt(prod)
