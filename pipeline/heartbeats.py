"""Heartbeats of the supervised children, as the supervisor sees them.

The poller and the writer write ``producer.heartbeat_us`` / ``consumer.heartbeat_us``
(and their pid) in the ring header while their loop turns; the supervisor reads them
through a read-only ``shm.Observer`` (``ring_heartbeat``, the only ring read here). The
web process does not write to the ring: its heartbeat is the last time it answered an
HTTP request from ``WebProbe`` (a wedged event loop still accepts connections, so only
an answer counts).
"""

from __future__ import annotations

import threading
import time

from shm import Observer, RingError
from shm.ring import now_us

from .common.httpprobe import answers
from .common.telemetry import RateMeter, headroom_s

WEB = "web"


def ring_heartbeat(observer: Observer, role: str) -> tuple[int, int]:
    """``(pid, heartbeat_us)`` the ring's ``role`` ("producer" or "consumer") last wrote:
    its process id (0 when none is attached) and its last sign of life (us since the epoch)."""
    f = observer.snapshot().fields
    return int(f[f"{role}.pid"]), int(f[f"{role}.heartbeat_us"])


class WebProbe(threading.Thread):
    """Asks the web process every ``every_s`` seconds; remembers when it last answered."""

    def __init__(self, host: str, port: int, every_s: float, timeout_s: float) -> None:
        super().__init__(name="tagpipe-web-probe", daemon=True)
        self.host, self.port, self.every_s, self.timeout_s = host, port, every_s, timeout_s
        self.last_answer: float | None = None  # time.monotonic()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.every_s):
            if answers(self.host, self.port, self.timeout_s):
                self.last_answer = time.monotonic()

    def stop(self) -> None:
        self._done.set()
        self.join(self.timeout_s + 1.0)


class Heartbeats:
    """Heartbeat ages of the children: ring roles by pid, the web process by probe."""

    def __init__(self, ring_name: str | None, web: WebProbe | None = None) -> None:
        self.ring_name = ring_name
        self.web = web
        self._observer: Observer | None = None
        self._rate = RateMeter()
        self._ring_words: tuple[int, int, int] | None = None  # capacity, published, committed

    def start(self) -> "Heartbeats":
        if self.web is not None:
            self.web.start()
        return self

    def _ring(self) -> Observer | None:
        """The ring as it is now (re-attached when replaced), or None when there is none."""
        if self._observer is not None and self._observer.replaced():
            self._observer.close()
            self._observer = None
        if self._observer is None and self.ring_name:
            try:
                self._observer = Observer(self.ring_name)
            except (RingError, OSError, ValueError):  # missing, or being created right now
                return None
        return self._observer

    def ring_exists(self) -> bool:
        return self._ring() is not None

    def age_s(self, source: str, pid: int, since: float) -> float | None:
        """Seconds since the child ``pid`` last showed life through ``source`` (a ring role
        or ``WEB``); None when it has not yet (still starting, or its ring is missing).
        ``since`` is when the child started (``time.monotonic()``): a web answer from
        before belongs to an earlier process."""
        if source == WEB:
            last = self.web.last_answer if self.web is not None else None
            return None if last is None or last < since else time.monotonic() - last
        ring = self._ring()
        if ring is None:
            return None
        owner, beat_us = ring_heartbeat(ring, source)
        if owner != pid or beat_us <= 0:
            return None
        return max(0.0, (now_us() - beat_us) / 1e6)

    def sample_ring(self) -> None:
        """Read the ring's counters once (call about once a second): feeds the input rate."""
        ring = self._ring()
        if ring is None:
            self._ring_words = None
            return
        f = ring.snapshot().fields
        self._ring_words = (int(f["capacity"]), int(f["producer.published"]), int(f["consumer.committed"]))
        self._rate.add(time.monotonic(), self._ring_words[1])

    def ring_rate(self) -> float | None:
        """Records/s the poller published over the last samples (None: not known yet)."""
        return self._rate.rate()

    def ring_headroom_s(self) -> float | None:
        """Seconds the ring can still take at the current input rate before it overwrites
        records not yet written (``telemetry.headroom_s``); None when unknown (no ring, or
        fewer than two samples yet)."""
        if self._ring_words is None:
            return None
        return headroom_s(*self._ring_words, self._rate.rate())

    def close(self) -> None:
        if self.web is not None:
            self.web.stop()
        if self._observer is not None:
            self._observer.close()
            self._observer = None
