"""CSV backup files: names, writing (append + fsync), reading and validating both formats.

A backup file holds rows that are durable on disk but not yet in the database::

    timestamp,plc_code,tag_address,tag_value,quality,ring_epoch,seq
    2025-01-15T10:30:45.123456,KRCWO12ELOA101,D100,1234.5,GOOD,4611686018427387904,17

A gap-ledger record (pipeline/common/gaps.py) is a line whose quality says
``GAP:<kind>``; its tag_value is the gap's end (us since 1970) and its tag_address the
gap's detail, e.g. ``2025-01-15T10:30:45.000000,*,4096,1736937046000000.0,GAP:overwritten,...``.

The first five columns are the original design's (operators open these files in a
spreadsheet); ``timestamp`` is UTC with microseconds; ``tag_value`` is empty for NULL
(BAD quality). The identity columns come after. Files of the original format (five
columns, milliseconds) are read too: their rows get a synthetic identity (``records``).

Names: ``backup_YYYYMMDD_HHMMSS.csv`` (UTC), ``_2``, ``_3`` ... when several fall in one
second; files are created with O_EXCL, so two processes never share a name. Files are
replayed in name order (time, then suffix), which the writer keeps equal to creation order.

Reading never trusts the file: every line is validated; a bad line (wrong field count,
unparsable time, over-long code, unknown quality, a value that is not a finite number in
the writer's own syntax, a last line cut short without its newline...) comes back as a ``BadLine`` for quarantine instead of stopping the reader.
"""

from __future__ import annotations

import csv
import math
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from pipeline.common import gaps as G
from shm import layout as L

from . import datafiles
from . import records as R

HEADER = "timestamp,plc_code,tag_address,tag_value,quality,ring_epoch,seq"
ORIGINAL_HEADER = "timestamp,plc_code,tag_address,tag_value,quality"
NAME_RE = re.compile(r"^backup_(\d{8})_(\d{6})(?:_(\d+))?\.csv$")
_EPOCH_DT = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MAX_U64 = (1 << 64) - 1


def name_key(name: str) -> tuple[str, int] | None:
    """Sort key of a backup file name ((YYYYMMDD_HHMMSS, suffix)), or None if not one."""
    m = NAME_RE.match(name)
    if not m:
        return None
    return f"{m.group(1)}_{m.group(2)}", int(m.group(3) or 1)


def make_name(stamp: str, suffix: int) -> str:
    return f"backup_{stamp}.csv" if suffix <= 1 else f"backup_{stamp}_{suffix}.csv"


def stamp_of(t: float) -> str:
    return time.strftime("%Y%m%d_%H%M%S", time.gmtime(t))


def list_backups(folder: str) -> list[str]:
    """Backup file names in ``folder`` (not its subfolders), oldest first."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    keyed = [(k, n) for n in names if (k := name_key(n)) is not None]
    return [n for _, n in sorted(keyed)]


def fsync_dir(folder: str) -> None:
    """Make a create/rename/unlink in ``folder`` durable. Raises OSError."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def format_rows(epoch: int, records: np.ndarray) -> bytes:
    """CSV lines (current format) of ``records`` of stream ``epoch``."""
    if len(records) == 0:
        return b""
    gap = G.is_gap(records)
    if gap.any():
        g = records[gap]
        ts = np.datetime_as_string(g["ts_us"].astype("datetime64[us]"), unit="us").tolist()
        plc = R.decode_codes(g["plc_code"].tolist())
        detail = R.decode_codes(g["tag_address"].tolist())
        lines = [f"{t},{p},{d},{float(r['value'])!r},{G.BACKUP_PREFIX}{G.KINDS[int(r['quality'])]},{int(epoch)},{int(r['seq'])}\n"
                 for t, p, d, r in zip(ts, plc, detail, g)]
        return "".join(lines).encode("ascii", "replace") + format_rows(epoch, records[~gap])
    ts, plc, tag, vals, quality, seq = R.text_columns(records)
    e = str(int(epoch))
    lines = [f"{t},{p},{a},{v},{q},{e},{s}\n" for t, p, a, v, q, s in zip(ts, plc, tag, vals, quality, seq)]
    return "".join(lines).encode("ascii", "replace")


