"""The supervisor sees a hung child: a stale heartbeat gets it killed and restarted.

The first test steps the decision with a controlled clock and given heartbeat ages (the
children are real processes); the second runs ``python -m pipeline`` for real and
SIGSTOPs real children.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time

import pytest

from pipeline.common.process import StopSignals
from pipeline.supervisor import ChildSpec, Supervisor
from test_run_backoff import Clock
from test_systemd_notify import notify  # noqa: F401 (fixture)
from test_run_e2e import _pid, check_every_value_once, delivered, get_json, pipeline_run, wait_until  # noqa: F401 (fixture)


class GivenBeats:
    """Heartbeat ages set by the test, per pid (None: not written yet)."""

    def __init__(self) -> None:
        self.ages: dict[int, float] = {}
        self.ring = True

    def age_s(self, source: str, pid: int, since: float) -> float | None:
        return self.ages.get(pid)

    def ring_exists(self) -> bool:
        return self.ring

    def sample_ring(self) -> None:
        pass

    def ring_headroom_s(self) -> float | None:
        return None  # rate unknown: restart waits are the plain backoff


def _reaped(sup: Supervisor, clock: Clock) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sup.children[0].restart_at is None:
        assert sup.step(timeout_s=0.1) is None
    assert sup.children[0].restart_at is not None, "the killed child was not reaped"


def test_run_hang_limit_grace_while_starting_or_waiting_for_the_ring(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tagpipe.test")
    spec = ChildSpec("writer", "tests.test_run_fakechild", ("writer", str(tmp_path / "ev")), beat="consumer",
                     hang_timeout_s=10.0, waits_for_ring=True)
    clock, beats = Clock(), GivenBeats()
    sup = Supervisor([spec], logging.getLogger("tagpipe.test"), StopSignals(exit_on_second=False), clock=clock, beats=beats)
    sup.start_all()
    child = sup.children[0]
    try:
        first = child.process.pid
        clock.t += 9.0  # starting, no heartbeat yet: within the grace
        assert sup.check_hangs(clock.t) and child.alive
        beats.ring = False
        clock.t += 60.0  # waiting for the poller to create the ring is not a hang
        assert sup.check_hangs(clock.t) and child.alive
        beats.ring = True
        clock.t += 9.0  # the ring appeared 9 s ago: still within the limit
        assert sup.check_hangs(clock.t) and child.alive
        beats.ages[first] = 2.0  # beating
        clock.t += 30.0
        assert sup.check_hangs(clock.t) and child.alive and child.hangs == 0
        beats.ages[first] = 10.5  # stale: killed
        sup.check_hangs(clock.t)
        assert child.hangs == 1
        _reaped(sup, clock)
        assert re.search(rf"writer \(pid {first}\) is hung: heartbeat 10\.5 s old \(limit 10 s", caplog.text)
        assert "writer killed by SIGKILL (hung)" in caplog.text
        clock.t = child.restart_at
        sup.step(timeout_s=0)
        assert child.alive and child.process.pid != first and sup.hang_restarts == {"writer": 1}
        clock.t += 10.5  # the new one never beats: killed after the grace
        sup.check_hangs(clock.t)
        assert child.hangs == 2 and "no heartbeat 10.5 s after its start" in caplog.text
        _reaped(sup, clock)
    finally:
        if child.alive:
            os.kill(child.process.pid, signal.SIGKILL)
            child.process.join(5)


def test_run_supervisor_watchdog_starves_while_a_hung_child_survives_its_kill(tmp_path):
    """A child in uninterruptible sleep outlives SIGKILL: the supervisor then stops feeding
    its own systemd watchdog (``healthy``), so systemd restarts the whole run."""
    spec = ChildSpec("poller", "tests.test_run_fakechild", ("poller", str(tmp_path / "ev")), beat="producer", hang_timeout_s=10.0)
    clock, beats, kills = Clock(), GivenBeats(), []
    sup = Supervisor([spec], logging.getLogger("tagpipe.test"), StopSignals(exit_on_second=False), clock=clock, beats=beats,
                     kill_hung=lambda pid, sig: kills.append((pid, sig)))
    sup.start_all()
    child = sup.children[0]
    try:
        beats.ages[child.process.pid] = 1.0
        sup.step(timeout_s=0)
        assert sup.healthy and not kills
        beats.ages[child.process.pid] = 11.0
        clock.t += 1.0
        sup.step(timeout_s=0)  # the kill "fails": the child stays
        assert kills == [(child.process.pid, signal.SIGKILL)]
        clock.t += 1.0
        sup.step(timeout_s=0)
        assert child.alive and not sup.healthy and len(kills) == 1  # said once, not killed in a loop
    finally:
        os.kill(child.process.pid, signal.SIGKILL)
        child.process.join(5)


@pytest.mark.slow
def test_run_hung_children_are_restarted_and_a_slow_one_is_not(pipeline_run, notify, ring_name, tmp_path):
    limit = 8.0  # also the grace for a first heartbeat: generous for a loaded test machine
    sock = notify()  # the supervisor's systemd STATUS= counts the hang restarts
    proc, lines, port = pipeline_run(ring_name, "--rate", "2000", SUPERVISOR_HANG_TIMEOUT_S=str(limit), NOTIFY_SOCKET=sock.name)
    wait_until(lambda: delivered(ring_name) > 0, 60, "the first committed value")
    wait_until(lambda: get_json(port, "/api/status")[0] == 200, 60, "the web process answering")
    roles = ("poller", "writer", "web")
    pids = {r: _pid(lines, r) for r in roles}
    # Slow but alive: stalls shorter than the limit are not a hang.
    for _ in range(2):
        os.kill(pids["writer"], signal.SIGSTOP)
        time.sleep(limit / 2)
        os.kill(pids["writer"], signal.SIGCONT)
        before = delivered(ring_name)
        wait_until(lambda: delivered(ring_name) > before, 30, "the stalled writer writing again")
    time.sleep(2.0)  # at least one more heartbeat check after the last stall
    assert lines.count(r"is hung") == 0 and lines.count(r"started writer \(pid") == 1, "\n".join(lines.lines[-20:])
    # Hung: every child stops answering; each is killed once its heartbeat passes the limit.
    stopped_at = time.monotonic()
    for r in roles:
        os.kill(pids[r], signal.SIGSTOP)
    for r in roles:
        hit = lines.wait_for(rf"{r} \(pid {pids[r]}\) is hung: heartbeat (\d+\.\d) s old", timeout=limit + 20)[0]
        assert float(re.search(r"heartbeat (\d+\.\d) s old", hit).group(1)) > limit
        lines.wait_for(rf"{r} killed by SIGKILL \(hung\) after .*restarting it", timeout=20)
        assert _pid(lines, r, n=2) != pids[r]
    took = time.monotonic() - stopped_at
    assert took < limit + 15, f"hangs seen after {took:.1f} s (limit {limit} s)"
    sock.wait_for(lambda m: "restarted hung" in m and all(f"{r} 1" in m for r in roles), 10, "STATUS= with every hang restart")
    # The restarted children carry on: values flow, the page answers.
    before = delivered(ring_name)
    wait_until(lambda: delivered(ring_name) > before + 2000, 60, "values flowing after the hang restarts")
    wait_until(lambda: get_json(port, "/api/status")[0] == 200, 60, "the restarted web process answering")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0, "\n".join(lines.lines[-30:])
    check_every_value_once(tmp_path / "data" / "tagpipe.db", ring_name)
