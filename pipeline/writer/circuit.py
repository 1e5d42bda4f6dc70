"""The circuit: whether the writer uses the database now, or spills and probes.

Closed: batches go to the database. Open (after a batch used its retries, or the
database was unreachable at start): batches go to backup files, the sink is closed, and
the single ``Prober`` thread asks the database with backoff and jitter; while it runs the
main thread does not touch the sink. ``try_close`` reopens the sink once a probe answered.

``Prober`` waits ``min_s``, then twice as long each time up to ``max_s``, each wait scaled
by a random 0.8-1.2 so restarted writers do not probe in step.

A refused login (ORA-01017 wrong password, ORA-28000 locked, ORA-28001 expired) is not
probed like an outage: every attempt counts toward the profile's failed-login limit
(Oracle locks the account after 10 by default). The state says "login_refused", the pool
is closed, and the prober (whose probe is one standalone login, no pool) tries every
``LOGIN_RETRY_S`` (5 minutes: 3 attempts in the first 10 minutes, counting the refused
one). A fixed password takes effect at the next attempt, or at once when the writer is
restarted (systemctl restart tagpipe-writer).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable

from shm.ring import now_us

from .metrics import ERR_NONE, WriterMetrics
from .guard import BUSY_CODE, STUCK_CODE
from .oracle_errors import is_login_refused
from .sinks.base import SinkError

log = logging.getLogger("tagpipe.writer.circuit")

FLAP_WINDOW_S = 60.0  # a trip this soon after closing continues the previous backoff
LOGIN_RETRY_S = 300.0  # one login attempt this often while the login is refused


class Circuit:
    """Circuit breaker around one sink. Main-thread object (the prober has its own thread)."""

    def __init__(self, sink, metrics: WriterMetrics, probe_min_s: float, probe_max_s: float, where: str,
                 login_retry_s: float = LOGIN_RETRY_S, wait: Callable[[threading.Event, float], bool] | None = None) -> None:
        self.sink = sink
        self.metrics = metrics
        self.where = where  # BACKUP_FILE_PATH, for the log line
        self.login_retry_s = login_retry_s
        self.login_refused = False  # set by trip() and by the prober thread (a plain bool)
        self.not_answering = False
        # ``wait`` (stop event, seconds) -> stopped: the prober's sleep; tests pass a virtual clock's.
        self.prober = Prober(self._probe_once, probe_min_s, probe_max_s, wait=wait,
                             steady=lambda: self.login_retry_s if self.login_refused else None)
        self.is_open = False
        self.sink_open = False
        self.outage_started_us = 0
        self._closed_at: float | None = None
        self._last_delay = probe_min_s
        self._first_outage_us = 0

    def _probe_once(self) -> bool:
        """One probe (prober thread); notes a refused login, which slows the prober down."""
        ok = bool(self.sink.probe())
        if not ok:
            err = getattr(self.sink, "probe_error", None)
            self.login_refused = is_login_refused(getattr(err, "code", "") or "")
        return ok

    def ensure_sink(self) -> None:
        """Open the sink if it is not. Raises SinkError."""
        if not self.sink_open:
            self.sink.open()
            self.sink_open = True

    def trip(self, code: int, err: BaseException | None = None) -> None:
        """Open the circuit (idempotent): close the sink, start the prober, say so once.
        ``err`` (the sink error that tripped it) tells a refused login from an outage."""
        refused = is_login_refused(getattr(err, "code", "") or "")
        if refused and not self.login_refused:
            log.error("the database refused the login (%s): fix the password (ORACLE_PASSWORD); one login attempt "
                      "every %.0f s until then, values go to backup files in %s", err, self.login_retry_s, self.where)
        self.login_refused = refused
        # Tripped by a call that did not answer (abandoned): "not answering" until a probe
        # answers, rather than "down", which reads as a refused connection.
        self.not_answering = getattr(err, "code", "") in (STUCK_CODE, BUSY_CODE)
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
        # The state says why at once (publish() keeps it): never a passing "down" for a call
        # that did not answer.
        self.metrics.db_state("login_refused" if refused else "not_answering" if self.not_answering else "down")
        try:
            self.sink.close()
        except Exception:  # a sink that is down may fail to close; nothing to do about it
            pass
        self.sink_open = False
        if refused:
            # Every login counts toward the account lockout: a prober already waiting
            # at the outage backoff starts again at the slow pace.
            self.prober.stop(timeout_s=0.1)
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
        self.login_refused = False
        self.not_answering = False
        self._closed_at = time.monotonic()
        self._last_delay = self.prober.next_delay
        took = (now_us() - self.outage_started_us) / 1e6 if self.outage_started_us else 0.0
        log.warning("database answers again after %.1f s; replaying backup files oldest first", took)
        self.outage_started_us = 0
        self.metrics.outage(0)
        self.metrics.error(ERR_NONE)
        self.metrics.db_state("replaying" if has_backlog() else "up")
        return True

    def publish(self, stuck: bool = False) -> None:
        """Publish the probe count and, while open, the state: "login_refused", else
        "not_answering" while an abandoned call has not ended (``stuck``) or since one
        tripped the circuit, else
        "probing" / "down"."""
        self.metrics.probes(self.prober.probes)
        if self.is_open:
            if self.login_refused:
                self.metrics.db_state("login_refused")
            elif stuck or self.not_answering:
                self.metrics.db_state("not_answering")
            else:
                self.metrics.db_state("probing" if self.prober.probing else "down")

    def stop(self) -> None:
        self.prober.stop(timeout_s=2.0)


class Prober:
    """One background thread that probes the database until it answers."""

    def __init__(self, probe: Callable[[], bool], min_s: float, max_s: float, rand: Callable[[], float] = random.random,
                 wait: Callable[[threading.Event, float], bool] | None = None,
                 steady: Callable[[], float | None] = lambda: None) -> None:
        self._probe = probe
        self._steady = steady
        # wait(stop event, seconds) -> True if stopped; tests pass a virtual clock's.
        self._wait = wait or (lambda ev, s: ev.wait(s))
        self.min_s = min_s
        self.max_s = max_s
        self._rand = rand
        self.probes = 0
        self.probing = False
        self.next_delay = min_s
        self._answered = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, first_delay_s: float | None = None) -> None:
        """Start probing (no-op while running); the first wait is ``first_delay_s``
        (default ``min_s``), then doubling up to ``max_s``. While ``steady()`` gives a
        number, every wait is that many seconds instead."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._answered.clear()
        self._stop.clear()
        steady = self._steady()
        if steady is not None:
            self.next_delay = steady
        else:
            self.next_delay = min(max(first_delay_s or self.min_s, self.min_s), self.max_s)
        self._thread = threading.Thread(target=self._run, name="tagpipe-prober", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        delay = self.next_delay
        while True:
            self.next_delay = delay
            if self._wait(self._stop, delay * (0.8 + 0.4 * self._rand())):
                return
            self.probing = True
            try:
                ok = self._probe()
            except Exception as e:  # a probe must never kill the thread
                log.debug("probe raised %s", e)
                ok = False
            finally:
                self.probing = False
                self.probes += 1
            if ok:
                self._answered.set()
                return
            steady = self._steady()
            delay = steady if steady is not None else min(delay * 2, self.max_s)

    def answered(self) -> bool:
        """True once a probe succeeded (the thread has then ended)."""
        return self._answered.is_set() and not (self._thread is not None and self._thread.is_alive())

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the thread to end and wait for it (bounded: a probe in progress may block up
        to the sink's own timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
