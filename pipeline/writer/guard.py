"""The call guard: database calls run on a thread of their own, the writer waits a budget.

python-oracledb in Thin mode raises only after about twice ``call_timeout`` when the
network black-holes a call (measured: 3 s gave DPY-4011 after 6 s), and a connect
handshake has no timeout at all. The writer's main loop must meanwhile keep beating its
heartbeat and keep moving ring records to backup files, so it never calls the sink
directly:

* every ``open`` / ``write`` / first-contact ``probe`` runs on a fresh worker thread;
  the main thread waits in short slices (beating the heartbeat through ``tick``) for at
  most the **budget**, see ``budget_s``;
* after ``REPORT_AFTER_S`` of waiting the call is reported (``on_wait``): the database
  counts as "not answering" and health names the call and how long it has waited;
* when the budget runs out the call is **abandoned**: ``run`` raises ``StuckCall`` (a
  transient error), the writer opens the circuit and spills. The worker thread is left to
  end by itself (the sink's ``close`` drops the pool, so its connection is never reused
  and its socket is shut down). Whatever that call did -- committed, rolled back, unknown
  -- is found out later from the cursor table, the same way a lost COMMIT reply is: the
  spilled batch is replayed and its rows already in the table come back as duplicates.
* while an abandoned call is still running no other call starts (``CallBusy``): one
  stuck connection at a time, and the database never sees two writes of the writer at once.

The budget (seconds) is the ring's headroom at the current input rate, of which only a
share is spent waiting (the margin keeps the rest for spilling and for rate peaks), within
a floor and a ceiling::

    budget = min(BUDGET_CAP_S, max(BUDGET_FLOOR_S, BUDGET_SHARE * free_slots / input_rate))

With no input (rate 0) the budget is the ceiling.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from .sinks.base import TransientSinkError

log = logging.getLogger("tagpipe.writer.guard")

BUDGET_FLOOR_S = 1.0  # never abandon a call sooner: a healthy commit of a big batch takes ~0.1-1 s
BUDGET_SHARE = 0.5  # wait at most half of the time the ring can still absorb the input
BUDGET_CAP_S = 30.0  # and never longer than this, whatever the headroom
CONTACT_BUDGET_S = 3.0  # the first contact (a probe) before the input rate is known
REPORT_AFTER_S = 2.0  # a call waiting this long makes the database "not answering"
WAIT_SLICE_S = 0.05  # the heartbeat beats at least this often while a call runs
RATE_HALF_LIFE_S = 2.0  # the input rate is an exponential average with this half-life

STUCK_CODE = "TAGPIPE-STUCK"
BUSY_CODE = "TAGPIPE-BUSY"


class StuckCall(TransientSinkError):
    """A database call outlived its budget and was abandoned (its outcome is unknown)."""


class CallBusy(TransientSinkError):
    """An abandoned call is still running: no new call is started until it ends."""


def budget_s(free_slots: int, rate_per_s: float, floor_s: float = BUDGET_FLOOR_S, share: float = BUDGET_SHARE,
             cap_s: float = BUDGET_CAP_S) -> float:
    """Longest wait (s) for one database call: ``share`` of the time the ring's
    ``free_slots`` last at ``rate_per_s`` records/s, within [``floor_s``, ``cap_s``]."""
    if rate_per_s <= 0:
        return cap_s
    return min(cap_s, max(floor_s, share * max(0, free_slots) / rate_per_s))


class RateMeter:
    """Input rate (records/s) from a growing counter, averaged with a half-life."""

    def __init__(self, half_life_s: float = RATE_HALF_LIFE_S) -> None:
        self.half_life_s = half_life_s
        self.rate = 0.0
        self._last: tuple[float, int] | None = None

    def update(self, now_s: float, count: int) -> float:
        """Feed the counter's value at ``now_s`` (monotonic seconds); returns the rate."""
        if self._last is None:
            self._last = (now_s, count)
            return self.rate
        t0, c0 = self._last
        dt = now_s - t0
        if dt < 0.1:  # too short to measure; keep the old sample
            return self.rate
        inst = max(0, count - c0) / dt
        keep = 0.5 ** (dt / self.half_life_s)
        # Never below the latest sample: a burst must shorten the budget at once.
        self.rate = max(inst, keep * self.rate + (1 - keep) * inst)
        self._last = (now_s, count)
        return self.rate


class _Call:
    def __init__(self, name: str, fn: Callable[[], Any], started: float) -> None:
        self.name, self.fn, self.started = name, fn, started
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.abandoned = False
        # Ending and being abandoned exclude each other: a call that has ended is answered,
        # and one abandoned logs its late end (see abandon).
        self._end = threading.Lock()

    def abandon(self) -> bool:
        """Mark the call abandoned unless it has ended already. True if it was abandoned."""
        with self._end:
            if self.done.is_set():
                return False
            self.abandoned = True
            return True

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as e:  # handed to the waiting thread, or logged if abandoned
            self.error = e
        finally:
            with self._end:
                self.done.set()
            if self.abandoned:
                outcome = f"failed: {self.error}" if self.error is not None else "returned"
                log.warning("the abandoned database call %s ended after %.1f s (%s); its outcome is resolved "
                            "from the cursor table when the batch is replayed", self.name, time.monotonic() - self.started, outcome)


