"""The gap ledger's row type and the one way a gap travels as a ring record.

A gap is a span of time (and seqs) in which data was lost or not collected. It becomes
a row of the gap table (TAG_DATA_GAP next to TAG_DATA) exactly once. To reach the
database the same way data does (ring -> database, or ring -> backup file -> replay), a
gap travels as one ``RECORD_DTYPE`` record with ``FLAG_GAP`` set, encoded so::

    field        gap meaning
    seq          the gap's identity seq (see KINDS below) in stream ``ring_epoch``
    ts_us        start of the gap, us since 1970 UTC
    value        end of the gap, us since 1970 UTC (float64: exact below 2**53 us)
    plc_code     the PLC concerned, or "*" for all PLCs (or unknown)
    tag_address  detail, at most 16 ASCII bytes, by kind (below)
    quality      the kind code (1..4)
    flags        FLAG_GAP

Kinds (code, name, identity seq, detail):

1 ``overwritten``: records overwritten in the ring before the writer read them; seq =
  first lost seq; detail = last lost seq (decimal). Times are the neighbours' poll times.
2 ``poller_down``: no poller ran; seq = the seq of the record the new poller published
  first (or of the first read of a replaced ring); detail = why ("killed pid 123").
3 ``plc_unreachable``: one PLC did not answer; seq = the gap record's own ring seq;
  detail = the error, shortened (``compact``).
4 ``quarantine``: rows the database refused, moved to a quarantine file; seq = first
  refused row's seq; detail = ``YYYYMMDD:N``: the file quarantine_YYYYMMDD.csv and N lines.

The gap table's key is (RING_EPOCH, KIND, FIRST_SEQ): inserting a row twice is a no-op.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np

from shm import layout as L

OVERWRITTEN, POLLER_DOWN, PLC_UNREACHABLE, QUARANTINE = 1, 2, 3, 4
KINDS: dict[int, str] = {OVERWRITTEN: "overwritten", POLLER_DOWN: "poller_down", PLC_UNREACHABLE: "plc_unreachable",
                         QUARANTINE: "quarantine"}
KIND_CODES: dict[str, int] = {name: code for code, name in KINDS.items()}
ALL_PLCS = "*"
DETAIL_MAX = L.TAG_ADDRESS_MAX
# Backup-file quality column of a gap line: "GAP:<kind name>" (data lines say GOOD/BAD/UNCERTAIN).
BACKUP_PREFIX = "GAP:"


@dataclass(frozen=True)
class Gap:
    """One row of the gap table. Times in us since 1970 UTC; ``count`` records (kind 1),
    quarantined lines (kind 4), else 0."""

    ring_epoch: int
    kind: str
    first_seq: int
    last_seq: int
    count: int
    start_us: int
    end_us: int
    plc_code: str
    detail: str

    def as_json(self) -> dict:
        return asdict(self)


def compact(text: str, limit: int = DETAIL_MAX) -> str:
    """``text`` made fit for a record's code field: printable ASCII without spaces, commas
    or quotes (they become ``_``), cut to ``limit`` bytes; "-" if nothing is left."""
    ascii_text = text.encode("ascii", "replace").decode("ascii")
    clean = re.sub(r"[^\x21-\x7e]|[,\"']", "_", ascii_text.strip())
    clean = re.sub(r"_+", "_", clean).strip("_")
    return clean[:limit] or "-"


def make_record(kind: int, seq: int, start_us: int, end_us: int, plc_code: str, detail: str) -> np.ndarray:
    """A one-record RECORD_DTYPE array carrying a gap (see the module doc). ``plc_code``
    and ``detail`` are made to fit with ``compact``. Raises ValueError for an unknown kind."""
    if kind not in KINDS:
        raise ValueError(f"unknown gap kind {kind}")
    rec = np.zeros(1, dtype=L.RECORD_DTYPE)
    rec["seq"] = seq
    rec["ts_us"] = start_us
    rec["value"] = float(max(end_us, start_us))
    rec["plc_code"] = compact(plc_code or ALL_PLCS, L.PLC_CODE_MAX).encode("ascii")
    rec["tag_address"] = compact(detail).encode("ascii")
    rec["quality"] = kind
    rec["flags"] = L.FLAG_GAP
    return rec


def is_gap(records: np.ndarray) -> np.ndarray:
    """Boolean mask of the gap records in a RECORD_DTYPE array."""
    return (records["flags"] & L.FLAG_GAP) != 0


def from_record(epoch: int, rec) -> Gap:
    """The gap table row a FLAG_GAP record stands for (``epoch``: its stream)."""
    kind = int(rec["quality"])
    seq = int(rec["seq"])
    detail = bytes(rec["tag_address"]).rstrip(b"\0").decode("ascii", "replace")
    plc = bytes(rec["plc_code"]).rstrip(b"\0").decode("ascii", "replace") or ALL_PLCS
    last, count = seq, 0
    if kind == OVERWRITTEN and detail.isdigit():
        last = max(int(detail), seq)
        count, detail = last - seq + 1, ""
    elif kind == QUARANTINE:
        stamp, _, n = detail.partition(":")
        count = int(n) if n.isdigit() else 0
        detail = f"quarantine_{stamp}.csv"
    return Gap(int(epoch), KINDS.get(kind, str(kind)), seq, last, count, int(rec["ts_us"]), int(rec["value"]), plc, detail)


def table_name(data_table: str) -> str:
    """The gap table next to a data table: ``<table>_GAP`` (schema prefix kept)."""
    return f"{data_table}_GAP"


def split(records: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(data records, gap records, batch index of each data record or None when the
    batch holds no gap). A sink writes the two to their tables in one transaction."""
    mask = is_gap(records)
    if not mask.any():
        return records, records[:0], None
    return records[~mask], records[mask], np.flatnonzero(~mask)


