"""The circuit: whether the writer uses the database now, or spills and probes.

Closed: batches go to the database. Open (after a batch used its retries, or the
database was unreachable at start): batches go to backup files, the sink is closed, and
the single ``Prober`` thread asks the database with backoff and jitter; while it runs the
main thread does not touch the sink. ``try_close`` reopens the sink once a probe answered.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from shm.ring import now_us

from .metrics import ERR_NONE, WriterMetrics
from .sinks.base import SinkError
from .spool import Prober

log = logging.getLogger("tagpipe.writer.circuit")

FLAP_WINDOW_S = 60.0  # a trip this soon after closing continues the previous backoff


class Circuit:
    """Circuit breaker around one sink. Main-thread object (the prober has its own thread)."""

    def __init__(self, sink, metrics: WriterMetrics, probe_min_s: float, probe_max_s: float, where: str) -> None:
        self.sink = sink
        self.metrics = metrics
        self.where = where  # BACKUP_FILE_PATH, for the log line
        self.prober = Prober(lambda: bool(sink.probe()), probe_min_s, probe_max_s)
        self.is_open = False
        self.sink_open = False
        self.outage_started_us = 0
        self._closed_at: float | None = None
        self._last_delay = probe_min_s
        self._first_outage_us = 0

    def ensure_sink(self) -> None:
        """Open the sink if it is not. Raises SinkError."""
        if not self.sink_open:
            self.sink.open()
            self.sink_open = True

    def trip(self, code: int) -> None:
        """Open the circuit (idempotent): close the sink, start the prober, say so once."""
        flapping = self._closed_at is not None and time.monotonic() - self._closed_at < FLAP_WINDOW_S
        if not self.is_open:
            self.is_open = True
            if flapping and self._first_outage_us:
                # Same outage as before the probe answered: keep its start, say less.
                self.outage_started_us = self._first_outage_us
                log.warning("database failed again right after answering a probe; probing again with a longer wait")
            else:
                self.outage_started_us = self._first_outage_us = now_us()
                log.error("database down: circuit open, batches go to backup files in %s; probing in the background", self.where)
            self.metrics.outage(self.outage_started_us)
        self.metrics.error(code)
        self.metrics.db_state("down")
        try:
            self.sink.close()
        except Exception:  # a sink that is down may fail to close; nothing to do about it
            pass
        self.sink_open = False
        # A database that answers probes but fails writes (e.g. its disk is full) would
        # otherwise be probed at the shortest interval forever: if the circuit trips again
        # soon after closing, the backoff continues where it was.
        self.prober.start(self._last_delay * 2 if flapping else None)

    def try_close(self, has_backlog: Callable[[], bool]) -> bool:
        """If open and a probe answered, reopen the sink and close the circuit. True if
        the circuit is closed when this returns."""
        if not self.is_open:
            return True
        if not self.prober.answered():
            return False
        try:
            self.ensure_sink()
        except SinkError as e:
            log.warning("database answered a probe but cannot be opened (%s); probing again", e)
            self.prober.start()
            return False
        self.is_open = False
        self._closed_at = time.monotonic()
        self._last_delay = self.prober.next_delay
        took = (now_us() - self.outage_started_us) / 1e6 if self.outage_started_us else 0.0
        log.warning("database answers again after %.1f s; replaying backup files oldest first", took)
        self.outage_started_us = 0
        self.metrics.outage(0)
        self.metrics.error(ERR_NONE)
        self.metrics.db_state("replaying" if has_backlog() else "up")
        return True

    def publish(self) -> None:
        self.metrics.probes(self.prober.probes)
        if self.is_open:
            self.metrics.db_state("probing" if self.prober.probing else "down")

    def stop(self) -> None:
        self.prober.stop(timeout_s=2.0)
