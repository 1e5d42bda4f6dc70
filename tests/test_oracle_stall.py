"""A silent network (black hole: accepted, never answered, no reset) between the writer
process and the database, at an input rate where the ring would overflow within the old
timeout: the writer keeps beating, spills, says "not answering", and after the hole
every record is in the table exactly once (issue 18).

The ring holds 4 s of input (6,000 slots at 1,500 values/s); python-oracledb gives up on a
black-holed call only after about twice ORACLE_CALL_TIMEOUT_MS (5 s here: ~10 s), so a
writer waiting inside the call would lose records."""

from __future__ import annotations

import time

import pytest

from pipeline.common.telemetry import DB_STATE
from tests.oracle_emulator.fixtures import *  # noqa: F401,F403  (fixtures)
from tests.writer_helpers.util import finish, halt, log_text, producer_done, ring_fields, start_producer, start_writer, wait_until

RATE, CAPACITY, SECONDS = 1_500, 6_000, 16
HOLE_S = 7.0


def _health(ring: str):
    from pipeline.common.telemetry import Thresholds, read

    reading = read(ring, Thresholds())
    return reading.figures, reading.health


@pytest.mark.parametrize("where", ["between calls", "insert", "commit"])
def test_oracle_black_hole_never_freezes_the_writer(ring_name, tmp_path, target, tables, proxy, where):
    if target.kind != "emulator":
        pytest.skip("the hole is made by the fault proxy in front of the emulator")
    table, cursor_table = tables
    total = RATE * SECONDS
    env = target.env(proxy.port, ORACLE_TABLE=table, ORACLE_CURSOR_TABLE=cursor_table, BUFFER_BATCH_SIZE="500",
                     BUFFER_WRITE_INTERVAL="0.1", ORACLE_CALL_TIMEOUT_MS="5000", ORACLE_POOL_WAIT_MS="1000",
                     ORACLE_CONNECT_TIMEOUT_S="1", DB_PROBE_MIN_INTERVAL="0.3", DB_PROBE_MAX_INTERVAL="1")
    writer = start_writer(ring_name, tmp_path, **env)
    prod = None
    try:
        prod = start_producer(ring_name, tmp_path, count=total, rate=RATE, capacity=CAPACITY, batch=100)
        wait_until(lambda: "writing ring" in log_text(writer), 60, "the writer to attach")
        wait_until(lambda: ring_fields(ring_name)["writer.rows_written"] >= 2_000, 60, "the first rows in the database")
        # (On a loaded machine a slow first write may already have spilled: wait for "up".)
        wait_until(lambda: DB_STATE[int(ring_fields(ring_name)["writer.db_state"])] == "up", 60, "the database up")
        if where == "between calls":
            proxy.blackhole(True)
        else:
            proxy.blackhole_at_next(where)
            wait_until(lambda: proxy.holes_started == 1, 20, f"the hole to start mid-{where}")
        hole_start = time.monotonic()
        seen_states, beats, reasons = set(), [], []
        spilled_before = ring_fields(ring_name)["writer.rows_spilled"]
        while time.monotonic() - hole_start < HOLE_S:
            fig, health = _health(ring_name)
            seen_states.add((round(time.monotonic() - hole_start, 1), fig.writer_state.db_state))
            beats.append(fig.roles.writer.heartbeat_age_s)
            reasons.extend(health.reasons)
            time.sleep(0.2)
        f = ring_fields(ring_name)
        spilled_in_hole = f["writer.rows_spilled"] - spilled_before
        proxy.blackhole(False)

        assert max(beats) < 2.0, f"writer heartbeat went {max(beats)} s stale during the hole"
        assert spilled_in_hole > 0, "nothing spilled to backup files during the hole"
        assert f["consumer.lost"] == 0
        late = [s for t, s in seen_states if t >= 4.0]
        assert late and all(s == "not_answering" for s in late), sorted(seen_states)
        assert not any(s == "up" for t, s in seen_states if t >= 4.0)
        stuck = [r for r in reasons if r.startswith("database not answering: ")]
        assert stuck, reasons
        assert any(call in stuck[-1] for call in ("write", "connect")) and " s;" in stuck[-1], stuck[-1]

        assert producer_done(prod, 120) == total
        wait_until(lambda: ring_fields(ring_name)["consumer.committed"] >= total, 120, "every record durable")
        wait_until(lambda: ring_fields(ring_name)["writer.backup_files_pending"] == 0
                   and DB_STATE[int(ring_fields(ring_name)["writer.db_state"])] == "up", 120, "the backup files replayed")
        rows = target.rows(table)
        seqs = sorted(r["SEQ"] for r in rows)
        assert seqs == list(range(total)), f"{len(seqs)} rows, {len(set(seqs))} distinct"
        f = ring_fields(ring_name)
        assert f["consumer.lost"] == 0
        assert f["writer.rows_replayed"] > 0
        if where == "commit":
            # The server committed the batch whose reply was held; the spilled copy came
            # back as duplicates when it was replayed (resolved through the cursor table).
            assert f["writer.rows_duplicate"] > 0
        assert f["writer.stuck_call"] == 0 and f["writer.stuck_since_us"] == 0
        rc, err = finish(writer)
        assert rc == 0, err
        assert "abandoned" in err
    finally:
        halt(writer)
        halt(prod)


