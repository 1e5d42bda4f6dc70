"""Quarantine: rows the database refused and backup lines that cannot be read.

Files: ``BACKUP_FILE_PATH/quarantine/quarantine_YYYYMMDD.csv`` (UTC day), appended to and
fsynced before the batch they came from is committed::

    timestamp,plc_code,tag_address,tag_value,quality,ring_epoch,seq,error_code,error,source,raw

A refused row has its columns and the database's code (e.g. SQLITE_CONSTRAINT_CHECK,
ORA-12899); a corrupt backup line has empty columns, error_code CORRUPT and its text in
``raw``. An operator corrects the file (in a spreadsheet or an editor: fill in or fix the
first five columns) and writes it back::

    python -m pipeline quarantine list
    python -m pipeline quarantine write-back BACKUP_FILE_PATH/quarantine/quarantine_20250115.csv

``write-back`` validates every row, then places them as a new backup file that the writer
replays. The rows get a synthetic identity derived from the corrected file's content
(``records``), so writing the same file back twice inserts nothing twice; the corrected
file then moves to ``quarantine/written-back/``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import os
import sys
import time
import unicodedata
from typing import Iterator

import numpy as np

from . import backup as B
from . import datafiles
from . import records as R

# A quarantined corrupt line keeps its whole text in ``raw``; the csv module refuses a field
# over 131,072 characters by default, which made a whole day's file unreadable. The bound
# stays finite (a file is read into memory row by row anyway).
FIELD_LIMIT = 1 << 30
# "CSV UTF-8" from Excel starts with a byte order mark; utf-8-sig drops it (and reads plain
# UTF-8 unchanged).
ENCODING = "utf-8-sig"

COLUMNS = ("timestamp", "plc_code", "tag_address", "tag_value", "quality", "ring_epoch", "seq", "error_code", "error", "source", "raw")
HEADER = ",".join(COLUMNS)


def _csv_lines(rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerows(rows)
    return buf.getvalue().encode("utf-8", "replace")


def _ends_mid_line(path: str, size: int) -> bool:
    """True if the first ``size`` bytes of ``path`` do not end with a newline."""
    if not size:
        return False
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        return fh.read(1) != b"\n"


class Quarantine:
    """Appends quarantined rows under ``folder`` (BACKUP_FILE_PATH/quarantine), fsynced."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.last_path = ""  # the file of the last append (its name goes into the gap ledger)

    def _append(self, rows: list[list[str]]) -> None:
        datafiles.make_dirs(self.folder)
        path = os.path.join(self.folder, time.strftime("quarantine_%Y%m%d.csv", time.gmtime()))
        new = not os.path.exists(path)
        fd = datafiles.create(path, os.O_WRONLY | os.O_APPEND)
        try:
            data = _csv_lines(rows)
            if new:
                data = (HEADER + "\n").encode() + data
            elif _ends_mid_line(path, os.fstat(fd).st_size):
                # A writer killed mid-append left half a line: end it first.
                data = b"\n" + data
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            B.fsync_dir(self.folder)
        self.last_path = path

    def add_rows(self, epoch: int, records: np.ndarray, errors: list, source: str) -> int:
        """Quarantine rows refused by the database (``errors``: RowError per row). Raises OSError."""
        if len(records) == 0:
            return 0
        ts, plc, tag, vals, quality, seq = R.text_columns(records)
        e = str(int(epoch))
        rows = []
        for i in range(len(records)):
            err = errors[i]
            rows.append([ts[i], plc[i], tag[i], vals[i], quality[i], e, str(seq[i]), err.code, err.message, source, ""])
        self._append(rows)
        return len(rows)

    def add_lines(self, bad: list[B.BadLine], source: str) -> int:
        """Quarantine unreadable backup lines (kept verbatim in ``raw``). Raises OSError."""
        if not bad:
            return 0
        self._append([["", "", "", "", "", "", "", "CORRUPT", f"line {b.line_no}: {b.reason}", source, b.raw] for b in bad])
        return len(bad)


@contextlib.contextmanager
def _long_fields() -> Iterator[None]:
    """Let the csv module read fields up to FIELD_LIMIT characters, then restore its limit."""
    old = csv.field_size_limit(FIELD_LIMIT)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def list_files(folder: str) -> list[tuple[str, int]]:
    """Quarantine files in ``folder`` with their row counts. Raises OSError (e.g.
    NotADirectoryError, PermissionError); a missing folder is an empty list."""
    try:
        names = sorted(n for n in os.listdir(folder) if n.startswith("quarantine_") and n.endswith(".csv"))
    except FileNotFoundError:
        return []
    out = []
    with _long_fields():
        for n in names:
            with open(os.path.join(folder, n), newline="", encoding=ENCODING, errors="replace") as fh:
                out.append((n, max(0, sum(1 for _ in csv.reader(fh)) - 1)))
    return out


def _ascii_field(text: str) -> str:
    """``text`` in NFKC form: digits, letters and punctuation typed full-width (an IME)
    become their ASCII forms; anything still not ASCII is refused by ``parse_line``."""
    return unicodedata.normalize("NFKC", text).strip()


