"""Reads everything a poller publishes, as the writer would (``shm.Consumer``), for assertions."""

from __future__ import annotations

import time

import numpy as np

from pipeline.common.telemetry import open_consumer
from shm import RECORD_DTYPE


class RingReader:
    def __init__(self, ring: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        self.consumer = open_consumer(ring, wait=True, stop=lambda: time.monotonic() > deadline)
        if self.consumer is None:
            raise AssertionError(f"ring {ring!r} did not appear within {timeout} s")
        self.chunks: list[np.ndarray] = []
        self.lost = 0

    def drain(self) -> np.ndarray:
        """Read and commit everything published so far; returns all records read since the start."""
        while True:
            batch = self.consumer.read(100_000)
            self.lost += batch.lost
            if batch.end == batch.start:
                break
            if len(batch):
                self.chunks.append(batch.records)
            self.consumer.commit(batch)
        return self.records

    @property
    def records(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.empty(0, dtype=RECORD_DTYPE)

    def of(self, plc: str, tag: str | None = None) -> np.ndarray:
        r = self.records
        m = r["plc_code"] == plc.encode()
        if tag is not None:
            m &= r["tag_address"] == tag.encode()
        return r[m]

    def close(self) -> None:
        self.consumer.close()
