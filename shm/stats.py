"""Figures derived from a ring ``Snapshot``: what the web process and ``pipeline status`` show.

Pure functions over a ``shm.ring.Snapshot`` (a copy of the header words), plus one small
stateful class, ``HealthEvaluator``, whose memory of which conditions are active gives the
thresholds their hysteresis. Nothing here writes to the ring, sends a signal, or imports
``pipeline`` or ``web``.

Conventions: times in the header are microseconds since 1970 UTC; the figures returned
here are seconds (``*_s``), percentages (``*_pct``) or record counts. A header word that
is still zero means "not reported yet" (the owning process has not written it), and the
figures say so with ``None`` rather than inventing a value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from . import layout as L
from .ring import Snapshot, now_us

US = 1_000_000
WRITER_WINDOW_S = L.WRITER_BUCKETS * L.WRITER_BUCKET_S  # 300 s: the seed's 5-minute window
ROLES = {"poller": "producer", "writer": "consumer"}

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
# Order of the statuses, worst last; also the value of the tagpipe_health_status metric.
STATUS_RANK = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}


def pid_alive(pid: int) -> bool:
    """True if ``pid`` names a live (not zombie) process on this host. Never signals it."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    # The state letter follows the last ')' (the command name may contain ')').
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X", b"x")


def _age_s(now_us: int, then_us: int | float) -> float | None:
    return None if not then_us else max(0.0, (now_us - int(then_us)) / US)


def buffer_status(snap: Snapshot) -> dict:
    """The seed's buffer figures plus the raw counters they come from.

    ``overflow_count`` is the producer's count of records overwritten before they were
    committed (what the seed called overflow); ``lost`` is the consumer's exact count of
    records it never got to read (a subset: a record read but not yet committed when it
    was overwritten is still delivered).
    """
    f = snap.fields
    cap = int(f["capacity"])
    published, committed = int(f["producer.published"]), int(f["consumer.committed"])
    used = max(0, min(published - committed, cap))
    hour_pub, hour_over = overflow_window(snap)
    return {
        "current_size": used,
        "max_size": cap,
        "utilization_pct": round(100.0 * used / cap, 2) if cap else 0.0,
        "overflow_count": int(f["producer.overwritten"]),
        "overflow_rate_pct": round(100.0 * hour_over / hour_pub, 3) if hour_pub else 0.0,
        "published": published,
        "committed": committed,
        "lost": int(f["consumer.lost"]),
        "padding": int(f["producer.padding"]),
        "published_last_hour": hour_pub,
        "overflowed_last_hour": hour_over,
        "alert_active": bool(f["producer.alert_active"]),
        "alerts": int(f["producer.alerts"]),
        "epoch": int(f["epoch"]),
        "created_us": int(f["created_us"]),
    }


def overflow_window(snap: Snapshot, minutes: int = L.HOUR_BUCKETS) -> tuple[int, int]:
    """(published, overwritten) over the last ``minutes`` minute buckets, current one included."""
    now_min = snap.taken_us // (L.HOUR_BUCKET_S * US)
    pub = over = 0
    for minute, p, o in snap.hour:
        if minute and now_min - minutes < minute <= now_min:
            pub += p
            over += o
    return pub, over


def _writer_buckets(snap: Snapshot) -> list[dict]:
    now_idx = snap.taken_us // (L.WRITER_BUCKET_S * US)
    rows = []
    for b in snap.writer_buckets:
        row = dict(zip(L.WRITER_BUCKET_FIELDS, b))
        if row["index"] and now_idx - L.WRITER_BUCKETS < row["index"] <= now_idx:
            rows.append(row)
    rows.sort(key=lambda r: r["index"])
    return rows


