"""``python -m pipeline`` end to end: real poller, writer and web children, real SQLite, real signals."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import spawn, stop
from test_run_supervisor import LINE_RE, Lines

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(port: int, path: str, timeout: float = 5.0):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:  # 503 health still carries the JSON body
        return e.code, json.loads(e.read())


def wait_until(cond, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def ring_counts(ring: str) -> dict:
    from pipeline.common.telemetry import SCHEMA
    from shm import Observer

    with Observer(ring, telemetry=SCHEMA) as obs:
        f = obs.snapshot().fields
    return {k: int(f[k]) for k in ("epoch", "producer.published", "producer.padding", "consumer.committed",
                                      "consumer.lost", "consumer.padding", "consumer.delivered", "producer.overwritten")}


def delivered(ring: str) -> int:
    try:
        return ring_counts(ring)["consumer.delivered"]
    except Exception:
        return 0


def check_every_value_once(db: Path, ring: str) -> dict:
    """Every non-padding record the ring published is in SQLite exactly once."""
    c = ring_counts(ring)
    assert c["consumer.committed"] == c["producer.published"], c
    assert c["consumer.lost"] == 0 and c["producer.overwritten"] == 0, c
    expected = c["producer.published"] - c["consumer.padding"]
    with sqlite3.connect(db) as conn:
        rows, distinct, top = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT SEQ), MAX(SEQ) FROM TAG_DATA WHERE RING_EPOCH = ?", (c["epoch"],)
        ).fetchone()
        dups = conn.execute("SELECT RING_EPOCH, SEQ FROM TAG_DATA GROUP BY RING_EPOCH, SEQ HAVING COUNT(*) > 1 LIMIT 5").fetchall()
    assert not dups, dups
    assert rows == distinct == expected == c["consumer.delivered"], (rows, distinct, expected, c)
    assert top is None or top < c["producer.published"]
    return c


def _pid(lines: Lines, role: str, n: int = 1) -> int:
    hit = lines.wait_for(rf"started {role} \(pid \d+", n=n, timeout=60)[n - 1]
    return int(re.search(r"pid (\d+)", hit).group(1))


@pytest.fixture
def pipeline_run(tmp_path):
    procs = []

    def start(ring: str, *args: str, **env: str):
        port = free_port()
        proc = spawn(["-m", "pipeline", *args], cwd=tmp_path, RING_NAME=ring, WEB_PORT=str(port), **env)
        procs.append(proc)
        return proc, Lines(proc.stderr), port

    yield start
    for p in procs:
        stop(p, timeout=40)


def test_run_end_to_end_every_value_once_through_sigkills(pipeline_run, ring_name, tmp_path):
    proc, lines, port = pipeline_run(ring_name, "--rate", "2000")
    assert "status page on http://127.0.0.1:" in proc.stdout.readline()
    wait_until(lambda: delivered(ring_name) > 0, 60, "the first committed value")
    lines.wait_for(r"\[web/web\] status page on http", timeout=60)
    status, body = get_json(port, "/api/buffer/status")
    assert status == 200 and body["max_size"] == 100_000
    # The writer dies: restarted, the others keep running.
    writer = _pid(lines, "writer")
    web_lines = lines.count(r"\[web/")
    os.kill(writer, signal.SIGKILL)
    lines.wait_for(r"writer killed by SIGKILL.*restarting it", timeout=20)
    assert _pid(lines, "writer", n=2) != writer
    lines.wait_for(r"\[writer/writer\] writing ring", n=2, timeout=60)
    # The poller dies too (mid-publish, perhaps): restarted on the same ring.
    time.sleep(1.0)
    poller = _pid(lines, "poller")
    os.kill(poller, signal.SIGKILL)
    lines.wait_for(r"poller killed by SIGKILL.*restarting it", timeout=20)
    lines.wait_for(r"\[poller/poller\] load mode", n=2, timeout=60)
    # The web process kept answering (and logging) through both kills.
    assert get_json(port, "/api/buffer/metrics")[0] == 200
    assert lines.count(r"\[web/") > web_lines
    before = delivered(ring_name)
    wait_until(lambda: delivered(ring_name) > before + 2000, 60, "values flowing after the restarts")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0, "\n".join(lines.lines[-30:])
    c = check_every_value_once(tmp_path / "data" / "tagpipe.db", ring_name)
    assert c["producer.published"] > 5000
    time.sleep(0.3)
    bad = [x for x in lines.lines if not LINE_RE.match(x)]
    assert not bad, bad[:5]
    order = [m for m in (re.search(r"stopping (poller|writer|web) \(pid", x) for x in lines.lines) if m]
    assert [m.group(1) for m in order] == ["poller", "writer", "web"]


def test_run_load_with_duration_stops_by_itself_and_a_second_run_resumes(pipeline_run, ring_name, tmp_path):
    proc, lines, _ = pipeline_run(ring_name, "--rate", "5000", "--duration", "2")
    assert proc.wait(90) == 0, "\n".join(lines.lines[-30:])
    first = check_every_value_once(tmp_path / "data" / "tagpipe.db", ring_name)
    assert first["producer.published"] >= 10_000
    # Same ring (it survived), same SQLite file: the second run continues after the first.
    proc, lines, _ = pipeline_run(ring_name, "--rate", "5000", "--duration", "2")
    assert proc.wait(90) == 0, "\n".join(lines.lines[-30:])
    second = check_every_value_once(tmp_path / "data" / "tagpipe.db", ring_name)
    assert second["epoch"] == first["epoch"]
    assert second["producer.published"] >= first["producer.published"] + 10_000


def test_run_bad_setting_exits_2_with_one_line_before_starting_anything(tmp_path, ring_name):
    proc = spawn(["-m", "pipeline"], cwd=tmp_path, RING_NAME=ring_name, BUFFER_BATCH_SIZE="0")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.strip().count("\n") == 0 and "BUFFER_BATCH_SIZE" in err and "'0'" in err, err
    assert not Path(f"/dev/shm/{ring_name}.ring").exists()
    assert not (tmp_path / "data").exists()
    proc = spawn(["-m", "pipeline", "--rate", "-5"], cwd=tmp_path, RING_NAME=ring_name)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and err.strip().count("\n") == 0 and "--rate" in err, err
    # A bad tag definition file is the poller's check, run by the supervisor first.
    tags = tmp_path / "tags.toml"
    tags.write_text("[[plc]]\ncode = 42\n")
    proc = spawn(["-m", "pipeline"], cwd=tmp_path, RING_NAME=ring_name, TAGS_FILE=str(tags))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and err.strip().count("\n") == 0 and "TAGS_FILE" in err and str(tags) in err, err
    assert not Path(f"/dev/shm/{ring_name}.ring").exists()


def test_run_stop_right_after_start_is_still_orderly(pipeline_run, ring_name):
    # Ctrl-C while the children are still importing: nothing was opened, exit 0.
    proc, lines, _ = pipeline_run(ring_name)
    assert "status page on" in proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0, "\n".join(lines.lines[-30:])


def test_run_second_ctrl_c_stops_at_once_and_loses_nothing(pipeline_run, ring_name, tmp_path):
    db = tmp_path / "data" / "tagpipe.db"
    proc, lines, _ = pipeline_run(ring_name, "--rate", "2000")
    wait_until(lambda: delivered(ring_name) > 1000, 60, "values committed")
    # The database goes busy (another program holds its write lock): the writer cannot
    # commit, so values wait in the ring (or in a backup file being written, once the
    # writer's retries are over) when the second Ctrl-C kills everything.
    blocker = sqlite3.connect(db, timeout=30, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        lines.wait_for(r"stopping poller", timeout=30)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 5, "\n".join(lines.lines[-30:])
        lines.wait_for(r"second stop signal: killing every child", timeout=5)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    # The next run writes what the killed writer left (ring and backup files), each value once.
    proc, lines, _ = pipeline_run(ring_name, "--rate", "2000", "--duration", "2")
    assert proc.wait(90) == 0, "\n".join(lines.lines[-30:])
    check_every_value_once(db, ring_name)
