"""pipeline.common.telemetry on its own (no Flask): figures from a real ring snapshot, health rules, liveness."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from pipeline.common import telemetry as stats
from pipeline.common.telemetry import SCHEMA, plc_slot
from shm import Observer
from test_web_api import rig  # noqa: F401 (the fixture: a ring with counters set by hand)


def figures(rig, **thr):
    with Observer(rig.name, telemetry=SCHEMA) as obs:
        snap = obs.snapshot()
        return stats.figures(snap, stats.Thresholds(**thr), stats.peek_pending_ts_us(obs, snap))


def test_read_is_the_figures_and_health_of_one_snapshot(rig):
    rig.publish(300)
    rig.commit(100)
    reading = stats.read(rig.name, stats.Thresholds())
    f = figures(rig)
    assert reading.problem is None and reading.figures.buffer == f.buffer
    assert reading.health == stats.HealthEvaluator().evaluate(f)
    missing = stats.read(rig.name + "x", stats.Thresholds(), missing_hint=" (hint)")
    assert missing.figures is None and missing.problem.startswith("ring missing")
    assert missing.health.status == "unhealthy" and missing.health.reasons[0].endswith("(hint)")


def test_figures_of_a_ring_match_its_counters(rig):
    rig.publish(1500)
    rig.commit(400)
    f = figures(rig)
    assert f.buffer.overflow_count == 500
    assert f.buffer.overflow_rate_pct == pytest.approx(33.333, abs=0.01)
    assert f.buffer.lost == 500  # overwritten before the consumer read them
    assert f.buffer.current_size == 600
    assert f.writer_metrics.successful_writes == 1
    assert f.writer_metrics.avg_batch_size == 400
    assert f.roles.writer.running and f.roles.poller.running
    assert f.lag.records == 600


def test_zeros_mean_not_reported_yet(rig):
    rig.c.set("writer.db_state", 0)
    f = figures(rig)
    assert f.writer_state.db_state == "unknown"
    assert f.writer_state.last_commit_us is None and f.writer_state.disk_free_bytes is None
    assert f.lag.oldest_unwritten_age_s is None
    h = stats.HealthEvaluator().evaluate(f)
    assert h.status == "degraded" and [c.code for c in h.checks] == ["database_unknown"]


def test_a_fresh_evaluator_uses_entry_thresholds_and_a_kept_one_remembers(rig):
    ev = stats.HealthEvaluator(stats.Thresholds(alert_pct=50.0))
    rig.publish(520)
    assert ev.evaluate(figures(rig)).status == "degraded"
    rig.commit(40)  # 48 %: still on for ev, off for a fresh evaluator
    f = figures(rig)
    assert ev.evaluate(f).status == "degraded"
    assert stats.HealthEvaluator(stats.Thresholds(alert_pct=50.0)).evaluate(f).status == "healthy"


def test_old_loss_clears_after_the_hold_time(rig):
    rig.publish(1100)
    rig.commit(1)  # finds 100 lost, sets consumer.last_lost_us
    f = figures(rig)
    assert f.lag.last_loss_age_s is not None
    assert "values_lost" in [c.code for c in stats.HealthEvaluator().evaluate(f).checks]
    h = stats.HealthEvaluator(stats.Thresholds(loss_hold_s=0.0)).evaluate(f)
    # slots reused this minute while the writer runs are not a loss by themselves
    assert f.buffer.overflowing_now and "values_lost" not in [c.code for c in h.checks]


def test_slots_reused_after_the_writer_read_them_are_not_reported_lost(rig):
    """Issue 12 item 4 in health: the writer had read the records before their slots were
    reused, then stored them: no loss, so no "values lost" check (it was unhealthy before)."""
    rig.publish(800)
    batch = rig.c.read(800)
    rig.publish(700)  # 500 slots reused before the commit
    rig.c.commit(batch)
    stats.record_losses(rig.c)
    f = figures(rig)
    assert f.buffer.overwritten_before_commit == 500 and f.buffer.lost == 0 and f.buffer.overflowing_now
    assert "values_lost" not in [c.code for c in stats.HealthEvaluator().evaluate(f).checks]


def test_slots_reused_while_no_writer_runs_are_reported_lost_at_once(ring_name):
    from test_web_api import Rig

    rig = Rig(ring_name, consumer=False)
    try:
        rig.publish(1500)  # capacity 1000, no writer: 500 certainly gone, counted once one attaches
        f = figures(rig)
        assert f.buffer.lost == 0 and not f.roles.writer.running
        h = stats.HealthEvaluator().evaluate(f)
        assert "values_lost" in [c.code for c in h.checks] and h.status == "unhealthy"
    finally:
        rig.close()


def test_pid_alive_sees_zombies_as_dead():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 20
    while stats.pid_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # exited but not reaped: a zombie
    assert not stats.pid_alive(proc.pid)
    proc.wait(5)
    assert stats.pid_alive(1) or not stats.pid_alive(0)
    assert not stats.pid_alive(0)


def test_role_status_names_the_reason(rig):
    rig.c.close()
    rig.c = None
    f = figures(rig)
    w = f.roles.writer
    assert not w.running and w.state == "stopped" and w.reason == "writer stopped"
    h = stats.HealthEvaluator().evaluate(f)
    assert h.status == "unhealthy" and h.writer_ok is False and h.poller_ok is True


def test_plc_rows_decode_the_table(rig):
    for i, code in enumerate(["KRCWO12ELOA101", "PLC2"]):
        s = plc_slot(rig.p, i)
        s.set_code(code)
        s.set("connected", i == 0)
        s.set("polls", 10 + i)
        s.set("last_good_poll_us", stats.now_us() - 3_000_000)
        del s  # it holds a view of the mapping, which would keep it from closing
    rig.p.set("poller.plc_count", 2)
    rows = figures(rig).plcs
    assert [r.plc_code for r in rows] == ["KRCWO12ELOA101", "PLC2"]
    assert rows[0].connected is True and rows[1].connected is False
    assert rows[1].polls == 11
    assert rows[0].last_good_poll_age_s == pytest.approx(3, abs=1)
    assert stats.MAX_PLCS >= 2


def test_database_states_of_a_stuck_call_a_refused_login_and_no_contact_have_their_own_reasons(rig):
    """not_answering names the call and how long it has had no answer; login_refused says
    what to do; connecting is not "up"."""
    from shm.ring import now_us

    rig.c.set("writer.db_state", stats.DB_STATE_CODES["not_answering"])
    rig.c.set("writer.stuck_call", stats.STUCK_CALL_CODES["write"])
    rig.c.set("writer.stuck_since_us", now_us() - 12_300_000)
    f = figures(rig)
    assert f.writer_state.stuck_call == "write" and 12.0 <= f.writer_state.stuck_for_s < 20.0
    h = stats.HealthEvaluator().evaluate(f)
    assert not h.oracle_connection_ok and h.status == "degraded"
    [msg] = [c.message for c in h.checks if c.code == "database_not_answering"]
    assert msg.startswith("database not answering: write without an answer for 1") and msg.endswith("values go to backup files")

    rig.c.set("writer.stuck_call", 0)
    rig.c.set("writer.stuck_since_us", 0)
    rig.c.set("writer.db_state", stats.DB_STATE_CODES["login_refused"])
    f = figures(rig)
    assert f.writer_state.stuck_call is None and f.writer_state.stuck_for_s is None
    h = stats.HealthEvaluator().evaluate(f)
    assert [c.code for c in h.checks] == ["login_refused"] and "fix the password" in h.reasons[0]

    rig.c.set("writer.db_state", stats.DB_STATE_CODES["connecting"])
    h = stats.HealthEvaluator().evaluate(figures(rig))
    assert [c.code for c in h.checks] == ["database_connecting"] and not h.oracle_connection_ok


def test_losses_are_bucketed_per_minute_once_even_across_writer_restarts(rig):
    """The loss minute buckets count what consumer.lost grew by, once: a writer that died
    after its commit but before bucketing leaves the losses to its successor."""
    rig.publish(1400)
    rig.c.commit(rig.c.read(1400))  # 400 lost, not bucketed yet (the writer died here)
    assert figures(rig).buffer.overflowed_last_hour == 0
    assert stats.record_losses(rig.c) == 400  # its successor's first commit buckets them
    assert stats.record_losses(rig.c) == 0  # and never twice
    minute = stats.now_us() // (stats.HOUR_BUCKET_S * stats.US)
    stats.record_losses(rig.c, t_us=(minute + 61) * 60 * stats.US)  # nothing new: no bucket touched
    b = figures(rig).buffer
    assert b.overflowed_last_hour == 400 and b.overflow_count == b.lost == 400
    assert b.overflow_rate_pct == pytest.approx(100 * 400 / 1400, abs=0.001)
