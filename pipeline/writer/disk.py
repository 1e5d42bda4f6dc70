"""Free space under BACKUP_FILE_PATH and what it means for spilling.

States (``pipeline.common.telemetry.DISK_STATE``): ok; low (free below BACKUP_MIN_FREE_MB: a warning,
spilling goes on); full (a backup write failed for lack of space: the records stay in the
ring, which then overflows and counts what it drops; logged as an error every time the
writer tries again); unwritable (a backup write failed for another reason: read-only file
system, no permission, I/O error...; ``errno`` keeps the cause; the records stay in the
ring as for full). Both end only when a backup write succeeds again.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from typing import Callable

log = logging.getLogger("tagpipe.writer.disk")

OK, LOW, FULL, UNWRITABLE = 0, 1, 2, 3
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def free_bytes(folder: str) -> int:
    """Bytes available to this user under ``folder`` (its nearest existing parent). -1 if unknown."""
    path = os.path.abspath(folder)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        st = os.statvfs(path)
    except OSError:
        return -1
    return st.f_bavail * st.f_frsize


class DiskWatch:
    """Tracks the backup folder's free space; cheap to call often (checks every ``every_s``)."""

    def __init__(self, folder: str, min_free_mb: int, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.folder = folder
        self.min_free = int(min_free_mb) * 1024 * 1024
        self.every_s = every_s
        self.clock = clock
        self.free = -1
        self.state = OK
        self.errno = 0  # of the failure while UNWRITABLE
        self._full_since: float | None = None
        self._next = 0.0

    def check(self, force: bool = False) -> int:
        """Refresh the free-space figure if due; returns the state."""
        now = self.clock()
        if not force and now < self._next:
            return self.state
        self._next = now + self.every_s
        self.free = free_bytes(self.folder)
        if self.state in (FULL, UNWRITABLE):
            return self.state  # cleared only by a write that succeeds
        new = LOW if 0 <= self.free < self.min_free else OK
        if new == LOW and self.state != LOW:
            log.warning(
                "backup folder %s has %.1f MB free (BACKUP_MIN_FREE_MB %d): a long database outage may fill it",
                self.folder, self.free / 1e6, self.min_free // (1024 * 1024),
            )
        elif new == OK and self.state == LOW:
            log.info("backup folder %s has %.1f MB free again", self.folder, self.free / 1e6)
        self.state = new
        return self.state

    def write_failed(self, err: OSError, rows: int) -> bool:
        """Note a failed backup write. True if it was for lack of space (state full);
        otherwise the state is unwritable, with the cause's errno."""
        if err.errno not in NO_SPACE:
            self.state = UNWRITABLE
            self.errno = err.errno or errno.EIO
            log.error(
                "BACKUP FOLDER UNWRITABLE: cannot write a backup file in %s (%s); %d records stay in the ring and the"
                " ring will overflow (dropping the oldest) if the database stays down", self.folder, err, rows,
            )
            return False
        if self.state != FULL:
            self._full_since = self.clock()
        self.state = FULL
        self.free = free_bytes(self.folder)
        log.error(
            "BACKUP DISK FULL: %s has no space left (%s); %d records stay in the ring and the ring will"
            " overflow (dropping the oldest) if the database stays down; free space under %s now",
            self.folder, err.strerror, rows, self.folder,
        )
        return True

    def write_ok(self) -> None:
        if self.state in (FULL, UNWRITABLE):
            log.warning("backup folder %s accepts writes again", self.folder)
            self.state = OK
            self.errno = 0
            self._next = 0.0
            self.check()
