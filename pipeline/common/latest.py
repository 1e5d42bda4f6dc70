"""Live tag values: the latest value of every configured tag, in a table beside the ring.

The ring cannot answer "what is tag X reading now": at 100,000 tags a second (or the
300,000 values/s load mode) it turns over in well under a second, and report-by-exception
keeps a steady tag out of it for up to ``max_silence_s``. So the poller keeps a second
shared-memory segment, ``/dev/shm/<RING_NAME>.latest`` (``shm.table``): one fixed-width
row per configured tag, overwritten on every poll of the tag's group whatever the deadband
let into the ring, each poll group one seqlocked block (a reader never sees half a poll).
The tag metadata (PLC code, address, unit, description, group and its interval) is the
table's JSON ``meta``, written once when the poller starts; a restarted poller (perhaps
with another TAGS_FILE) replaces the whole table atomically.

Writers: the poller (``LatestTable.create`` then ``block(...).write``). Readers: the web
process (``/api/tags``) and ``python -m pipeline status --tags``, both through
``LatestReader.query`` so they show the same rows.

A tag is *stale* when its age (now - poll time) exceeds ``STALE_INTERVALS`` times its
group's interval, or it has never been polled, or the row was torn by a poller killed
mid-write.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

import numpy as np

from shm.layout import QUALITY_NAMES as _RING_QUALITY
from shm.ring import now_us
from shm.table import TableMismatch, TableMissing, TableReader, TableWriter, unlink_table

STALE_INTERVALS = 3  # a tag is stale past this many of its group's intervals without a poll
ROW_DTYPE = np.dtype([("value", "<f8"), ("poll_us", "<i8"), ("quality", "u1"), ("_pad", "u1", (7,))])
META_VERSION = 1
QUALITY_NAMES = {code: name.lower() for code, name in _RING_QUALITY.items()}  # good, bad, uncertain


def table_name(ring: str) -> str:
    """The latest-values table of ring ``ring``: ``<ring>.latest`` in /dev/shm."""
    return f"{ring}.latest"


def remove(ring: str) -> bool:
    """Delete ring ``ring``'s latest-values table (delete-ring, tests). True if it existed."""
    return unlink_table(table_name(ring))


@dataclass(frozen=True)
class GroupSpec:
    """One poll group as the table knows it: its PLC, name, interval and tags (in order)."""

    plc_code: str
    name: str
    interval_s: float
    tags: tuple[tuple[str, str, str], ...]  # (address, unit, description)


class LatestTable:
    """The poller's side: one block per poll group, in the order of ``groups``."""

    def __init__(self, writer: TableWriter) -> None:
        self._writer = writer

    @classmethod
    def create(cls, ring: str, groups: Iterable[GroupSpec]) -> "LatestTable":
        """Make (or replace) the table for these groups; every row starts "never polled".
        Raises OSError when /dev/shm cannot hold it."""
        groups = list(groups)
        meta = {
            "version": META_VERSION,
            "groups": [[g.plc_code, g.name, g.interval_s] for g in groups],
            # one entry per row, in row order: [group index, address, unit, description]
            "tags": [[gi, *t] for gi, g in enumerate(groups) for t in g.tags],
        }
        raw = json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode()
        return cls(TableWriter.create(table_name(ring), ROW_DTYPE, [len(g.tags) for g in groups], raw))

    def block(self, group: int) -> "GroupRows":
        return GroupRows(self._writer.block(group))

    def close(self) -> None:
        self._writer.close()


class GroupRows:
    """The rows of one poll group: ``write`` records one poll of every tag of the group."""

    __slots__ = ("_b",)

    def __init__(self, block) -> None:
        self._b = block

    def write(self, values: np.ndarray, quality: np.ndarray, poll_us: int | np.ndarray) -> None:
        """One poll: ``values`` (float, NaN where BAD) and ``quality`` (uint8) per tag, in the
        group's order; ``poll_us`` the poll time (UTC us), one for the group or one per tag."""
        self._b.write(value=values, quality=quality, poll_us=poll_us)


@dataclass(frozen=True)
class TagPage:
    """One answer: ``rows`` (JSON-ready dicts) of ``matched`` rows that pass the filters,
    from ``offset``; ``total`` configured tags; ``plcs`` every configured PLC code."""

    present: bool
    problem: str
    taken_us: int
    total: int
    matched: int
    offset: int
    limit: int
    stale_count: int
    plcs: list[str]
    rows: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "present": self.present, "error": self.problem or None, "taken_us": self.taken_us,
            "total": self.total, "matched": self.matched, "offset": self.offset, "limit": self.limit,
            "stale_count": self.stale_count, "stale_after_intervals": STALE_INTERVALS,
            "plcs": self.plcs, "tags": self.rows,
        }