def parse_corrected(path: str) -> tuple[list[list[str]], list[str]]:
    """Rows of a corrected file as the five original fields, and the problems found.

    Accepts a quarantine file, or a backup file of either format, as UTF-8 with or without
    a byte order mark. Raises OSError if ``path`` cannot be read (missing, a folder...)."""
    good: list[list[str]] = []
    problems: list[str] = []
    with _long_fields(), open(path, newline="", encoding=ENCODING, errors="replace") as fh:
        reader = csv.reader(fh)
        header = next(reader, None) or []
        names = [h.strip().lower() for h in header]
        if names[:5] != list(COLUMNS[:5]):
            return [], [f"{path}: the header must start with {','.join(COLUMNS[:5])}"]
        raw_col = names.index("raw") if "raw" in names else None
        for line_no, row in enumerate(reader, start=2):
            if not any(c.strip() for c in row):
                continue
            fields = [_ascii_field(c) for c in row[:5]] + [""] * (5 - len(row[:5]))
            check = fields
            if not any(fields) and raw_col is not None and raw_col < len(row):
                # A corrupt backup line: the operator fixed its text in ``raw``.
                raw = _ascii_field(row[raw_col])
                check = [c.strip() for c in (next(csv.reader([raw])) if '"' in raw else raw.split(","))]
                fields = check[:5]
            try:
                B.parse_line(check, line_no, 1)
                if not all(f.isascii() and "," not in f and '"' not in f for f in fields):
                    raise ValueError("a field holds a comma, a quote or a character that is not ASCII")
            except (ValueError, OverflowError) as e:
                problems.append(f"line {line_no}: {e}")
                continue
            good.append(fields)
    return good, problems


def write_back(path: str, backup_folder: str, skip_bad: bool = False) -> tuple[str | None, int, list[str]]:
    """Validate ``path`` and place its rows as a new backup file for the writer to replay.

    Returns (backup file name or None, rows, problems). Nothing is written when problems
    were found and ``skip_bad`` is false. Raises OSError.
    """
    good, problems = parse_corrected(path)
    if (problems and not skip_bad) or not good:
        return None, 0, problems
    with open(path, "rb") as fh:
        epoch = R.synthetic_epoch("quarantine:" + hashlib.sha256(fh.read()).hexdigest())
    lines = [B.HEADER] + [",".join(f + [str(epoch), str(i)]) for i, f in enumerate(good, start=1)]
    data = ("\n".join(lines) + "\n").encode("ascii")  # parse_corrected let only ASCII fields through
    datafiles.make_dirs(backup_folder)
    tmp = os.path.join(backup_folder, f".writeback-{os.getpid()}.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # left by a killed run of this pid: start from a fresh file and mode
        fd = datafiles.create(tmp, os.O_WRONLY | os.O_EXCL)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # Appear all at once under a name nobody else holds: link fails if the name exists.
        stamp, suffix = B.stamp_of(time.time()), 1
        latest = B.list_backups(backup_folder)
        if latest and (k := B.name_key(latest[-1])) is not None and (stamp, suffix) <= k:
            stamp, suffix = k[0], k[1] + 1
        while True:
            name = B.make_name(stamp, suffix)
            try:
                os.link(tmp, os.path.join(backup_folder, name))
                break
            except FileExistsError:
                suffix += 1
    finally:
        # Whatever failed, no .writeback-*.tmp is left behind (the writer ignores it, but
        # an operator would wonder whether the rows were written back).
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    B.fsync_dir(backup_folder)
    done = os.path.join(os.path.dirname(os.path.abspath(path)), "written-back")
    datafiles.make_dirs(done)
    os.replace(path, os.path.join(done, os.path.basename(path)))
    return name, len(good), problems


def run(args: argparse.Namespace) -> int:
    """``python -m pipeline quarantine list | write-back FILE [--skip-bad]`` with its parsed
    options (``pipeline.cli``). Returns 0, 6 (rows left unwritten, or a file or folder that
cannot be read or written: one line on stderr) or 2 (a bad setting)."""
    from pipeline.common import exitcodes
    from pipeline.common.process import settings_or_exit

    settings = settings_or_exit("quarantine")
    qdir = os.path.join(settings.backup_file_path, "quarantine")
    try:
        return _run(args, settings, qdir)
    except (OSError, csv.Error) as e:
        # A missing file, a folder given as the file, no permission, a field over
        # FIELD_LIMIT: one line, no traceback.
        where = getattr(e, "filename", None) or (args.file if args.action == "write-back" else qdir)
        print(f"quarantine {args.action}: {where}: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
        return exitcodes.CHECK_FAILED


def _run(args: argparse.Namespace, settings, qdir: str) -> int:
    from pipeline.common import exitcodes

    if args.action == "list":
        files = list_files(qdir)
        if not files:
            print(f"no quarantined rows in {qdir}")
        for name, n in files:
            print(f"{os.path.join(qdir, name)}: {n} rows")
        return exitcodes.OK
    name, n, problems = write_back(args.file, settings.backup_file_path, args.skip_bad)
    for p in problems:
        print(f"{args.file}: {p}", file=sys.stderr)
    if name is None:
        print(f"nothing written back from {args.file}" + (" (fix the lines above, or use --skip-bad)" if problems else ""), file=sys.stderr)
        return exitcodes.CHECK_FAILED
    print(f"wrote {n} rows to {os.path.join(settings.backup_file_path, name)}; the writer replays them")
    return exitcodes.CHECK_FAILED if problems else exitcodes.OK
