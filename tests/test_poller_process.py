"""``python -m pipeline.poller`` as a real process: simulator into a real ring, stop, exit codes."""

from __future__ import annotations

import math
import os
import re
import signal
import time

import numpy as np
import pytest

from pipeline.common.telemetry import SCHEMA, plc_rows
from shm import Observer
from shm.layout import FLAG_NULL, QUALITY_BAD, QUALITY_GOOD
from tests.conftest import REPO, run, spawn, stop
from tests.poller_helpers.modbus_server import ModbusTestServer, wait_for
from tests.poller_helpers.ring_reader import RingReader

DEMO_CODES = {"KRCWO12ELOA101", "KRCWO12ELOA102", "KRCWO12ELOB201", "KRCWO12ELOB202"}


def ring_exists(name: str) -> bool:
    return os.path.exists(f"/dev/shm/{name}.ring")


def test_simulator_fills_the_ring_and_sigterm_stops_it_cleanly(tmp_path, ring_name):
    proc = spawn(["-m", "pipeline.poller"], tmp_path, RING_NAME=ring_name)
    try:
        reader = RingReader(ring_name)

        def every_plc_polled_twice():
            r = reader.drain()
            codes = {c.decode() for c in np.unique(r["plc_code"])}
            return codes == DEMO_CODES and len(np.unique(r["ts_us"])) >= 8

        wait_for(every_plc_polled_twice, timeout=30)
        with Observer(ring_name, telemetry=SCHEMA) as obs:
            snap = obs.snapshot()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        recs = reader.drain()
        reader.close()
    finally:
        stop(proc)
    assert "created ring" in err and "stop requested (SIGTERM)" in err
    now_us = time.time_ns() // 1000
    assert np.all(np.abs(recs["ts_us"] - now_us) < 120_000_000)  # wall clock, UTC microseconds
    assert set(np.unique(recs["quality"])) <= {QUALITY_GOOD, QUALITY_BAD}
    bad = recs["quality"] == QUALITY_BAD
    assert np.all(recs["flags"][bad] & FLAG_NULL) and np.all(np.isnan(recs["value"][bad]))
    assert np.all(np.isfinite(recs["value"][~bad]))
    # One poll of a group is one batch: records of a group share their timestamp.
    d100 = recs[recs["tag_address"] == b"D100"]
    assert len(np.unique(d100["ts_us"])) == len(d100)
    f = snap.fields
    assert f["poller.plc_count"] == 4 and f["poller.source_kind"] == 0 and f["poller.polls"] > 0
    assert f["poller.values"] >= len(recs) - f["poller.values"] * 0  # counted as published
    assert {row.plc_code for row in plc_rows(snap)} == DEMO_CODES
    for row in plc_rows(snap):
        assert row.connected and row.polls > 0 and row.errors == 0 and row.tags > 0
        assert row.last_good_poll_us > 0 and row.last_duration_us >= 0
    with Observer(ring_name, telemetry=SCHEMA) as obs:
        assert obs.snapshot().fields["producer.state"] == 0  # closed in order


@pytest.mark.parametrize(
    "text,expect",
    [
        ("[[plcs]\n", r"is not valid TOML"),
        ('[[plcs]]\ncode = "A"\nhost = "h"\n[[plcs.groups]]\ninterval_s = 0\ntags = [{address="D1", type="int16"}]\n',
         r"plcs\[0\]\.groups\[0\]\.interval_s = 0: must be at least 0\.01"),
        ('[[plcs]]\ncode = "A"\nhost = "h"\n[[plcs.groups]]\ninterval_s = 1\ntags = [{address="D1", type="real"}]\n',
         r"plcs\[0\]\.groups\[0\]\.tags\[0\]\.type = 'real'"),
        (None, r"no such file"),
    ],
    ids=["syntax", "interval", "type", "missing"],
)
def test_bad_tags_file_exits_2_with_one_line_before_the_ring_exists(tmp_path, ring_name, text, expect):
    path = tmp_path / "tags.toml"
    if text is not None:
        path.write_text(text)
    res = run(["-m", "pipeline.poller"], tmp_path, RING_NAME=ring_name, TAGS_FILE=str(path))
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("tagpipe poller:")]
    assert len(lines) == 1, res.stderr
    assert str(path) in lines[0] and re.search(expect, lines[0]), lines[0]
    assert not ring_exists(ring_name)


