"""The supervisor's restart backoff, stepped with a controlled clock (children are real processes)."""

from __future__ import annotations

import logging
import time

from pipeline.common.process import StopSignals
from pipeline.supervisor import BACKOFF_MAX_S, HEALTHY_RUN_S, ChildSpec, Supervisor


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _wait_for_exit(sup: Supervisor, clock: Clock) -> None:
    child = sup.children[0]
    deadline = time.monotonic() + 60  # real time: the child is a real process
    while time.monotonic() < deadline:
        assert sup.step(timeout_s=0.1) is None
        if child.restart_at is not None:
            return
    raise AssertionError("the child did not exit")


def test_run_backoff_doubles_up_to_the_cap_and_resets_after_a_healthy_run(tmp_path):
    spec = ChildSpec("writer", "tests.test_run_fakechild", ("writer", str(tmp_path / "ev"), "exit=1@0"))
    clock = Clock()
    sup = Supervisor([spec], logging.getLogger("tagpipe.test"), StopSignals(exit_on_second=False), clock=clock)
    sup.start_all()
    delays = []
    for _ in range(7):
        _wait_for_exit(sup, clock)
        child = sup.children[0]
        delays.append(child.restart_at - clock.t)
        clock.t = child.restart_at - 0.01
        sup.step(timeout_s=0)
        assert child.process is None  # not restarted before its time
        clock.t = child.restart_at
        sup.step(timeout_s=0)
        assert child.process is not None  # restarted on time
    assert delays == [1, 2, 4, 8, 16, BACKOFF_MAX_S, BACKOFF_MAX_S]
    # A child that ran long enough starts again from the first delay.
    clock.t += HEALTHY_RUN_S
    _wait_for_exit(sup, clock)
    assert sup.children[0].restart_at - clock.t == 1
    assert sup.children[0].starts == 8
