"""The embedded SQLite sink (standard library), used when no Oracle is configured.

Schema (created on first start; an existing table is used as it is)::

    TAG_DATA(TS INTEGER      -- poll time, microseconds since 1970-01-01 UTC
             PLC_CODE TEXT, TAG_ADDRESS TEXT, TAG_VALUE REAL (NULL for BAD),
             QUALITY TEXT     -- GOOD / BAD / UNCERTAIN
             RING_EPOCH INTEGER, SEQ INTEGER,   -- the record's identity
             PRIMARY KEY (RING_EPOCH, SEQ)) WITHOUT ROWID
    TAG_DATA_LOCAL           -- view: the same rows with a readable local time
    TAG_DATA_GAP(RING_EPOCH, KIND, FIRST_SEQ, LAST_SEQ, ROW_COUNT, START_TS, END_TS,
                 PLC_CODE, DETAIL, RECORDED_TS,  -- the gap ledger (docs/writer.md)
                 PRIMARY KEY (RING_EPOCH, KIND, FIRST_SEQ))

TS is integer microseconds, not ISO text: measured 15-20 % faster to insert and 26 %
smaller (BENCHMARKS.md, section writer); the view gives the readable form. RING_EPOCH is
stored as SQLite's signed 64-bit INTEGER: synthetic epochs (top bit set, see
``records``) appear negative.

Durability: WAL journal with ``synchronous=FULL`` (one fsync per commit), because records
leave the ring once ``write`` returns. Inserts ignore a repeated identity (``ON CONFLICT (RING_EPOCH, SEQ) DO NOTHING``),
so a batch written twice (a crash between commit and ring commit) costs nothing: the
rows come back as ``duplicates``. A row SQLite refuses (a CHECK, NOT NULL or type
constraint) does not fail its batch: the batch is split in halves, inside one
transaction with savepoints, until each bad row is isolated; those are reported and
handed to ``on_rejected`` before the commit.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import time
import urllib.parse
from typing import Any

import numpy as np

from pipeline.common import gaps as G

from .. import records as R
from .base import OnRejected, PermanentSinkError, RowError, TransientSinkError, WriteResult

log = logging.getLogger("tagpipe.writer.sqlite")

TABLE = "TAG_DATA"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    TS INTEGER NOT NULL,
    PLC_CODE TEXT NOT NULL,
    TAG_ADDRESS TEXT NOT NULL,
    TAG_VALUE REAL,
    QUALITY TEXT NOT NULL CHECK (QUALITY IN ('GOOD', 'BAD', 'UNCERTAIN')),
    RING_EPOCH INTEGER NOT NULL,
    SEQ INTEGER NOT NULL,
    PRIMARY KEY (RING_EPOCH, SEQ)
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS {TABLE}_LOCAL AS
SELECT datetime(TS / 1000000, 'unixepoch', 'localtime') || '.' || printf('%06d', TS % 1000000) AS LOCAL_TIME,
       PLC_CODE, TAG_ADDRESS, TAG_VALUE, QUALITY, TS, RING_EPOCH, SEQ
FROM {TABLE};
CREATE TABLE IF NOT EXISTS {G.table_name(TABLE)} (
    RING_EPOCH INTEGER NOT NULL,
    KIND TEXT NOT NULL,
    FIRST_SEQ INTEGER NOT NULL,
    LAST_SEQ INTEGER NOT NULL,
    ROW_COUNT INTEGER NOT NULL,
    START_TS INTEGER NOT NULL,
    END_TS INTEGER NOT NULL,
    PLC_CODE TEXT NOT NULL,
    DETAIL TEXT NOT NULL,
    RECORDED_TS INTEGER NOT NULL,
    PRIMARY KEY (RING_EPOCH, KIND, FIRST_SEQ)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {G.table_name(TABLE)}_START ON {G.table_name(TABLE)} (START_TS);
"""
GAP_INSERT = (
    f"INSERT INTO {G.table_name(TABLE)} (RING_EPOCH, KIND, FIRST_SEQ, LAST_SEQ, ROW_COUNT, START_TS, END_TS, PLC_CODE,"
    " DETAIL, RECORDED_TS) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (RING_EPOCH, KIND, FIRST_SEQ) DO NOTHING"
)
# Not "INSERT OR IGNORE": SQLite's IGNORE also skips rows that break a CHECK or NOT NULL
# constraint, silently (verified on 3.40), which would lose bad rows instead of
# quarantining them. The upsert form ignores only a repeated identity.
@functools.lru_cache(maxsize=64)
def _insert_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * rows)
    return (
        f"INSERT INTO {TABLE} (TS, PLC_CODE, TAG_ADDRESS, TAG_VALUE, QUALITY, RING_EPOCH, SEQ)"
        f" VALUES {values} ON CONFLICT (RING_EPOCH, SEQ) DO NOTHING"
    )


