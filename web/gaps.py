"""``GET /api/gaps``: the gap ledger (pipeline/common/gaps.py), read-only.

Query parameters, each validated (a bad one answers 400 with a JSON body naming it):

* ``from``, ``to``: the time range, as microseconds since 1970 UTC or ISO-8601 (naive =
  UTC); gaps that overlap it are listed. Defaults: the last 24 hours up to now.
* ``plc``: a PLC code; its gaps and those of all PLCs ("*").
* ``kind``: overwritten, poller_down, plc_unreachable or quarantine.
* ``limit`` (1..1000, default 100), ``offset`` (0..1,000,000): paging, newest first.

The gaps are read from the SQLite database (SQLITE_PATH, opened read-only). With the
Oracle sink the ledger is in the Oracle gap table, which the web process has no login
for: the answer is 501 naming the table (query it as in docs/oracle.md).
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from datetime import datetime, timezone

from flask import Blueprint, current_app, jsonify, request

from pipeline.common import gaps as G

from . import runtime

log = logging.getLogger("tagpipe.web.gaps")
bp = Blueprint("gaps", __name__, url_prefix="/api")

DAY_US = 86_400 * 1_000_000
LIMIT_MAX = 1000
OFFSET_MAX = 1_000_000
MIN_US, MAX_US = 0, 253_402_300_799_999_999  # 1970 .. 9999-12-31T23:59:59.999999
_PLC_RE = re.compile(r"^[\x21-\x7e]{1,16}$")


class BadParam(ValueError):
    """A query parameter that cannot be used; ``name`` says which."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def _time_us(name: str, text: str) -> int:
    text = text.strip()
    try:
        if re.fullmatch(r"-?\d{1,19}", text):
            us = int(text)
        else:
            dt = datetime.fromisoformat(text)
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
            us = int(dt.timestamp() * 1_000_000)
    except (ValueError, OverflowError):
        raise BadParam(name, f"{name} must be microseconds since 1970 UTC or an ISO-8601 time, not {text[:40]!r}") from None
    if not MIN_US <= us <= MAX_US:
        raise BadParam(name, f"{name} {text[:40]!r} is outside 1970..9999")
    return us


def _int(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"\d{1,9}", raw.strip()):
        raise BadParam(name, f"{name} must be a whole number from {lo} to {hi}, not {raw[:40]!r}")
    v = int(raw)
    if not lo <= v <= hi:
        raise BadParam(name, f"{name} must be from {lo} to {hi}, not {v}")
    return v


def parse_query() -> dict:
    """The validated query of this request. Raises BadParam."""
    known = {"from", "to", "plc", "kind", "limit", "offset"}
    unknown = sorted(set(request.args) - known)
    if unknown:
        raise BadParam(unknown[0], f"unknown parameter {unknown[0][:40]!r} (known: {', '.join(sorted(known))})")
    now = int(time.time() * 1_000_000)
    to_us = _time_us("to", request.args["to"]) if "to" in request.args else now
    from_us = _time_us("from", request.args["from"]) if "from" in request.args else max(0, to_us - DAY_US)
    if from_us > to_us:
        raise BadParam("from", "from must not be after to")
    plc = request.args.get("plc")
    if plc is not None and not _PLC_RE.match(plc):
        raise BadParam("plc", "plc must be a PLC code (1..16 printable ASCII characters)")
    kind = request.args.get("kind")
    if kind is not None and kind not in G.KIND_CODES:
        raise BadParam("kind", f"kind must be one of {', '.join(G.KIND_CODES)}")
    return {"from_us": from_us, "to_us": to_us, "plc": plc, "kind": kind,
            "limit": _int("limit", 100, 1, LIMIT_MAX), "offset": _int("offset", 0, 0, OFFSET_MAX)}


@bp.get("/gaps")
def list_gaps():
    try:
        q = parse_query()
    except BadParam as e:
        return jsonify({"error": "Bad Request", "status": 400, "parameter": e.name, "message": str(e)}), 400
    s = runtime(current_app).settings
    if s.oracle_host or s.oracle_dsn:
        table = s.oracle_gap_table or G.table_name(s.oracle_table)
        return jsonify({"error": "Not Implemented", "status": 501,
                        "message": f"the gap ledger is in the Oracle table {table}; query it there (docs/oracle.md)"}), 501
    try:
        rows, total = G.query_sqlite(s.sqlite_path, q["from_us"], q["to_us"], q["plc"], q["kind"], q["limit"], q["offset"])
    except sqlite3.Error as e:
        log.warning("reading the gap table of %s: %s", s.sqlite_path, e)
        return jsonify({"error": "Service Unavailable", "status": 503, "message": f"the database cannot be read now: {e}"}), 503
    return jsonify({**q, "total": total, "gaps": [g.as_json() for g in rows]})
