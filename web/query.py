"""The query parameters every endpoint accepts, declared once and checked before any
handler runs (``install``): a handler only ever sees values that passed.

A request with a parameter its endpoint does not declare, a parameter given more than
once, or a value that does not parse (not a number, ``nan``, ``inf``, out of bounds, not
one of the choices) is answered 400 with a JSON error under ``/api/`` (a short text
elsewhere), naming the parameter; nothing is logged, so bad requests cannot flood the log.
Handlers read the checked values with ``value(name)``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from flask import Flask, g, jsonify, request

from pipeline.common.gaps import KIND_CODES

MAX_PARAM_CHARS = 64  # longer values are refused before parsing (none of ours is longer)
# Plain decimal notation in ASCII only: float() alone would also take "1_000", " 300 ",
# other scripts' digits, "nan" and "inf".
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)


@dataclass(frozen=True)
class Number:
    """A finite decimal number from ``lo`` to ``hi`` (both included); ``default`` when absent."""

    lo: float
    hi: float
    default: float

    def parse(self, text: str) -> float:
        """The value, or ValueError saying what is wrong with ``text``."""
        if not _DECIMAL.fullmatch(text):
            raise ValueError("must be a finite number" if text.strip().lower().lstrip("+-") in ("nan", "inf", "infinity")
                             else "must be a number")
        x = float(text)
        if not math.isfinite(x):
            raise ValueError("must be a finite number")
        if not self.lo <= x <= self.hi:
            raise ValueError(f"must be from {self.lo:g} to {self.hi:g}")
        return x

    def describe(self) -> str:
        return f"a number from {self.lo:g} to {self.hi:g} (default {self.default:g})"


@dataclass(frozen=True)
class Choice:
    """One of ``choices``; ``default`` (possibly None) when absent."""

    choices: tuple[str, ...]
    default: str | None = None

    def parse(self, text: str) -> str:
        if text not in self.choices:
            raise ValueError("must be one of " + ", ".join(self.choices))
        return text

    def describe(self) -> str:
        return "one of " + ", ".join(self.choices)


@dataclass(frozen=True)
class Whole:
    """A whole number from ``lo`` to ``hi`` in plain ASCII digits; ``default`` when absent."""

    lo: int
    hi: int
    default: int

    def parse(self, text: str) -> int:
        if not (text.isascii() and text.isdigit()):  # "²".isdigit() is true too
            raise ValueError("must be a whole number")
        x = int(text)
        if not self.lo <= x <= self.hi:
            raise ValueError(f"must be from {self.lo:,} to {self.hi:,}")
        return x

    def describe(self) -> str:
        return f"a whole number from {self.lo:,} to {self.hi:,} (default {self.default:,})"


@dataclass(frozen=True)
class Text:
    """Printable text (at most ``MAX_PARAM_CHARS``); None when absent or empty."""

    default: None = None

    def parse(self, text: str) -> str | None:
        if not text.isprintable():
            raise ValueError("must be printable text")
        return text or None

    def describe(self) -> str:
        return f"printable text of at most {MAX_PARAM_CHARS} characters"


@dataclass(frozen=True)
class Flag:
    """true/1/yes or false/0/no; None when absent or empty."""

    default: None = None

    def parse(self, text: str) -> bool | None:
        if text == "":
            return None
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError("must be true or false")

    def describe(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class Code:
    """A PLC code: 1 to 16 printable ASCII characters without spaces; None when absent."""

    default: None = None

    def parse(self, text: str) -> str:
        if not re.fullmatch(r"[\x21-\x7e]{1,16}", text):
            raise ValueError("must be a PLC code (1 to 16 printable ASCII characters, no spaces)")
        return text

    def describe(self) -> str:
        return "a PLC code"


MIN_US, MAX_US = 0, 253_402_300_799_999_999  # 1970 .. 9999-12-31T23:59:59.999999 UTC


@dataclass(frozen=True)
class Time:
    """A time as microseconds since 1970 UTC (ASCII digits) or ISO-8601 (no zone = UTC),
    returned in microseconds; None when absent (the handler picks the default)."""

    default: None = None

    def parse(self, text: str) -> int:
        if text.isascii() and text.isdigit():
            us = int(text)
        else:
            try:
                dt = datetime.fromisoformat(text)
                if dt.tzinfo is None:
                    dt = dt.replace(tzinfo=timezone.utc)
                us = int(dt.timestamp() * 1_000_000)
            except (ValueError, OverflowError):
                raise ValueError("must be microseconds since 1970 UTC or an ISO-8601 time") from None
        if not MIN_US <= us <= MAX_US:
            raise ValueError("must be from 1970 to 9999")
        return us

    def describe(self) -> str:
        return "microseconds since 1970 UTC or an ISO-8601 time"


HISTORY_MAX_S = 3600  # WEB_HISTORY_S's own maximum: no web process keeps more

# endpoint (Flask's name) -> {parameter: its rule}. An endpoint not listed takes none.
TAGS_LIMIT_MAX = 1000
GAP_KINDS = tuple(KIND_CODES)
PARAMS: dict[str, dict[str, Number | Choice | Whole | Text | Flag | Code | Time]] = {
    "api.status": {"seconds": Number(10, HISTORY_MAX_S, 300)},
    "page.index": {"lang": Choice(("ko", "en"))},
    "tags.tags": {"plc": Text(), "prefix": Text(), "q": Text(), "stale": Flag(),
                  "limit": Whole(1, TAGS_LIMIT_MAX, 100), "offset": Whole(0, 10_000_000, 0)},
    "gaps.list_gaps": {"from": Time(), "to": Time(), "plc": Code(), "kind": Choice(GAP_KINDS),
                       "limit": Whole(1, 1000, 100), "offset": Whole(0, 1_000_000, 0)},
}


class BadQuery(ValueError):
    """A query parameter that is not accepted; ``str()`` is the message for the client."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"query parameter {name!r} {message}")
        self.name = name


