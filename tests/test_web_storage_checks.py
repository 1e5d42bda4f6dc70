"""The writer's storage problems as the web process shows them: /api/buffer/health,
/api/status and /metrics name an unwritable backup folder (with its errno) and a vanished
database (real ring, counters set as the writer sets them)."""

from __future__ import annotations

import errno

from pipeline.common.telemetry import ERR_DB_GONE, WriterMetrics
from test_web_api import Rig, app_for  # noqa: F401  (fixture)
from test_web_prom import one, scrape


def test_unwritable_backup_folder_and_vanished_database_show_in_health_status_and_metrics(ring_name, app_for):  # noqa: F811
    rig = Rig(ring_name)
    try:
        m = WriterMetrics(rig.c)
        m.attach(rig.c, "sqlite")
        m.disk(1 << 30, 3, errno.EROFS)  # DISK_STATE 3: unwritable
        m.db_state("down")
        m.error(ERR_DB_GONE)
        client = app_for(ring_name)
        health = client.get("/api/buffer/health")
        assert health.status_code == 503
        body = health.get_json()
        codes = {c["code"]: c for c in body["checks"]}
        assert codes["disk_unwritable"]["severity"] == "unhealthy"
        assert "EROFS: Read-only file system" in codes["disk_unwritable"]["message"]
        assert codes["database_gone"]["severity"] == "unhealthy"
        assert "values wait in the ring" in codes["database_gone"]["message"]
        assert body["details"]["disk_state"] == "unwritable"
        ws = client.get("/api/status").get_json()["figures"]["writer_state"]
        assert ws["disk_state"] == "unwritable" and ws["disk_error"] == "EROFS: Read-only file system"
        metrics = scrape(client)
        assert one(metrics, "tagpipe_health_check", check="disk_unwritable", severity="unhealthy") == 1
        assert one(metrics, "tagpipe_health_check", check="database_gone", severity="unhealthy") == 1
        m.disk(1 << 30, 0, 0)  # a backup write succeeded again
        assert "disk_unwritable" not in {c["code"] for c in client.get("/api/buffer/health").get_json()["checks"]}
    finally:
        rig.close()