INSERT = _insert_sql(1)
# Rows per INSERT statement on the batch path. One statement per row spends most of its
# time stepping the statement, not storing the row: 50 rows per statement took ~2.2x the
# rows/s of one, and 200 rows 1.12x the rows per CPU second of 50 (SqliteSink.write, 5
# alternating rounds of 300,000 rows: 657,000 vs 588,000; BENCHMARKS.md, throughput);
# 200 x 7 = 1,400 parameters, far below SQLite's limit (32,766 since 3.32).
ROWS_PER_STATEMENT = 200
INSERT_MANY = _insert_sql(ROWS_PER_STATEMENT)


def _classify(e: sqlite3.Error) -> str:
    name = getattr(e, "sqlite_errorname", "") or type(e).__name__
    return name


class SqliteSink:
    """Writes batches into TAG_DATA of one SQLite file. Not thread-safe: one thread writes;
    ``probe`` uses its own short-lived connection so the prober thread may call it."""

    kind = "sqlite"

    def __init__(self, path: str, busy_timeout_s: float = 1.0) -> None:
        self.path = path
        self.busy_timeout_s = float(busy_timeout_s)
        self._conn: sqlite3.Connection | None = None
        # Only the first open of this process may create the folder and the file: a file
        # that disappears later (its volume unmounted, its folder moved) is an outage, not
        # a reason to start a new, empty database elsewhere.
        self._created = False

    @classmethod
    def from_settings(cls, settings: Any) -> "SqliteSink":
        return cls(settings.sqlite_path, settings.sqlite_busy_timeout_s)

    def _connect(self) -> sqlite3.Connection:
        if self._created:
            if not os.path.exists(self.path):
                raise sqlite3.OperationalError(f"unable to open database file: {self.path} has disappeared")
            target, uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=rw", True
        else:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            target, uri = self.path, False
        conn = sqlite3.connect(target, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False, uri=uri)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"journal_mode is {mode}, not wal (database locked?)")
            conn.execute("PRAGMA synchronous = FULL")
        except BaseException:
            conn.close()
            raise
        return conn

    def open(self) -> None:
        """Open the file, switch to WAL, create the table and view if missing.

        Raises TransientSinkError if the file is locked or unreachable now,
        PermanentSinkError if it is not a database.
        """
        if self._conn is not None:
            return
        try:
            conn = self._connect()
            try:
                conn.executescript(SCHEMA)
            except BaseException:
                conn.close()
                raise
            self._created = True
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) or "locked" in str(e):
                raise TransientSinkError(f"SQLite {self.path}: {e}", _classify(e)) from e
            raise PermanentSinkError(f"SQLite {self.path}: {e}", _classify(e)) from e
        except OSError as e:
            raise TransientSinkError(f"SQLite {self.path}: {e}", "OSError") from e
        self._conn = conn

    def write(self, epoch: int, records: np.ndarray, on_rejected: OnRejected | None = None) -> WriteResult:
        """Insert ``records`` of stream ``epoch`` in one transaction and commit (fsync).

        Raises TransientSinkError when nothing was committed (locked, I/O error, ...).
        """
        if self._conn is None:
            self.open()
        conn = self._conn
        assert conn is not None
        if len(records) == 0:
            return WriteResult()
        records, gap_recs, index = G.split(records)
        n = len(records)
        flat = R.flat_row_values(records, R.signed64(epoch))
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                gaps = _insert_gaps(conn, epoch, gap_recs)
                written, rejected = self._insert(conn, flat, 0) if n else (0, [])
                if rejected and on_rejected is not None:
                    idx = np.array([r.index for r in rejected], dtype=np.int64)
                    more = on_rejected(records[idx], rejected)
                    if more is not None:
                        gaps += _insert_gaps(conn, epoch, more)
                    if index is not None:  # report indices into the batch as given
                        rejected = [RowError(int(index[r.index]), r.code, r.message) for r in rejected]
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as err:
            self._reset_after(err)
            raise TransientSinkError(f"SQLite {self.path}: {err}", _classify(err)) from err
        return WriteResult(written=written, duplicates=n - written - len(rejected), rejected=rejected, gaps=gaps)

    def _insert(self, conn: sqlite3.Connection, flat: list, offset: int) -> tuple[int, list[RowError]]:
        """Insert the rows whose values ``flat`` holds (``R.flat_row_values``; batch indices
        from ``offset``) inside the caller's transaction.

        Returns (rows inserted, rows refused). A constraint error rolls back to a savepoint
        (the rows before the bad one in the same executemany would otherwise stay) and the
        rows are split in halves until each bad row stands alone.
        """
        conn.execute("SAVEPOINT part")
        try:
            written = _insert_rows(conn, flat)
            conn.execute("RELEASE part")
            return written, []
        except sqlite3.IntegrityError as err:
            conn.execute("ROLLBACK TO part")
            conn.execute("RELEASE part")
            if len(flat) == R.ROW_WIDTH:
                return 0, [RowError(offset, _classify(err), str(err))]
        mid = len(flat) // R.ROW_WIDTH // 2
        w1, r1 = self._insert(conn, flat[: mid * R.ROW_WIDTH], offset)
        w2, r2 = self._insert(conn, flat[mid * R.ROW_WIDTH :], offset + mid)
        return w1 + w2, r1 + r2

    def _reset_after(self, err: sqlite3.Error) -> None:
        # A connection that saw an I/O error may be unusable: start afresh next time.
        if "i/o" in str(err).lower() or "unable to open" in str(err).lower() or "malformed" in str(err).lower():
            self.close()

    def probe(self) -> bool:
        """True if a write transaction can start now (own connection; blocks <= busy timeout)."""
        try:
            conn = self._connect()
        except (sqlite3.Error, OSError):
            return False
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return True
        except sqlite3.Error:
            return False
        finally:
            conn.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error as e:  # pragma: no cover
                log.warning("closing SQLite %s: %s", self.path, e)


