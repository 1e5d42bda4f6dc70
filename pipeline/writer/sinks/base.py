"""The sink interface shared by the SQLite and Oracle sinks.

A sink writes one batch of records (``shm.layout.RECORD_DTYPE``, padding already removed)
that belong to one identity stream ``epoch`` (the ring's epoch, or a synthetic one for
rows replayed from an original-format backup file), atomically: when ``write`` returns,
the rows it reports as written are committed; when it raises, nothing of the batch is
committed. Writing the same (epoch, seq) twice is harmless: the second time it is
reported in ``duplicates``. Records flagged FLAG_GAP go to the gap table (same
transaction, key (epoch, kind, seq), a repeat ignored) and are counted in ``gaps`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from pipeline.common.gaps import Gap


class SinkError(Exception):
    """Base class of sink errors. ``code`` is the driver's full code (e.g. DPY-4011)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class TransientSinkError(SinkError):
    """The database is unreachable or timed out: retry later; the batch is intact."""


class SinkGoneError(TransientSinkError):
    """The database's storage vanished or was swapped under the writer (its file deleted,
    renamed or replaced, its -wal removed, its folder gone). An outage until an operator
    restores it: rows of the failed write do not count as committed; the database is
    never silently created again."""


class PermanentSinkError(SinkError):
    """The sink cannot work as configured (missing table, no privilege, bad login)."""


@dataclass(frozen=True)
class RowError:
    """One row the database rejected: its index in the batch, the error code and text."""

    index: int
    code: str
    message: str


@dataclass
class WriteResult:
    """What a committed ``write`` did: rows inserted, rows already present, rows rejected."""

    written: int = 0
    duplicates: int = 0
    rejected: list[RowError] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)  # kinds of the gap rows this write added (not in written)
    gap_rows: list[Gap] = field(default_factory=list)  # those rows themselves, in the same order

    @property
    def total(self) -> int:
        return self.written + self.duplicates + len(self.rejected)


# on_rejected(rows: RECORD_DTYPE array of the rejected rows, errors: one RowError per row,
# with ``index`` into the batch given to write()). It may return gap records
# (pipeline/common/gaps.py) that the sink then writes in the same transaction.
OnRejected = Callable[[np.ndarray, list[RowError]], "np.ndarray | None"]


@runtime_checkable
class Sink(Protocol):
    """A database the writer delivers to. Methods block at most their configured timeouts."""

    kind: str  # "sqlite" or "oracle"

    def open(self) -> None:
        """Connect / prepare. Raises TransientSinkError (database down: not fatal) or
        PermanentSinkError (configuration problem)."""

    def write(self, epoch: int, records: np.ndarray, on_rejected: OnRejected | None = None) -> WriteResult:
        """Insert ``records`` of identity stream ``epoch`` and commit, exactly once.

        Bad rows do not fail the batch: they are reported in ``rejected`` and, *before* the
        commit, handed to ``on_rejected(rows, errors)``, which must make them durable
        (the quarantine file, fsynced) and may raise to abort the batch (nothing is then
        committed). That order means a crash can never commit past a rejected row that is
        not yet in quarantine. Raises TransientSinkError when the outcome is "nothing
        committed, try again".
        """

    def probe(self) -> bool:
        """True if the database answers now (cheap; used while the circuit is open)."""

    def close(self) -> None:
        """Release connections. Idempotent."""
