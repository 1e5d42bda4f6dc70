"""The Oracle sink: python-oracledb in Thin mode, exactly once through a cursor table.

One ``write`` is one transaction on one pooled connection:

1. ``SELECT NEXT_SEQ FROM <cursor table> WHERE RING_EPOCH = :e FOR UPDATE WAIT n``:
   records with ``seq < NEXT_SEQ`` are already in the table (reported as duplicates, not
   sent). The row lock makes a second session (e.g. after an unknown commit outcome, while
   the first session's transaction is still alive in the database) wait for the first one
   to end instead of reading a stale position.
2. ``executemany(INSERT ..., batcherrors=True)`` for the rest, input sizes declared
   (TIMESTAMP keeps microseconds; NULLs typed). Rows the database rejects (ORA-12899,
   ORA-01438, ORA-01400, ...) and rows that cannot be bound at all (non-finite value,
   time out of range, unknown quality) go to ``on_rejected`` *before* the commit.
3. The cursor row is set to ``max(seq) + 1`` and the transaction committed explicitly
   (with batcherrors nothing commits by itself).

If the connection is lost during the commit, the outcome is unknown: a fresh connection
reads the cursor (waiting for the old session's lock): advanced -> committed, the result
is returned; not advanced -> TransientSinkError, the writer sends the batch again.
The writer delivers the seqs of one epoch in increasing order, which this relies on.

The writer never runs DDL here: the tables come from ``sql/`` (or exist already, mapped
with ORACLE_COLUMNS). Thin mode only: ``init_oracle_client`` is never called.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, ContextManager

import numpy as np
import oracledb

from pipeline.common import gaps as G
from pipeline.common.settings import parse_oracle_columns
from .. import records as R
from ..oracle_errors import PERMANENT, classify, first_line, full_code, is_connection_lost, scrub
from .base import OnRejected, PermanentSinkError, RowError, SinkError, TransientSinkError, WriteResult
from .oracle_pool import OracleConfig, PoolKeeper

__all__ = ["OracleConfig", "OracleSink"]

log = logging.getLogger("tagpipe.oracle")

QUALITY_TEXT = np.array(["", "GOOD", "BAD", "UNCERTAIN"], dtype=object)
STR_SIZE = 64  # bind buffer for PLC code / tag address (records hold at most 16 bytes)
NUMBER_MAX, NUMBER_MIN = 1e126, 1e-130  # magnitudes an Oracle NUMBER holds (measured with the client)
# datetime64[us] -> datetime works for years 1..9999 only.
TS_MIN_US = int(np.datetime64("0001-01-01T00:00:00", "us").astype(np.int64))
TS_MAX_US = int(np.datetime64("9999-12-31T23:59:59.999999", "us").astype(np.int64))


# The gap table is missing or lacks a column (sql/04_gap_table.sql not run): gaps are
# logged, not recorded, and the data goes on (see OracleSink._insert_gaps).
GAP_TABLE_MISSING = frozenset({"ORA-00942", "ORA-00904"})


class _CommitLost(Exception):
    """The connection died during COMMIT: the outcome must be read from the cursor."""

    def __init__(self, failure: BaseException, end: int, result: WriteResult) -> None:
        super().__init__(str(failure))
        self.failure, self.end, self.result = failure, end, result


class OracleSink:
    """Sink protocol implementation for Oracle. Methods block at most the configured
    pool wait + connect timeout + call timeout per database call."""

    kind = "oracle"

    def __init__(self, config: OracleConfig) -> None:
        self.cfg = config
        self.mapping = parse_oracle_columns(config.oracle_columns)
        self.targets = [(logical, col) for logical, col in self.mapping.items() if col]
        self.insert_sql = (
            f"INSERT INTO {config.oracle_table} (" + ", ".join(c for _, c in self.targets) + ") VALUES ("
            + ", ".join(f":{i + 1}" for i in range(len(self.targets))) + ")"
        )
        ct = config.oracle_cursor_table
        self.read_cursor_sql = f"SELECT NEXT_SEQ FROM {ct} WHERE RING_EPOCH = :1 FOR UPDATE WAIT {config.lock_wait_s}"
        self.update_cursor_sql = f"UPDATE {ct} SET NEXT_SEQ = :1, UPDATED_AT = :2 WHERE RING_EPOCH = :3"
        self.insert_cursor_sql = f"INSERT INTO {ct} (RING_EPOCH, NEXT_SEQ, UPDATED_AT) VALUES (:1, :2, :3)"
        self.gap_table = config.oracle_gap_table or G.table_name(config.oracle_table)
        self.gap_insert_sql = (
            f"INSERT INTO {self.gap_table} (RING_EPOCH, KIND, FIRST_SEQ, LAST_SEQ, ROW_COUNT, START_TS, END_TS, PLC_CODE,"
            " DETAIL, RECORDED_AT) VALUES (:1, :2, :3, :4, :5, :6, :7, :8, :9, :10)"
        )
        self.gaps_dropped = 0  # gap rows not recorded because the gap table is missing
        self.probe_sql = f"SELECT {', '.join(c for _, c in self.targets)} FROM {config.oracle_table} WHERE 1 = 0"
        self.pools = PoolKeeper(config)
        self.probe_error: SinkError | None = None  # why the last probe failed (None: it answered)

    @classmethod
    def from_settings(cls, settings: Any) -> "OracleSink":
        return cls(OracleConfig.from_settings(settings))

    def describe(self) -> str:
        """Who and where, for logs (never the password)."""
        return f"{self.cfg.oracle_username}@{self.cfg.shown_dsn} table {self.cfg.oracle_table}"

    # --- pool ---
    def open(self) -> None:
        """Create the pool. Succeeds while the database is down; raises
        PermanentSinkError for a configuration it cannot use."""
        self.pools.open()

    def connection(self, call_timeout_ms: int | None = None) -> ContextManager[oracledb.Connection]:
        """A pooled connection with a call timeout (context manager), see PoolKeeper."""
        return self.pools.connection(call_timeout_ms)

    def probe(self) -> bool:
        """True if the database answers within a few seconds now and the table with its
        mapped columns is visible (so a missing table keeps the circuit open until the DBA
        creates it, instead of a write failing every time). Uses a connection of its own,
        not the pool: one login per probe, and none in the background (a refused login
        must not lock the account). Why it failed is left in ``probe_error``. Thread-safe;
        never raises."""
        try:
            conn = self.pools.connect_once(min(self.cfg.oracle_call_timeout_ms, 5_000))
            try:
                with conn.cursor() as cur:
                    cur.execute(self.probe_sql)
                    cur.fetchall()
            finally:
                try:
                    conn.close()
                except oracledb.Error:
                    pass
            self.probe_error = None
            return True
        except SinkError as exc:
            self.probe_error = exc
        except oracledb.Error as exc:
            self.probe_error = classify(exc, "probe", self.cfg.secrets)
        return False

    def abandon(self) -> None:
        """Drop every connection now without waiting (a call is stuck on one of them): see
        ``PoolKeeper.abandon``. The next ``open`` makes a new pool."""
        self.pools.abandon()

    def close(self) -> None:
        """Release the pool within a few seconds. Idempotent."""
        self.pools.close()

    # --- writing ---
    def write(self, epoch: int, records: np.ndarray, on_rejected: OnRejected | None = None) -> WriteResult:
        """Insert ``records`` of identity stream ``epoch`` exactly once and commit.

        Raises TransientSinkError (nothing committed, or the outcome could not be
        established: send the batch again later) or PermanentSinkError (configuration).
        Exceptions raised by ``on_rejected`` abort the batch (rolled back) and propagate.
        """
        if len(records) == 0:
            return WriteResult()
        generation = self.pools.generation
        try:
            return self._write(int(epoch), records, on_rejected)
        except _CommitLost as lost:
            if self.pools.generation != generation:
                # The writer abandoned this call and dropped the pool: it spilled the batch,
                # whose replay reads the cursor anyway. Resolving here would only be one
                # more call into a network that does not answer.
                raise TransientSinkError(scrub(f"commit outcome unknown after the call was abandoned (resolved on replay): "
                                               f"{first_line(lost.failure)}", self.cfg.secrets), full_code(lost.failure)) from None
            return self._resolve(int(epoch), lost.end, lost.result, lost.failure)

    def _write(self, epoch: int, records: np.ndarray, on_rejected: OnRejected | None) -> WriteResult:
        records, gap_recs, index = G.split(records)
        with self.connection() as conn:
            cur = conn.cursor()
            try:
                next_seq, exists = self._read_cursor(cur, epoch)
            except oracledb.Error as exc:
                raise classify(exc, f"reading {self.cfg.oracle_cursor_table}", self.cfg.secrets) from None
            gaps = self._insert_gaps(cur, epoch, gap_recs)
            seqs = records["seq"]
            fresh = np.nonzero(seqs >= next_seq)[0]
            duplicates = len(records) - len(fresh)
            if len(fresh) == 0:
                if gaps:
                    self._commit(conn, "commit of gap rows")
                else:
                    conn.rollback()  # releases the cursor row lock
                return WriteResult(duplicates=duplicates, gaps=[g.kind for g in gaps], gap_rows=gaps)
            rows, sent, rejected = self.bind_rows(epoch, records, fresh)
            chunk = self.cfg.oracle_insert_chunk_rows
            for start in range(0, len(rows), chunk):  # one round trip per chunk, one transaction
                try:
                    cur.setinputsizes(*self._input_sizes())
                    cur.executemany(self.insert_sql, rows[start:start + chunk], batcherrors=True)
                except oracledb.Error as exc:
                    raise classify(exc, f"inserting into {self.cfg.oracle_table}", self.cfg.secrets) from None
                for e in cur.getbatcherrors():
                    if e.full_code in PERMANENT:
                        # A configuration fault (no table, column or privilege) is never a
                        # bad row: quarantining every row for it would be wrong. Oracle
                        # raises these for the statement; seerdb's server per row.
                        raise PermanentSinkError(scrub(f"inserting into {self.cfg.oracle_table}: {first_line(e)}", self.cfg.secrets), e.full_code)
                    rejected.append(RowError(int(sent[start + e.offset]), e.full_code, first_line(e)))
            rejected.sort(key=lambda r: r.index)
            if rejected and on_rejected is not None:
                more = on_rejected(records[[r.index for r in rejected]], rejected)
                if more is not None:
                    gaps += self._insert_gaps(cur, epoch, more)
            if index is not None:  # report indices into the batch as given
                rejected = [RowError(int(index[r.index]), r.code, r.message) for r in rejected]
            end = int(seqs[fresh].max()) + 1
            result = WriteResult(written=len(fresh) - len(rejected), duplicates=duplicates, rejected=rejected,
                                 gaps=[g.kind for g in gaps], gap_rows=gaps)
            try:
                self._advance_cursor(cur, epoch, end, exists)
            except oracledb.Error as exc:
                raise classify(exc, f"updating {self.cfg.oracle_cursor_table}", self.cfg.secrets) from None
            try:
                conn.commit()
            except oracledb.Error as exc:
                if not is_connection_lost(full_code(exc)):
                    raise classify(exc, "commit", self.cfg.secrets) from None
                lost = _CommitLost(exc, end, result)
            else:
                return result
            raise lost  # leaves the with block as an error: the dead connection is dropped
    def _insert_gaps(self, cur: oracledb.Cursor, epoch: int, gap_recs: np.ndarray) -> list[G.Gap]:
        """Insert gap rows in the caller's transaction; a row already there (ORA-00001 on
        the key RING_EPOCH, KIND, FIRST_SEQ) was written before. Returns the rows added.
        Raises TransientSinkError / PermanentSinkError (classified) for anything else."""
        if len(gap_recs) == 0:
            return []
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        gaps = [G.from_record(epoch, r) for r in gap_recs]

        def ts(us: int) -> dt.datetime:
            return np.datetime64(int(np.clip(us, TS_MIN_US, TS_MAX_US)), "us").astype(dt.datetime)

        rows = [(epoch, g.kind, g.first_seq, g.last_seq, g.count, ts(g.start_us), ts(g.end_us), g.plc_code, g.detail or None, now)
                for g in gaps]
        try:
            cur.setinputsizes(oracledb.DB_TYPE_NUMBER, 32, oracledb.DB_TYPE_NUMBER, oracledb.DB_TYPE_NUMBER, oracledb.DB_TYPE_NUMBER,
                              oracledb.DB_TYPE_TIMESTAMP, oracledb.DB_TYPE_TIMESTAMP, STR_SIZE, 200, oracledb.DB_TYPE_TIMESTAMP)
            cur.executemany(self.gap_insert_sql, rows, batcherrors=True)
        except oracledb.Error as exc:
            if full_code(exc) in GAP_TABLE_MISSING:
                # The DBA has not run sql/04_gap_table.sql (yet): the data must not wait for
                # the ledger. Only this statement failed; the transaction goes on. Said
                # loudly, and check-db says it too.
                log.error("gap table %s cannot be written (%s): %d gap rows NOT recorded (%s); run sql/04_gap_table.sql",
                          self.gap_table, full_code(exc), len(gaps), ", ".join(f"{g.kind} {g.first_seq}" for g in gaps[:5]))
                self.gaps_dropped += len(gaps)
                return []
            raise classify(exc, f"inserting into {self.gap_table}", self.cfg.secrets) from None
        repeated = set()
        for e in cur.getbatcherrors():
            if e.full_code != "ORA-00001":
                # A gap row is ours, never bad data: any other refusal is the table's fault.
                raise PermanentSinkError(scrub(f"inserting into {self.gap_table}: {first_line(e)}", self.cfg.secrets), e.full_code)
            repeated.add(e.offset)
        return [g for i, g in enumerate(gaps) if i not in repeated]

    def _commit(self, conn: oracledb.Connection, what: str) -> None:
        try:
            conn.commit()
        except oracledb.Error as exc:
            # Gap rows are keyed: a lost commit outcome is resolved by sending them again.
            raise classify(exc, what, self.cfg.secrets) from None

    def _resolve(self, epoch: int, end: int, result: WriteResult, failure: BaseException) -> WriteResult:
        code = full_code(failure)
        log.warning("commit outcome unknown (%s); reading %s for epoch %d", code, self.cfg.oracle_cursor_table, epoch)
        try:
            with self.connection() as conn:
                cur = conn.cursor()
                next_seq, _ = self._read_cursor(cur, epoch)
                conn.rollback()
        except oracledb.Error as exc:
            raise classify(exc, "commit outcome unknown and the cursor could not be read", self.cfg.secrets) from None
        except SinkError as exc:
            raise TransientSinkError(f"commit outcome unknown and the cursor could not be read: {exc}", exc.code) from None
        if next_seq >= end:
            log.info("commit outcome resolved: committed (cursor at %d)", next_seq)
            return result
        raise TransientSinkError(scrub(f"commit failed, nothing committed (cursor at {next_seq}): {first_line(failure)}", self.cfg.secrets), code)

    def _read_cursor(self, cur: oracledb.Cursor, epoch: int) -> tuple[int, bool]:
        """(NEXT_SEQ, row exists) for ``epoch``, locking the row until commit/rollback."""
        cur.execute(self.read_cursor_sql, [epoch])
        row = cur.fetchone()
        return (int(row[0]), True) if row else (0, False)

    def _advance_cursor(self, cur: oracledb.Cursor, epoch: int, end: int, exists: bool) -> None:
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        cur.setinputsizes(None, oracledb.DB_TYPE_TIMESTAMP, None)
        if exists:
            cur.execute(self.update_cursor_sql, [end, now, epoch])
        else:
            # A concurrent creator of the same row shows up as ORA-00001 here (after
            # waiting for it): classified transient, the batch is retried and reads it.
            cur.setinputsizes(None, None, oracledb.DB_TYPE_TIMESTAMP)
            cur.execute(self.insert_cursor_sql, [epoch, end, now])

    def _input_sizes(self) -> list[Any]:
        sizes = {"TS": oracledb.DB_TYPE_TIMESTAMP, "PLC_CODE": STR_SIZE, "TAG_ADDRESS": STR_SIZE,
                 "TAG_VALUE": oracledb.DB_TYPE_NUMBER, "QUALITY": 16,
                 "RING_EPOCH": oracledb.DB_TYPE_NUMBER, "SEQ": oracledb.DB_TYPE_NUMBER}
        return [sizes[logical] for logical, _ in self.targets]

    def bind_rows(self, epoch: int, records: np.ndarray, fresh: np.ndarray) -> tuple[list[tuple], np.ndarray, list[RowError]]:
        """Bind rows for ``records[fresh]``, the batch index of each, and the rows that
        cannot be bound (reported like database rejections, with TAGPIPE-* codes)."""
        sub = records[fresh]
        ts_us, value, quality = sub["ts_us"], sub["value"], sub["quality"]
        null = R.null_mask(sub)
        bad_ts = (ts_us < TS_MIN_US) | (ts_us > TS_MAX_US)
        bad_q = (quality < 1) | (quality > 3)
        with np.errstate(invalid="ignore"):
            mag = np.abs(value)
            # python-oracledb refuses (DPY-4003, for the whole batch) a float that Oracle's
            # NUMBER cannot hold: catch those rows here, like non-finite values.
            bad_v = ~null & (~np.isfinite(value) | (mag >= NUMBER_MAX) | ((mag < NUMBER_MIN) & (mag != 0)))
        bad = bad_ts | bad_q | bad_v
        rejected = [
            RowError(int(fresh[i]), *(
                ("TAGPIPE-TIME", f"timestamp {int(ts_us[i])} us is outside years 1-9999") if bad_ts[i] else
                ("TAGPIPE-QUALITY", f"unknown quality code {int(quality[i])}") if bad_q[i] else
                ("TAGPIPE-VALUE", f"value {float(value[i])!r} cannot be stored as an Oracle NUMBER (finite, 1e-130 <= |v| < 1e126, or 0)")))
            for i in np.nonzero(bad)[0]
        ]
        keep = ~bad
        sub, null = sub[keep], null[keep]
        cols: dict[str, list] = {}
        cols["TS"] = np.clip(sub["ts_us"], TS_MIN_US, TS_MAX_US).astype("datetime64[us]").tolist()
        cols["PLC_CODE"] = R.decode_codes(sub["plc_code"].tolist())
        cols["TAG_ADDRESS"] = R.decode_codes(sub["tag_address"].tolist())
        values = sub["value"].tolist()
        for i in np.nonzero(null)[0].tolist():
            values[i] = None
        cols["TAG_VALUE"] = values
        cols["QUALITY"] = QUALITY_TEXT[sub["quality"]].tolist()
        cols["RING_EPOCH"] = [epoch] * len(sub)
        cols["SEQ"] = sub["seq"].tolist()
        rows = list(zip(*(cols[logical] for logical, _ in self.targets)))
        return rows, fresh[keep], rejected
