"""The JSON API against a real ring whose counters the test sets (read through the Observer)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from conftest import spawn, stop
from pipeline.common.telemetry import DB_STATE_CODES, open_consumer, open_producer, record_losses, WriterMetrics
from shm import delete_ring
from shm import layout as L
from shm.ring import now_us

PLC = "KRCWO12ELOA101"


class Rig:
    """A real ring with the test process as producer and consumer; counters set by hand."""

    def __init__(self, name: str, capacity: int = 1000, consumer: bool = True) -> None:
        self.name = name
        self.p = open_producer(name, capacity, 80.0)
        self.c = open_consumer(name, wait=False) if consumer else None
        if self.c is not None:
            self.c.set("writer.db_state", DB_STATE_CODES["up"])
            self.c.set("writer.sink_kind", 1)

    def publish(self, n: int, age_s: float = 0.0, plc: str = PLC, tag: str = "D100") -> None:
        recs = np.zeros(n, dtype=L.RECORD_DTYPE)
        recs["ts_us"] = now_us() - int(age_s * 1e6)
        recs["value"] = np.arange(n)
        recs["plc_code"] = plc.encode()
        recs["tag_address"] = tag.encode()
        recs["quality"] = L.QUALITY_GOOD
        self.p.publish(recs)

    def commit(self, n: int, latency_us: int = 2000) -> None:
        batch = self.c.read(n)
        self.c.commit(batch)
        record_losses(self.c)  # as Writer._durable does after every commit
        WriterMetrics(self.c).record_write(True, len(batch.records), latency_us)
        self.c.add("writer.batches_ok", 1)
        self.c.add("writer.rows_written", len(batch.records))
        self.c.set("writer.last_commit_us", now_us())

    def beat(self) -> None:
        self.p.heartbeat()
        if self.c is not None:
            self.c.heartbeat()

    def close(self) -> None:
        if self.c is not None:
            self.c.close()
        self.p.close()


@pytest.fixture
def rig(ring_name):
    r = Rig(ring_name)
    yield r
    r.close()


def make_app(ring_name, **cfg):
    from web import create_app

    conf = {"RING_NAME": ring_name, "SAMPLE_INTERVAL_S": 0}
    conf.update(cfg)
    return create_app(conf)


@pytest.fixture
def app_for():
    from web import runtime

    apps = []

    def _make(ring_name, **cfg):
        app = make_app(ring_name, **cfg)
        apps.append(app)
        return app.test_client()

    yield _make
    for a in apps:
        runtime(a).close()


def test_buffer_status_reports_the_ring_counters_with_the_original_field_names(rig, app_for):
    client = app_for(rig.name)
    rig.publish(300)
    rig.commit(50)
    r = client.get("/api/buffer/status")
    assert r.status_code == 200
    body = r.get_json()
    assert list(body)[:5] == ["current_size", "max_size", "utilization_pct", "overflow_count", "overflow_rate_pct"]
    assert body["current_size"] == 250
    assert body["max_size"] == 1000
    assert body["utilization_pct"] == 25.0
    assert body["overflow_count"] == 0
    assert body["overflow_rate_pct"] == 0.0
    assert body["published"] == 300 and body["committed"] == 50


def test_overflow_rate_is_the_original_overflow_check_figure(rig, app_for):
    client = app_for(rig.name)
    rig.publish(1500)  # capacity 1000, nothing committed: 500 overwritten of 1500
    body = client.get("/api/buffer/status").get_json()
    assert body["current_size"] == 1000 and body["utilization_pct"] == 100.0
    assert body["overwritten_before_commit"] == 500  # at risk; counted lost once the writer commits past them
    rig.commit(1500)  # the writer gets the newest 1000: the 500 oldest are dropped
    body = client.get("/api/buffer/status").get_json()
    assert body["overflow_count"] == body["lost"] == 500
    assert body["overflow_rate_pct"] == pytest.approx(33.333, abs=0.01)


def test_overflow_figures_count_records_dropped_not_slots_reused_after_a_read(rig, app_for):
    """Issue 12 item 4: records the writer had read before their slot was reused, then
    stored, are not overflow. Every view (API, health details, metrics, status figures) says
    the same exact loss count."""
    client = app_for(rig.name)
    rig.publish(800)
    batch = rig.c.read(800)  # the writer holds a copy ...
    rig.publish(700)  # ... while 500 of their slots are reused before the commit
    rig.c.commit(batch)
    record_losses(rig.c)
    rig.commit(700)
    body = client.get("/api/buffer/status").get_json()
    assert body["overwritten_before_commit"] == 500  # the producer's at-risk figure
    assert body["overflow_count"] == body["lost"] == 0 and body["overflow_rate_pct"] == 0.0
    rig.publish(1300)  # now 300 are really dropped (the writer reads after the overwrite)
    rig.commit(1300)
    views = {
        "buffer/status": client.get("/api/buffer/status").get_json()["overflow_count"],
        "buffer/metrics": client.get("/api/buffer/metrics").get_json()["buffer"]["overflow_count"],
        "health": client.get("/api/buffer/health").get_json()["details"]["lost"],
        "status": client.get("/api/status").get_json()["figures"]["buffer"]["overflow_count"],
    }
    assert set(views.values()) == {300}, views
    status = client.get("/api/status").get_json()["figures"]["buffer"]
    assert status["overflowed_last_hour"] == 300 and status["published_last_hour"] == 2800
    assert status["overflow_rate_pct"] == pytest.approx(100 * 300 / 2800, abs=0.001)
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "tagpipe_ring_lost_records_total 300.0" in metrics
    assert "tagpipe_ring_overflow_ratio_1h 0.10714\n" in metrics  # 10.714 % (3 decimals)


def test_writer_metrics_roll_up_the_ten_second_buckets(rig, app_for):
    client = app_for(rig.name)
    rig.publish(600)
    rig.commit(100, latency_us=4000)
    rig.commit(300, latency_us=8000)
    WriterMetrics(rig.c).record_write(False, 200, 0)
    body = client.get("/api/buffer/writer/metrics").get_json()
    for k in ("successful_writes", "failed_writes", "success_rate_pct", "avg_batch_size", "avg_write_latency_ms", "throughput_items_per_sec"):
        assert k in body
    assert body["successful_writes"] == 2
    assert body["failed_writes"] == 1
    assert body["success_rate_pct"] == pytest.approx(66.667, abs=0.01)
    assert body["avg_batch_size"] == 200.0
    assert body["avg_write_latency_ms"] == 6.0
    assert body["throughput_items_per_sec"] > 0  # 400 items over the part of the window the ring existed
    assert body["is_running"] is True


def test_combined_metrics_keep_the_original_nesting(rig, app_for):
    client = app_for(rig.name)
    rig.publish(100)
    rig.commit(40)
    rig.c.set("writer.backup_files_pending", 3)
    body = client.get("/api/buffer/metrics").get_json()
    assert body["buffer"]["current_size"] == 60 and body["buffer"]["max_size"] == 1000
    assert body["buffer"]["utilization_pct"] == 6.0
    assert body["writer"]["is_running"] is True
    assert body["writer"]["successful_writes"] == 1 and body["writer"]["success_rate_pct"] == 100.0
    assert body["backup"]["file_count"] == 3


def test_health_is_200_only_when_everything_is_fine(rig, app_for):
    client = app_for(rig.name)
    rig.publish(10)
    rig.commit(10)
    r = client.get("/api/buffer/health")
    body = r.get_json()
    assert r.status_code == 200, body
    assert body["status"] == "healthy" and body["reasons"] == []
    assert body["buffer_ok"] and body["writer_ok"] and body["oracle_connection_ok"]
    assert body["details"]["buffer_utilization_pct"] == 0.0 and body["details"]["backup_file_count"] == 0


def test_database_down_is_degraded_and_disk_full_unhealthy(rig, app_for):
    client = app_for(rig.name)
    rig.c.set("writer.db_state", DB_STATE_CODES["down"])
    rig.c.set("writer.backup_files_pending", 2)
    r = client.get("/api/buffer/health")
    body = r.get_json()
    assert r.status_code == 503
    assert body["status"] == "degraded"
    assert body["oracle_connection_ok"] is False and body["writer_ok"] is True
    assert [c["code"] for c in body["checks"]] == ["database_down"]
    assert body["details"]["backup_file_count"] == 2
    rig.c.set("writer.disk_state", 2)
    body = client.get("/api/buffer/health").get_json()
    assert body["status"] == "unhealthy" and "backup disk full: values cannot be spilled" in body["reasons"]
    rig.c.set("writer.disk_state", 0)
    rig.c.set("writer.db_state", DB_STATE_CODES["replaying"])
    body = client.get("/api/buffer/health").get_json()
    assert body["status"] == "degraded" and body["checks"][0]["code"] == "replaying"
    rig.c.set("writer.db_state", DB_STATE_CODES["up"])
    rig.c.set("writer.backup_files_pending", 0)
    assert client.get("/api/buffer/health").status_code == 200


def test_utilization_above_the_threshold_degrades_with_hysteresis(rig, app_for):
    client = app_for(rig.name)
    rig.publish(850)  # 85 % >= 80 %
    body = client.get("/api/buffer/health").get_json()
    assert body["status"] == "degraded" and body["buffer_ok"] is False
    assert [c["code"] for c in body["checks"]] == ["utilization_high"]
    rig.commit(100)  # 75 %: below the threshold but not below threshold - 5
    assert client.get("/api/buffer/health").get_json()["status"] == "degraded"
    rig.commit(10)  # 74 %
    r = client.get("/api/buffer/health")
    assert r.status_code == 200 and r.get_json()["buffer_ok"] is True


def test_old_backlog_degrades_and_clears_only_well_below_the_limit(rig, app_for):
    client = app_for(rig.name, HEALTH_MAX_LAG_S=30)
    rig.publish(5, age_s=100)
    body = client.get("/api/buffer/health").get_json()
    assert body["status"] == "degraded" and body["checks"][0]["code"] == "backlog_old"
    assert body["details"]["oldest_unwritten_age_s"] == pytest.approx(100, abs=5)
    rig.commit(5)
    rig.publish(5, age_s=20)  # under 30 s but not under 15 s: still degraded
    assert client.get("/api/buffer/health").get_json()["status"] == "degraded"
    rig.commit(5)
    rig.publish(5, age_s=5)
    assert client.get("/api/buffer/health").status_code == 200


def test_oldest_unwritten_age_comes_from_the_ring_when_the_writer_cannot_report(rig, app_for):
    client = app_for(rig.name)
    rig.publish(3, age_s=12)
    rig.publish(3, age_s=1)
    body = client.get("/api/status").get_json()
    assert body["figures"]["lag"]["records"] == 6
    assert body["figures"]["lag"]["oldest_unwritten_age_s"] == pytest.approx(12, abs=2)
    rig.c.set("writer.oldest_unwritten_us", now_us() - 40_000_000)  # the writer knows of older (e.g. in flight)
    body = client.get("/api/status").get_json()
    assert body["figures"]["lag"]["oldest_unwritten_age_s"] == pytest.approx(40, abs=2)


WRITER_SCRIPT = """
import sys, time
from pipeline.common.telemetry import open_consumer
c = open_consumer(sys.argv[1], wait=False)
c.set("writer.db_state", 1)
c.heartbeat()
print("ready", flush=True)
while True:
    c.heartbeat()
    time.sleep(0.2)