SQLITE_TABLE = "TAG_DATA_GAP"  # the SQLite sink's gap table (next to TAG_DATA)


def query_sqlite(path: str, from_us: int, to_us: int, plc: str | None = None, kind: str | None = None,
                 limit: int = 100, offset: int = 0) -> tuple[list[Gap], int]:
    """Gaps overlapping ``[from_us, to_us)`` (us since 1970 UTC) from the SQLite database at
    ``path``, newest first: (one page of ``limit`` rows from ``offset``, total matching).
    ``plc`` matches that PLC's gaps and those of all PLCs ("*"). Opens the file read-only;
    a file or table not created yet reads as no gaps. Raises sqlite3.Error (locked too
    long, not a database)."""
    import os
    import sqlite3
    import urllib.parse

    if not os.path.exists(path):
        return [], 0
    conn = sqlite3.connect("file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro", uri=True, timeout=2.0)
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (SQLITE_TABLE,)).fetchone() is None:
            return [], 0
        where = ["START_TS < ?", "END_TS >= ?"]
        args: list = [to_us, from_us]
        if plc:
            where.append("PLC_CODE IN (?, ?)")
            args += [plc, ALL_PLCS]
        if kind:
            where.append("KIND = ?")
            args.append(kind)
        cond = " AND ".join(where)
        total = conn.execute(f"SELECT COUNT(*) FROM {SQLITE_TABLE} WHERE {cond}", args).fetchone()[0]
        rows = conn.execute(
            f"SELECT RING_EPOCH, KIND, FIRST_SEQ, LAST_SEQ, ROW_COUNT, START_TS, END_TS, PLC_CODE, DETAIL FROM {SQLITE_TABLE}"
            f" WHERE {cond} ORDER BY START_TS DESC, FIRST_SEQ DESC LIMIT ? OFFSET ?", args + [limit, offset]).fetchall()
    finally:
        conn.close()
    return [Gap(int(r[0]) & ((1 << 64) - 1), *r[1:]) for r in rows], int(total)
