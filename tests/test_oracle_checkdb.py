"""``python -m pipeline check-db`` as a real process against the emulator (and a real
Oracle when configured), and against SQLite when no Oracle is configured."""

from __future__ import annotations

import subprocess

from tests.conftest import free_port, run
from tests.oracle_emulator.fixtures import *  # noqa: F401,F403  (fixtures)


def check_db(cwd, **env: str) -> subprocess.CompletedProcess:
    return run(["-m", "pipeline", "check-db"], cwd, timeout=120, **env)


def test_oracle_check_db_passes_and_prints_the_server_version(target, tables, tmp_path):
    table, cursor_table = tables
    p = check_db(tmp_path, **target.env(ORACLE_TABLE=table, ORACLE_CURSOR_TABLE=cursor_table))
    assert p.returncode == 0, p.stderr
    assert "connected: Oracle Database " in p.stdout
    if target.kind == "emulator":
        assert "Oracle Database 23." in p.stdout  # what seerdb presents at field version 24
    assert f"table {table}: columns TS, PLC_CODE, TAG_ADDRESS, TAG_VALUE, QUALITY, RING_EPOCH, SEQ present" in p.stdout
    assert p.stdout.rstrip().endswith("check-db: OK")
    assert target.rows(table) == [] and target.rows(cursor_table) == []  # the probe rows were rolled back


def test_oracle_check_db_fails_clearly_for_a_missing_table(target, tables, tmp_path):
    _, cursor_table = tables
    p = check_db(tmp_path, **target.env(ORACLE_TABLE="NO_SUCH_TAG_DATA", ORACLE_CURSOR_TABLE=cursor_table))
    assert p.returncode == 6
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith("check-db FAILED: table NO_SUCH_TAG_DATA: ") and "ORA-00942" in line and "sql/01_tables.sql" in line


def test_oracle_check_db_fails_clearly_for_a_missing_mapped_column(target, tables, tmp_path):
    table, cursor_table = tables
    p = check_db(tmp_path, **target.env(ORACLE_TABLE=table, ORACLE_CURSOR_TABLE=cursor_table, ORACLE_COLUMNS="TAG_VALUE=VAL"))
    assert p.returncode == 6
    assert "ORA-00904" in p.stderr and "ORACLE_COLUMNS" in p.stderr


def test_oracle_check_db_bad_password_fails_without_showing_it(target, tables, tmp_path):
    table, cursor_table = tables
    secret = "N0t-the-Passw0rd"
    p = check_db(tmp_path, **target.env(ORACLE_TABLE=table, ORACLE_CURSOR_TABLE=cursor_table, ORACLE_PASSWORD=secret))
    assert p.returncode == 6
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith("check-db FAILED: cannot connect as ") and "ORA-01017" in line and "ORACLE_PASSWORD" in line
    assert secret not in p.stdout + p.stderr


def test_oracle_check_db_unreachable_database_fails_in_bounded_time(tmp_path):
    port = free_port()  # nobody listens there
    p = check_db(tmp_path, ORACLE_DSN=f"127.0.0.1:{port}/FREEPDB1", ORACLE_USERNAME="u", ORACLE_PASSWORD="p",
                 ORACLE_POOL_WAIT_MS="2000", ORACLE_CONNECT_TIMEOUT_S="2")
    assert p.returncode == 6 and "DPY-6005" in p.stderr and "cannot reach the database" in p.stderr


def test_check_db_without_oracle_checks_sqlite(tmp_path):
    db = tmp_path / "data" / "t.db"
    p = check_db(tmp_path, SQLITE_PATH=str(db))
    assert p.returncode == 0, p.stderr
    assert "check-db: SQLite" in p.stdout and "table TAG_DATA: present, 0 rows, journal_mode=wal" in p.stdout
    assert db.exists()
    (tmp_path / "notadb").write_bytes(b"this is not a database file at all" * 100)
    p = check_db(tmp_path, SQLITE_PATH=str(tmp_path / "notadb"))
    assert p.returncode == 6 and p.stderr.startswith("check-db FAILED: ")


def test_check_db_bad_setting_exits_2(tmp_path):
    p = check_db(tmp_path, ORACLE_DSN="127.0.0.1:1/X", ORACLE_COLUMNS="NOPE=X")
    assert p.returncode == 2 and "ORACLE_COLUMNS" in p.stderr


def test_oracle_check_db_black_holed_network_fails_in_bounded_time(target, tables, proxy, tmp_path):
    import time

    table, cursor_table = tables
    proxy.blackhole(True)  # the listener accepts, then nothing ever answers
    started = time.monotonic()
    p = check_db(tmp_path, **target.env(proxy.port, ORACLE_TABLE=table, ORACLE_CURSOR_TABLE=cursor_table, ORACLE_POOL_WAIT_MS="2000"))
    assert p.returncode == 6 and "DPY-4005" in p.stderr and "ORACLE_POOL_WAIT_MS" in p.stderr
    assert time.monotonic() - started < 90
