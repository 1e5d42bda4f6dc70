"""Restart waits bounded by the ring's headroom, and crash loops visible in health (issue 12
item 3): a writer that keeps dying is restarted before the ring can overflow, never after
the 8-30 s of the plain backoff."""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import time

import pytest

from pipeline.common.process import StopSignals
from pipeline.common.telemetry import RateMeter, headroom_s
from pipeline.supervisor import HEADROOM_SHARE, RESTART_FLOOR_S, ChildSpec, Supervisor
from tests.conftest import free_port, spawn, stop
from tests.test_run_supervisor import Lines
from tests.writer_helpers.util import ring_value, wait_until


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class GivenRoom:
    """Stands in for the supervisor's ring reads: the headroom is what the test says."""

    def __init__(self) -> None:
        self.room: float | None = None

    def sample_ring(self) -> None:
        pass

    def ring_headroom_s(self) -> float | None:
        return self.room

    def ring_rate(self) -> float | None:
        return 20_000.0

    def age_s(self, source, pid, since):
        return None

    def ring_exists(self) -> bool:
        return True


def _reaped(sup: Supervisor) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert sup.step(timeout_s=0.1) is None
        if sup.children[0].restart_at is not None:
            return
    raise AssertionError("the child did not exit")


def test_restart_wait_of_a_ring_draining_child_never_exceeds_the_headroom(tmp_path):
    spec = ChildSpec("writer", "tests.test_run_fakechild", ("writer", str(tmp_path / "ev"), "exit=1@0"), drains_ring=True)
    clock, room = Clock(), GivenRoom()
    sup = Supervisor([spec], logging.getLogger("tagpipe.test"), StopSignals(exit_on_second=False), clock=clock, beats=room)
    sup.start_all()
    delays = []
    for headroom in (None, 100.0, 6.0, 6.0, 0.2, math.inf):
        room.room = headroom
        _reaped(sup)
        child = sup.children[0]
        delays.append(round(child.restart_at - clock.t, 3))
        clock.t = child.restart_at
        sup.step(timeout_s=0)
        assert child.process is not None
    # plain backoff 1, 2, 4, 8, 16, 30: bounded by half the headroom, at least the floor;
    # unknown or infinite headroom (nothing coming in) leaves the backoff as it is.
    assert delays == [1, 2, HEADROOM_SHARE * 6.0, HEADROOM_SHARE * 6.0, RESTART_FLOOR_S, 30]
    # A wait already scheduled is shortened when the ring fills meanwhile.
    room.room = None
    _reaped(sup)
    child = sup.children[0]
    assert child.restart_at - clock.t == 30
    room.room = 4.0
    sup.step(timeout_s=0)
    assert child.restart_at - clock.t == pytest.approx(HEADROOM_SHARE * 4.0)
    sup.stop_in_order()


def test_rate_meter_and_headroom():
    m = RateMeter(window_s=10.0)
    assert m.rate() is None
    m.add(0.0, 0)
    m.add(0.2, 4000)
    assert m.rate() is None  # too short a span to tell
    for t in range(1, 30):
        m.add(float(t), 20_000 * t)
    assert m.rate() == pytest.approx(20_000)
    m.add(30.0, 5)  # a new ring: counting starts again
    assert m.rate() is None
    assert headroom_s(100_000, 50_000, 10_000, 20_000.0) == pytest.approx(3.0)
    assert headroom_s(100_000, 500_000, 10_000, 20_000.0) == 0.0
    assert headroom_s(100_000, 5, 5, 0.0) == math.inf
    assert headroom_s(100_000, 5, 5, None) is None


def test_crash_loop_check_from_the_starts_counters(ring_name):
    from pipeline.common.telemetry import TelemetryReader, Thresholds, open_consumer, open_producer

    p = open_producer(ring_name, 1000)
    reader = TelemetryReader(ring_name, Thresholds(crash_loop_starts=3, crash_loop_window_s=2.0))
    try:
        codes = lambda: [c.code for c in reader.read().health.checks]  # noqa: E731
        c = open_consumer(ring_name, wait=False)
        assert "writer_crash_loop" not in codes()
        for _ in range(2):
            c.close()
            c = open_consumer(ring_name, wait=False)
            assert "writer_crash_loop" not in codes()
        c.close()
        c = open_consumer(ring_name, wait=False)  # third restart within the window
        health = reader.read().health
        assert health.status == "unhealthy"
        loop = [ch for ch in health.checks if ch.code == "writer_crash_loop"]
        assert loop and loop[0].message == "writer crash loop: started 3 times in the last 2 s"
        assert "poller_crash_loop" not in codes()
        time.sleep(2.3)  # no start for a whole window: the check clears
        assert "writer_crash_loop" not in codes() and "writer_crash_loop" not in codes()
        c.close()
    finally:
        reader.close()
        p.close()


def _wait_s(line: str) -> float:
    return float(re.search(r"restarting it in ([0-9.]+) s", line).group(1))


@pytest.mark.slow
def test_real_writer_dying_at_start_is_restarted_within_the_ring_headroom(tmp_path, ring_name):
    """A real supervisor at 20,000 values/s into a ring of 100,000 (5 s of headroom when
    empty): its writer is SIGKILLed each time it attaches. The plain backoff would wait
    1, 2, 4, 8 s (overflow); every wait stays within half the headroom the supervisor
    measured, and the web page reports the crash loop."""
    port = free_port()
    proc = spawn(["-m", "pipeline", "--rate", "20000"], tmp_path, RING_NAME=ring_name, WEB_PORT=str(port),
                 BUFFER_MAX_SIZE="100000", SQLITE_PATH=str(tmp_path / "db" / "tagpipe.db"),
                 BACKUP_FILE_PATH=str(tmp_path / "backup"), SHUTDOWN_TIMEOUT="5")
    lines = Lines(proc.stderr)
    try:
        killed = set()
        for n in range(1, 6):
            pid = int(re.search(r"pid (\d+)", lines.wait_for(r"started writer \(pid \d+", n=n, timeout=60)[n - 1]).group(1))
            wait_until(lambda: ring_value(ring_name, "consumer.pid", 0) == pid, 60, "writer attached", step=0.02)
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
            restart = lines.wait_for(r"writer killed by SIGKILL .* restarting it in", n=n, timeout=30)[n - 1]
            if n >= 3:  # the plain backoff would be 4 s and more: bounded by the ring now
                m = re.search(r"the ring holds ([0-9.]+) s more at ([0-9,]+) values/s", restart)
                assert m, restart
                room, rate = float(m.group(1)), float(m.group(2).replace(",", ""))
                assert 10_000 < rate < 30_000, restart
                assert _wait_s(restart) <= max(RESTART_FLOOR_S, HEADROOM_SHARE * room) + 0.05, restart
            assert _wait_s(restart) <= 2.5, restart  # never beyond half of the empty ring's 5 s
        # The sixth writer stays: health says crash loop (the web samples the starts counters).
        from tests.test_run_e2e import get_json

        def crash_loop_reported():
            try:
                status, body = get_json(port, "/api/buffer/health")
            except OSError:
                return False
            return any(c["code"] == "writer_crash_loop" for c in body.get("checks", []))

        wait_until(crash_loop_reported, 30, "writer_crash_loop in /api/buffer/health")
    finally:
        stop(proc, timeout=30)
