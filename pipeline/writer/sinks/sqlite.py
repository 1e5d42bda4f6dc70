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

A vanished database is an outage, never a new empty one (docs/writer.md, "A vanished
database"). The file is created once: its creation is noted in a marker file
(``MARKER_NAME`` in BACKUP_FILE_PATH, one absolute path a line), and once the marker names
the path the sink only opens an existing file that holds TAG_DATA. After every commit the
sink checks that the files it has open (the database and its ``-wal``/``-shm``, held by
descriptors of its own so their inodes cannot be reused) are still the files at their
paths (device and inode): if not, the commit went into a file nobody will read again, and
``write`` raises ``SinkGoneError``: the rows do not count, the writer spills them to
backup files and replays them once the file is back.
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

from .. import datafiles
from ..backup import fsync_dir
from .. import records as R
from .base import OnRejected, PermanentSinkError, RowError, SinkGoneError, TransientSinkError, WriteResult

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


# Lists the SQLite files the writer created (absolute paths, one a line); kept in
# BACKUP_FILE_PATH, so it survives the data folder's removal (and a new empty database is
# never made where one was, unless an operator removes the path from this file).
MARKER_NAME = "sqlite-created.txt"
WATCHED = ("", "-wal", "-shm")  # the database, then the files SQLite keeps next to it


def _classify(e: sqlite3.Error) -> str:
    name = getattr(e, "sqlite_errorname", "") or type(e).__name__
    return name


class SqliteSink:
    """Writes batches into TAG_DATA of one SQLite file. Not thread-safe: one thread writes;
    ``probe`` uses its own short-lived connection so the prober thread may call it."""

    kind = "sqlite"

    def __init__(self, path: str, busy_timeout_s: float = 1.0, marker_dir: str | None = None) -> None:
        """``marker_dir``: where the creation marker is kept (BACKUP_FILE_PATH; default the
        database's own folder)."""
        self.path = path
        self.busy_timeout_s = float(busy_timeout_s)
        self.marker = os.path.join(marker_dir or os.path.dirname(os.path.abspath(path)), MARKER_NAME)
        self._conn: sqlite3.Connection | None = None
        self._held: dict[str, int] = {}  # suffix -> our own descriptor of that file

    @classmethod
    def from_settings(cls, settings: Any) -> "SqliteSink":
        return cls(settings.sqlite_path, settings.sqlite_busy_timeout_s, settings.backup_file_path)

    # --- the creation marker ------------------------------------------------------------

    def created_before(self) -> bool:
        """True if the marker says this writer created the database at this path. Raises
        OSError if the marker exists but cannot be read."""
        try:
            with open(self.marker, encoding="utf-8") as fh:
                return os.path.abspath(self.path) in (line.rstrip("\n") for line in fh)
        except FileNotFoundError:
            return False

    def _note_created(self) -> None:
        """Add this path to the marker, durably. Raises OSError."""
        folder = os.path.dirname(self.marker)
        datafiles.make_dirs(folder)
        fd = datafiles.create(self.marker, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, (os.path.abspath(self.path) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(folder)

    # --- opening ------------------------------------------------------------------------

    def _connect(self, created: bool) -> sqlite3.Connection:
        """A connection to the existing file (``created``: the marker names it, so it must
        exist), or to a file made now with FILE_MODE (SQLite gives its -wal and -shm the
        database's mode). Raises SinkGoneError, sqlite3.Error, OSError."""
        if created:
            if not os.path.exists(self.path):
                raise SinkGoneError(
                    f"SQLite {self.path} is missing, but this writer created it before ({self.marker}): an outage, not a"
                    " new empty database; values go to backup files until the file is restored (to start a new empty"
                    f" database on purpose, remove its line from {self.marker})", "DATABASE_GONE")
        else:
            datafiles.make_dirs(os.path.dirname(os.path.abspath(self.path)))
            try:
                os.close(datafiles.create(self.path, os.O_RDWR | os.O_EXCL))
            except FileExistsError:
                pass  # an existing database (adopted: the marker is written after the schema)
        target = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=rw"
        conn = sqlite3.connect(target, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False, uri=True)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            # Before anything writes to it: a file that is not ours is left untouched.
            if created and conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)).fetchone() is None:
                raise SinkGoneError(
                    f"SQLite {self.path} has no {TABLE} table, but this writer created it before ({self.marker}): the file"
                    " was replaced by another database; values go to backup files until the right file is restored",
                    "DATABASE_REPLACED")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"journal_mode is {mode}, not wal (database locked?)")
            conn.execute("PRAGMA synchronous = FULL")
        except BaseException:
            conn.close()
            raise
        return conn

    def open(self) -> None:
        """Open the file, switch to WAL, create the table and view if missing. The file
        itself is created only the first time (see the module docstring).

        Raises SinkGoneError if the file this writer created is missing or is another
        database, TransientSinkError if the file is locked or unreachable now,
        PermanentSinkError if it is not a database.
        """
        if self._conn is not None:
            return
        try:
            created = self.created_before()
            conn = self._connect(created)
            try:
                conn.executescript(SCHEMA)
                if not created:
                    try:
                        self._note_created()
                    except OSError as e:
                        # The database works; only its protection against being silently
                        # made again is missing until a later open writes the marker.
                        log.warning("cannot note the creation of %s in %s (%s): if the file vanishes before a later"
                                    " open notes it, a new empty database would be made", self.path, self.marker, e)
                self._hold()
            except BaseException:
                self._release()
                conn.close()
                raise
        except SinkGoneError:
            raise
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) or "locked" in str(e):
                raise TransientSinkError(f"SQLite {self.path}: {e}", _classify(e)) from e
            raise PermanentSinkError(f"SQLite {self.path}: {e}", _classify(e)) from e
        except OSError as e:
            raise TransientSinkError(f"SQLite {self.path}: {e}", "OSError") from e
        self._conn = conn

    # --- identity of the open files ---------------------------------------------------------

    def _hold(self) -> None:
        """Open our own descriptors of the database and its -wal/-shm (while the connection
        is open SQLite keeps them; a file not there yet is held once it appears). Holding
        them keeps their inodes allocated, so a new file can never reuse the number."""
        for suffix in WATCHED:
            if suffix not in self._held:
                try:
                    self._held[suffix] = os.open(self.path + suffix, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    if not suffix:
                        raise

    def _release(self) -> None:
        held, self._held = self._held, {}
        for fd in held.values():
            os.close(fd)

    def vanished(self) -> str | None:
        """Why the files the connection writes are no longer the files at their paths
        (deleted, renamed, replaced, folder removed), or None if they still are."""
        for suffix, fd in list(self._held.items()):
            name = self.path + suffix
            try:
                now = os.stat(name)
            except FileNotFoundError:
                return f"{name} was deleted or renamed while open"
            except OSError as e:
                return f"{name} cannot be checked ({e.strerror})"
            held = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
                return f"{name} was replaced by another file while open (inode {held.st_ino} -> {now.st_ino})"
        self._hold()  # a -wal/-shm made since the open
        return None

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
        # Checked after the commit, before it counts: a file deleted or replaced a moment
        # before COMMIT took the rows with it, so they must not leave the ring as written.
        gone = self.vanished()
        if gone is not None:
            self.close()
            raise SinkGoneError(f"SQLite {gone}: the last commit does not count; values go to backup files", "DATABASE_GONE")
        return WriteResult(written=written, duplicates=n - written - len(rejected), rejected=rejected,
                           gaps=[g.kind for g in gaps], gap_rows=gaps)

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
        """True if a write transaction can start now (own connection; blocks <= busy timeout).
        Never creates the file once the marker names it."""
        try:
            conn = self._connect(self.created_before())
        except (sqlite3.Error, OSError, SinkGoneError):
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
        self._release()


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


def _insert_gaps(conn: sqlite3.Connection, epoch: int, gap_recs: np.ndarray) -> list[G.Gap]:
    """Insert the gap rows of FLAG_GAP records (a row already there is skipped); returns
    the rows inserted."""
    added = []
    now = int(time.time() * 1e6)
    for rec in gap_recs:
        g = G.from_record(epoch, rec)
        cur = conn.execute(GAP_INSERT, (R.signed64(epoch), g.kind, g.first_seq, g.last_seq, g.count, g.start_us, g.end_us,
                                        g.plc_code, g.detail, now))
        if cur.rowcount > 0:
            added.append(g)
    return added
