"""Store and forward: the backup files waiting for replay.

``Spool`` owns BACKUP_FILE_PATH: the closed files waiting for replay (oldest first), the
one file being appended to while spilling, ``replayed/`` (files already written back,
removed after BACKUP_RETENTION_DAYS) and the row/byte counts shown to operators. A
process never appends to a file left by another (a killed writer may have left half a
line): every process starts a new file. (The database prober is in ``circuit``.)
"""

from __future__ import annotations

import logging
import os
import time

from . import backup as B
from . import datafiles

log = logging.getLogger("tagpipe.writer.spool")

ROTATE_AGE_S = 300.0  # a spill file is closed after 5 minutes, so replay can start on it


class Spool:
    """Backup files of one folder. Not thread-safe (main thread only)."""

    def __init__(self, folder: str, max_rows: int, retention_s: float) -> None:
        self.folder = folder
        self.replayed_dir = os.path.join(folder, "replayed")
        self.max_rows = max_rows
        self.retention_s = retention_s
        self.pending: list[str] = []  # closed files, oldest first
        self.rows: dict[str, int] = {}
        self.first_ts: dict[str, int] = {}
        self.sizes: dict[str, int] = {}  # bytes of closed files (no stat per gauge update)
        self.active: B.BackupWriter | None = None
        self.replayed_rows = 0  # rows of pending[0] already written back (set by replay)

    def scan(self) -> None:
        """Find files left by earlier runs (all closed: never appended to again). Raises OSError."""
        datafiles.make_dirs(self.folder)
        self.pending = B.list_backups(self.folder)
        for name in self.pending:
            self._track(name)
        if self.pending:
            log.info("%d backup files with %d rows wait for replay in %s", len(self.pending), sum(self.rows.values()), self.folder)

    def rescan(self) -> int:
        """Pick up files placed by others (``quarantine write-back``, an operator copying a
        file back). Returns how many were new. Raises OSError."""
        known = set(self.pending) | ({self.active.name} if self.active else set())
        new = [n for n in B.list_backups(self.folder) if n not in known]
        for name in new:
            self._track(name)
            log.info("new backup file %s (%d rows) queued for replay", name, self.rows[name])
        if new:
            self.pending = sorted(self.pending + new, key=lambda n: B.name_key(n) or ("", 0))
        return len(new)

    def _track(self, name: str) -> None:
        """Read what the gauges need of a closed file once (rows, first poll time, size)."""
        path = self.path(name)
        self.rows[name] = B.count_rows(path)
        self.first_ts[name] = _first_ts(path)
        self.sizes[name] = _size(path)

    def has_work(self) -> bool:
        return bool(self.pending) or self.active is not None

    def spill(self, epoch: int, records) -> int:
        """Append rows to the active file (creating it first). Returns files created (0/1).

        The rows are on disk (file and folder fsynced) when this returns. Raises OSError;
        nothing is then written.
        """
        created = 0
        if self.active is None:
            newest = self.pending[-1] if self.pending else None
            self.active = B.BackupWriter(self.folder, after=newest)
            self.rows[self.active.name] = 0
            created = 1
            log.warning("spilling to backup file %s", self.active.path)
        try:
            self.active.append(epoch, records)
        except OSError:
            if self.active.rows == 0:
                self.active.discard()
                self.rows.pop(self.active.name, None)
                self.active = None
            raise
        name = self.active.name
        if self.rows[name] == 0 and len(records):
            self.first_ts[name] = int(records["ts_us"][0])
        self.rows[name] += len(records)
        if self.active.rows >= self.max_rows or time.monotonic() - self.active.created >= ROTATE_AGE_S:
            self.close_active()
        return created

    def close_active(self) -> None:
        """Close the file being appended to; it joins the files waiting for replay."""
        if self.active is None:
            return
        self.active.close()
        self.sizes[self.active.name] = self.active.size
        self.pending.append(self.active.name)
        log.info("closed backup file %s (%d rows)", self.active.path, self.active.rows)
        self.active = None

    def oldest(self) -> str | None:
        return self.pending[0] if self.pending else None

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def done(self, name: str) -> None:
        """Move a fully replayed file to replayed/ (durably). Raises OSError."""
        datafiles.make_dirs(self.replayed_dir)
        target = os.path.join(self.replayed_dir, name)
        k = 2
        while os.path.exists(target):
            target = os.path.join(self.replayed_dir, f"{name[:-4]}.{k}.csv")
            k += 1
        os.replace(self.path(name), target)
        B.fsync_dir(self.folder)
        B.fsync_dir(self.replayed_dir)
        self.pending.remove(name)
        self.rows.pop(name, None)
        self.first_ts.pop(name, None)
        self.sizes.pop(name, None)
        self.replayed_rows = 0
        log.info("replayed %s; moved to %s", name, target)

    def forget(self, name: str) -> None:
        """Stop tracking a waiting file that is no longer there."""
        if name in self.pending:
            self.pending.remove(name)
        for d in (self.rows, self.first_ts, self.sizes):
            d.pop(name, None)
        self.replayed_rows = 0

    def totals(self) -> tuple[int, int, int, int]:
        """(files, rows, bytes, oldest poll time us) waiting for replay, active file included."""
        names = list(self.pending) + ([self.active.name] if self.active else [])
        rows = sum(self.rows.get(n, 0) for n in names) - self.replayed_rows
        size = sum(self.sizes.get(n, 0) for n in self.pending)
        if self.active:
            size += self.active.size
        oldest = min((self.first_ts.get(n, 0) for n in names if self.first_ts.get(n)), default=0)
        return len(names), max(rows, 0), size, oldest

    def remove_expired(self, now: float | None = None) -> int:
        """Delete replayed files older than the retention period. Returns files removed."""
        now = time.time() if now is None else now
        removed = 0
        try:
            names = os.listdir(self.replayed_dir)
        except FileNotFoundError:
            return 0
        for n in names:
            p = os.path.join(self.replayed_dir, n)
            try:
                if now - os.path.getmtime(p) >= self.retention_s:
                    os.unlink(p)
                    removed += 1
            except OSError:
                continue
        if removed:
            log.info("removed %d replayed backup files older than %.1f days", removed, self.retention_s / 86400)
        return removed

    def close(self) -> None:
        if self.active is not None:
            self.close_active()


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _first_ts(path: str) -> int:
    """Poll time (us) of the first readable row of a backup file, 0 if none."""
    try:
        chunk = B.read_chunk(path, max_rows=1)
    except OSError:
        return 0
    for _, recs in chunk.groups:
        if len(recs):
            return int(recs["ts_us"][0])
    return 0