"""


def test_killed_writer_makes_health_unhealthy(ring_name, app_for, tmp_path):
    rig = Rig(ring_name, consumer=False)
    proc = spawn(["-c", WRITER_SCRIPT, ring_name], cwd=tmp_path)
    try:
        assert proc.stdout.readline().strip() == "ready"
        client = app_for(ring_name)
        r = client.get("/api/buffer/health")
        assert r.status_code == 200, r.get_json()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10  # pid liveness is cached for half a second
        body = client.get("/api/buffer/health").get_json()
        while body["status"] == "healthy" and time.monotonic() < deadline:
            time.sleep(0.1)
            body = client.get("/api/buffer/health").get_json()
        assert body["status"] == "unhealthy" and body["writer_ok"] is False
        assert body["checks"][0]["code"] == "writer_down"
        assert f"writer process {proc.pid} is gone" in body["reasons"][0]
        assert client.get("/api/buffer/writer/metrics").get_json()["is_running"] is False
    finally:
        stop(proc)
        rig.close()


def test_stale_heartbeat_counts_as_down(rig, app_for):
    client = app_for(rig.name, HEALTH_HEARTBEAT_S=1)
    rig.beat()
    assert client.get("/api/buffer/health").status_code == 200
    deadline = time.monotonic() + 10
    body = {}
    while time.monotonic() < deadline:
        body = client.get("/api/buffer/health").get_json()
        if body["status"] == "unhealthy":
            break
        time.sleep(0.2)
    codes = [c["code"] for c in body["checks"]]
    assert "writer_down" in codes and "poller_down" in codes
    assert "heartbeat" in body["reasons"][0]
    rig.beat()
    assert client.get("/api/buffer/health").status_code == 200


def test_missing_ring_answers_every_endpoint_then_attaches_when_it_appears(ring_name, app_for):
    client = app_for(ring_name)
    h = client.get("/api/buffer/health")
    assert h.status_code == 503
    assert h.get_json()["status"] == "unhealthy"
    assert h.get_json()["reasons"][0].startswith("ring missing")
    for path in ("/api/buffer/status", "/api/buffer/writer/metrics", "/api/buffer/metrics"):
        r = client.get(path)
        assert r.status_code == 503 and r.get_json()["ring_present"] is False, path
    assert client.get("/api/buffer/status").get_json()["current_size"] is None
    assert client.get("/api/status").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/").status_code == 200
    rig = Rig(ring_name, capacity=500)
    try:
        rig.publish(7)
        body = client.get("/api/buffer/status").get_json()
        assert body["max_size"] == 500 and body["current_size"] == 7
    finally:
        rig.close()
    # The ring is replaced by a new one (another capacity): the web process follows.
    delete_ring(ring_name, force=True)
    assert client.get("/api/buffer/health").get_json()["checks"][0]["code"] == "ring_missing"
    rig = Rig(ring_name, capacity=2000)
    try:
        rig.publish(3)
        body = client.get("/api/buffer/status").get_json()
        assert body["max_size"] == 2000 and body["current_size"] == 3
    finally:
        rig.close()


def test_unknown_paths_and_wrong_methods_answer_json_under_api(rig, app_for):
    client = app_for(rig.name)
    r = client.get("/api/nope")
    assert r.status_code == 404 and r.is_json and r.get_json()["status"] == 404
    for method in ("post", "put", "delete", "patch"):
        r = getattr(client, method)("/api/buffer/health")
        assert r.status_code == 405 and r.is_json, method
        assert "GET" in r.headers["Allow"]
    assert client.get("/nope").status_code == 404
    assert client.post("/").status_code == 405
    assert client.post("/metrics").status_code == 405
    assert b"Traceback" not in client.get("/api/nope").data


def test_no_endpoint_changes_the_ring(rig, app_for):
    client = app_for(rig.name)
    rig.publish(200)
    rig.commit(50)
    before = bytes(memoryview(rig.p._shm.buf)[: L.HEADER_BYTES + 200 * L.RECORD_SIZE])
    for path in ("/", "/api/buffer/status", "/api/buffer/writer/metrics", "/api/buffer/health", "/api/buffer/metrics", "/api/status", "/metrics"):
        client.get(path)
        client.post(path)
    after = bytes(memoryview(rig.p._shm.buf)[: L.HEADER_BYTES + 200 * L.RECORD_SIZE])
    assert before == after


def test_status_history_follows_the_counters(rig, app_for):
    from web import runtime

    client = app_for(rig.name)
    monitor = runtime(client.application).monitor
    monitor.sample()
    rig.publish(400)
    time.sleep(0.2)
    rig.commit(100)
    monitor.sample()
    hist = client.get("/api/status?seconds=60").get_json()["history"]
    assert len(hist) == 2
    assert hist[1]["in_per_s"] > 0 and hist[1]["out_per_s"] > 0
    assert hist[1]["in_per_s"] > hist[1]["out_per_s"]
    assert hist[1]["pending"] == 300


def test_page_language_follows_setting_browser_and_query(rig, app_for):
    auto = app_for(rig.name)
    r = auto.get("/", headers={"Accept-Language": "ko-KR,ko;q=0.9,en;q=0.8"})
    assert r.status_code == 200 and '<html lang="ko">' in r.get_data(as_text=True)
    assert "링 버퍼 사용률" in r.get_data(as_text=True)
    assert '<html lang="en">' in auto.get("/", headers={"Accept-Language": "en-US"}).get_data(as_text=True)
    assert '<html lang="en">' in auto.get("/", headers={"Accept-Language": "fr"}).get_data(as_text=True)
    forced = app_for(rig.name, WEB_LANG="en")
    assert '<html lang="en">' in forced.get("/", headers={"Accept-Language": "ko"}).get_data(as_text=True)
    assert '<html lang="ko">' in forced.get("/?lang=ko").get_data(as_text=True)


def test_page_needs_no_other_site(rig, app_for):
    client = app_for(rig.name)
    html = client.get("/").get_data(as_text=True)
    assert "http://" not in html and "https://" not in html.replace("http://www.w3.org", "")
    for asset in ("/static/status.js", "/static/status.css"):
        text = client.get(asset).get_data(as_text=True)
        assert "https://" not in text and "//cdn" not in text
    assert "default-src 'self'" in client.get("/").headers["Content-Security-Policy"]


def test_an_unexpected_error_answers_500_without_a_traceback(rig, app_for, monkeypatch, caplog):
    from web import runtime

    client = app_for(rig.name)
    monitor = runtime(client.application).monitor

    def broken():  # the only fake here: an internal failure cannot be caused from outside
        raise RuntimeError("boom in the monitor")

    monkeypatch.setattr(monitor, "read", broken)
    r = client.get("/api/buffer/status")
    assert r.status_code == 500 and r.is_json
    assert "boom" not in r.get_data(as_text=True) and "Traceback" not in r.get_data(as_text=True)
    r = client.get("/metrics")
    assert r.status_code == 500 and b"Traceback" not in r.data and b"boom" not in r.data
    assert "boom in the monitor" in caplog.text  # the maintainer finds it in the log