class _Catalog:
    """The table's metadata as arrays, parsed once per table (not per request)."""

    def __init__(self, meta: bytes) -> None:
        doc = json.loads(meta.decode())
        if doc.get("version") != META_VERSION:
            raise TableMismatch(f"latest-values metadata version {doc.get('version')!r}, expected {META_VERSION}")
        groups = doc["groups"]
        tags = doc["tags"]
        gi = np.array([t[0] for t in tags], dtype=np.int64)
        self.group_plc = [g[0] for g in groups]
        self.plc = np.array([groups[i][0] for i in gi.tolist()], dtype=object)
        self.group = [groups[i][1] for i in gi.tolist()]
        self.interval = np.array([groups[i][2] for i in gi.tolist()], dtype=np.float64)
        self.address = np.array([t[1] for t in tags], dtype=object)
        self.unit = [t[2] for t in tags]
        self.description = [t[3] for t in tags]
        self.address_lower = [a.lower() for a in self.address.tolist()]
        # q matches any of PLC code, address, unit, description, case-insensitive
        self.text = [f"{p}\n{a}\n{u}\n{d}".lower() for p, a, u, d in
                     zip(self.plc.tolist(), self.address.tolist(), self.unit, self.description)]
        self.plcs = list(dict.fromkeys(self.group_plc))


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class LatestReader:
    """Reads ring ``ring``'s latest-values table read-only; reopens it when the poller
    replaced it. Thread-safe (the web process answers on several threads)."""

    def __init__(self, ring: str) -> None:
        self.ring = ring
        self._lock = threading.Lock()
        self._reader: TableReader | None = None
        self._catalog: _Catalog | None = None

    def _open(self) -> str:
        """Map the current table if needed. Returns "" or why there is none."""
        if self._reader is not None and not self._reader.changed():
            return ""
        if self._reader is not None:
            self._reader.close()
            self._reader = self._catalog = None
        try:
            reader = TableReader(table_name(self.ring), ROW_DTYPE)
        except TableMissing:
            return f"no live values for ring {self.ring!r}: the poller has not started"
        except TableMismatch as e:
            return f"live values of ring {self.ring!r} unreadable: {e}"
        try:
            self._catalog = _Catalog(reader.meta)
        except (ValueError, KeyError, IndexError, TypeError, TableMismatch) as e:
            reader.close()
            return f"live values of ring {self.ring!r} unreadable: bad metadata ({e})"
        self._reader = reader
        return ""

    def query(self, plc: str | None = None, prefix: str | None = None, q: str | None = None,
              stale: bool | None = None, limit: int | None = 100, offset: int = 0,
              now: int | None = None) -> TagPage:
        """The tags that pass every given filter, in configuration order, paged.

        ``plc``: exact PLC code; ``prefix``: address starts with it (case-insensitive);
        ``q``: text in PLC code, address, unit or description (case-insensitive);
        ``stale``: only stale (True) or only fresh (False) tags; ``limit`` None: all.
        ``now``: the clock for ages (UTC us; default the wall clock). Never raises for a
        missing table (``present`` False, ``problem`` says why).
        """
        with self._lock:
            problem = self._open()
            taken = now_us() if now is None else now
            if problem:
                return TagPage(False, problem, taken, 0, 0, offset, limit or 0, 0, [], [])
            cat, reader = self._catalog, self._reader
            assert cat is not None and reader is not None
            rows, torn = reader.snapshot()
        poll = rows["poll_us"]
        polled = poll > 0
        age = np.where(polled, (taken - poll) / 1e6, np.nan)
        is_stale = ~polled | torn | (age > STALE_INTERVALS * cat.interval)
        mask = np.ones(len(rows), dtype=bool)
        if plc is not None:
            mask &= cat.plc == plc
        if prefix:
            p = prefix.lower()
            mask &= np.fromiter((a.startswith(p) for a in cat.address_lower), bool, len(rows))
        if q:
            ql = q.lower()
            mask &= np.fromiter((ql in t for t in cat.text), bool, len(rows))
        if stale is not None:
            mask &= is_stale == stale
        idx = np.flatnonzero(mask)
        page = idx[offset:] if limit is None else idx[offset:offset + limit]
        out = []
        for i in page.tolist():
            us = int(poll[i])
            v = float(rows["value"][i])
            qual = int(rows["quality"][i])
            seen = us > 0 and not torn[i]
            out.append({
                "plc_code": cat.plc[i],
                "address": cat.address[i],
                "value": v if seen and math.isfinite(v) else None,
                "quality": (QUALITY_NAMES.get(qual, f"q{qual}") if seen else ("torn" if torn[i] else "none")),
                "quality_code": qual if seen else None,
                "poll_us": us if us > 0 else None,
                "poll_time": _iso(us) if us > 0 else None,
                "age_s": round(float(age[i]), 3) if us > 0 else None,
                "stale": bool(is_stale[i]),
                "unit": cat.unit[i],
                "description": cat.description[i],
                "group": cat.group[i],
                "interval_s": float(cat.interval[i]),
            })
        return TagPage(True, "", taken, len(rows), int(len(idx)), offset, len(page) if limit is None else limit,
                       int(np.count_nonzero(is_stale)), list(cat.plcs), out)

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
            self._reader = self._catalog = None


__all__ = ["GroupRows", "GroupSpec", "LatestReader", "LatestTable", "ROW_DTYPE", "STALE_INTERVALS", "TagPage",
           "remove", "table_name"]
