"""The web process's one view of the ring: read-only, re-attaching, with health memory and history.

``Monitor.read()`` takes a fresh snapshot of the ring's header (microseconds: a 16 KB copy)
and derives every figure from it through ``pipeline.common.telemetry`` (the read path
``pipeline status`` uses too); every endpoint answers from one ``View`` (a
``telemetry.Reading``), so the JSON, the metrics and the page always agree. ``Sampler`` calls
``Monitor.sample()`` once a second in a background thread: that keeps the short history the
chart draws (in-memory, lost when the web process restarts) and lets health hysteresis
and the health-change log lines progress even when nobody is asking.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from pipeline.common import telemetry

log = logging.getLogger("tagpipe.web.monitor")
PID_TTL_S = 0.5

# Everything one request needs: ``figures`` is None when the ring cannot be read, and
# ``problem`` says why (missing, other layout).
View = telemetry.Reading


class Monitor:
    """Read-only access to ring ``ring_name``; thread-safe (one lock, held for microseconds).

    Attaches lazily, re-attaches when the ring appears later or is replaced by a new
    segment (``Observer.replaced()``), and answers with ``figures=None`` while there is
    none. Never writes to the ring and never signals a process.
    """

    def __init__(self, ring_name: str, thresholds: telemetry.Thresholds, history_s: int = 600) -> None:
        self.ring = ring_name
        self.thresholds = thresholds
        self._lock = threading.Lock()
        self._reader = telemetry.TelemetryReader(ring_name, thresholds, self._pid_alive, log)
        self._history: deque[dict] = deque(maxlen=history_s)
        self._prev: dict | None = None
        self._last_status: str | None = None
        self._pids: dict[int, tuple[float, bool]] = {}

    def _pid_alive(self, pid: int) -> bool:
        """``telemetry.pid_alive`` remembered for PID_TTL_S: reading /proc/<pid>/stat can take
        a millisecond on a busy machine, and a dead pid is also caught by its heartbeat."""
        now = time.monotonic()
        hit = self._pids.get(pid)
        if hit is not None and now - hit[0] < PID_TTL_S:
            return hit[1]
        ok = telemetry.pid_alive(pid)
        if len(self._pids) > 16:
            self._pids.clear()
        self._pids[pid] = (now, ok)
        return ok

    def read(self) -> View:
        """Snapshot the ring and evaluate health. Never raises for a missing ring."""
        with self._lock:
            return self._reader.read()

    def recent_gaps(self) -> list | None:
        """The ring's recent gap rows, newest first (``TelemetryReader.recent_gaps``);
        None when the ring cannot be read."""
        with self._lock:
            return self._reader.recent_gaps()

    def sample(self) -> View:
        """Append one point to the history (call about once a second) and log health changes."""
        view = self.read()
        fig = view.figures
        point: dict = {"t_us": view.taken_us, "in_per_s": None, "out_per_s": None, "pending": None, "lag_s": None}
        if fig is not None:
            buf = fig.buffer
            cur = {"t_us": view.taken_us, "epoch": buf.epoch, "published": buf.published, "committed": buf.committed}
            prev = self._prev
            if prev and prev["epoch"] == cur["epoch"] and cur["t_us"] > prev["t_us"]:
                dt = (cur["t_us"] - prev["t_us"]) / 1e6
                point["in_per_s"] = round(max(0, cur["published"] - prev["published"]) / dt, 1)
                point["out_per_s"] = round(max(0, cur["committed"] - prev["committed"]) / dt, 1)
            self._prev = cur
            point["pending"] = buf.current_size
            point["lag_s"] = fig.lag.oldest_unwritten_age_s or 0.0
        else:
            self._prev = None
        with self._lock:
            self._history.append(point)
        status = view.health.status
        if status != self._last_status:
            level = logging.INFO if status == telemetry.HEALTHY else logging.WARNING
            log.log(level, "health %s%s", status, (": " + "; ".join(view.health.reasons)) if view.health.reasons else "")
            self._last_status = status
        return view

    @property
    def last_status(self) -> str | None:
        """Health status of the last ``sample()`` (None before the first)."""
        return self._last_status

    def history(self, seconds: float) -> list[dict]:
        """History points of the last ``seconds`` (oldest first)."""
        cutoff = telemetry.now_us() - int(seconds * 1e6)
        with self._lock:
            return [p for p in self._history if p["t_us"] >= cutoff]

    def close(self) -> None:
        with self._lock:
            self._reader.close()


class Sampler:
    """Calls ``monitor.sample()`` every ``interval_s`` in a daemon thread until ``stop()``."""

    def __init__(self, monitor: Monitor, interval_s: float = 1.0) -> None:
        self.monitor = monitor
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="tagpipe-web-sampler", daemon=True)

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def step(self) -> None:
        try:
            self.monitor.sample()
        except Exception:  # loop boundary: one bad sample must not end the history
            log.exception("sampling the ring failed; trying again in %.1f s", self.interval_s)

    def run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            self.step()
            next_t += self.interval_s
            delay = next_t - time.monotonic()
            if delay < 0:  # fell behind (machine busy): skip ahead instead of bursting
                next_t, delay = time.monotonic(), 0
            self._stop.wait(delay)

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