def test_oracle_black_hole_at_start_is_never_shown_as_up(ring_name, tmp_path, target, tables, proxy):
    """The database black-holed before the writer ever reached it: the state goes from
    "connecting" to "not answering" (never "up"), records spill, and once the network is
    back every record is in the table once."""
    if target.kind != "emulator":
        pytest.skip("the hole is made by the fault proxy in front of the emulator")
    table, cursor_table = tables
    total = RATE * 6
    env = target.env(proxy.port, ORACLE_TABLE=table, ORACLE_CURSOR_TABLE=cursor_table, BUFFER_BATCH_SIZE="500",
                     BUFFER_WRITE_INTERVAL="0.1", ORACLE_CALL_TIMEOUT_MS="5000", ORACLE_POOL_WAIT_MS="1000",
                     ORACLE_CONNECT_TIMEOUT_S="1", DB_PROBE_MIN_INTERVAL="0.3", DB_PROBE_MAX_INTERVAL="1")
    proxy.blackhole(True)
    prod = start_producer(ring_name, tmp_path, count=total, rate=RATE, capacity=CAPACITY, batch=100)
    writer = start_writer(ring_name, tmp_path, **env)
    try:
        wait_until(lambda: "effective settings" in log_text(writer), 30, "the writer to start")
        states = []
        end = time.monotonic() + 5.0
        while time.monotonic() < end:
            try:
                states.append(DB_STATE[int(ring_fields(ring_name)["writer.db_state"])])
            except Exception:  # the ring may not exist for the first few ms
                pass
            time.sleep(0.1)
        assert "up" not in states, states
        assert states[-1] == "not_answering", states
        assert set(states) <= {"unknown", "connecting", "not_answering"}, states
        assert ring_fields(ring_name)["writer.rows_spilled"] > 0
        proxy.blackhole(False)
        assert producer_done(prod, 120) == total
        wait_until(lambda: ring_fields(ring_name)["writer.backup_files_pending"] == 0
                   and ring_fields(ring_name)["consumer.committed"] >= total
                   and DB_STATE[int(ring_fields(ring_name)["writer.db_state"])] == "up", 120, "everything in the database")
        assert sorted(r["SEQ"] for r in target.rows(table)) == list(range(total))
        assert ring_fields(ring_name)["consumer.lost"] == 0
        rc, err = finish(writer)
        assert rc == 0, err
    finally:
        halt(writer)
        halt(prod)