def test_check_flag_validates_without_opening_anything(tmp_path, ring_name):
    res = run(["-m", "pipeline.poller", "--check"], tmp_path, RING_NAME=ring_name,
              TAGS_FILE=str(REPO / "deploy" / "tags.example.toml"))
    assert res.returncode == 0, res.stderr
    assert "2 PLCs, 12 tags: OK" in res.stdout
    assert not ring_exists(ring_name)


def test_second_poller_on_the_same_ring_exits_4(tmp_path, ring_name):
    first = spawn(["-m", "pipeline.poller"], tmp_path, RING_NAME=ring_name)
    try:
        wait_for(lambda: ring_exists(ring_name), timeout=30)
        res = run(["-m", "pipeline.poller"], tmp_path, RING_NAME=ring_name)
        assert res.returncode == 4, res.stderr
        line = [ln for ln in res.stderr.splitlines() if ln.startswith("tagpipe poller:")]
        assert len(line) == 1 and ring_name in line[0] and str(first.pid) in line[0]
        assert first.poll() is None
    finally:
        stop(first)
    assert first.returncode == 0


def test_load_mode_publishes_its_rate_then_exits_0(tmp_path, ring_name):
    res = run(["-m", "pipeline.poller", "--rate", "20000", "--duration", "2"], tmp_path, RING_NAME=ring_name)
    assert res.returncode == 0, res.stderr
    assert "published 40,000 values" in res.stdout
    rate = float(re.search(r"= ([\d,]+) values/s", res.stdout).group(1).replace(",", ""))
    assert 0.8 * 20000 <= rate <= 20000 * 1.01  # generous: the figure that matters is in bench/
    reader = RingReader(ring_name)
    try:
        recs = reader.drain()
    finally:
        reader.close()
    assert len(recs) == 40_000 and reader.lost == 0
    span_s = (recs["ts_us"].max() - recs["ts_us"].min()) / 1e6
    assert 1.5 <= span_s <= 4.0  # spread over the duration, not one burst


def test_overflow_check_reports_33_3_percent_and_removes_its_ring(tmp_path, ring_name):
    res = run(["-m", "pipeline", "overflow-check", "--buffer-size", "1000", "--overflow-count", "500",
               "--ring", ring_name], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"overflow rate\s+33\.3 %", res.stdout)
    assert re.search(r"overflow count\s+500\b", res.stdout) and re.search(r"current size\s+1000\b", res.stdout)
    assert "overflow check: OK" in res.stdout
    assert not ring_exists(ring_name) and not os.path.exists(f"/dev/shm/sem.{ring_name}.doorbell")


def test_sigterm_during_a_poll_publishes_that_poll_then_exits_0(tmp_path, ring_name):
    with ModbusTestServer(holding=[11, 12, 13, 14]) as srv:
        tags = tmp_path / "tags.toml"
        tags.write_text(f"""
[[plcs]]
code = "KRCWO12ELOA101"
host = "127.0.0.1"
port = {srv.port}
timeout_s = 15
  [[plcs.groups]]
  interval_s = 0.3
  tags = [ {{ address = "D0", type = "uint16" }}, {{ address = "D1", type = "uint16" }} ]
""")
        proc = spawn(["-m", "pipeline.poller"], tmp_path, RING_NAME=ring_name, TAGS_FILE=str(tags))
        try:
            reader = RingReader(ring_name)
            wait_for(lambda: len(reader.drain()) >= 4, timeout=30)
            # Hang the PLC and wait until a poll is stuck waiting for its answer.
            srv.freeze()
            asked = srv.requests[3]
            wait_for(lambda: srv.requests[3] > asked, timeout=10)
            srv.set_holding(0, [4242])  # what the stuck poll will read
            signal_us = time.time_ns() // 1000
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert proc.poll() is None, "stopped without finishing the poll in progress"
            srv.thaw()
            proc.communicate(timeout=20)
            assert proc.returncode == 0
            recs = reader.drain()
            reader.close()
        finally:
            stop(proc)
    last = recs[recs["tag_address"] == b"D0"][-1]
    assert last["value"] == 4242 and last["quality"] == QUALITY_GOOD
    assert last["ts_us"] < signal_us  # stamped when the poll started, before the signal
    assert not math.isnan(recs[recs["tag_address"] == b"D1"][-1]["value"])