def writer_metrics(snap: Snapshot) -> dict:
    """The seed's rolling 5-minute writer metrics, from the 10-second buckets in the header.

    Writes are counted in batches. ``success_rate_pct`` is 100.0 when no write was
    attempted in the window (nothing failed); ``writes_in_window`` tells the two apart.
    Throughput divides by the part of the window the ring has existed.
    """
    rows = _writer_buckets(snap)
    ok = sum(r["batches_ok"] for r in rows)
    failed = sum(r["batches_failed"] for r in rows)
    items = sum(r["items"] for r in rows)
    lat_sum = sum(r["latency_us_sum"] for r in rows)
    lat_max = max((r["latency_us_max"] for r in rows), default=0)
    now_idx = snap.taken_us // (L.WRITER_BUCKET_S * US)
    window_start_us = (now_idx - L.WRITER_BUCKETS + 1) * L.WRITER_BUCKET_S * US
    span_s = max(1.0, (snap.taken_us - max(window_start_us, int(snap.fields["created_us"]))) / US)
    return {
        "successful_writes": ok,
        "failed_writes": failed,
        "success_rate_pct": round(100.0 * ok / (ok + failed), 3) if ok + failed else 100.0,
        "avg_batch_size": round(items / ok, 1) if ok else 0.0,
        "avg_write_latency_ms": round(lat_sum / ok / 1000.0, 3) if ok else 0.0,
        "throughput_items_per_sec": round(items / span_s, 1),
        "max_write_latency_ms": round(lat_max / 1000.0, 3),
        "items_in_window": items,
        "writes_in_window": ok + failed,
        "window_s": WRITER_WINDOW_S,
        "buckets": [
            {
                "start_us": r["index"] * L.WRITER_BUCKET_S * US,
                "items": r["items"],
                "batches_ok": r["batches_ok"],
                "batches_failed": r["batches_failed"],
                "avg_latency_ms": round(r["latency_us_sum"] / r["batches_ok"] / 1000.0, 3) if r["batches_ok"] else 0.0,
            }
            for r in rows
        ],
    }


def role_status(snap: Snapshot, role: str, heartbeat_s: float, alive: Callable[[int], bool] = pid_alive) -> dict:
    """Liveness of ``role`` ("poller" or "writer") from its header words and /proc.

    ``running`` needs a non-stopped state, a pid that exists, and a heartbeat younger than
    ``heartbeat_s``. ``reason`` says what failed first (None when running).
    """
    p = ROLES[role]
    f = snap.fields
    pid, code = int(f[f"{p}.pid"]), int(f[f"{p}.state"])
    age = _age_s(snap.taken_us, f[f"{p}.heartbeat_us"])
    pid_ok = alive(pid) if pid else False
    if code == 0 or not pid:
        reason = f"{role} not running" if not f[f"{p}.starts"] else f"{role} stopped"
    elif not pid_ok:
        reason = f"{role} process {pid} is gone"
    elif age is None or age > heartbeat_s:
        reason = f"{role} heartbeat is {age if age is None else round(age, 1)} s old (limit {heartbeat_s:g} s)"
    else:
        reason = None
    return {
        "running": reason is None,
        "state": L.ROLE_STATE.get(code, f"code {code}"),
        "pid": pid,
        "pid_alive": pid_ok,
        "heartbeat_age_s": None if age is None else round(age, 3),
        "starts": int(f[f"{p}.starts"]),
        "reason": reason,
    }


