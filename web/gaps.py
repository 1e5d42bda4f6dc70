"""``GET /api/gaps``: the gap ledger (pipeline/common/gaps.py), read-only.

Query parameters, declared and checked with every other endpoint's in ``web.query`` (a
bad, unknown or repeated one answers 400 with a JSON body naming it):

* ``from``, ``to``: the time range, as microseconds since 1970 UTC or ISO-8601 (naive =
  UTC); gaps that overlap it are listed. Defaults: the last 24 hours up to now.
* ``plc``: a PLC code; its gaps and those of all PLCs ("*").
* ``kind``: overwritten, poller_down, plc_unreachable or quarantine.
* ``limit`` (1..1000, default 100), ``offset`` (0..1,000,000): paging, newest first.

With the SQLite sink the gaps are read from the database (SQLITE_PATH, opened read-only):
the full history, ``"source": "database"``. With the Oracle sink the ledger is in the Oracle
gap table, which the web process has no login for (by design: it only maps the ring
read-only); the writer also keeps the last ``gaps.RING_ROWS`` gap rows it made durable in
the ring, and those are listed: ``"source": "ring"`` and ``"history"`` naming the table
that holds all of them (query it as in docs/oracle.md). No ring yet reads as no gaps.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from flask import Blueprint, current_app, jsonify

from pipeline.common import gaps as G

from . import query, runtime

log = logging.getLogger("tagpipe.web.gaps")
bp = Blueprint("gaps", __name__, url_prefix="/api")

DAY_US = 86_400 * 1_000_000


@bp.get("/gaps")
def list_gaps():
    # Each parameter was checked before this handler ran (web.query.PARAMS["gaps.list_gaps"]).
    to_us = query.value("to") if query.value("to") is not None else time.time_ns() // 1000
    from_us = query.value("from") if query.value("from") is not None else max(0, to_us - DAY_US)
    if from_us > to_us:
        return jsonify({"error": "Bad Request", "status": 400, "parameter": "from",
                        "message": "query parameter 'from' must not be after 'to'"}), 400
    q = {"from_us": from_us, "to_us": to_us, "plc": query.value("plc"), "kind": query.value("kind"),
         "limit": query.value("limit"), "offset": query.value("offset")}
    s = runtime(current_app).settings
    if s.oracle_host or s.oracle_dsn:
        table = s.oracle_gap_table or G.table_name(s.oracle_table)
        recent = runtime(current_app).monitor.recent_gaps() or []
        rows, total = G.select(recent, q["from_us"], q["to_us"], q["plc"], q["kind"], q["limit"], q["offset"])
        return jsonify({**q, "total": total, "gaps": [g.as_json() for g in rows], "source": "ring",
                        "history": f"the last {G.RING_ROWS} gaps; all of them are in the Oracle table {table}"})
    try:
        rows, total = G.query_sqlite(s.sqlite_path, q["from_us"], q["to_us"], q["plc"], q["kind"], q["limit"], q["offset"])
    except sqlite3.Error as e:
        log.warning("reading the gap table of %s: %s", s.sqlite_path, e)
        return jsonify({"error": "Service Unavailable", "status": 503, "message": f"the database cannot be read now: {e}"}), 503
    return jsonify({**q, "total": total, "gaps": [g.as_json() for g in rows], "source": "database"})
