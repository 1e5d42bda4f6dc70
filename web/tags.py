"""``GET /api/tags``: the live value of every configured tag (issue 15), read-only.

Reads the poller's latest-values table through ``pipeline.common.latest`` (the same query
``python -m pipeline status --tags`` prints). Query parameters, declared and checked with
every other endpoint's in ``web.query`` (a bad, unknown or repeated one is a 400 JSON
answer naming it, never a traceback):

    plc=CODE        only this PLC (exact code)
    prefix=TEXT     address starts with TEXT (case-insensitive)
    q=TEXT          TEXT in PLC code, address, unit or description (case-insensitive)
    stale=true|false  only stale / only fresh tags
    limit=N         1..1000 rows (default 100)
    offset=N        0..10,000,000 (default 0)

A tag is stale when not polled for ``STALE_INTERVALS`` (3) times its group's interval.
503 with ``present`` false and ``error`` when there is no table (no poller has started).
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from pipeline.common.latest import LatestReader

from . import query


def make_blueprint(ring: str) -> tuple[Blueprint, LatestReader]:
    """The endpoint for ring ``ring`` and the reader it holds (close it with the app)."""
    reader = LatestReader(ring)
    bp = Blueprint("tags", __name__, url_prefix="/api")

    @bp.get("/tags")
    def tags():
        # Parameters were checked before this handler ran (web.query.PARAMS["tags.tags"]).
        page = reader.query(**{name: query.value(name) for name in query.PARAMS["tags.tags"]})
        body = page.to_json()
        body["ring"] = ring
        return jsonify(body), (200 if page.present else 503)

    return bp, reader


__all__ = ["make_blueprint"]
