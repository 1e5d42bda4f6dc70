"""The writer's storage taken away while a real writer runs: the SQLite file deleted,
renamed or replaced, its folder removed; the backup folder made read-only. Nothing may
be lost silently and health must say why (real processes, real files, a real tmpfs)."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time

import pytest

from pipeline.common import telemetry
from pipeline.writer.sinks.sqlite import MARKER_NAME
from tests.conftest import REQUIRE_ALL
from tests.writer_helpers.util import (
    db_counts,
    db_path,
    finish,
    halt,
    log_text,
    producer_done,
    ring_fields,
    start_producer,
    start_writer,
    wait_until,
)

FAST = {"ORACLE_RETRY_MAX": "1", "SQLITE_BUSY_TIMEOUT": "0.2", "DB_PROBE_MIN_INTERVAL": "0.2", "DB_PROBE_MAX_INTERVAL": "0.5",
        "BUFFER_WRITE_INTERVAL": "0.1"}


def _checks(ring: str) -> dict[str, str]:
    reading = telemetry.read(ring, telemetry.Thresholds())
    return {c.code: c.message for c in reading.health.checks}, reading.health.status


def _ready(writer, db) -> None:
    wait_until(lambda: db.exists() and "writing ring" in log_text(writer), 30, "writer ready")


@pytest.mark.parametrize("how", ["rename", "delete"])
def test_database_file_gone_while_the_writer_runs_is_an_outage_and_loses_nothing(ring_name, tmp_path, how):
    """2,000 records/s; the file is renamed (or deleted) mid-run. Before: the writer kept
    committing into the unlinked file, healthy, and on restart made a new empty database.
    Now: the rows after the deletion go to backup files, health is unhealthy with the
    reason, no new database appears; when the operator restores the file (rename) or
    re-initialises on purpose (delete: removes the marker line), everything is replayed."""
    db = db_path(tmp_path)
    total = 12_000
    prod = start_producer(ring_name, tmp_path, count=total, rate=2000, capacity=20_000, batch=100)
    writer = start_writer(ring_name, tmp_path, **FAST)
    try:
        _ready(writer, db)
        wait_until(lambda: db_counts(db)[0] > 1000, 30, "first rows")
        if how == "rename":
            os.rename(db, str(db) + ".moved")
        else:
            before = db_counts(db)[0]
            os.unlink(db)
        wait_until(lambda: ring_fields(ring_name)["writer.last_error_code"] == telemetry.ERR_DB_GONE, 20, "outage: database gone")
        checks, status = _checks(ring_name)
        assert status == "unhealthy" and "database_gone" in checks, checks
        assert "values go to backup files" in checks["database_gone"]
        assert producer_done(prod) == total
        wait_until(lambda: ring_fields(ring_name)["consumer.committed"] == total, 30, "every record durable (backup files)")
        time.sleep(1.0)  # probes keep failing: still no database at the path
        assert not db.exists()
        f = ring_fields(ring_name)
        assert f["writer.rows_spilled"] > 0 and f["consumer.lost"] == 0
        assert "was deleted or renamed while open" in log_text(writer)
        if how == "rename":
            os.rename(str(db) + ".moved", db)  # the operator puts the file back
            expected = total
        else:
            (tmp_path / "backup" / MARKER_NAME).write_text("")  # explicit re-initialisation
            expected = total - before  # what was deleted with the file is the operator's doing
        wait_until(lambda: db_counts(db)[0] >= expected and ring_fields(ring_name)["writer.backup_files_pending"] == 0, 60,
                   "backups replayed into the restored database")
        rows, distinct = db_counts(db)
        assert rows == distinct
        if how == "rename":
            assert rows == total
        else:
            # Nothing committed after the deletion was lost: the new file holds every
            # record from the first one the deleted file did not keep.
            assert expected <= rows <= total
        wait_until(lambda: "database_gone" not in _checks(ring_name)[0], 20, "health clears once the file is back")
        rc, log = finish(writer)
        assert rc == 0, log
    finally:
        halt(writer)
        halt(prod)


def test_restart_with_the_database_missing_does_not_create_an_empty_one(ring_name, tmp_path):
    db = db_path(tmp_path)
    prod = start_producer(ring_name, tmp_path, count=500, capacity=20_000)
    writer = start_writer(ring_name, tmp_path, **FAST)
    try:
        _ready(writer, db)
        wait_until(lambda: db_counts(db)[0] == 500, 30, "rows")
        rc, log = finish(writer)
        assert rc == 0, log
        shutil.rmtree(db.parent)  # the data folder is gone (volume not mounted)
        writer = start_writer(ring_name, tmp_path, **FAST)
        wait_until(lambda: "missing, but this writer created it before" in log_text(writer), 30, "outage at start")
        time.sleep(1.0)
        assert not db.exists()
        checks, status = _checks(ring_name)
        assert status == "unhealthy" and "database_gone" in checks, checks
    finally:
        halt(writer)
        halt(prod)


def test_database_replaced_while_the_writer_runs_continues_in_the_new_file_with_every_record(ring_name, tmp_path):
    db = db_path(tmp_path)
    total = 8_000
    prod = start_producer(ring_name, tmp_path, count=total, rate=2000, capacity=20_000, batch=100)
    writer = start_writer(ring_name, tmp_path, **FAST)
    try:
        _ready(writer, db)
        wait_until(lambda: db_counts(db)[0] > 1000, 30, "first rows")
        # A restore from a copy: another inode at the path, holding TAG_DATA.
        src = sqlite3.connect(str(db))
        dst = sqlite3.connect(str(db) + ".copy")
        src.backup(dst)
        src.close()
        dst.close()
        os.replace(str(db) + ".copy", db)
        wait_until(lambda: "was replaced by another file" in log_text(writer), 20, "replacement seen")
        assert producer_done(prod) == total
        wait_until(lambda: db_counts(db)[0] >= total, 60, "every record in the new file")
        assert db_counts(db) == (total, total)
        rc, log = finish(writer)
        assert rc == 0, log
    finally:
        halt(writer)
        halt(prod)


def _lock(db) -> sqlite3.Connection:
    conn = sqlite3.connect(str(db), isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


def _mount(args: list[str]) -> bool:
    return shutil.which("mount") is not None and subprocess.run(["mount", *args], capture_output=True).returncode == 0


def test_read_only_backup_folder_keeps_records_in_the_ring_and_says_why(ring_name, tmp_path):
    """The database down and the backup folder's file system read-only (EROFS). Before:
    disk_state stayed "ok" and health said "values go to backup files". Now: disk state
    "unwritable" with the errno text, unhealthy, records wait in the ring; once the folder
    is writable again everything is delivered."""
    backup = tmp_path / "backup"
    backup.mkdir()
    if not _mount(["-t", "tmpfs", "-o", "size=64m", "tmpfs", str(backup)]):
        msg = "cannot mount a tmpfs here (needs root and mount permission)"
        if REQUIRE_ALL:
            pytest.fail(msg + " and TAGPIPE_REQUIRE_ALL=1")
        pytest.skip(msg)
    db = db_path(tmp_path)
    prod = start_producer(ring_name, tmp_path, count=0, capacity=20_000)
    writer = start_writer(ring_name, tmp_path, BACKUP_MIN_FREE_MB="1", **FAST)
    locker = None
    try:
        _ready(writer, db)
        halt(prod)
        assert _mount(["-o", "remount,ro", str(backup)])
        locker = _lock(db)
        total = 4_000
        prod = start_producer(ring_name, tmp_path, count=total, rate=2000, capacity=20_000, batch=100)
        wait_until(lambda: ring_fields(ring_name)["writer.disk_state"] == 3, 30, "disk state unwritable")
        checks, status = _checks(ring_name)
        assert status == "unhealthy" and "disk_unwritable" in checks, checks
        assert "EROFS" in checks["disk_unwritable"] and "Read-only file system" in checks["disk_unwritable"]
        assert "values go to backup files" not in " ".join(checks.values()), checks
        assert "wait in the ring" in checks.get("database_down", ""), checks
        reading = telemetry.read(ring_name, telemetry.Thresholds())
        assert reading.figures.writer_state.disk_state == "unwritable"
        assert reading.figures.writer_state.disk_error == "EROFS: Read-only file system"
        assert producer_done(prod) == total
        assert ring_fields(ring_name)["consumer.committed"] < total  # they wait in the ring
        assert "BACKUP FOLDER UNWRITABLE" in log_text(writer)
        assert _mount(["-o", "remount,rw", str(backup)])
        wait_until(lambda: ring_fields(ring_name)["writer.disk_state"] == 0, 30, "disk state ok again")
        locker.execute("ROLLBACK")
        locker.close()
        locker = None
        wait_until(lambda: db_counts(db)[0] >= total, 60, "every record in the database")
        f = ring_fields(ring_name)
        assert f["consumer.lost"] == 0 and db_counts(db) == (total, total)
        assert "disk_unwritable" not in _checks(ring_name)[0]
        rc, log = finish(writer)
        assert rc == 0, log
    finally:
        if locker is not None:
            locker.close()
        halt(writer)
        halt(prod)
        subprocess.run(["umount", "-l", str(backup)], capture_output=True)


def test_every_data_file_is_0640_and_every_folder_0750_whatever_the_umask(ring_name, tmp_path):
    """A writer started with umask 000 (some service managers do): before, the database
    and its -wal/-shm were created 0644 (world-readable) while backups were 0640."""
    import stat
    import sys

    from tests.writer_helpers.util import spawn, writer_env

    db = db_path(tmp_path)
    backup = tmp_path / "backup"
    backup.mkdir(mode=0o700)
    backup.chmod(0o700)  # an existing folder keeps the mode its operator gave it
    # A corrupt backup file placed by hand: replaying it makes the writer write a quarantine file.
    placed = "backup_20250115_103000.csv"
    (backup / placed).write_text("timestamp,plc_code,tag_address,tag_value,quality\nnot,a,valid,line,at all\n")
    prod = start_producer(ring_name, tmp_path, count=3000, rate=3000, capacity=20_000, batch=100)
    code = "import os, runpy, sys; os.umask(0); sys.argv = ['pipeline.writer']; runpy.run_module('pipeline.writer', run_name='__main__', alter_sys=True)"
    writer = spawn(["-c", code], tmp_path, "writer-umask0.log", **writer_env(ring_name, tmp_path, **FAST))
    assert sys.executable
    locker = None
    try:
        _ready(writer, db)
        wait_until(lambda: list((backup / "quarantine").glob("quarantine_*.csv")), 30, "quarantine file")
        wait_until(lambda: db_counts(db)[0] > 100, 30, "rows")
        locker = _lock(db)
        wait_until(lambda: list(backup.glob("backup_2*.csv")), 30, "a backup file while the database is locked")
        locker.execute("ROLLBACK")
        locker.close()
        locker = None
        assert producer_done(prod) == 3000
        wait_until(lambda: db_counts(db)[0] >= 3000 and list((backup / "replayed").glob("*.csv")), 60, "replayed")
        files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"), backup / MARKER_NAME,
                 *(p for p in (backup / "replayed").glob("*.csv") if p.name != placed),  # a hand-placed file keeps its mode
                 *(backup / "quarantine").glob("quarantine_*.csv")]
        modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
        assert set(modes.values()) == {"0o640"} and len(modes) >= 6, modes
        folders = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode))
                   for p in (db.parent, backup / "replayed", backup / "quarantine")}
        assert set(folders.values()) == {"0o750"}, folders
        assert oct(stat.S_IMODE(backup.stat().st_mode)) == "0o700"
        rc, log = finish(writer)
        assert rc == 0, log
    finally:
        if locker is not None:
            locker.close()
        halt(writer)
        halt(prod)


def test_replay_into_a_read_only_backup_folder_is_a_disk_problem_not_a_database_outage(ring_name, tmp_path):
    """A backup file waits, the database is up, the folder is read-only: the rows reach
    the database but the file cannot move to replayed/. Before: the circuit tripped and
    health said "database down" (false). Now: disk state unwritable, the database stays up,
    and the replay finishes once the folder is writable again."""
    backup = tmp_path / "backup"
    backup.mkdir()
    if not _mount(["-t", "tmpfs", "-o", "size=64m", "tmpfs", str(backup)]):
        msg = "cannot mount a tmpfs here (needs root and mount permission)"
        if REQUIRE_ALL:
            pytest.fail(msg + " and TAGPIPE_REQUIRE_ALL=1")
        pytest.skip(msg)
    from pipeline.writer import backup as B
    from tests.test_spool_files import _recs

    db = db_path(tmp_path)
    prod = start_producer(ring_name, tmp_path, count=0, capacity=20_000)
    writer = start_writer(ring_name, tmp_path, BACKUP_MIN_FREE_MB="1", **FAST)
    try:
        _ready(writer, db)
        rc, log = finish(writer)
        assert rc == 0, log
        w = B.BackupWriter(str(backup))
        w.append(77, _recs(500))
        w.close()
        assert _mount(["-o", "remount,ro", str(backup)])
        writer = start_writer(ring_name, tmp_path, BACKUP_MIN_FREE_MB="1", **FAST)
        wait_until(lambda: ring_fields(ring_name)["writer.disk_state"] == 3, 30, "disk state unwritable")
        wait_until(lambda: db_counts(db)[0] == 500, 30, "rows replayed into the database")
        time.sleep(2.5)  # a retry of the move has failed too by now
        f = ring_fields(ring_name)
        assert f["writer.db_state"] in (1, 4) and f["writer.outage_started_us"] == 0, f["writer.db_state"]
        checks, status = _checks(ring_name)
        assert "database_down" not in checks and "disk_unwritable" in checks, checks
        assert _mount(["-o", "remount,rw", str(backup)])
        wait_until(lambda: ring_fields(ring_name)["writer.backup_files_pending"] == 0, 30, "file moved to replayed/")
        wait_until(lambda: ring_fields(ring_name)["writer.disk_state"] == 0, 30, "disk state ok again")
        assert db_counts(db) == (500, 500)
        rc, log = finish(writer)
        assert rc == 0, log
    finally:
        halt(writer)
        halt(prod)
        subprocess.run(["umount", "-l", str(backup)], capture_output=True)


def test_wal_deleted_while_the_writer_runs_loses_nothing(ring_name, tmp_path):
    """The -wal deleted under a running writer: before, commits went on into the unlinked
    -wal (lost at the next crash). Now the next commit does not count, the batch is
    spilled, the database is reopened with a fresh -wal and the backup replayed."""
    db = db_path(tmp_path)
    wal = db.with_name(db.name + "-wal")
    total = 8_000
    prod = start_producer(ring_name, tmp_path, count=total, rate=2000, capacity=20_000, batch=100)
    writer = start_writer(ring_name, tmp_path, **FAST)
    try:
        _ready(writer, db)
        wait_until(lambda: db_counts(db)[0] > 1000 and wal.exists(), 30, "first rows")
        os.unlink(wal)
        wait_until(lambda: "-wal was deleted or renamed while open" in log_text(writer), 20, "deletion seen")
        assert producer_done(prod) == total
        wait_until(lambda: db_counts(db)[0] >= total and ring_fields(ring_name)["writer.backup_files_pending"] == 0, 60,
                   "every record in the database")
        f = ring_fields(ring_name)
        assert f["consumer.lost"] == 0 and f["writer.rows_spilled"] > 0
        # A crash now: whatever was committed must be in files at their paths (before, the
        # rows after the deletion lived only in the unlinked -wal and died with the process).
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
        assert db_counts(db) == (total, total)
    finally:
        halt(writer)
        halt(prod)