def test_foreign_file_in_place_of_the_ring_exits_3_with_the_reason(tmp_path, ring_name):
    with open(f"/dev/shm/{ring_name}.ring", "wb") as fh:
        fh.write(b"not a ring" * 4000)
    res = run(["-m", "pipeline.poller"], tmp_path, RING_NAME=ring_name)
    assert res.returncode == 3, res.stderr
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("tagpipe poller:")]
    assert len(line) == 1 and "not a tagpipe ring" in line[0] and ring_name in line[0]


def test_not_enough_shared_memory_exits_2_naming_buffer_max_size(ring_name, monkeypatch, capsys):
    # /dev/shm here is larger than the biggest ring allowed, so the shortage is simulated
    # at the one edge that measures it.
    import logging

    import shm.segment
    from pipeline.poller.__main__ import open_ring

    monkeypatch.setattr(shm.segment, "shm_free_bytes", lambda: 1_000_000)

    from types import SimpleNamespace

    settings = SimpleNamespace(ring_name=ring_name, buffer_max_size=100_000, buffer_alert_threshold=80.0)
    with pytest.raises(SystemExit) as ei:
        open_ring(settings, logging.getLogger("test"))
    assert ei.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "BUFFER_MAX_SIZE=100000" in err[0]
    assert not ring_exists(ring_name)


def test_ready_notification_and_heartbeat_while_the_only_plc_hangs(tmp_path, ring_name):
    import socket

    from tests.poller_helpers.modbus_server import Blackhole

    sock_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(sock_path)
    notify.settimeout(30)
    hole = Blackhole()
    tags = tmp_path / "tags.toml"
    tags.write_text(f"""
[[plcs]]
code = "HUNG"
host = "127.0.0.1"
port = {hole.port}
timeout_s = 10
  [[plcs.groups]]
  interval_s = 1
  tags = [ {{ address = "D0", type = "uint16" }} ]
""")
    proc = spawn(["-m", "pipeline.poller"], tmp_path, RING_NAME=ring_name, TAGS_FILE=str(tags), NOTIFY_SOCKET=sock_path,
                 SHUTDOWN_TIMEOUT="1")
    try:
        msg = notify.recv(4096).decode()
        assert "READY=1" in msg
        assert ring_exists(ring_name)  # ready only once the ring is open
        with Observer(ring_name, telemetry=SCHEMA) as obs:
            beats = []
            for _ in range(12):  # 3 s, while the only poll waits 10 s for its answer
                beats.append(obs.snapshot().fields["producer.heartbeat_us"])
                time.sleep(0.25)
        assert len(set(beats)) >= 6 and max(np.diff(beats)) < 1_000_000
        # The stuck poll is abandoned after SHUTDOWN_TIMEOUT: the stop stays bounded.
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and time.monotonic() - t0 < 8
        assert "abandoning that poll" in err
        assert "STOPPING=1" in notify.recv(4096).decode()
    finally:
        stop(proc)
        hole.close()
        notify.close()


def test_ring_deleted_under_the_poller_stops_it_with_exit_1(tmp_path, ring_name):
    from shm import delete_ring

    proc = spawn(["-m", "pipeline.poller"], tmp_path, RING_NAME=ring_name)
    try:
        wait_for(lambda: ring_exists(ring_name), timeout=30)
        time.sleep(0.5)
        delete_ring(ring_name, force=True)
        _, err = proc.communicate(timeout=30)
    finally:
        stop(proc)
    assert proc.returncode == 1, err
    assert "was deleted or replaced under the poller" in err