def writer_state(snap: Snapshot) -> dict:
    """What the writer reports about the database, backups and disk (zeros: not reported)."""
    f = snap.fields
    now = snap.taken_us
    return {
        "sink": L.SINK_KIND.get(int(f["writer.sink_kind"]), "unknown"),
        "db_state": L.DB_STATE.get(int(f["writer.db_state"]), "unknown"),
        "last_commit_us": int(f["writer.last_commit_us"]) or None,
        "last_commit_age_s": _round(_age_s(now, f["writer.last_commit_us"])),
        "outage_started_us": int(f["writer.outage_started_us"]) or None,
        "outage_s": _round(_age_s(now, f["writer.outage_started_us"])),
        "backup_files_pending": int(f["writer.backup_files_pending"]),
        "backup_rows_pending": int(f["writer.backup_rows_pending"]),
        "rows_written": int(f["writer.rows_written"]),
        "rows_duplicate": int(f["writer.rows_duplicate"]),
        "rows_replayed": int(f["writer.rows_replayed"]),
        "rows_quarantined": int(f["writer.rows_quarantined"]),
        "rows_spilled": int(f["writer.rows_spilled"]),
        "backup_files_written": int(f["writer.backup_files_written"]),
        "replay_files_done": int(f["writer.replay_files_done"]),
        "disk_state": L.DISK_STATE.get(int(f["writer.disk_state"]), "unknown"),
        "disk_free_bytes": int(f["writer.disk_free_bytes"]) or None,
        "batches_ok_total": int(f["writer.batches_ok"]),
        "batches_failed_total": int(f["writer.batches_failed"]),
        "retries": int(f["writer.retries"]),
        "last_batch_size": int(f["writer.last_batch_size"]),
        "batch_limit": int(f["writer.batch_limit"]),
        "last_latency_ms": round(int(f["writer.last_latency_us"]) / 1000.0, 3),
        "last_error_code": int(f["writer.last_error_code"]),
        "delivered": int(f["consumer.delivered"]),
        # issue 18: the database call the writer waits for (or abandoned), and since when.
        "stuck_call": L.STUCK_CALL.get(int(f["writer.stuck_call"]), "unknown") if int(f["writer.stuck_call"]) else None,
        "stuck_for_s": _round(_age_s(now, f["writer.stuck_since_us"]), 1),
    }


def oldest_unwritten_us(snap: Snapshot, ring_peek_us: int = 0) -> int:
    """Poll time of the oldest record not yet durable, 0 when none is waiting.

    Takes the older of what the writer reports and ``ring_peek_us`` (the poll time of the
    record at ``committed``, read from the ring by the caller), so the figure keeps
    growing while the writer is dead and cannot report.
    """
    f = snap.fields
    if int(f["producer.published"]) <= int(f["consumer.committed"]):
        return 0
    candidates = [t for t in (int(f["writer.oldest_unwritten_us"]), int(ring_peek_us)) if t > 0]
    return min(candidates) if candidates else 0


def peek_pending_ts_us(observer, snap: Snapshot) -> int:
    """Poll time of the record at ``committed`` read from ``observer`` (an ``Observer``), 0 if
    none is waiting or it was overwritten meanwhile (its seq no longer matches)."""
    committed, published = int(snap.fields["consumer.committed"]), int(snap.fields["producer.published"])
    if committed >= published:
        return 0
    rec = observer.records(committed, 1)[0]
    if int(rec["seq"]) != committed or int(rec["flags"]) & L.FLAG_PADDING or int(rec["ts_us"]) <= 0:
        return 0
    return int(rec["ts_us"])


def plc_rows(snap: Snapshot) -> list[dict]:
    """The per-PLC table with ages in seconds (None: never happened)."""
    out = []
    for row in snap.plcs:
        r = dict(row)
        r["connected"] = bool(row.get("connected"))
        for k in ("last_good_poll_us", "last_poll_us", "last_error_us"):
            r[k] = int(row.get(k, 0)) or None
        r["last_good_poll_age_s"] = _round(_age_s(snap.taken_us, row.get("last_good_poll_us", 0)))
        r["last_duration_ms"] = round(int(row.get("last_duration_us", 0)) / 1000.0, 3)
        out.append(r)
    return out


