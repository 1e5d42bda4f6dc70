"""A refused login (ORA-01017) must not lock the account: Oracle's default profile locks
it after 10 failed logins. The writer stops retrying quickly, says "login refused", and
keeps spilling (issue 18)."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.writer.circuit import LOGIN_RETRY_S, Circuit
from pipeline.writer.guard import CallGuard, GuardedSink
from pipeline.writer.metrics import ERR_PERMANENT
from pipeline.common.telemetry import DB_STATE
from tests.oracle_emulator.fixtures import *  # noqa: F401,F403  (fixtures)
from tests.oracle_emulator.fixtures import make_sink
from tests.writer_helpers.util import finish, halt, producer_done, ring_fields, ring_value, start_producer, start_writer, wait_until

LOCKOUT_LIMIT = 10  # Oracle DEFAULT profile FAILED_LOGIN_ATTEMPTS


class StateLog:
    """Records what the circuit publishes (stands in for the ring's writer words)."""

    def __init__(self) -> None:
        self.states: list[str] = []

    def db_state(self, name: str) -> None:
        self.states.append(name)

    def __getattr__(self, name):  # outage(), error(), probes(): not under test here
        return lambda *a, **k: None


def test_wrong_password_makes_fewer_than_ten_logins_in_ten_minutes(target, tables):
    """The writer's start and its prober against the real client, on a virtual clock: the
    prober's ten minutes pass in a moment, each of its logins is a real one."""
    if target.kind != "emulator":
        pytest.skip("counts logins on the emulator")
    table, cursor_table = tables
    sink = GuardedSink(make_sink(target, table, cursor_table, ORACLE_PASSWORD="not-the-password", ORACLE_POOL_MIN="2"),
                       CallGuard(), lambda: 10.0)
    virtual = {"now": 0.0, "sleeps": []}
    done = threading.Event()

    def wait(stop: threading.Event, seconds: float) -> bool:
        if stop.is_set() or virtual["now"] + seconds > 600.0:
            done.set()
            return True
        virtual["now"] += seconds
        virtual["sleeps"].append(seconds)
        return False

    log = StateLog()
    circuit = Circuit(sink, log, probe_min_s=1.0, probe_max_s=10.0, where="backup", wait=wait)
    try:
        circuit.ensure_sink()  # what Writer.start does
        assert sink.contact() is False
        err = sink.probe_error
        assert err is not None and err.code == "ORA-01017"
        circuit.trip(ERR_PERMANENT, err)
        assert log.states[-1] == "login_refused"  # at once, not after a retry window
        circuit.publish()
        assert log.states[-1] == "login_refused"
        assert done.wait(60), "the prober did not reach the end of the ten virtual minutes"
        attempts = target.catalog.logins
        assert attempts < LOCKOUT_LIMIT, f"{attempts} logins in 10 minutes"
        assert circuit.prober.probes >= 1  # it did keep trying, slowly
        assert all(s >= LOGIN_RETRY_S * 0.8 for s in virtual["sleeps"]), virtual["sleeps"]
        time.sleep(1.5)  # and no pool goes on logging in behind its back
        assert target.catalog.logins == attempts
    finally:
        circuit.stop()
        sink.close()


def test_writer_with_a_wrong_password_says_so_at_once_and_spills(ring_name, tmp_path, target, tables):
    if target.kind != "emulator":
        pytest.skip("counts logins on the emulator")
    table, cursor_table = tables
    env = target.env(ORACLE_TABLE=table, ORACLE_CURSOR_TABLE=cursor_table, ORACLE_PASSWORD="not-the-password",
                     BUFFER_BATCH_SIZE="200", BUFFER_WRITE_INTERVAL="0.1", DB_PROBE_MIN_INTERVAL="0.1", DB_PROBE_MAX_INTERVAL="0.2")
    prod = start_producer(ring_name, tmp_path, count=2_000, rate=1_000, batch=100)
    writer = start_writer(ring_name, tmp_path, **env)
    try:
        started = time.monotonic()
        wait_until(lambda: DB_STATE[int(ring_value(ring_name, "writer.db_state", 0))] == "login_refused", 15, "login_refused")
        assert time.monotonic() - started < 15
        assert producer_done(prod) == 2_000
        wait_until(lambda: ring_fields(ring_name)["writer.rows_spilled"] >= 2_000, 30, "every record spilled")
        from pipeline.common.telemetry import Thresholds, read

        health = read(ring_name, Thresholds()).health
        assert "login refused: fix the password (values go to backup files)" in health.reasons
        # Probing at 0.1-0.2 s would have made dozens of logins by now; the slow pace did not.
        assert target.catalog.logins < LOCKOUT_LIMIT
        rc, err = finish(writer)
        assert rc == 0, err
        assert "fix the password" in err and "not-the-password" not in err
    finally:
        halt(writer)
        halt(prod)
