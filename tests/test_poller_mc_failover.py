"""MELSEC PLCs in the real poller process: a slow, a stalled, a refusing and a socket-closing
PLC never delay a healthy one; BAD once per episode; end codes; bad tag files exit 2."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np

from shm.layout import FLAG_NULL, QUALITY_BAD, QUALITY_GOOD
from tests.conftest import child_env, spawn, stop
from tests.poller_helpers.mc_server import McTestServer
from tests.poller_helpers.modbus_server import refused_port, wait_for
from tests.poller_helpers.ring_reader import RingReader
from tests.test_poller_failover import episodes, qualities

INTERVAL = 0.2
DEAD_TIMEOUT = 2.0


def mc_block(code: str, port: int, timeout: float, tags: str = "") -> str:
    tags = tags or '{ address = "D0", type = "uint16" }, { address = "M3", type = "bool" }'
    return f"""
[[plcs]]
code = "{code}"
protocol = "mc"
host = "127.0.0.1"
port = {port}
series = "iQ-R"
timeout_s = {timeout}
backoff_max_s = 1.0
  [[plcs.groups]]
  interval_s = {INTERVAL}
  tags = [ {tags} ]
"""


def test_misbehaving_mc_plcs_do_not_delay_a_healthy_one(tmp_path, ring_name):
    healthy = McTestServer().start()
    slow = McTestServer(delay_s=1.8).start()  # answers within its 2 s timeout, each request 1.8 s
    flaky = McTestServer().start()
    closer = McTestServer(close_after_each=True).start()
    ranged = McTestServer(sizes={"D": 100}).start()
    for i, s in enumerate((healthy, slow, flaky, closer, ranged)):
        s.set_words("D", 0, [10 + i])
        s.set_bits("M", 3, [1])
    tags = tmp_path / "tags.toml"
    tags.write_text(
        mc_block("HEALTHY", healthy.port, 1.0)
        + mc_block("SLOW", slow.port, DEAD_TIMEOUT)
        + mc_block("REFUSED", refused_port(), DEAD_TIMEOUT)
        + mc_block("FLAKY", flaky.port, DEAD_TIMEOUT)
        + mc_block("CLOSER", closer.port, 1.0)
        + mc_block("RANGED", ranged.port, 1.0, '{ address = "D0", type = "uint16" }, { address = "D1", type = "uint16" },'
                                               ' { address = "D500", type = "uint16" }')
    )
    proc = spawn(["-m", "pipeline.poller"], tmp_path, RING_NAME=ring_name, TAGS_FILE=str(tags))
    try:
        reader = RingReader(ring_name)
        wait_for(lambda: reader.drain() is not None and len(reader.of("FLAKY", "D0")) >= 3, timeout=30)

        flaky.freeze()  # stalls: accepts requests, never answers
        wait_for(lambda: reader.drain() is not None and QUALITY_BAD in qualities(reader, "FLAKY"), timeout=30)
        time.sleep(1.5)
        flaky.thaw()
        wait_for(lambda: reader.drain() is not None and qualities(reader, "FLAKY")[-1] == QUALITY_GOOD, timeout=30)

        flaky.stop()  # refuses
        wait_for(lambda: reader.drain() is not None and qualities(reader, "FLAKY")[-1] == QUALITY_BAD, timeout=30)
        time.sleep(1.5)
        flaky.start()
        wait_for(lambda: reader.drain() is not None and qualities(reader, "FLAKY")[-1] == QUALITY_GOOD, timeout=30)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        reader.drain()
        reader.close()
    finally:
        stop(proc)
        for s in (healthy, slow, flaky, closer, ranged):
            s.stop()

    h = reader.of("HEALTHY", "D0")
    assert set(h["quality"]) == {QUALITY_GOOD} and set(h["value"]) == {10}
    gaps = np.diff(h["ts_us"]) / 1e6
    assert gaps.max() < 1.2, f"healthy PLC delayed: largest gap {gaps.max():.2f} s"
    assert len(h) >= 10

    # The slow PLC answers within its timeout: GOOD, just fewer polls.
    s = reader.of("SLOW", "D0")
    assert len(s) >= 2 and set(s["quality"]) == {QUALITY_GOOD} and len(s) < len(h) / 2

    r = reader.of("REFUSED", "D0")
    assert len(r) == 1 and r["quality"][0] == QUALITY_BAD and r["flags"][0] & FLAG_NULL

    runs = episodes(qualities(reader, "FLAKY"))
    assert [q for q, _ in runs] == [QUALITY_GOOD, QUALITY_BAD, QUALITY_GOOD, QUALITY_BAD, QUALITY_GOOD], runs
    assert [n for q, n in runs if q == QUALITY_BAD] == [1, 1]

    # Closing after each request costs a reconnect per poll, never a BAD value.
    c = reader.of("CLOSER", "M3")
    assert len(c) >= 10 and set(c["quality"]) == {QUALITY_GOOD} and set(c["value"]) == {1}

    # An end code: the tag of that request BAD once per episode, the others GOOD every poll.
    assert set(reader.of("RANGED", "D0")["quality"]) == {QUALITY_GOOD} and len(reader.of("RANGED", "D0")) >= 10
    bad = reader.of("RANGED", "D500")
    assert len(bad) == 1 and bad["quality"][0] == QUALITY_BAD
    assert err.count("RANGED/group0 answers but refuses part of the group") == 1
    assert "end code 0xC056 (device out of range" in err and "D500+1" in err
    assert "FLAKY/group0 does not answer" in err and "FLAKY/group0 answers again" in err


def test_a_bad_mc_tag_file_exits_2_naming_file_key_and_value(tmp_path):
    tags = tmp_path / "tags.toml"
    tags.write_text(mc_block("P", 5000, 1.0, '{ address = "X1F", type = "bool" }').replace('"iQ-R"', '"iQ-F"'))
    r = subprocess.run([sys.executable, "-m", "pipeline.poller", "--check"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60, env=child_env(TAGS_FILE=str(tags)))
    assert r.returncode == 2
    assert f"{tags}: plcs[0].groups[0].tags[0].address = 'X1F'" in r.stderr and "octal" in r.stderr