class BackupWriter:
    """One backup file being appended to. Every ``append`` is fsynced before it returns;
    a failed append (e.g. ENOSPC) is cut back off, so the file never holds half a line
    followed by more data."""

    def __init__(self, folder: str, now: float | None = None, after: str | None = None) -> None:
        """Create a new file in ``folder`` (made if missing) named for ``now`` (UTC), and
        sorting after the name ``after`` if given. Raises OSError (e.g. ENOSPC)."""
        datafiles.make_dirs(folder)
        stamp = stamp_of(time.time() if now is None else now)
        suffix = 1
        if after is not None and (k := name_key(after)) is not None and (stamp, suffix) <= k:
            stamp, suffix = k[0], k[1] + 1  # the clock went back: keep name order = creation order
        while True:
            name = make_name(stamp, suffix)
            path = os.path.join(folder, name)
            try:
                fd = datafiles.create(path, os.O_WRONLY | os.O_EXCL | os.O_APPEND)
                break
            except FileExistsError:
                suffix += 1
        self.folder, self.name, self.path, self._fd = folder, name, path, fd
        self.rows = 0
        self.size = 0
        self.created = time.monotonic()
        try:
            self._write((HEADER + "\n").encode())
            fsync_dir(folder)
        except OSError:
            self.discard()
            raise

    def _write(self, data: bytes) -> None:
        before = self.size
        try:
            view = memoryview(data)
            while view:
                k = os.write(self._fd, view)
                view = view[k:]
            os.fsync(self._fd)
        except OSError:
            try:
                os.ftruncate(self._fd, before)
            except OSError:
                pass
            raise
        self.size = before + len(data)

    def append(self, epoch: int, records: np.ndarray) -> None:
        """Append and fsync the rows. Raises OSError; the file is then as it was before."""
        self._write(format_rows(epoch, records))
        self.rows += len(records)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def discard(self) -> None:
        """Close and delete the file (only while it holds no rows)."""
        self.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


@dataclass
class BadLine:
    """A backup line that cannot be delivered: where it was, its text, why."""

    line_no: int
    raw: str
    reason: str


@dataclass
class Chunk:
    """Rows read from a backup file: (epoch, RECORD_DTYPE array) groups in file order."""

    groups: list[tuple[int, np.ndarray]] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)
    end_offset: int = 0
    end_line: int = 0
    eof: bool = False

    @property
    def rows(self) -> int:
        return sum(len(r) for _, r in self.groups)


_MINUTES: dict[str, int] = {}
_CODES: set[str] = set()
# The only syntax accepted, the one this writer's own files use (``records.text_columns``:
# ISO-8601 UTC, ``repr`` of a finite float) plus the original design's millisecond times.
# Anything else Python would also take (``1_0``, ``inf``, full-width digits, a 9-digit
# nanosecond fraction that ``fromisoformat`` silently cuts, a time zone) is a bad line:
# a file changed by hand must not put a different value into the database quietly.
_TS_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?", re.ASCII)
_NUMBER_RE = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?", re.ASCII)
_INT_RE = re.compile(r"[0-9]+", re.ASCII)
_NULL_TEXT = ("", "NULL", "NONE")


def _parse_ts(text: str) -> int:
    """Microseconds since 1970 UTC of ``YYYY-MM-DDTHH:MM:SS[.f]`` (UTC; a space for the
    ``T`` is accepted, as a spreadsheet writes it; 1 to 6 fraction digits). Raises
    ValueError for anything else, a nanosecond fraction or a time zone included.

    The minute is parsed once and cached, seconds and fraction by hand (replay speed
    depends on it)."""
    if _TS_RE.fullmatch(text) is None:
        raise ValueError(f"time {text[:40]!r} is not YYYY-MM-DDTHH:MM:SS[.ffffff] (UTC, at most microseconds)")
    sec, frac = text[17:19], text[20:]
    if int(sec) >= 60:
        raise ValueError(f"time {text!r}: second {sec} out of range")
    key = text[:10] + "T" + text[11:16]
    base = _MINUTES.get(key)
    if base is None:
        base = _slow_ts(key + ":00")
        if len(_MINUTES) > 100_000:
            _MINUTES.clear()
        _MINUTES[key] = base
    return base + int(sec) * 1_000_000 + (int(frac.ljust(6, "0")) if frac else 0)


def _slow_ts(text: str) -> int:
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    d = dt - _EPOCH_DT
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


_GAP_BIT = 0x80  # marks a gap line's kind in the parsed quality column (read_chunk)


def _parse_int(name: str, text: str) -> int:
    if _INT_RE.fullmatch(text) is None:
        raise ValueError(f"{name} {text[:40]!r} is not a decimal integer")
    return int(text)


def parse_value(raw: str) -> float | None:
    """The value of a ``tag_value`` field: None for NULL (empty, NULL, NONE), else a finite
    float in the writer's own syntax. Raises ValueError for any other text, and for a
    number that is not finite once read (``1e400``): with GOOD quality it used to be
    stored as a NULL that claims to be good; now the line goes to quarantine."""
    if raw.upper() in _NULL_TEXT:
        return None
    if _NUMBER_RE.fullmatch(raw) is None:
        raise ValueError(f"tag_value {raw[:40]!r} is not a number (digits, '.', exponent; no inf, nan or '_')")
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"tag_value {raw[:40]!r} is outside the range of a double")
    return value


