"""Replay: backup files written back to the database, oldest first, exactly once.

A file is read in chunks (``backup.read_chunk``, every line validated); unreadable lines
go to quarantine; each run of rows of one identity stream is written with ``Sink.write``
in file order, so the seqs of a stream reach the database in increasing order (the Oracle
sink's cursor relies on it). The position in the file lives only in memory: a writer
killed half-way through a file replays it again from the start, and the rows already in
the database come back as duplicates (idempotent on the identity). A file fully written
is moved to ``replayed/``.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from . import backup as B
from . import records as R
from .gaps import bad_lines_record
from .sinks.base import OnRejected, WriteResult

# (rows, result, latency us) of one write committed to the database
OnWritten = Callable[[int, WriteResult, int], None]

log = logging.getLogger("tagpipe.writer.replay")


class Replay:
    """Replays the oldest waiting file of a ``Spool``, one chunk per ``step``."""

    def __init__(
        self, spool, sink, quarantine, metrics, chunk_rows: int, on_rejected_for: Callable[[str, int], OnRejected], on_written: OnWritten
    ) -> None:
        self.spool = spool
        self.sink = sink
        self.quarantine = quarantine
        self.metrics = metrics
        self.chunk_rows = chunk_rows
        self._on_rejected_for = on_rejected_for  # (source name, epoch) -> OnRejected
        self._on_written = on_written  # the writer counts rows made durable in one place
        self.name: str | None = None
        self.offset = 0
        self.line_no = 0
        self.quarantined_upto = 0  # bad lines up to here are already in quarantine

    def step(self) -> int:
        """Write back one chunk of the oldest waiting file. Returns rows handled (0: no
        closed file waits). Raises TransientSinkError / PermanentSinkError (position kept:
        the chunk is tried again) and OSError (quarantine or move failed)."""
        name = self.spool.oldest()
        if name is None:
            return 0
        if name != self.name:
            self.name, self.offset, self.line_no, self.quarantined_upto = name, 0, 0, 0
            self.spool.replayed_rows = 0
            log.info("replaying %s (%d rows)", name, self.spool.rows.get(name, 0))
        path = self.spool.path(name)
        try:
            chunk = B.read_chunk(path, self.offset, self.line_no, self.chunk_rows)
        except FileNotFoundError:
            # Moved away by someone else (an operator): not the database's fault.
            log.warning("backup file %s disappeared before it was fully replayed; skipping it", path)
            self.spool.forget(name)
            self.name = None
            return 1
        fresh_bad = [b for b in chunk.bad if b.line_no > self.quarantined_upto]
        if fresh_bad:
            n = self.quarantine.add_lines(fresh_bad, name)
            self.metrics.quarantined(n)
            self.metrics.corrupt_lines(n)
            self.quarantined_upto = max(b.line_no for b in fresh_bad)
            log.warning("%s: %d unreadable lines quarantined (first: line %d, %s)", name, n, fresh_bad[0].line_no, fresh_bad[0].reason)
        if chunk.bad:
            # The gap ledger's row for these lines, keyed by the first bad line in the
            # file's own stream: written again (a no-op) when the chunk is read again.
            qpath = self.quarantine.last_path or time.strftime("quarantine_%Y%m%d.csv", time.gmtime())
            gap = bad_lines_record(chunk.bad[0].line_no, len(chunk.bad), int(time.time() * 1e6), qpath)
            res = self.sink.write(R.synthetic_epoch(name), gap)
            self._on_written(0, res, 0)
        for epoch, recs in chunk.groups:
            on_rejected: OnRejected = self._on_rejected_for(name, epoch)
            t0 = time.perf_counter()
            res = self.sink.write(epoch, recs, on_rejected)
            self._on_written(len(recs), res, int((time.perf_counter() - t0) * 1e6))
        self.offset, self.line_no = chunk.end_offset, chunk.end_line
        self.spool.replayed_rows += chunk.rows + len(chunk.bad)
        if chunk.groups and len(chunk.groups[-1][1]):
            # The file's oldest row still waiting is about where this chunk ended (for
            # the writer.backup_oldest_us gauge: how far behind the database is).
            self.spool.first_ts[name] = int(chunk.groups[-1][1]["ts_us"][-1])
        if chunk.eof:
            self.spool.done(name)
            self.metrics.replay_file_done()
            self.name = None
        return max(chunk.rows + len(chunk.bad), 1)
