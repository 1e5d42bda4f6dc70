"""``GET /metrics``: the ring's figures in the Prometheus text format.

A custom collector reads one ``Monitor.read()`` view per scrape (nothing is kept between
scrapes), in a private registry, so the output has only tagpipe's metrics. Units follow
Prometheus conventions: seconds, bytes, ratios 0..1, ``_total`` counters. The names are
listed in docs/web.md ("Prometheus metrics"). Counters come from the ring's header and only
go up; a replaced ring (new epoch) restarts them, which Prometheus treats as a reset.
"""

from __future__ import annotations

from typing import Iterator

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from pipeline.common import telemetry

from .monitor import Monitor

HEALTH_CODE = telemetry.STATUS_RANK  # 0 healthy, 1 degraded, 2 unhealthy


def _g(name: str, doc: str, value: float | None, labels: dict | None = None) -> GaugeMetricFamily:
    m = GaugeMetricFamily(name, doc, labels=list(labels) if labels else None)
    if value is not None:
        m.add_metric(list(labels.values()) if labels else [], value)
    return m


def _c(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


class RingCollector:
    """Prometheus collector over ``monitor`` (read-only; one snapshot per scrape)."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        view = self.monitor.read()
        fig, h = view.figures, view.health
        yield _g("tagpipe_ring_present", "1 if the ring exists and is readable", 1 if fig else 0)
        yield _g("tagpipe_health_status", "0 healthy, 1 degraded, 2 unhealthy", HEALTH_CODE[h.status])
        checks = GaugeMetricFamily("tagpipe_health_check", "1 for each failing health check", labels=["check", "severity"])
        for c in h.checks:
            checks.add_metric([c.code, c.severity], 1)
        yield checks
        if fig is None:
            return
        b, wm, ws, lag = fig.buffer, fig.writer_metrics, fig.writer_state, fig.lag
        yield _g("tagpipe_ring_capacity_records", "ring capacity", b.max_size)
        yield _g("tagpipe_ring_used_records", "records published and not yet durable", b.current_size)
        yield _g("tagpipe_ring_utilization_ratio", "used / capacity (0..1)", b.utilization_pct / 100.0)
        yield _g("tagpipe_ring_overflow_ratio_1h", "records lost (dropped) / published over the last hour (0..1)", b.overflow_rate_pct / 100.0)
        yield _c("tagpipe_ring_published_records", "records published by the poller", b.published)
        yield _c("tagpipe_ring_committed_records", "records made durable by the writer (incl. lost and padding)", b.committed)
        yield _c("tagpipe_ring_overwritten_records", "ring slots reused before their records were committed (at risk: includes records the writer had already read; lost_records is the loss)", b.overwritten_before_commit)
        yield _c("tagpipe_ring_lost_records", "records overwritten before the writer could read them (lost)", b.lost)
        yield _g("tagpipe_oldest_unwritten_age_seconds", "age of the oldest value not yet durable (0: none waiting)", lag.oldest_unwritten_age_s or 0.0)
        roles = GaugeMetricFamily("tagpipe_process_up", "1 if the process runs (pid alive, heartbeat fresh)", labels=["process"])
        ages = GaugeMetricFamily("tagpipe_process_heartbeat_age_seconds", "seconds since the last heartbeat", labels=["process"])
        starts = CounterMetricFamily("tagpipe_process_starts", "times a process attached to the ring", labels=["process"])
        for name, r in (("poller", fig.roles.poller), ("writer", fig.roles.writer)):
            roles.add_metric([name], 1 if r.running else 0)
            if r.heartbeat_age_s is not None:
                ages.add_metric([name], r.heartbeat_age_s)
            starts.add_metric([name], r.starts)
        yield roles
        yield ages
        yield starts
        started = GaugeMetricFamily("tagpipe_process_start_time_seconds", "when the process started (unix)", labels=["process"])
        for name, started_us in (("poller", fig.poller.started_us), ("writer", ws.started_us)):
            if started_us:
                started.add_metric([name], started_us / 1e6)
        yield started
        state = GaugeMetricFamily("tagpipe_database_state", "1 for the database state the writer last reported", labels=["state"])
        for name in telemetry.DB_STATE.values():
            state.add_metric([name], 1 if ws.db_state == name else 0)
        yield state
        yield _g("tagpipe_database_up", "1 if the writer last saw the database up (or replaying)", 1 if ws.db_state in ("up", "replaying") else 0)
        if ws.last_commit_us:
            yield _g("tagpipe_writer_last_commit_timestamp_seconds", "time of the last database commit (unix)", ws.last_commit_us / 1e6)
        batches = CounterMetricFamily("tagpipe_writer_batches", "database batch writes", labels=["result"])
        batches.add_metric(["ok"], ws.batches_ok_total)
        batches.add_metric(["failed"], ws.batches_failed_total)
        yield batches
        rows = CounterMetricFamily("tagpipe_writer_rows", "rows by outcome", labels=["outcome"])
        for outcome in ("written", "duplicate", "quarantined", "spilled", "replayed"):
            rows.add_metric([outcome], getattr(ws, f"rows_{outcome}"))
        yield rows
        yield _g("tagpipe_backup_files_pending", "backup files waiting for replay", ws.backup_files_pending)
        yield _g("tagpipe_backup_rows_pending", "rows in backup files waiting for replay", ws.backup_rows_pending)
        yield _g("tagpipe_backup_bytes_pending", "bytes of backup files waiting for replay", ws.backup_bytes_pending)
        yield _g("tagpipe_backup_oldest_age_seconds", "age of the oldest value in backup files waiting for replay (0: none)",
                 ws.backup_oldest_age_s or 0.0)
        yield _c("tagpipe_backup_corrupt_lines", "unreadable backup-file lines sent to quarantine", ws.corrupt_lines)
        gaps = CounterMetricFamily("tagpipe_gaps_recorded", "gap rows added to the gap table (the gap ledger), by kind", labels=["kind"])
        for kind, n in ws.gaps_recorded.items():
            gaps.add_metric([kind], n)
        yield gaps
        yield _c("tagpipe_database_probes", "database probes made while the database was down", ws.probes)
        if ws.disk_free_bytes is not None:
            yield _g("tagpipe_backup_disk_free_bytes", "free bytes under BACKUP_FILE_PATH", ws.disk_free_bytes)
        yield _g("tagpipe_writer_throughput_5m_records_per_second", "records written per second over 5 minutes", wm.throughput_items_per_sec)
        yield _g("tagpipe_writer_write_latency_5m_seconds", "average database write latency over 5 minutes", wm.avg_write_latency_ms / 1000.0)
        yield _g("tagpipe_writer_batch_size_5m_records", "average batch size over 5 minutes", wm.avg_batch_size)
        yield _g("tagpipe_writer_success_ratio_5m", "successful / attempted batch writes over 5 minutes (1 when none)", wm.success_rate_pct / 100.0)
        plc_up = GaugeMetricFamily("tagpipe_plc_connected", "1 if the poller is connected to the PLC", labels=["plc"])
        plc_polls = CounterMetricFamily("tagpipe_plc_polls", "poll cycles of the PLC", labels=["plc"])
        plc_errors = CounterMetricFamily("tagpipe_plc_errors", "failed poll cycles of the PLC", labels=["plc"])
        plc_good = GaugeMetricFamily("tagpipe_plc_last_good_poll_timestamp_seconds", "time of the last good poll (unix)", labels=["plc"])
        for p in fig.plcs:
            code = p.plc_code
            plc_up.add_metric([code], 1 if p.connected else 0)
            plc_polls.add_metric([code], p.polls)
            plc_errors.add_metric([code], p.errors)
            if p.last_good_poll_us:
                plc_good.add_metric([code], p.last_good_poll_us / 1e6)
        yield plc_up
        yield plc_polls
        yield plc_errors
        yield plc_good


def make_blueprint(monitor: Monitor) -> Blueprint:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RingCollector(monitor))
    bp = Blueprint("prom", __name__)

    @bp.get("/metrics")
    def metrics():
        return Response(generate_latest(registry), mimetype=None, content_type=CONTENT_TYPE_LATEST)

    return bp
