"""The shared-memory tag ring: the one thing the poller, the writer and the web process share.

Beside it, ``shm.table`` (imported by name, not re-exported here): a meaning-free shared
table of fixed-width rows overwritten in place under per-block seqlocks (the poller's
live tag values use it). Depends on the standard library, numpy and posix_ipc only.
"""

from .errors import (
    CapacityError,
    CorruptRing,
    LayoutMismatch,
    RingError,
    RingMissing,
    RingNotDrained,
    RoleTaken,
)
from .layout import RECORD_DTYPE
from .ring import Consumer, Observer, Producer, ReadBatch, Snapshot, delete_ring
from .telemetry import Row, Table, TelemetrySchema, Word, Words

__all__ = [
    "RECORD_DTYPE",
    "CapacityError",
    "Consumer",
    "CorruptRing",
    "LayoutMismatch",
    "Observer",
    "Producer",
    "ReadBatch",
    "RingError",
    "RingMissing",
    "RingNotDrained",
    "RoleTaken",
    "Row",
    "Snapshot",
    "Table",
    "TelemetrySchema",
    "Word",
    "Words",
    "delete_ring",
]
