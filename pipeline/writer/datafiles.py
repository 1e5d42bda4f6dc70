"""One rule for the mode of every data file the writer makes: ``FILE_MODE`` (0640), and
``DIR_MODE`` (0750) for the folders it makes for them.

Data files: the SQLite database and its ``-wal``/``-shm`` (SQLite gives those the mode of
the database file), backup files, quarantine files, the files ``quarantine write-back``
places, and the database marker (``sinks.sqlite``). They hold plant data: the owner (the
writer's user) reads and writes, its group reads (a reporting or backup account), others
nothing. Only the writer's user ever writes them, so the group needs no write bit.

Folders the writer creates (BACKUP_FILE_PATH, ``quarantine/``, ``replayed/``,
``written-back/``, the database's folder the first time) get 0750: a world-writable backup
folder would let anyone place a file the writer then replays into the database. Folders
that already exist keep the mode the operator gave them.

The mode is set with ``fchmod``/``chmod`` after the file or folder is created, so the
process umask (000 under some service managers, 077 under others) changes nothing.
"""

from __future__ import annotations

import os

FILE_MODE = 0o640
DIR_MODE = 0o750


def make_dirs(path: str) -> None:
    """Create ``path`` and any missing parents, each new one with ``DIR_MODE``; existing
    folders are left as they are. Raises OSError (e.g. NotADirectoryError, EROFS)."""
    path = os.path.abspath(path)
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise
            continue  # made by another process meanwhile: its mode is its own
        os.chmod(folder, DIR_MODE)


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
