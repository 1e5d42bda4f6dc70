"""The shared-memory tag ring: the one thing the poller, the writer and the web process share.

Depends on the standard library, numpy and posix_ipc only.
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
