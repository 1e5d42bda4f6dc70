"""The call guard (pipeline/writer/guard.py): the budget formula, the input rate, calls on
worker threads that are abandoned when they outlive the budget, replay chunk fitting."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.writer.guard import (BUDGET_CAP_S, BUDGET_FLOOR_S, BUSY_CODE, STUCK_CODE, CallBusy, CallGuard, RateMeter,
                                   StuckCall, budget_s, fit_chunk)
from pipeline.writer.sinks.base import PermanentSinkError


def test_budget_is_a_share_of_the_ring_headroom_within_floor_and_cap():
    # 10,000 free slots at 1,000 values/s = 10 s of headroom; half of it may be spent waiting.
    assert budget_s(10_000, 1_000.0) == pytest.approx(5.0)
    assert budget_s(10_000, 1_000.0, share=0.25) == pytest.approx(2.5)
    # The case: 100,000 slots at 5,000 values/s (20 s) -> 10 s, not the ~60 s of the driver.
    assert budget_s(100_000, 5_000.0) == pytest.approx(10.0)
    # Nearly full ring: the floor (a healthy call must still have a chance).
    assert budget_s(100, 5_000.0) == BUDGET_FLOOR_S
    assert budget_s(-5, 5_000.0) == BUDGET_FLOOR_S
    # Huge headroom, or no input at all: the cap.
    assert budget_s(50_000_000, 10.0) == BUDGET_CAP_S
    assert budget_s(1000, 0.0) == BUDGET_CAP_S


def test_rate_meter_follows_the_counter_and_reacts_to_a_burst_at_once():
    m = RateMeter(half_life_s=2.0)
    assert m.update(0.0, 0) == 0.0
    for i in range(1, 21):  # 1,000/s for 10 s
        m.update(i * 0.5, i * 500)
    assert m.rate == pytest.approx(1000.0, rel=0.01)
    m.update(10.5, 10_000 + 5_000)  # a burst: 10,000/s over the last 0.5 s
    assert m.rate == pytest.approx(10_000.0)
    for i in range(1, 41):  # silence: the rate decays towards 0
        m.update(10.5 + i * 0.5, 15_000)
    assert m.rate < 10.0
    assert m.update(30.55, 15_000) == m.rate  # samples closer than 0.1 s are ignored


def test_guard_returns_results_and_raises_the_calls_own_errors():
    g = CallGuard()
    assert g.run("write", lambda: 42, budget=5.0) == 42
    with pytest.raises(PermanentSinkError):
        g.run("write", lambda: (_ for _ in ()).throw(PermanentSinkError("no table", "ORA-00942")), budget=5.0)
    assert g.stuck() is None


def test_guard_abandons_a_call_that_outlives_the_budget_and_keeps_ticking():
    release = threading.Event()
    ticks, waits = [], []
    g = CallGuard(tick=lambda: ticks.append(time.monotonic()), on_wait=lambda n, s: waits.append((n, s)), report_after_s=0.2)
    started = time.monotonic()
    with pytest.raises(StuckCall) as err:
        g.run("write", lambda: release.wait(30), budget=0.6)
    took = time.monotonic() - started
    assert err.value.code == STUCK_CODE and "write" in str(err.value)
    assert 0.55 <= took < 2.0
    # The heartbeat was beaten all along (every WAIT_SLICE_S), never a gap of the whole budget.
    gaps = [b - a for a, b in zip([started] + ticks, ticks)]
    assert len(ticks) >= 8 and max(gaps) < 0.3
    # Reported as waiting once past report_after_s, with the call's name.
    assert waits and waits[0][0] == "write" and waits[0][1] >= 0.2
    # While the abandoned call runs no new call starts.
    name, since = g.stuck()
    assert name == "write" and since <= started + 0.1
    with pytest.raises(CallBusy) as busy:
        g.run("write", lambda: 1, budget=5.0)
    assert busy.value.code == BUSY_CODE
    release.set()
    deadline = time.monotonic() + 5
    while g.stuck() is not None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert g.run("write", lambda: 7, budget=5.0) == 7
    assert g.abandoned_total == 1


def test_guard_does_not_report_a_quick_call():
    waits = []
    g = CallGuard(on_wait=lambda n, s: waits.append(n), report_after_s=1.0)
    assert g.run("write", lambda: time.sleep(0.1) or "ok", budget=5.0) == "ok"
    assert waits == []


def test_replay_chunks_shrink_when_slow_and_grow_when_fast():
    assert fit_chunk(8000, 3.0, budget=4.0) == 4000  # more than half the budget: halve
    assert fit_chunk(8000, float("inf"), budget=4.0) == 2000  # abandoned / failed: a quarter
    assert fit_chunk(8000, 0.2, budget=4.0, hi=10_000) == 10_000  # fast: double, up to hi
    assert fit_chunk(1000, 1.0, budget=4.0) == 1000  # in between: keep
    assert fit_chunk(150, float("inf"), budget=4.0) == 100  # never below the floor


def test_a_call_that_ends_while_the_budget_runs_out_is_answered_not_abandoned():
    # The call ends in the window between "the budget is over and the call still runs" and
    # the call being marked abandoned (here: while on_wait is told): its answer counts.
    release, ended = threading.Event(), threading.Event()

    def call():
        release.wait(5.0)
        return "committed"

    def on_wait(name, waited):
        release.set()
        time.sleep(0.2)  # the worker thread returns meanwhile
        ended.set()

    g = CallGuard(on_wait=on_wait, report_after_s=10.0)
    assert g.run("write", call, budget=0.1) == "committed"
    assert ended.is_set() and g.stuck() is None and g.abandoned_total == 0
