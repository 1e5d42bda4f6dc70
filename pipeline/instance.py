"""The supervisor lock: one ``python -m pipeline`` per ring, taken before any child starts.

Two supervisors started at the same instant on one ring used to race child by child (one's
poller won the producer role, the other's writer the consumer role) and could both give up.
The supervisor lock makes one of them win whole: it is taken before any child is started,
so the loser exits 4 at once and nothing of it runs.

The lock is a listening Unix socket bound in the abstract namespace
(``@tagpipe-supervisor-<ring>``). Like the ring's segment byte locks it cannot be deleted
from under its holder (an abstract name is not a file: nothing in ``/dev/shm`` or ``/run``
to unlink), the kernel frees it when the process dies, even by SIGKILL, and it is not
inherited by the children (Python opens sockets close-on-exec). A loser connects to it and
reads the holder's pid with ``SO_PEERCRED`` for its refusal message. The abstract namespace
belongs to the network namespace: supervisors of one ring must share it (they do unless a
unit sets ``PrivateNetwork=``, which the status page's port would not survive either).
"""

from __future__ import annotations

import errno
import socket
import struct

from .common.errors import ConfigError


class InstanceTaken(Exception):
    """Another live supervisor already runs this ring (the message names it and its pid)."""


def lock_address(ring: str) -> bytes:
    """The abstract socket address of ring ``ring``'s supervisor lock."""
    return b"\0tagpipe-supervisor-" + ring.encode("ascii")


class InstanceLock:
    """Held from ``acquire()`` until ``release()`` or the process ends."""

    def __init__(self, ring: str) -> None:
        self.ring = ring
        self._sock: socket.socket | None = None

    def acquire(self) -> "InstanceLock":
        """Take the lock without waiting. Raises InstanceTaken naming the ring and the
        holder's pid; ConfigError if this system has no abstract Unix sockets."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(lock_address(self.ring))
            sock.listen(8)  # only so that a loser can connect and learn our pid
        except OSError as e:
            sock.close()
            if e.errno == errno.EADDRINUSE:
                holder = holder_pid(self.ring)
                raise InstanceTaken(
                    f"ring {self.ring!r} already has a supervisor (pid {holder if holder else 'unknown'});"
                    " stop it first (or give this one another RING_NAME)"
                ) from None
            raise ConfigError(f"cannot take the supervisor lock of ring {self.ring!r}: {e.strerror}") from None
        self._sock = sock
        return self

    def release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "InstanceLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


_UCRED = struct.Struct("3i")  # pid, uid, gid


def holder_pid(ring: str, timeout_s: float = 0.5) -> int:
    """Pid of the process holding ring ``ring``'s supervisor lock, 0 if none or unknown."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout_s)
    try:
        probe.connect(lock_address(ring))
        pid, _, _ = _UCRED.unpack(probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        return pid
    except OSError:
        return 0
    finally:
        probe.close()
