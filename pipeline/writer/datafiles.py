"""One rule for the mode of every data file the writer makes: ``FILE_MODE`` (0640).

Data files: the SQLite database and its ``-wal``/``-shm`` (SQLite gives those the mode of
the database file), backup files, quarantine files, the files ``quarantine write-back``
places, and the database marker (``sinks.sqlite``). They hold plant data: the owner (the
writer's user) reads and writes, its group reads (a reporting or backup account), others
nothing. Only the writer's user ever writes them, so the group needs no write bit.

The mode is set with ``fchmod`` after the file is created, so the process umask (000
under some service managers, 077 under others) changes nothing.
"""

from __future__ import annotations

import os

FILE_MODE = 0o640


def create(path: str, flags: int) -> int:
    """``os.open(path, flags | O_CREAT)`` and give the file ``FILE_MODE`` if this call
    created it. Returns the descriptor. Raises OSError (FileExistsError with O_EXCL)."""
    existed = os.path.exists(path) if not flags & os.O_EXCL else False
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    if not existed:
        try:
            os.fchmod(fd, FILE_MODE)
        except OSError:
            os.close(fd)
            raise
    return fd
