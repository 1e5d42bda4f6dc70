"""``GET /api/tags``: the live value of every configured tag (issue 15), read-only.

Reads the poller's latest-values table through ``pipeline.common.latest`` (the same query
``python -m pipeline status --tags`` prints). Query parameters, each validated (a bad or
unknown one is a 400 JSON answer naming it, never a traceback):

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

from flask import Blueprint, jsonify, request

from pipeline.common.latest import STALE_INTERVALS, LatestReader

LIMIT_DEFAULT = 100
LIMIT_MAX = 1000
OFFSET_MAX = 10_000_000
TEXT_MAX = 100  # characters of plc, prefix, q
PARAMS = ("plc", "prefix", "q", "stale", "limit", "offset")


class BadParameter(ValueError):
    """One bad query parameter; ``str()`` says which and why."""


def _int(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:  # "²".isdigit() is true too
        raise BadParameter(f"{name}={raw!r}: must be a whole number from {lo} to {hi:,}")
    v = int(raw)
    if not lo <= v <= hi:
        raise BadParameter(f"{name}={raw!r}: must be from {lo} to {hi:,}")
    return v


def _text(name: str) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > TEXT_MAX or not raw.isprintable():
        raise BadParameter(f"{name}: at most {TEXT_MAX} printable characters")
    return raw


def _bool(name: str) -> bool | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise BadParameter(f"{name}={raw!r}: must be true or false")


def parse_query() -> dict:
    """The validated filters of this request. Raises BadParameter."""
    for k in request.args:
        if k not in PARAMS:
            raise BadParameter(f"unknown parameter {k!r}; known: {', '.join(PARAMS)}")
        if len(request.args.getlist(k)) > 1:
            raise BadParameter(f"parameter {k!r} given more than once")
    return {
        "plc": _text("plc"), "prefix": _text("prefix"), "q": _text("q"), "stale": _bool("stale"),
        "limit": _int("limit", LIMIT_DEFAULT, 1, LIMIT_MAX), "offset": _int("offset", 0, 0, OFFSET_MAX),
    }


def make_blueprint(ring: str) -> tuple[Blueprint, LatestReader]:
    """The endpoint for ring ``ring`` and the reader it holds (close it with the app)."""
    reader = LatestReader(ring)
    bp = Blueprint("tags", __name__, url_prefix="/api")

    @bp.get("/tags")
    def tags():
        try:
            args = parse_query()
        except BadParameter as e:
            return jsonify({"error": "Bad Request", "status": 400, "message": str(e)}), 400
        page = reader.query(**args)
        body = page.to_json()
        body["ring"] = ring
        return jsonify(body), (200 if page.present else 503)

    return bp, reader


__all__ = ["LIMIT_MAX", "STALE_INTERVALS", "make_blueprint", "parse_query"]