def parse_line(fields: list[str], line_no: int, file_epoch: int) -> tuple[int, int, int, str, str, float | None, int]:
    """Validate one line's fields. Returns (epoch, seq, ts_us, plc, tag, value, quality).
    Raises ValueError with the reason."""
    if len(fields) == 7:
        epoch, seq = _parse_int("ring_epoch", fields[5]), _parse_int("seq", fields[6])
        if not 0 < epoch <= _MAX_U64 or not 0 <= seq <= (1 << 63) - 1:
            raise ValueError("ring_epoch or seq out of range")
    elif len(fields) == 5:
        epoch, seq = file_epoch, line_no
    else:
        raise ValueError(f"{len(fields)} fields (expected 7, or 5 in the original format)")
    ts = _parse_ts(fields[0])
    plc = fields[1].strip()
    tag = fields[2].strip()
    if plc not in _CODES:
        L.check_field_text("plc_code", plc, L.PLC_CODE_MAX)
        _CODES.add(plc)
    if tag not in _CODES:
        L.check_field_text("tag_address", tag, L.TAG_ADDRESS_MAX)
        _CODES.add(tag)
    q = L.QUALITY_CODES.get(fields[4].strip().upper())
    if q is None and fields[4].startswith(G.BACKUP_PREFIX) and len(fields) == 7:
        q = _GAP_BIT | G.KIND_CODES.get(fields[4][len(G.BACKUP_PREFIX):], 0)  # a gap line: see read_chunk
    if q is None or q == _GAP_BIT:
        raise ValueError(f"quality {fields[4]!r} is not GOOD, BAD or UNCERTAIN")
    value = parse_value(fields[3].strip())
    return epoch, seq, ts, plc, tag, value, q  # type: ignore[return-value]


def read_chunk(path: str, offset: int = 0, line_no: int = 0, max_rows: int = 50_000) -> Chunk:
    """Read and validate up to ``max_rows`` rows of ``path`` from byte ``offset`` (the start
    of line ``line_no + 1``). Never raises for bad content; raises OSError if unreadable."""
    file_epoch = R.synthetic_epoch(os.path.basename(path))
    chunk = Chunk()
    # One group per run of consecutive rows of one stream: (epoch, ts, plc, tag, value, quality, seq).
    groups: list[tuple[int, list, list, list, list, list, list]] = []
    cur_epoch = None
    rows = 0
    with open(path, "rb") as fh:
        fh.seek(offset)
        while rows < max_rows:
            raw = fh.readline()
            if not raw:
                chunk.eof = True
                break
            line_no += 1
            offset += len(raw)
            if not raw.endswith(b"\n"):
                chunk.bad.append(BadLine(line_no, raw.decode("latin-1"), "truncated line (no newline at the end of the file)"))
                continue
            try:
                text = raw.decode("ascii").rstrip("\r\n")
            except UnicodeDecodeError:
                chunk.bad.append(BadLine(line_no, raw.decode("latin-1").rstrip("\r\n"), "not ASCII text"))
                continue
            if not text.strip() or text in (HEADER, ORIGINAL_HEADER):
                continue
            fields = next(csv.reader([text])) if '"' in text else text.split(",")
            try:
                epoch, seq, ts, plc, tag, value, q = parse_line(fields, line_no, file_epoch)
            except (ValueError, OverflowError) as e:
                chunk.bad.append(BadLine(line_no, text, str(e)))
                continue
            if epoch != cur_epoch:
                # Consecutive rows of one stream form one group; a stream seen again later
                # starts a new group so file order (= seq order) is kept.
                cur_epoch = epoch
                groups.append((epoch, [], [], [], [], [], []))
            c = groups[-1]
            c[1].append(ts)
            c[2].append(plc)
            c[3].append(tag)
            c[4].append(value)
            c[5].append(q)
            c[6].append(seq)
            rows += 1
        else:
            chunk.eof = fh.read(1) == b""
    for epoch, ts, plc, tag, values, quality, seq in groups:
        recs = R.make_records(ts, plc, tag, values, quality, seq)
        gap = (recs["quality"] & _GAP_BIT) != 0
        if gap.any():  # gap lines become FLAG_GAP records again
            recs["quality"][gap] &= ~np.uint8(_GAP_BIT)
            recs["flags"][gap] = L.FLAG_GAP
        chunk.groups.append((epoch, recs))
    chunk.end_offset = offset
    chunk.end_line = line_no
    return chunk


def count_rows(path: str) -> int:
    """Data lines in a backup file (newline count minus the header), cheap."""
    n = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            n += block.count(b"\n")
    return max(0, n - 1)
