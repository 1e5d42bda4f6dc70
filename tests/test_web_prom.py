"""``/metrics``: parsed with prometheus_client's own parser, values equal to the ring's."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.common.telemetry import DB_STATE_CODES, plc_slot
from test_web_api import PLC, Rig, app_for  # noqa: F401  (fixture)


def scrape(client) -> dict[str, dict[tuple, float]]:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=")
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(r.get_data(as_text=True)):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def one(m, name, **labels):
    return m[name][tuple(sorted(labels.items()))]


def test_metrics_carry_the_ring_and_writer_counters(ring_name, app_for):  # noqa: F811
    rig = Rig(ring_name)
    try:
        slot = plc_slot(rig.p, 0)
        slot.set_code(PLC)
        slot.set("connected", 1)
        slot.set("polls", 42)
        slot.set("errors", 3)
        slot.set("last_good_poll_us", 1_700_000_000_000_000)
        rig.p.set("poller.plc_count", 1)
        del slot  # it holds a view of the mapping, which would keep it from closing
        rig.publish(1200)  # 200 overwritten
        rig.commit(300)
        rig.c.set("writer.rows_quarantined", 7)
        rig.c.set("writer.rows_replayed", 1234)
        rig.c.set("writer.backup_files_pending", 2)
        m = scrape(app_for(ring_name))
        assert one(m, "tagpipe_ring_present") == 1
        assert one(m, "tagpipe_ring_capacity_records") == 1000
        assert one(m, "tagpipe_ring_used_records") == 700
        assert one(m, "tagpipe_ring_utilization_ratio") == pytest.approx(0.7)
        assert one(m, "tagpipe_ring_published_records_total") == 1200
        assert one(m, "tagpipe_ring_overwritten_records_total") == 200  # at risk (before commit)
        assert one(m, "tagpipe_ring_lost_records_total") == 200  # read after the overwrite: lost
        assert one(m, "tagpipe_ring_overflow_ratio_1h") == pytest.approx(200 / 1200, abs=1e-4)  # lost / published
        assert one(m, "tagpipe_writer_rows_total", outcome="quarantined") == 7
        assert one(m, "tagpipe_writer_rows_total", outcome="replayed") == 1234
        assert one(m, "tagpipe_backup_files_pending") == 2
        assert one(m, "tagpipe_database_state", state="up") == 1
        assert one(m, "tagpipe_database_state", state="down") == 0
        assert one(m, "tagpipe_process_up", process="writer") == 1
        assert one(m, "tagpipe_process_up", process="poller") == 1
        assert one(m, "tagpipe_plc_connected", plc=PLC) == 1
        assert one(m, "tagpipe_plc_polls_total", plc=PLC) == 42
        assert one(m, "tagpipe_plc_errors_total", plc=PLC) == 3
        assert one(m, "tagpipe_plc_last_good_poll_timestamp_seconds", plc=PLC) == 1_700_000_000.0
        # ring overflowed in this minute: unhealthy, and the failing check is labelled
        assert one(m, "tagpipe_health_status") == 2
        assert one(m, "tagpipe_health_check", check="values_lost", severity="unhealthy") == 1
        rig.c.set("writer.db_state", DB_STATE_CODES["down"])
        m = scrape(app_for(ring_name))
        assert one(m, "tagpipe_database_up") == 0
        assert one(m, "tagpipe_database_state", state="down") == 1
    finally:
        rig.close()


def test_metrics_without_a_ring_say_so(ring_name, app_for):  # noqa: F811
    m = scrape(app_for(ring_name))
    assert one(m, "tagpipe_ring_present") == 0
    assert one(m, "tagpipe_health_status") == 2
    assert one(m, "tagpipe_health_check", check="ring_missing", severity="unhealthy") == 1
    assert "tagpipe_ring_used_records" not in m


def test_metrics_show_start_times_probes_and_the_backup_backlog(ring_name, app_for):  # noqa: F811
    from pipeline.common.telemetry import WriterMetrics, now_us

    rig = Rig(ring_name)
    try:
        t = now_us()
        rig.p.set("poller.started_us", t - 30_000_000)
        m_ = WriterMetrics(rig.c)
        m_.attach(rig.c, "sqlite")
        m_.backlog(3, 300, 65_536, t - 120_000_000)
        m_.corrupt_lines(2)
        m_.probes(5)
        m = scrape(app_for(ring_name))
        assert one(m, "tagpipe_process_start_time_seconds", process="poller") == pytest.approx((t - 30_000_000) / 1e6)
        assert one(m, "tagpipe_process_start_time_seconds", process="writer") == pytest.approx(t / 1e6, abs=5)
        assert one(m, "tagpipe_backup_bytes_pending") == 65_536
        assert one(m, "tagpipe_backup_oldest_age_seconds") == pytest.approx(120, abs=5)
        assert one(m, "tagpipe_backup_corrupt_lines_total") == 2
        assert one(m, "tagpipe_database_probes_total") == 5
    finally:
        rig.close()
