"""Shared-memory segments, role locks and the doorbell: the OS-facing parts of the ring.

Python 3.11's ``SharedMemory`` registers every segment it creates *or attaches* with a
per-process resource tracker that unlinks it when that process exits, even by SIGKILL,
while other processes still use it. Every create and attach here unregisters right away
(3.13+ would take ``track=False``), so a ring outlives any one process.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import re
import struct
import time
from multiprocessing import resource_tracker, shared_memory

import posix_ipc

from .errors import CapacityError, RingError, RingMissing, RoleTaken

SHM_DIR = "/dev/shm"
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_ring_name(name: str) -> str:
    """Return ``name`` if it is a valid ring name (1-64 of A-Z a-z 0-9 _ -), else raise ValueError."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"ring name {name!r} must be 1-64 characters of A-Z a-z 0-9 _ -")
    return name


def segment_name(ring: str) -> str:
    return f"{ring}.ring"


def segment_path(ring: str) -> str:
    return os.path.join(SHM_DIR, segment_name(ring))


def lock_path(ring: str, role: str) -> str:
    return os.path.join(SHM_DIR, f"{ring}.{role}.lock")


def doorbell_name(ring: str) -> str:
    return f"/{ring}.doorbell"


def _untrack(shm: shared_memory.SharedMemory) -> None:
    # See the module docstring: without this the segment dies with this process.
    try:
        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    except Exception:  # pragma: no cover - tracker already gone at interpreter exit
        pass


def create_segment(ring: str, size: int) -> shared_memory.SharedMemory:
    """Create the segment (fails if it exists), mode 0660, untracked, every page reserved.

    Raises FileExistsError, or CapacityError when shared memory cannot hold it.
    """
    shm = shared_memory.SharedMemory(name=segment_name(ring), create=True, size=size)
    _untrack(shm)
    try:
        os.fchmod(shm._fd, 0o660)  # type: ignore[attr-defined]
    except OSError:
        pass
    try:
        # tmpfs files are sparse: without this a full /dev/shm would kill the poller
        # with SIGBUS on some later write. Reserving every page now fails here instead
        # (and spares the first lap around the ring its page faults).
        os.posix_fallocate(shm._fd, 0, size)  # type: ignore[attr-defined]
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            return shm  # fallocate unsupported here: the sparse file will do
        shm.close()
        unlink_segment(ring)
        if e.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
            raise CapacityError(f"ring {ring!r}: {SHM_DIR} cannot hold {size} bytes ({e.strerror})") from None
        raise
    return shm


def attach_segment(ring: str) -> shared_memory.SharedMemory:
    """Attach read-write to an existing segment, untracked.

    Raises FileNotFoundError, or RingMissing for an empty (half-created) segment.
    """
    try:
        shm = shared_memory.SharedMemory(name=segment_name(ring), create=False)
    except ValueError:
        # mmap refuses an empty file: a creator is between shm_open and ftruncate, or
        # died there. Nothing was ever published in it.
        raise RingMissing(f"ring {ring!r} is still being created (empty segment)") from None
    _untrack(shm)
    return shm