def _insert_rows(conn: sqlite3.Connection, flat: list) -> int:
    """Insert the rows of ``flat`` (ROWS_PER_STATEMENT to a statement, the rest in one
    statement of its own size); returns the rows inserted (a repeated identity is skipped
    and not counted)."""
    w = R.ROW_WIDTH
    step = w * ROWS_PER_STATEMENT
    full = len(flat) - len(flat) % step
    written = 0
    if full:
        written += max(conn.executemany(INSERT_MANY, [flat[i : i + step] for i in range(0, full, step)]).rowcount, 0)
    if full < len(flat):
        written += max(conn.execute(_insert_sql((len(flat) - full) // w), flat[full:]).rowcount, 0)
    return written


def _insert_gaps(conn: sqlite3.Connection, epoch: int, gap_recs: np.ndarray) -> list[str]:
    """Insert the gap rows of FLAG_GAP records (a row already there is skipped); returns
    the kinds of the rows inserted."""
    added = []
    now = int(time.time() * 1e6)
    for rec in gap_recs:
        g = G.from_record(epoch, rec)
        cur = conn.execute(GAP_INSERT, (R.signed64(epoch), g.kind, g.first_seq, g.last_seq, g.count, g.start_us, g.end_us,
                                        g.plc_code, g.detail, now))
        if cur.rowcount > 0:
            added.append(g.kind)
    return added
