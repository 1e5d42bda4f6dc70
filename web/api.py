"""The JSON API: the original feature's four endpoints (field names are a contract) and ``/api/status``.

Every handler answers from one ``Monitor.read()`` view. Fields are only ever added, never
renamed. When the ring cannot be read, the original feature's fields are present with ``null`` values,
``ring_present`` is false and the answer is 503. Nothing here changes state.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from pipeline.common.telemetry import to_json

from . import query, runtime

log = logging.getLogger("tagpipe.web.api")
bp = Blueprint("api", __name__, url_prefix="/api")



def _view():
    return runtime(current_app).monitor.read()


def _missing(fields: tuple[str, ...], view) -> dict:
    out: dict = {k: None for k in fields}
    out.update(ring_present=False, ring=view.ring, error=view.problem)
    return out


BUFFER_FIELDS = ("current_size", "max_size", "utilization_pct", "overflow_count", "overflow_rate_pct")
WRITER_FIELDS = ("successful_writes", "failed_writes", "success_rate_pct", "avg_batch_size", "avg_write_latency_ms", "throughput_items_per_sec")


@bp.get("/buffer/status")
def buffer_status():
    view = _view()
    if view.figures is None:
        return jsonify(_missing(BUFFER_FIELDS, view)), 503
    body = to_json(view.figures.buffer)
    body.update(ring_present=True, ring=view.ring, taken_us=view.taken_us)
    return jsonify(body)


@bp.get("/buffer/writer/metrics")
def writer_metrics():
    view = _view()
    if view.figures is None:
        return jsonify(_missing(WRITER_FIELDS, view)), 503
    fig = view.figures
    body = {k: v for k, v in to_json(fig.writer_metrics).items() if k != "buckets"}
    body.update(
        is_running=fig.roles.writer.running,
        db_state=fig.writer_state.db_state,
        ring_present=True,
        taken_us=view.taken_us,
    )
    return jsonify(body)


def health_body(view) -> dict:
    h = view.health
    fig = view.figures
    details: dict = {"buffer_utilization_pct": None, "backup_file_count": None}
    if fig is not None:
        ws, lag, roles = fig.writer_state, fig.lag, fig.roles
        details.update(
            buffer_utilization_pct=fig.buffer.utilization_pct,
            backup_file_count=ws.backup_files_pending,
            backup_rows_pending=ws.backup_rows_pending,
            oldest_unwritten_age_s=lag.oldest_unwritten_age_s,
            lag_records=lag.records,
            db_state=ws.db_state,
            disk_state=ws.disk_state,
            lost=fig.buffer.lost,
            writer_heartbeat_age_s=roles.writer.heartbeat_age_s,
            poller_heartbeat_age_s=roles.poller.heartbeat_age_s,
        )
    return {
        "status": h.status,
        "buffer_ok": h.buffer_ok,
        "writer_ok": h.writer_ok,
        "oracle_connection_ok": h.oracle_connection_ok,
        "poller_ok": h.poller_ok,
        "ring_present": fig is not None,
        "reasons": h.reasons,
        "checks": to_json(h.checks),
        "details": details,
        "taken_us": view.taken_us,
    }


@bp.get("/buffer/health")
def buffer_health():
    view = _view()
    body = health_body(view)
    return jsonify(body), (200 if body["status"] == "healthy" else 503)


@bp.get("/buffer/metrics")
def buffer_metrics():
    view = _view()
    fig = view.figures
    if fig is None:
        body = {
            "buffer": {k: None for k in ("current_size", "max_size", "utilization_pct")},
            "writer": {"is_running": False, "successful_writes": None, "success_rate_pct": None},
            "backup": {"file_count": None},
        }
        body.update(ring_present=False, ring=view.ring, error=view.problem)
        return jsonify(body), 503
    b, wm, ws = fig.buffer, fig.writer_metrics, fig.writer_state
    return jsonify(
        {
            "buffer": {
                "current_size": b.current_size,
                "max_size": b.max_size,
                "utilization_pct": b.utilization_pct,
                "overflow_count": b.overflow_count,
                "overflow_rate_pct": b.overflow_rate_pct,
                "lost": b.lost,
            },
            "writer": {
                "is_running": fig.roles.writer.running,
                "successful_writes": wm.successful_writes,
                "success_rate_pct": wm.success_rate_pct,
                "failed_writes": wm.failed_writes,
                "throughput_items_per_sec": wm.throughput_items_per_sec,
                "db_state": ws.db_state,
            },
            "backup": {"file_count": ws.backup_files_pending, "rows_pending": ws.backup_rows_pending, "rows_replayed": ws.rows_replayed},
            "ring_present": True,
            "taken_us": view.taken_us,
        }
    )


@bp.get("/status")
def status():
    """Everything the status page shows, in one answer (always 200: the page reads ``health``).

    Query ``seconds`` (a number from 10 to 3600, default 300; checked in ``web.query``):
    how much chart history to include, at most the WEB_HISTORY_S the process keeps.
    """
    rt = runtime(current_app)
    seconds = min(float(query.value("seconds")), float(rt.settings.web_history_s))
    view = rt.monitor.read()
    t = rt.monitor.thresholds
    return jsonify(
        {
            "ring": view.ring,
            "ring_present": view.figures is not None,
            "problem": view.problem,
            "taken_us": view.taken_us,
            "health": health_body(view),
            "figures": to_json(view.figures),
            "thresholds": {
                "alert_pct": t.alert_pct,
                "max_lag_s": t.max_lag_s,
                "heartbeat_s": t.heartbeat_s,
                "bands_pct": [60, 85],
            },
            "history": rt.monitor.history(seconds),
            "history_interval_s": 1.0,
        }
    )


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/api"


def install_error_handlers(app) -> None:
    """404/405/... as JSON under /api/ (short text elsewhere); never a traceback."""

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        if wants_json():
            resp = jsonify({"error": e.name, "status": e.code, "message": e.description})
            resp.status_code = e.code or 500
            if e.code == 405 and getattr(e, "valid_methods", None):
                resp.headers["Allow"] = ", ".join(e.valid_methods)
            return resp
        return e

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        log.exception("unexpected error answering %s %s", request.method, request.path)
        if wants_json():
            return jsonify({"error": "Internal Server Error", "status": 500, "message": "see the web process log"}), 500
        return "Internal Server Error (see the web process log)\n", 500, {"Content-Type": "text/plain; charset=utf-8"}