def map_readonly(ring: str) -> tuple[mmap.mmap, int]:
    """Map the segment read-only (PROT_READ). Returns (map, inode). Raises FileNotFoundError."""
    fd = os.open(segment_path(ring), os.O_RDONLY)
    try:
        st = os.fstat(fd)
        if st.st_size == 0:
            raise FileNotFoundError(errno.ENOENT, "ring segment is empty (being created)", segment_path(ring))
        mm = mmap.mmap(fd, st.st_size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        return mm, st.st_ino
    finally:
        os.close(fd)


def segment_inode(ring: str) -> int | None:
    """Inode of the ring's segment file, or None if there is none."""
    try:
        return os.stat(segment_path(ring)).st_ino
    except FileNotFoundError:
        return None


def unlink_segment(ring: str) -> bool:
    try:
        os.unlink(segment_path(ring))
        return True
    except FileNotFoundError:
        return False


class RoleLock:
    """An exclusive ``flock`` on ``/dev/shm/<ring>.<role>.lock`` held for the process lifetime.

    The kernel drops it when the process dies (even by SIGKILL), so a restarted process
    gets it at once. The file holds the holder's pid, for the refusal message.
    """

    def __init__(self, ring: str, role: str) -> None:
        self.ring = ring
        self.role = role
        self.path = lock_path(ring, role)
        self._fd: int | None = None

    def acquire(self, retry_s: float = 3.0) -> None:
        """Take the lock, retrying for ``retry_s`` (a liveness probe may hold it briefly).

        Raises RoleTaken naming the ring and the holder's pid.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o660)
        deadline = time.monotonic() + retry_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_pid(fd)
                    os.close(fd)
                    raise RoleTaken(
                        f"ring {self.ring!r} already has a {self.role}"
                        f" (pid {holder if holder else 'unknown'}); stop it first"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)  # closing drops the flock
            self._fd = None


# The role lock that cannot be unlinked from under its holder: one byte of the segment
# file per role, locked with an open-file-description lock (F_OFD_SETLK) on the very file
# descriptor that maps the segment. Unlike the lock files (which anyone may delete, after
# which a second process locks a new file of the same name), the lock lives on the inode
# the role writes into; it is dropped when that descriptor closes or the process dies
# (even by SIGKILL), and it conflicts between two descriptors of the same process too.
ROLE_BYTE = {"producer": 0, "consumer": 1}
_FLOCK = struct.Struct("@hhqqi4x")  # struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid


def _ofd(fd: int, cmd: int, lock_type: int, role: str) -> int:
    """One F_OFD_* call on the role's byte; returns the l_type the kernel answered."""
    arg = _FLOCK.pack(lock_type, os.SEEK_SET, ROLE_BYTE[role], 1, 0)
    return _FLOCK.unpack(fcntl.fcntl(fd, cmd, arg))[0]


def lock_segment_role(fd: int, role: str) -> bool:
    """Take ``role``'s byte lock on the segment open read-write as ``fd``, without waiting.

    True if taken (or already held through this descriptor), False if another open of
    the segment (any process, or another descriptor of this one) holds it.
    """
    try:
        _ofd(fd, fcntl.F_OFD_SETLK, fcntl.F_WRLCK, role)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


def unlock_segment_role(fd: int, role: str) -> None:
    """Drop ``role``'s byte lock taken through ``fd`` (closing ``fd`` drops it as well)."""
    try:
        _ofd(fd, fcntl.F_OFD_SETLK, fcntl.F_UNLCK, role)
    except OSError:
        pass


def segment_role_held(ring: str, role: str) -> bool | None:
    """True if some process holds ``role``'s byte lock on the ring's segment, False if not,
    None if there is no segment. Takes no lock (F_OFD_GETLK only asks)."""
    try:
        fd = os.open(segment_path(ring), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return _ofd(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, role) != fcntl.F_UNLCK
    finally:
        os.close(fd)


def role_alive(ring: str, role: str) -> bool | None:
    """True if some process holds the role, False if not, None if there is neither a lock
    file nor a segment.

    The role is held if its lock file is locked or its byte of the segment is: a holder
    whose lock file was deleted still holds the segment byte. Neither probe takes a lock
    that could make the holder's own start fail (the file probe's shared lock is released
    at once; the segment probe only asks).
    """
    seg = segment_role_held(ring, role)
    try:
        fd = os.open(lock_path(ring, role), os.O_RDONLY)
    except FileNotFoundError:
        return seg
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return True
    os.close(fd)  # releases our shared lock
    return bool(seg)


def _read_pid(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0)
    except (ValueError, OSError):
        return 0


class Doorbell:
    """A named POSIX semaphore used only as a wake-up hint, never as a lock.

    ``ring()`` posts only when the count is 0, so the count stays bounded; ``wait()``
    always has a timeout, so a lost wake-up costs latency, never progress.
    """

    def __init__(self, ring: str) -> None:
        self.name = doorbell_name(ring)
        self._sem = posix_ipc.Semaphore(self.name, flags=posix_ipc.O_CREAT, mode=0o660, initial_value=0)

    def ring(self) -> None:
        if self._sem.value == 0:
            self._sem.release()

    def wait(self, timeout_s: float) -> bool:
        """Wait at most ``timeout_s`` for a ring. False on timeout or when a signal
        interrupted the wait (the caller's loop then checks its stop flag)."""
        try:
            self._sem.acquire(timeout_s)
            return True
        except (posix_ipc.BusyError, posix_ipc.SignalError):
            return False

    def close(self) -> None:
        try:
            self._sem.close()
        except posix_ipc.ExistentialError:
            pass


def unlink_doorbell(ring: str) -> bool:
    try:
        posix_ipc.unlink_semaphore(doorbell_name(ring))
        return True
    except posix_ipc.ExistentialError:
        return False


def remove_lock_files(ring: str) -> None:
    for role in ("producer", "consumer"):
        try:
            os.unlink(lock_path(ring, role))
        except FileNotFoundError:
            pass


def shm_free_bytes() -> int:
    st = os.statvfs(SHM_DIR)
    return st.f_bavail * st.f_frsize


__all__ = [
    "Doorbell",
    "RingError",
    "RoleLock",
    "RoleTaken",
    "attach_segment",
    "check_ring_name",
    "create_segment",
    "map_readonly",
    "lock_segment_role",
    "role_alive",
    "segment_role_held",
    "unlock_segment_role",
    "segment_inode",
    "segment_path",
    "unlink_segment",
]
