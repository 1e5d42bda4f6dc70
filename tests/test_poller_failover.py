"""Dead, hung and refusing PLCs never delay a healthy one, and come back (real sockets, real process)."""

from __future__ import annotations

import signal
import time

import numpy as np

from pipeline.common.telemetry import SCHEMA, plc_rows
from shm import Observer
from shm.layout import FLAG_NULL, QUALITY_BAD, QUALITY_GOOD
from tests.conftest import spawn, stop
from tests.poller_helpers.modbus_server import Blackhole, ModbusTestServer, refused_port, wait_for
from tests.poller_helpers.ring_reader import RingReader

INTERVAL = 0.2
DEAD_TIMEOUT = 2.0


def plc_block(code: str, port: int, timeout: float) -> str:
    return f"""
[[plcs]]
code = "{code}"
host = "127.0.0.1"
port = {port}
timeout_s = {timeout}
backoff_max_s = 1.0
  [[plcs.groups]]
  interval_s = {INTERVAL}
  tags = [ {{ address = "D0", type = "uint16" }}, {{ address = "D1", type = "uint16" }} ]
"""


def qualities(reader: RingReader, code: str, tag: str = "D0") -> list[int]:
    return [int(q) for q in reader.of(code, tag)["quality"]]


def episodes(qs: list[int]) -> list[tuple[int, int]]:
    """Run-length encoding: [(quality, count), ...]."""
    out: list[tuple[int, int]] = []
    for q in qs:
        if out and out[-1][0] == q:
            out[-1] = (q, out[-1][1] + 1)
        else:
            out.append((q, 1))
    return out


def test_dead_plcs_do_not_delay_a_healthy_one_and_recover(tmp_path, ring_name):
    hole = Blackhole()
    healthy = ModbusTestServer(holding=[1, 2, 3, 4]).start()
    flaky = ModbusTestServer(holding=[7, 8, 9, 10]).start()
    dead_port = refused_port()
    tags = tmp_path / "tags.toml"
    tags.write_text(
        plc_block("HEALTHY", healthy.port, 1.0)
        + plc_block("BLACKHOLE", hole.port, DEAD_TIMEOUT)
        + plc_block("REFUSED", dead_port, DEAD_TIMEOUT)
        + plc_block("FLAKY", flaky.port, DEAD_TIMEOUT)
    )
    proc = spawn(["-m", "pipeline.poller"], tmp_path, RING_NAME=ring_name, TAGS_FILE=str(tags))
    try:
        reader = RingReader(ring_name)
        wait_for(lambda: reader.drain() is not None and len(reader.of("FLAKY", "D0")) >= 3, timeout=30)

        # Episode 1: FLAKY hangs (accepts requests, never answers), then answers again.
        flaky.freeze()
        wait_for(lambda: reader.drain() is not None and QUALITY_BAD in qualities(reader, "FLAKY"), timeout=30)
        time.sleep(1.5)  # several failed polls: still one BAD record
        flaky.thaw()
        wait_for(lambda: reader.drain() is not None and qualities(reader, "FLAKY")[-1] == QUALITY_GOOD, timeout=30)

        # Episode 2: FLAKY goes away (connections refused), then comes back on the same port.
        flaky.stop()
        wait_for(lambda: reader.drain() is not None and qualities(reader, "FLAKY")[-1] == QUALITY_BAD, timeout=30)
        time.sleep(1.5)
        flaky.start()
        wait_for(lambda: reader.drain() is not None and qualities(reader, "FLAKY")[-1] == QUALITY_GOOD, timeout=30)
        time.sleep(0.5)

        with Observer(ring_name, telemetry=SCHEMA) as obs:
            rows = {r.plc_code: r for r in plc_rows(obs.snapshot())}
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        reader.drain()
        reader.close()
    finally:
        stop(proc)
        healthy.stop()
        flaky.stop()
        hole.close()

    # The healthy PLC kept its schedule the whole time: no gap near the dead PLCs' timeout.
    h = reader.of("HEALTHY", "D0")
    assert set(h["quality"]) == {QUALITY_GOOD}
    gaps = np.diff(h["ts_us"]) / 1e6
    assert gaps.max() < DEAD_TIMEOUT * 0.75, f"healthy PLC delayed: largest gap {gaps.max():.2f} s"
    assert len(h) >= 10

    # Never-answering PLCs: exactly one BAD record per tag (NULL value), nothing else.
    for code in ("BLACKHOLE", "REFUSED"):
        for tag in ("D0", "D1"):
            r = reader.of(code, tag)
            assert len(r) == 1, f"{code}/{tag}: {len(r)} records"
            assert r["quality"][0] == QUALITY_BAD and r["flags"][0] & FLAG_NULL and np.isnan(r["value"][0])

    # FLAKY: GOOD..., one BAD, GOOD..., one BAD, GOOD... (one BAD per failure episode).
    runs = episodes(qualities(reader, "FLAKY"))
    assert [q for q, _ in runs] == [QUALITY_GOOD, QUALITY_BAD, QUALITY_GOOD, QUALITY_BAD, QUALITY_GOOD], runs
    assert [n for q, n in runs if q == QUALITY_BAD] == [1, 1]
    assert reader.of("FLAKY", "D1")["value"][-1] == 8

    # The PLC table the web process shows.
    assert rows["HEALTHY"].connected == 1 and rows["HEALTHY"].errors == 0
    for code in ("BLACKHOLE", "REFUSED"):
        assert rows[code].connected == 0 and rows[code].errors >= 1
        assert rows[code].consecutive_errors >= 1 and rows[code].last_good_poll_us is None  # never a good poll
    assert rows["FLAKY"].errors >= 2 and rows["FLAKY"].consecutive_errors == 0
    assert rows["FLAKY"].connected == 1 and rows["FLAKY"].last_error_us > 0
    assert "FLAKY/group0 does not answer" in err and "FLAKY/group0 answers again" in err