def check(endpoint: str | None, args) -> dict[str, Any]:
    """The checked values of ``args`` (a werkzeug MultiDict) for ``endpoint``, defaults
    filled in. Raises BadQuery for the first parameter that is not accepted."""
    rules = PARAMS.get(endpoint or "", {})
    for name in args:
        if name not in rules:
            accepted = ", ".join(rules) or "none"
            raise BadQuery(name[:MAX_PARAM_CHARS], f"is not accepted here (accepted: {accepted})")
    out: dict[str, Any] = {}
    for name, rule in rules.items():
        given = args.getlist(name)
        if len(given) > 1:
            raise BadQuery(name, "is given more than once")
        if not given:
            out[name] = rule.default
            continue
        if len(given[0]) > MAX_PARAM_CHARS:
            raise BadQuery(name, f"is longer than {MAX_PARAM_CHARS} characters")
        try:
            out[name] = rule.parse(given[0])
        except ValueError as e:
            raise BadQuery(name, f"{e} ({rule.describe()})") from None
    return out


def value(name: str) -> Any:
    """The checked value of query parameter ``name`` of the current request."""
    return g.tagpipe_query[name]


def install(app: Flask, wants_json: Callable[[], bool]) -> None:
    """Check every request's query parameters before its handler (404s stay 404s)."""

    @app.before_request
    def _check_query():
        if request.endpoint is None:  # no such route: Flask answers 404 / 405 itself
            return None
        try:
            g.tagpipe_query = check(request.endpoint, request.args)
        except BadQuery as e:
            if wants_json():
                return jsonify({"error": "Bad Request", "status": 400, "message": str(e), "parameter": e.name}), 400
            return f"Bad Request: {e}\n", 400, {"Content-Type": "text/plain; charset=utf-8"}
        return None