def _round(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


@dataclass(frozen=True)
class Thresholds:
    """Health limits. Each condition is entered at one value and left at a lower one."""

    alert_pct: float = 80.0  # BUFFER_ALERT_THRESHOLD
    alert_clear_margin_pct: float = 5.0  # leave "utilization high" below alert_pct - this
    max_lag_s: float = 30.0  # HEALTH_MAX_LAG_S: oldest unwritten record older -> degraded
    lag_clear_ratio: float = 0.5  # leave "backlog old" below max_lag_s * this
    heartbeat_s: float = 10.0  # HEALTH_HEARTBEAT_S: older heartbeat = process dead
    loss_hold_s: float = 120.0  # "values lost" stays on this long after the last loss

    @classmethod
    def from_settings(cls, settings: Any) -> "Thresholds":
        """The limits from loaded settings (any object with the settings' attributes, so
        ``shm`` stays free of ``pipeline``): what the web process and ``status`` both use."""
        return cls(
            alert_pct=settings.buffer_alert_threshold,
            max_lag_s=settings.health_max_lag_s,
            heartbeat_s=settings.health_heartbeat_s,
        )


@dataclass(frozen=True)
class Check:
    code: str  # stable identifier (the page translates it)
    severity: str  # DEGRADED or UNHEALTHY
    message: str  # English, for the API and the logs


@dataclass
class Health:
    status: str
    checks: list[Check]
    buffer_ok: bool
    writer_ok: bool
    poller_ok: bool
    oracle_connection_ok: bool

    @property
    def reasons(self) -> list[str]:
        return [c.message for c in self.checks]


@dataclass
class HealthEvaluator:
    """Evaluates health from one snapshot's figures, remembering which conditions are on.

    Thread-safe enough for the web process when called under the caller's lock; a fresh
    instance (``pipeline status``) simply uses the entry thresholds.
    """

    thresholds: Thresholds = field(default_factory=Thresholds)
    _on: set = field(default_factory=set)

    def _latch(self, code: str, enter: bool, leave: bool) -> bool:
        """Hysteresis: a condition turns on when ``enter``, and off only when ``leave``."""
        if code in self._on:
            if leave:
                self._on.discard(code)
        elif enter:
            self._on.add(code)
        return code in self._on

    def evaluate(self, fig: dict | None, missing: str = "ring missing: no poller has created it") -> Health:
        """Health of the figures from ``figures()``; ``fig`` None means the ring cannot be
        read, and ``missing`` says why."""
        t = self.thresholds
        if fig is None:
            self._on.clear()
            return Health(UNHEALTHY, [Check("ring_missing", UNHEALTHY, missing)], False, False, False, False)
        checks: list[Check] = []
        buf, wr, lag = fig["buffer"], fig["writer_state"], fig["lag"]
        poller, writer = fig["roles"]["poller"], fig["roles"]["writer"]
        if not writer["running"]:
            checks.append(Check("writer_down", UNHEALTHY, f"values at risk: {writer['reason']}"))
        if not poller["running"]:
            checks.append(Check("poller_down", UNHEALTHY, f"no new values: {poller['reason']}"))
        loss_age = lag["last_loss_age_s"]
        recent_loss = (loss_age is not None and loss_age < t.loss_hold_s) or buf["overflowing_now"]
        if self._latch("values_lost", recent_loss, not recent_loss):
            checks.append(Check("values_lost", UNHEALTHY, "values lost: the ring overflowed (writer too slow or down)"))
        if wr["disk_state"] == "full":
            checks.append(Check("disk_full", UNHEALTHY, "backup disk full: values cannot be spilled"))
        elif wr["disk_state"] == "low":
            checks.append(Check("disk_low", DEGRADED, "backup disk space low"))
        util = buf["utilization_pct"]
        if self._latch("utilization_high", util >= t.alert_pct, util < t.alert_pct - t.alert_clear_margin_pct):
            checks.append(Check("utilization_high", DEGRADED, f"ring {util:.1f}% full (alert at {t.alert_pct:g}%)"))
        age = lag["oldest_unwritten_age_s"] or 0.0
        if self._latch("backlog_old", age > t.max_lag_s, age < t.max_lag_s * t.lag_clear_ratio):
            checks.append(Check("backlog_old", DEGRADED, f"oldest unwritten value is {age:.0f} s old (limit {t.max_lag_s:g} s)"))
        db = wr["db_state"]
        db_ok = db in ("up", "replaying")
        if writer["running"]:
            if db in ("down", "probing"):
                checks.append(Check("database_down", DEGRADED, f"database {db}: values go to backup files"))
            elif db == "replaying":
                checks.append(Check("replaying", DEGRADED, "catching up: replaying backup files"))
            elif db == "unknown":
                checks.append(Check("database_unknown", DEGRADED, "database state not reported by the writer yet"))
            # issue 18: a call that does not answer, a refused login, no contact yet.
            elif db == "not_answering":
                call, waited = wr["stuck_call"] or "a call", wr["stuck_for_s"]
                since = f" for {waited:.0f} s" if waited is not None else ""
                checks.append(Check("database_not_answering", DEGRADED,
                                    f"database not answering: {call} without an answer{since}; values go to backup files"))
            elif db == "login_refused":
                checks.append(Check("login_refused", DEGRADED, "login refused: fix the password (values go to backup files)"))
            elif db == "connecting":
                checks.append(Check("database_connecting", DEGRADED, "connecting to the database (no answer yet)"))
            if db == "up" and wr["backup_files_pending"]:
                checks.append(Check("backups_pending", DEGRADED, f"{wr['backup_files_pending']} backup files waiting for replay"))
        status = max((c.severity for c in checks), key=STATUS_RANK.__getitem__, default=HEALTHY)
        buffer_ok = "utilization_high" not in self._on and "values_lost" not in self._on
        return Health(status, checks, buffer_ok, writer["running"], poller["running"], db_ok)


def figures(
    snap: Snapshot,
    thresholds: Thresholds | None = None,
    ring_peek_us: int = 0,
    alive: Callable[[int], bool] = pid_alive,
) -> dict:
    """Every derived figure of one snapshot, as plain JSON-ready values (no health).

    ``alive(pid)`` decides whether a role's pid still runs (a caller answering many
    requests may pass a cached ``pid_alive``)."""
    t = thresholds or Thresholds()
    f = snap.fields
    buf = buffer_status(snap)
    now_min = snap.taken_us // (L.HOUR_BUCKET_S * US)
    buf["overflowing_now"] = any(m in (now_min, now_min - 1) and o for m, _, o in snap.hour)
    oldest = oldest_unwritten_us(snap, ring_peek_us)
    return {
        "ring": snap.ring,
        "taken_us": snap.taken_us,
        "buffer": buf,
        "writer_metrics": writer_metrics(snap),
        "writer_state": writer_state(snap),
        "roles": {r: role_status(snap, r, t.heartbeat_s, alive) for r in ROLES},
        "lag": {
            "records": buf["current_size"],
            "oldest_unwritten_us": oldest or None,
            "oldest_unwritten_age_s": _round(_age_s(snap.taken_us, oldest)),
            "last_loss_age_s": _round(_age_s(snap.taken_us, f["consumer.last_lost_us"])),
        },
        "poller": {
            "polls": int(f["poller.polls"]),
            "poll_errors": int(f["poller.poll_errors"]),
            "overruns": int(f["poller.overruns"]),
            "values": int(f["poller.values"]),
            "bad_values": int(f["poller.bad_values"]),
            "suppressed": int(f["poller.suppressed"]),
        },
        "plcs": plc_rows(snap),
    }


__all__ = [
    "Check",
    "Health",
    "HealthEvaluator",
    "STATUS_RANK",
    "Thresholds",
    "buffer_status",
    "figures",
    "now_us",
    "oldest_unwritten_us",
    "overflow_window",
    "peek_pending_ts_us",
    "pid_alive",
    "plc_rows",
    "role_status",
    "writer_metrics",
    "writer_state",
]
