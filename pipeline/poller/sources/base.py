"""The ``Source`` protocol: one PLC, read one group of tags at a time.

A source is used from one asyncio event loop. ``read(group_index)`` returns a ``Reading``
(values and per-tag quality) or raises ``SourceUnavailable`` when the PLC cannot be
asked at all (refused, timed out, disconnected): the scheduler then marks every tag of
the group BAD once for the episode. A source reconnects by itself, with backoff, on a
later ``read``; it never blocks the event loop and every wait it makes is bounded by the
PLC's ``timeout_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class SourceUnavailable(Exception):
    """The PLC did not answer (refused, timed out, connection lost, backing off)."""


@dataclass
class Reading:
    """One poll of a group: ``values`` float64 (engineering units), ``quality`` uint8
    (shm.layout QUALITY_* codes; a BAD tag's value is meaningless)."""

    values: np.ndarray
    quality: np.ndarray
    error: str = ""  # set when the PLC answered but refused part of the group (exception response)


class Source(Protocol):
    """One PLC. Implementations: ``SimulatedPlc``, ``ModbusPlc``."""

    code: str

    @property
    def connected(self) -> bool:
        """True while the PLC answers (a simulator always does)."""

    async def read(self, group_index: int) -> Reading:
        """Poll group ``group_index`` of this PLC's config once. Raises SourceUnavailable."""

    async def close(self) -> None:
        """Drop the connection (if any). Safe to call twice."""
