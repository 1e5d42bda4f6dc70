"""The tag ring: one producer, one consumer, any number of read-only observers.

Protocol (see ``shm.layout`` for the words):

* The producer publishes k records: ``claim = end``, copy the records (one or two numpy
  slice copies), ``published = end``, ring the doorbell. It never blocks: when the ring is
  full the oldest records are overwritten (and counted).
* The consumer copies records below ``published`` starting at its read position, then
  re-reads ``claim`` and drops whatever may have been overwritten during the copy
  (``seq < claim - capacity``), counting it as lost. Every record's ``seq`` is checked.
  ``committed`` moves only when the caller says the records are durable (``commit``), so
  a consumer killed mid-batch loses nothing: its successor reads from ``committed``.
* A producer killed between claim and publish leaves ``published < claim``; the next
  producer fills that hole with padding records (``FLAG_PADDING``) and publishes them.
* Roles are enforced with ``flock`` on a lock file per role and an OFD lock on the
  role's byte of the segment file (which no unlink can take away); the doorbell is a named
  semaphore used as a hint only (every wait has a timeout).

The parts live in ``header`` (words, owner rule, attach check), ``producer``,
``consumer`` and ``observer``; this module is the public face (``from shm.ring import
Consumer`` keeps working) and holds ``delete_ring``.
"""

from __future__ import annotations

from . import segment as S
from .consumer import Consumer, ReadBatch
from .errors import RingError
from .header import now_us
from .observer import Observer, Snapshot
from .producer import Producer

__all__ = ["Consumer", "Observer", "Producer", "ReadBatch", "Snapshot", "delete_ring", "now_us"]


def delete_ring(name: str, force: bool = False) -> list[str]:
    """Delete a ring's segment, doorbell and lock files. Returns what was removed.

    Refuses (RingError) while a producer or consumer holds its role, unless ``force``.
    Records still in the ring are gone: this is the explicit admin action.
    """
    S.check_ring_name(name)
    if not force:
        for role in ("producer", "consumer"):
            if S.role_alive(name, role):
                raise RingError(f"ring {name!r} still has a running {role}; stop it first (or use --force)")
    removed = []
    if S.unlink_segment(name):
        removed.append(S.segment_path(name))
    if S.unlink_doorbell(name):
        removed.append(f"semaphore {S.doorbell_name(name)}")
    S.remove_lock_files(name)
    return removed
