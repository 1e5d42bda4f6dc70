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


# --- the ring's copy of the most recent gaps ------------------------------------------------
# The writer also puts every gap row it made durable into a consumer-owned telemetry table
# of the ring (pipeline/common/telemetry.py SCHEMA), so the web process, which has no
# database login, can list recent gaps for any sink. The table is a ring buffer: row
# ``(n - 1) % RING_SLOTS`` holds the n-th row written (n from 1), and the word
# ``writer.gaps_written`` counts the rows written. The writer fills the row's cells first and
# bumps the counter after (publish after write). One slot more than the rows listed: the
# slot the writer may be filling next is never read. RING_ROWS is bounded by the header's
# telemetry area (16 KB header, shared with every other figure), not by choice.
RING_TABLE = "recent_gaps"
RING_COUNTER = "writer.gaps_written"
RING_ROWS = 32  # gaps a reader gets at most
RING_SLOTS = RING_ROWS + 1  # rows of the table
RING_COLUMNS = ("n", "ring_epoch", "kind", "first_seq", "last_seq", "count", "start_us", "end_us",
                "plc0", "plc1", "detail0", "detail1")
_U64 = (1 << 64) - 1
_QUARANTINE_FILE = re.compile(r"^quarantine_(.*)\.csv$")


def _signed(v: int) -> int:
    v &= _U64
    return v - (1 << 64) if v >= 1 << 63 else v


def _pack16(text: str) -> tuple[int, int]:
    raw = text.encode("ascii", "replace")[:16].ljust(16, b"\0")
    return int.from_bytes(raw[:8], "little", signed=True), int.from_bytes(raw[8:], "little", signed=True)


def _unpack16(w0: int, w1: int) -> str:
    raw = int(w0).to_bytes(8, "little", signed=True) + int(w1).to_bytes(8, "little", signed=True)
    return raw.rstrip(b"\0").decode("ascii", "replace")


def ring_row(n: int, gap: Gap) -> dict[str, int]:
    """The cells (by RING_COLUMNS name, i64) of the ``n``-th gap row put in the ring table.
    Texts are cut to 16 bytes; a quarantine file name keeps only its stamp (read back whole)."""
    detail = gap.detail
    m = _QUARANTINE_FILE.match(detail) if gap.kind == KINDS[QUARANTINE] else None
    if m:
        detail = m.group(1)
    plc0, plc1 = _pack16(gap.plc_code)
    det0, det1 = _pack16(detail)
    return {"n": n, "ring_epoch": _signed(gap.ring_epoch), "kind": KIND_CODES.get(gap.kind, 0),
            "first_seq": _signed(gap.first_seq), "last_seq": _signed(gap.last_seq), "count": gap.count,
            "start_us": gap.start_us, "end_us": gap.end_us, "plc0": plc0, "plc1": plc1, "detail0": det0, "detail1": det1}


def ring_gaps(rows: list[tuple[int, ...]], written_before: int, written_after: int) -> list[Gap]:
    """The complete gap rows of a copy of the ring table, newest first.

    ``rows``: the table as copied (``Snapshot.tables[RING_TABLE]``); ``written_before`` and
    ``written_after``: the counter ``writer.gaps_written`` read just before and just after
    the copy. Row n is complete when n <= written_before (its cells were written before the
    counter said n) and untouched when n > written_after - RING_SLOTS + 1 (the writer starts
    overwriting its slot only once the counter is n + RING_SLOTS - 1); each row's own ``n``
    cell must say n too. Anything else may be torn and is left out, so a row is never half
    read. At most RING_ROWS rows (all of them while the writer is not adding one).
    """
    col = {c: i for i, c in enumerate(RING_COLUMNS)}
    first = max(1, written_after - RING_SLOTS + 2)
    out = []
    for n in range(written_before, first - 1, -1):
        r = rows[(n - 1) % RING_SLOTS]
        if int(r[col["n"]]) != n:
            continue
        kind = KINDS.get(int(r[col["kind"]]), str(int(r[col["kind"]])))
        detail = _unpack16(r[col["detail0"]], r[col["detail1"]])
        if kind == KINDS[QUARANTINE]:
            detail = f"quarantine_{detail}.csv"
        out.append(Gap(int(r[col["ring_epoch"]]) & _U64, kind, int(r[col["first_seq"]]) & _U64,
                       int(r[col["last_seq"]]) & _U64, int(r[col["count"]]), int(r[col["start_us"]]),
                       int(r[col["end_us"]]), _unpack16(r[col["plc0"]], r[col["plc1"]]) or ALL_PLCS, detail))
    return out


def select(gaps: list[Gap], from_us: int, to_us: int, plc: str | None = None, kind: str | None = None,
           limit: int = 100, offset: int = 0) -> tuple[list[Gap], int]:
    """``query_sqlite``'s filter, order and paging over gaps in memory: those overlapping
    ``[from_us, to_us)`` (us since 1970 UTC), of ``plc`` or all PLCs, of ``kind``; newest
    first (start, then first seq); (one page of ``limit`` from ``offset``, total matching)."""
    hits = [g for g in gaps if g.start_us < to_us and g.end_us >= from_us
            and (not plc or g.plc_code in (plc, ALL_PLCS)) and (not kind or g.kind == kind)]
    hits.sort(key=lambda g: (g.start_us, g.first_seq), reverse=True)
    return hits[offset:offset + limit], len(hits)
