"""``python -m pipeline status``: the same numbers as the web API, and a clear word when the ring is missing."""

from __future__ import annotations

import json
import re
import time

import pytest

from conftest import spawn, stop


def _status(cwd, ring: str, *args: str) -> tuple[int, str, str]:
    proc = spawn(["-m", "pipeline", "status", *args], cwd=cwd, RING_NAME=ring)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        stop(proc)
    return proc.returncode, out, err


def test_status_says_the_ring_is_missing(tmp_path, ring_name):
    code, out, err = _status(tmp_path, ring_name)
    assert code == 0, err
    assert "UNHEALTHY" in out and "ring missing" in out and ring_name in out
    code, out, _ = _status(tmp_path, ring_name, "--json")
    d = json.loads(out)
    assert d["ring_present"] is False and d["health"]["status"] == "unhealthy"
    assert _status(tmp_path, ring_name, "--check")[0] == 6


@pytest.fixture
def busy_ring(ring_name):
    """A ring with 300 records published, 200 committed in one write of 1.5 ms."""
    from pipeline.common.telemetry import open_consumer, open_producer, WriterMetrics

    prod = open_producer(ring_name, 1000, 80.0)
    now = int(time.time() * 1e6)
    for i in range(300):
        prod.put(now - 1_000_000 + i, float(i), b"KRCWO12ELOA101", f"D{i % 10}".encode(), 1)
    prod.flush()
    prod.heartbeat()
    cons = open_consumer(ring_name, wait=False)
    batch = cons.read(200)
    assert len(batch) == 200
    cons.commit(batch)
    metrics = WriterMetrics(cons)
    metrics.record_write(True, 200, 1500)
    metrics.corrupt_lines(2)
    metrics.probes(4)
    metrics.backlog(1, 10, 8192, now - 60_000_000)
    cons.heartbeat()
    yield prod, cons
    cons.close()
    prod.close()


def test_status_shows_the_same_numbers_as_the_web_api(tmp_path, ring_name, busy_ring):
    from web import create_app

    code, out, err = _status(tmp_path, ring_name, "--json")
    assert code == 0, err
    cli = json.loads(out)
    app = create_app({"RING_NAME": ring_name, "SAMPLE_INTERVAL_S": 0})
    try:
        api = app.test_client().get("/api/status").get_json()
        buf_api = app.test_client().get("/api/buffer/status").get_json()
        wm_api = app.test_client().get("/api/buffer/writer/metrics").get_json()
    finally:
        app.extensions["tagpipe"].close()
    assert cli["ring_present"] and api["ring_present"]
    for k in ("current_size", "max_size", "utilization_pct", "overflow_count", "published", "committed", "lost", "epoch"):
        assert cli["buffer"][k] == api["figures"]["buffer"][k] == buf_api[k], k
    assert cli["buffer"]["current_size"] == 100 and cli["buffer"]["published"] == 300
    for k in ("successful_writes", "failed_writes", "success_rate_pct", "avg_batch_size", "avg_write_latency_ms"):
        assert cli["writer_metrics"][k] == wm_api[k], k
    assert cli["writer_metrics"]["successful_writes"] == 1 and cli["writer_metrics"]["avg_write_latency_ms"] == 1.5
    assert cli["lag"]["records"] == api["figures"]["lag"]["records"] == 100
    for role in ("poller", "writer"):
        assert cli["roles"][role]["running"] == api["figures"]["roles"][role]["running"]
    assert cli["health"]["status"] == api["health"]["status"]
    assert {c["code"] for c in cli["health"]["checks"]} == {c["code"] for c in api["health"]["checks"]}


def test_status_text_reads_like_the_status_page(tmp_path, ring_name, busy_ring):
    code, out, err = _status(tmp_path, ring_name)
    assert code == 0, err
    assert f"tagpipe ring {ring_name!r}:" in out.splitlines()[0]
    assert "100 / 1,000 records (10.0 % full)" in out
    assert "published 300   committed 200" in out
    assert "1 ok, 0 failed" in out
    for label in ("poller ", "writer ", "started ", "database ", "lag ", "backups ", "quarantined "):
        assert any(line.startswith(label) for line in out.splitlines()), label
    # the header words that used to be written and never read
    assert "(2 unreadable backup lines)" in out and "probes 4" in out
    oldest = re.search(r"8,192 bytes, oldest ([0-9.]+) s old\) waiting", out)
    assert oldest and 59 <= float(oldest.group(1)) <= 90, out


def test_status_reads_the_units_environment_file(tmp_path, ring_name):
    env_file = tmp_path / "tagpipe.env"
    env_file.write_text(f"RING_NAME={ring_name}\n")
    proc = spawn(["-m", "pipeline", "status", "--env-file", str(env_file)], cwd=tmp_path)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 0, err
    assert f"tagpipe ring {ring_name!r}" in out
