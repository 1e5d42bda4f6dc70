"""``python -m pipeline check-db``: can the writer write where it is configured to?

Oracle (ORACLE_HOST or ORACLE_DSN set): connect with the configured settings (Thin mode,
same pool settings as the writer, so it cannot hang either), print the server version,
check that the table, its mapped columns and the cursor table exist, and that the
writer's user can insert into both and lock/update the cursor (each insert is rolled
back: the check leaves nothing behind). SQLite otherwise: open SQLITE_PATH the way the
writer does and check the same. Exit 0 when everything is in place, 6 (CHECK_FAILED)
with one clear line saying what is wrong, 2 for a bad setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import sqlite3
import sys
from typing import Any

import numpy as np

from pipeline.common import exitcodes
from pipeline.common.process import settings_or_exit
from shm.layout import QUALITY_GOOD, RECORD_DTYPE
from shm.ring import now_us

from .sinks.base import SinkError

HINTS = {
    "ORA-01017": "login refused: check ORACLE_USERNAME / ORACLE_PASSWORD",
    "ORA-28000": "the account is locked (ask the DBA)",
    "ORA-28001": "the password has expired (ask the DBA)",
    "ORA-00942": "does not exist or the user cannot see it: run sql/01_tables.sql, or set ORACLE_TABLE / ORACLE_CURSOR_TABLE (SCHEMA.NAME)",
    "ORA-00904": "a mapped column is missing: check ORACLE_COLUMNS against the table",
    "ORA-01031": "insufficient privileges: run the grants in sql/03_grants.sql",
    "ORA-12899": "a column is too narrow for the writer's values (see sql/01_tables.sql for the sizes)",
    "ORA-30006": "the cursor row is locked by another session (is another writer running?)",
    "DPY-6005": "cannot reach the database: check ORACLE_DSN / ORACLE_HOST / ORACLE_PORT and the network",
    "DPY-4005": "no connection within ORACLE_POOL_WAIT_MS: database or network too slow or unreachable",
    "DPY-4024": "a call exceeded ORACLE_CALL_TIMEOUT_MS",
}


class CheckFailed(Exception):
    """One line saying what is wrong."""


def _probe_record() -> np.ndarray:
    rec = np.zeros(1, dtype=RECORD_DTYPE)
    rec["ts_us"] = now_us()
    rec["plc_code"], rec["tag_address"], rec["quality"] = b"TAGPIPE-CHECK", b"CHECK", QUALITY_GOOD
    return rec


def _failed(what: str, exc: BaseException) -> CheckFailed:
    code = getattr(exc, "code", "") or ""
    hint = HINTS.get(code, "")
    return CheckFailed((f"{what}: {exc}" if what else str(exc)) + (f" -- {hint}" if hint else ""))


def check_oracle(settings: Any, out=print) -> None:
    """Run the Oracle checks, printing progress; raises CheckFailed."""
    import oracledb

    from .oracle_errors import classify
    from .sinks.oracle import OracleConfig, OracleSink

    cfg = dataclasses.replace(OracleConfig.from_settings(settings), oracle_pool_min=1, oracle_pool_max=1)
    sink = OracleSink(cfg)
    out(f"check-db: Oracle, {sink.describe()}, cursor table {cfg.oracle_cursor_table}")
    try:
        sink.open()
        with sink.connection() as conn:
            out(f"connected: Oracle Database {conn.version} (python-oracledb {oracledb.__version__}, Thin mode)")
            cur = conn.cursor()
            cols = [c for _, c in sink.targets]
            step = f"table {cfg.oracle_table}"
            try:
                cur.execute(f"SELECT {', '.join(cols)} FROM {cfg.oracle_table} WHERE 1 = 0")
                out(f"table {cfg.oracle_table}: columns {', '.join(cols)} present")
                step = f"cursor table {cfg.oracle_cursor_table}"
                cur.execute(f"SELECT RING_EPOCH, NEXT_SEQ, UPDATED_AT FROM {cfg.oracle_cursor_table} WHERE 1 = 0")
                out(f"cursor table {cfg.oracle_cursor_table}: present")
                step = f"locking a row of {cfg.oracle_cursor_table}"
                cur.execute(sink.read_cursor_sql, [0])
                cur.fetchall()
                step = f"inserting into {cfg.oracle_table}"
                rows, _, _ = sink.bind_rows(0, _probe_record(), np.arange(1))
                cur.setinputsizes(*sink._input_sizes())
                _insert_allowing_duplicate(cur, sink.insert_sql, rows[0])
                step = f"inserting into {cfg.oracle_cursor_table}"
                cur.setinputsizes(None, None, oracledb.DB_TYPE_TIMESTAMP)
                _insert_allowing_duplicate(cur, sink.insert_cursor_sql, [0, 0, None])
                step = f"updating {cfg.oracle_cursor_table}"
                cur.execute(f"UPDATE {cfg.oracle_cursor_table} SET NEXT_SEQ = NEXT_SEQ WHERE RING_EPOCH = :1", [0])
            except oracledb.Error as exc:
                raise _failed("", classify(exc, step, cfg.secrets)) from None
            finally:
                try:
                    conn.rollback()  # the check leaves nothing behind
                except oracledb.Error:
                    pass
            out(f"writable: insert into {cfg.oracle_table} and {cfg.oracle_cursor_table}, cursor lock and update (rolled back)")
            try:
                cur.execute(f"SELECT RING_EPOCH, KIND, FIRST_SEQ, LAST_SEQ, ROW_COUNT, START_TS, END_TS, PLC_CODE, DETAIL, RECORDED_AT"
                            f" FROM {sink.gap_table} WHERE 1 = 0")
                out(f"gap table {sink.gap_table}: present")
            except oracledb.Error as exc:
                # Not fatal for the data (the writer logs gaps it cannot record), but the ledger is off.
                out(f"WARNING gap table {sink.gap_table}: {classify(exc, 'reading it', cfg.secrets)}; run sql/04_gap_table.sql"
                    " or set ORACLE_GAP_TABLE: gaps are not recorded until then")
    except SinkError as exc:
        raise _failed("", exc) from None  # the message says who, where and why
    finally:
        sink.close()


def _insert_allowing_duplicate(cur: Any, sql: str, row: Any) -> None:
    import oracledb

    try:
        cur.execute(sql, list(row))
    except oracledb.IntegrityError as exc:
        if "ORA-00001" not in str(exc):  # a probe row that is already there still proves INSERT works
            raise


def check_sqlite(settings: Any, out=print) -> None:
    """Open SQLITE_PATH as the writer does (creating it only if no writer created it
    before: a file named in the creation marker and now missing fails the check), check
    the table and an insert (rolled back); raises CheckFailed."""
    from .sinks.sqlite import TABLE, SqliteSink

    path = settings.sqlite_path
    out(f"check-db: SQLite {sqlite3.sqlite_version} at {path} (no ORACLE_HOST / ORACLE_DSN set)")
    sink = SqliteSink.from_settings(settings)
    try:
        sink.open()
    except SinkError as exc:
        raise _failed(f"cannot open {path}", exc) from None
    finally:
        sink.close()
    conn = sqlite3.connect(path, timeout=2, isolation_level=None)
    try:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        conn.execute(f"SELECT TS, PLC_CODE, TAG_ADDRESS, TAG_VALUE, QUALITY, RING_EPOCH, SEQ FROM {TABLE} WHERE 0")
        count = conn.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0]
        out(f"table {TABLE}: present, {count} rows, journal_mode={mode}")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(f"INSERT INTO {TABLE} (TS, PLC_CODE, TAG_ADDRESS, TAG_VALUE, QUALITY, RING_EPOCH, SEQ) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (0, "TAGPIPE-CHECK", "CHECK", 0.0, "GOOD", -1, -1))
        conn.execute("ROLLBACK")
        out(f"writable: insert into {TABLE} (rolled back)")
    except sqlite3.Error as exc:
        raise CheckFailed(f"SQLite {path}: {exc}") from None
    finally:
        conn.close()


def run(args: argparse.Namespace) -> int:
    """``python -m pipeline check-db`` (no options; parsed by ``pipeline.cli``). Returns the
    exit code: 0, 6 (a check failed) or 2 (a bad setting)."""
    settings = settings_or_exit("check-db")
    try:
        if settings.oracle_configured:
            check_oracle(settings)
        else:
            check_sqlite(settings)
    except CheckFailed as exc:
        print(f"check-db FAILED: {exc}", file=sys.stderr)
        return exitcodes.CHECK_FAILED
    print("check-db: OK")
    return exitcodes.OK


if __name__ == "__main__":  # the older spelling python -m pipeline.writer.checkdb (takes no options;
    # not through pipeline.cli, which would make the writer import the poller's load options)
    if sys.argv[1:]:
        print(f"tagpipe check-db: takes no options (got {' '.join(sys.argv[1:])})", file=sys.stderr)
        sys.exit(exitcodes.CONFIG)
    sys.exit(run(argparse.Namespace()))