class CallGuard:
    """Runs sink calls on worker threads with a deadline. Main-thread object."""

    def __init__(self, tick: Callable[[], None] = lambda: None, on_wait: Callable[[str, float], None] = lambda n, s: None,
                 clock: Callable[[], float] = time.monotonic, report_after_s: float = REPORT_AFTER_S) -> None:
        self.tick = tick  # beats the heartbeat / watchdog while the main thread waits
        self.on_wait = on_wait  # (call name, seconds waited) once the wait passes report_after_s or the budget
        self.clock = clock
        self.report_after_s = report_after_s
        self._abandoned: _Call | None = None
        self.abandoned_total = 0

    def stuck(self) -> tuple[str, float] | None:
        """(name, start time) of an abandoned call still running, else None."""
        call = self._abandoned
        if call is None:
            return None
        if call.done.is_set():
            self._abandoned = None
            return None
        return call.name, call.started

    def run(self, name: str, fn: Callable[[], Any], budget: float) -> Any:
        """``fn()`` on a worker thread; its result, or its exception re-raised. Waits at
        most ``budget`` seconds. Raises StuckCall when the budget runs out (the call is
        abandoned, still running) and CallBusy while an earlier abandoned call runs."""
        busy = self.stuck()
        if busy is not None:
            raise CallBusy(f"database call {busy[0]} abandoned {self.clock() - busy[1]:.0f} s ago has not ended yet", BUSY_CODE)
        call = _Call(name, fn, self.clock())
        worker = threading.Thread(target=call.run, name=f"tagpipe-db-{name}", daemon=True)
        worker.start()
        reported = False
        while not call.done.wait(WAIT_SLICE_S):
            self.tick()
            waited = self.clock() - call.started
            over = waited >= budget and not call.done.is_set()
            if waited >= self.report_after_s or over:
                reported = True
                self.on_wait(name, waited)
            # The call may have ended since ``over`` was decided (on_wait takes time): then
            # its answer counts, rather than a committed write being spilled as stuck.
            if over and call.abandon():
                self._abandoned = call
                self.abandoned_total += 1
                raise StuckCall(f"database call {name} did not answer within {budget:.1f} s (the ring's budget); "
                                f"abandoned, batches go to backup files", STUCK_CODE)
        if reported:
            log.info("database call %s answered after %.1f s", name, self.clock() - call.started)
        if call.error is not None:
            raise call.error
        return call.result


class GuardedSink:
    """A sink whose ``open`` and ``write`` run through a ``CallGuard`` within a budget.

    ``probe`` is passed through: the prober calls it on its own thread, never the main
    one. ``close`` while a call is abandoned drops the sink's connections at once
    (``abandon``: the stuck call's socket is shut down, its pool closed in the background)
    instead of waiting for them."""

    def __init__(self, sink, guard: CallGuard, budget: Callable[[], float]) -> None:
        self.inner = sink
        self.kind = sink.kind
        self.guard = guard
        self.budget = budget  # seconds, asked before every call

    def open(self) -> None:
        self.guard.run("connect", self.inner.open, self.budget())

    def write(self, epoch: int, records, on_rejected=None):
        return self.guard.run("write", lambda: self.inner.write(epoch, records, on_rejected), self.budget())

    def contact(self) -> bool:
        """The first contact: a probe on the guard, waited for at most CONTACT_BUDGET_S
        (the input rate is not known yet). Raises StuckCall / CallBusy."""
        return bool(self.guard.run("first contact", self.inner.probe, min(CONTACT_BUDGET_S, self.budget())))

    def probe(self) -> bool:
        return self.inner.probe()

    @property
    def probe_error(self):
        """The sink error of the last failed probe (None: answered, or not reported)."""
        return getattr(self.inner, "probe_error", None)

    def close(self) -> None:
        """Drop the connections without waiting (the circuit opens on the main thread:
        closing a pool with a connect stuck in a handshake takes seconds)."""
        abandon = getattr(self.inner, "abandon", None)
        if abandon is not None:
            abandon()
        else:
            self.inner.close()

    def close_now(self) -> None:
        """Close and wait for it (bounded by the sink): when the writer stops."""
        self.inner.close()


REPLAY_MIN_ROWS = 100


def fit_chunk(rows: int, took_s: float, budget: float, lo: int = REPLAY_MIN_ROWS, hi: int = 1 << 30) -> int:
    """The next replay chunk size (rows) after a chunk of ``rows`` took ``took_s`` seconds
    (``inf``: abandoned) against a ``budget``: halved while a chunk uses more than half the
    budget (a slow database must not make every replay chunk outlive it), doubled while it
    uses less than an eighth, within [``lo``, ``hi``]."""
    if took_s > budget / 2:
        rows //= 2 if took_s <= budget else 4
    elif took_s < budget / 8:
        rows *= 2
    return max(lo, min(hi, rows))
