"""The application's telemetry: what the poller and the writer report through the ring
header, and the one way the web process and ``pipeline status`` read it back.

One module on purpose: adding a figure means declaring its word in ``SCHEMA``, writing it
where the value is produced (``PollerTelemetry`` / ``WriterMetrics`` or a call site's
``endpoint.set``/``add``), deriving it in the figure dataclass below, and showing it.

* ``SCHEMA``: every ``poller.*`` and ``writer.*`` word, the per-PLC table, the poller's
  minute buckets and the writer's 10-second buckets, laid out by ``shm.telemetry`` (the
  ring stores the schema's fingerprint, so two versions never misread each other).
* Recorders: ``open_producer`` / ``open_consumer`` (endpoints opened with the schema),
  ``PlcSlot``, ``WriterMetrics``. They only write words their role owns.
* Figures: ``read(ring, thresholds)`` / ``TelemetryReader`` return a ``Reading`` of frozen
  dataclasses (``Figures``, ``Health``); ``to_json`` turns them into the JSON the API and
  ``status --json`` print (field names are a contract: SPEC.md).
* Health: ``Thresholds`` and ``HealthEvaluator`` (hysteresis).

Conventions: times in the header are microseconds since 1970 UTC; figures are seconds
(``*_s``), milliseconds (``*_ms``), percentages (``*_pct``) or record counts. A word that is
still zero means "not reported yet" and the figures say so with ``None``.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import math
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from shm import Consumer, LayoutMismatch, Observer, Producer, RingMissing, Table, TelemetrySchema, Word, Words
from shm import layout as L
from shm.ring import now_us
from . import gaps as _gaps
from .gaps import KINDS as _GAP_KIND_NAMES

GAP_KINDS = tuple(_GAP_KIND_NAMES.values())  # the gap ledger's kinds, in code order

US = 1_000_000

# --- enumerations stored in words ----------------------------------------------------------
# connecting: no answer from the database yet since the writer started; not_answering: a
# call outlived its budget (pipeline/writer/guard.py); login_refused: ORA-01017/28000/28001.
DB_STATE = {0: "unknown", 1: "up", 2: "down", 3: "probing", 4: "replaying", 5: "connecting", 6: "not_answering",
            7: "login_refused"}
DB_STATE_CODES = {name: code for code, name in DB_STATE.items()}
# Which database call the writer is waiting for (writer.stuck_call).
STUCK_CALL = {0: "none", 1: "connect", 2: "write", 3: "first contact"}
STUCK_CALL_CODES = {name: code for code, name in STUCK_CALL.items()}
SINK_KIND = {0: "none", 1: "sqlite", 2: "oracle"}
SINK_KIND_CODES = {name: code for code, name in SINK_KIND.items()}
DISK_STATE = {0: "ok", 1: "low", 2: "full", 3: "unwritable"}
SOURCE_KIND = {"simulator": 0, "modbus": 1, "load": 2, "mixed": 3, "mc": 4, "opcua": 5}
SOURCE_KIND_NAMES = {code: name for name, code in SOURCE_KIND.items()}
ERR_NONE, ERR_TRANSIENT, ERR_PERMANENT, ERR_DISK_FULL, ERR_QUARANTINE = 0, 1, 2, 3, 4
ERR_DB_GONE = 5  # the database file vanished or was replaced under the writer (SinkGoneError)

# --- the schema ----------------------------------------------------------------------------
HOUR_BUCKETS = 60  # one per minute: records published / overwritten (producer), lost (consumer)
HOUR_BUCKET_S = 60
WRITER_BUCKETS = 30  # one per 10 s: the writer's 5-minute rolling metrics
WRITER_BUCKET_S = 10
WRITER_WINDOW_S = WRITER_BUCKETS * WRITER_BUCKET_S  # 300 s: the original feature's 5-minute window
MAX_PLCS = 64  # rows of the PLC table: at most this many PLCs per poller
PLC_COLUMNS = ("code0", "code1", "connected", "last_good_poll_us", "last_poll_us", "polls", "errors", "overruns",
               "last_duration_us", "tags", "values", "consecutive_errors", "last_error_us")


def _w(owner: str, rows: list[tuple[str, str, str]]) -> Words:
    return Words(owner, tuple(Word(n, k, d) for n, k, d in rows))


SCHEMA = TelemetrySchema(
    _w("producer", [
        ("poller.polls", "u64", "poll cycles completed (all groups)"),
        ("poller.poll_errors", "u64", "poll cycles with a failed read"),
        ("poller.overruns", "u64", "polls that took longer than their interval"),
        ("poller.values", "u64", "values published"),
        ("poller.bad_values", "u64", "BAD-quality values published"),
        ("poller.suppressed", "u64", "values suppressed by deadband (report by exception)"),
        ("poller.plc_count", "u64", "rows in use in the PLC table"),
        ("poller.started_us", "i64", "when the current poller started"),
        ("poller.source_kind", "u64", "SOURCE_KIND code: 0 simulator, 1 modbus, 2 load mode, 3 mixed, 4 mc, 5 opcua"),
    ]),
    Table("hour", "producer", HOUR_BUCKETS, ("minute", "published", "overwritten"),
          doc="bucket minute % 60: records published / overwritten in that minute"),
    _w("consumer", [
        ("writer.sink_kind", "u64", "SINK_KIND code"),
        ("writer.db_state", "u64", "DB_STATE code as the writer last saw it"),
        ("writer.last_commit_us", "i64", "time of the last successful database commit"),
        ("writer.oldest_unwritten_us", "i64", "poll time of the oldest record not yet durable (0: none)"),
        ("writer.batches_ok", "u64", "batches committed to the database (total)"),
        ("writer.batches_failed", "u64", "batch attempts that failed (total)"),
        ("writer.rows_written", "u64", "rows inserted into the database (total)"),
        ("writer.rows_duplicate", "u64", "rows found already present (total)"),
        ("writer.rows_quarantined", "u64", "rows rejected by the database, written to quarantine"),
        ("writer.rows_spilled", "u64", "rows written to backup files (total)"),
        ("writer.backup_files_pending", "u64", "backup files waiting for replay"),
        ("writer.backup_rows_pending", "u64", "rows in backup files waiting for replay"),
        ("writer.rows_replayed", "u64", "rows replayed from backup files (total)"),
        ("writer.outage_started_us", "i64", "when the current outage began (0: none)"),
        ("writer.disk_free_bytes", "u64", "free bytes under BACKUP_FILE_PATH"),
        ("writer.disk_state", "u64", "DISK_STATE code"),
        ("writer.last_batch_size", "u64", "rows in the last batch"),
        ("writer.batch_limit", "u64", "current batch size limit (grows under backlog)"),
        ("writer.last_latency_us", "u64", "duration of the last database write"),
        ("writer.retries", "u64", "retry attempts (total)"),
        ("writer.backup_files_written", "u64", "backup files written (total)"),
        ("writer.started_us", "i64", "when the current writer started"),
        ("writer.replay_files_done", "u64", "backup files fully replayed (total)"),
        ("writer.last_error_code", "u64", "ERR_* code of the last database error class (0 none)"),
        ("writer.probes", "u64", "database probes made while the circuit was open (total)"),
        ("writer.backup_bytes_pending", "u64", "bytes of backup files waiting for replay"),
        ("writer.backup_oldest_us", "i64", "poll time of the oldest row in backup files waiting for replay (0: none)"),
        ("writer.corrupt_lines", "u64", "unreadable backup-file lines sent to quarantine (total; also in rows_quarantined)"),
        ("writer.stuck_call", "u64", "STUCK_CALL code of the database call not answering (0: none)"),
        ("writer.stuck_since_us", "i64", "when that call started (0: none)"),
        ("writer.lost_bucketed", "u64", "consumer.lost already added to the loss minute buckets"),
        # The gap ledger (pipeline/common/gaps.py): rows added to the gap table, by kind.
        ("writer.gaps_overwritten", "u64", "gap rows recorded: records overwritten before the writer read them (total)"),
        ("writer.gaps_poller_down", "u64", "gap rows recorded: poller not running (total)"),
        ("writer.gaps_plc_unreachable", "u64", "gap rows recorded: PLC unreachable episodes (total)"),
        ("writer.gaps_quarantine", "u64", "gap rows recorded: rows moved to quarantine (total)"),
        ("writer.disk_errno", "u64", "errno of the failed backup write while disk_state is unwritable (0: none)"),
        (_gaps.RING_COUNTER, "u64", "gap rows put in the recent_gaps table (total; slot (n - 1) % its rows holds the n-th)"),
    ]),
    Table("loss_hour", "consumer", HOUR_BUCKETS, ("minute", "lost"),
          doc="bucket minute % 60: records found lost (consumer.lost grew) in that minute"),
    Table("writer_buckets", "consumer", WRITER_BUCKETS,
          ("index", "batches_ok", "batches_failed", "items", "latency_us_sum", "latency_us_max"),
          doc="bucket index % 30 of floor(time_s / 10): the writer's batch writes in those 10 s"),
    Table("plcs", "producer", MAX_PLCS, PLC_COLUMNS, kind="i64",
          doc="one row per PLC: code (16 ASCII bytes in code0/code1), connection and poll counters"),
    Table(_gaps.RING_TABLE, "consumer", _gaps.RING_SLOTS, _gaps.RING_COLUMNS, kind="i64",
          doc="the most recent gap rows made durable (pipeline/common/gaps.py ring_row); texts as 16 ASCII bytes"),
)


assert SCHEMA.tables["hour"][1].columns == ("minute", "published", "overwritten")  # _HourWindow's cells
assert SCHEMA.tables["loss_hour"][1].columns == ("minute", "lost")  # record_losses' cells


# --- recorders: the processes' side ---------------------------------------------------------
def open_producer(name: str, capacity: int, alert_threshold_pct: float = 80.0, **kw: Any) -> Producer:
    """``Producer.open`` with ``SCHEMA``, keeping the minute buckets (see ``Producer.open``
    for what is raised)."""
    p = Producer.open(name, capacity, alert_threshold_pct, telemetry=SCHEMA, **kw)
    p.on_account = _HourWindow(p).add
    return p


def open_consumer(name: str, **kw: Any) -> Consumer | None:
    """``Consumer.open`` with ``SCHEMA`` (same arguments, same exceptions)."""
    return Consumer.open(name, telemetry=SCHEMA, **kw)


class _HourWindow:
    """The producer's minute buckets: records published and overwritten per minute, an hour
    long. Runs after every publish/flush, so it works on the raw cells (3 per bucket)."""

    def __init__(self, producer: Producer) -> None:
        self._cells = producer.cells("hour")

    def add(self, published: int, overwritten: int, t_us: int) -> None:
        minute = t_us // (HOUR_BUCKET_S * US)
        v = self._cells
        i = (minute % HOUR_BUCKETS) * 3  # minute, published, overwritten
        if v[i] != minute:  # a new minute reuses the bucket of an hour ago
            v[i + 1] = 0
            v[i + 2] = 0
            v[i] = minute
        v[i + 1] += published
        if overwritten:
            v[i + 2] += overwritten


def record_losses(consumer: Consumer, t_us: int | None = None) -> int:
    """Add what ``consumer.lost`` grew by since the last call to this minute's loss bucket.

    Called right after every ``Consumer.commit`` (the commit is where losses are counted).
    The total already bucketed lives in the ring (``writer.lost_bucketed``), so losses
    counted by a writer that died before bucketing them are bucketed by its successor;
    a new ring starts both at zero. Returns the records added (0 when none).
    """
    total = int(consumer.get("consumer.lost"))
    done = int(consumer.get("writer.lost_bucketed"))
    if total <= done:
        return 0
    minute = (now_us() if t_us is None else t_us) // (HOUR_BUCKET_S * US)
    row = consumer.row("loss_hour", minute % HOUR_BUCKETS)
    if row.get("minute") != minute:  # a new minute reuses the bucket of an hour ago
        row.set("lost", 0)
        row.set("minute", minute)
    row.add("lost", total - done)
    consumer.set("writer.lost_bucketed", total)
    return total - done


def encode_code(text: str) -> tuple[int, int]:
    """Pack an ASCII code of at most 16 bytes into two words. Raises ValueError if longer."""
    raw = text.encode("ascii")
    if len(raw) > 16:
        raise ValueError(f"code {text!r} is longer than 16 bytes")
    raw = raw.ljust(16, b"\0")
    return int.from_bytes(raw[:8], "little", signed=True), int.from_bytes(raw[8:], "little", signed=True)


def decode_code(w0: int, w1: int) -> str:
    raw = int(w0).to_bytes(8, "little", signed=True) + int(w1).to_bytes(8, "little", signed=True)
    return raw.rstrip(b"\0").decode("ascii", "replace")


class PlcSlot:
    """Writer of one row of the PLC table (producer only). IndexError beyond MAX_PLCS."""

    def __init__(self, producer: Producer, index: int) -> None:
        self._row = producer.row("plcs", index)

    def set_code(self, code: str) -> None:
        w0, w1 = encode_code(code)
        self._row.set("code0", w0)
        self._row.set("code1", w1)

    def set(self, column: str, value: int) -> None:
        self._row.set(column, int(value))

    def add(self, column: str, delta: int = 1) -> None:
        self._row.add(column, delta)


def plc_slot(producer: Producer, index: int) -> PlcSlot:
    return PlcSlot(producer, index)


class WriterMetrics:
    """Publishes the writer's state into the ring it consumes (main thread only).

    Totals are added to (they survive a writer restart because they live in the ring);
    gauges are set. ``writer.last_error_code`` holds an ``ERR_*`` code.
    """

    def __init__(self, consumer: Consumer) -> None:
        self.c = consumer
        self._probes_seen = 0

    def attach(self, consumer: Consumer, sink_kind: str) -> None:
        self.c = consumer
        self.c.set("writer.sink_kind", SINK_KIND_CODES.get(sink_kind, 0))
        self.c.set("writer.started_us", now_us())

    def db_state(self, name: str) -> None:
        self.c.set("writer.db_state", DB_STATE_CODES[name])

    def stuck(self, call: str | None, since_us: int = 0) -> None:
        """The database call not answering (a ``STUCK_CALL`` name) and when it started;
        None clears both."""
        self.c.set("writer.stuck_call", STUCK_CALL_CODES[call] if call else 0)
        self.c.set("writer.stuck_since_us", since_us if call else 0)

    def error(self, code: int) -> None:
        self.c.set("writer.last_error_code", code)

    def record_write(self, ok: bool, items: int, latency_us: int) -> None:
        """Add one batch write to the current 10-second bucket of the rolling metrics."""
        idx = now_us() // (WRITER_BUCKET_S * US)
        row = self.c.row("writer_buckets", idx % WRITER_BUCKETS)
        if row.get("index") != idx:
            for col in ("batches_ok", "batches_failed", "items", "latency_us_sum", "latency_us_max"):
                row.set(col, 0)
            row.set("index", idx)
        if ok:
            row.add("batches_ok", 1)
            row.add("items", items)
            row.add("latency_us_sum", latency_us)
            row.set("latency_us_max", max(row.get("latency_us_max"), latency_us))
        else:
            row.add("batches_failed", 1)

    def committed(self, items: int, written: int, duplicates: int, latency_us: int) -> None:
        """One batch committed to the database (live or replay)."""
        c = self.c
        self.record_write(True, items, latency_us)
        c.add("writer.batches_ok", 1)
        c.add("writer.rows_written", written)
        c.add("writer.rows_duplicate", duplicates)
        c.set("writer.last_commit_us", now_us())
        c.set("writer.last_batch_size", items)
        c.set("writer.last_latency_us", latency_us)

    def failed(self, code: int) -> None:
        """One batch attempt that failed."""
        self.record_write(False, 0, 0)
        self.c.add("writer.batches_failed", 1)
        self.error(code)

    def retry(self) -> None:
        self.c.add("writer.retries", 1)

    def spilled(self, rows: int, new_files: int) -> None:
        self.c.add("writer.rows_spilled", rows)
        if new_files:
            self.c.add("writer.backup_files_written", new_files)

    def quarantined(self, rows: int) -> None:
        self.c.add("writer.rows_quarantined", rows)

    def corrupt_lines(self, n: int) -> None:
        self.c.add("writer.corrupt_lines", n)

    def gaps_recorded(self, kinds: list[str]) -> None:
        """Count gap rows the database added (``kinds``: one gap kind name per row)."""
        for kind in kinds:
            self.c.add(f"writer.gaps_{kind}", 1)

    def gap_rows(self, rows: list[_gaps.Gap]) -> None:
        """Put gap rows the database added into the ring's recent_gaps table, each row's
        cells first and the counter after it, so a reader never takes a half row
        (``gaps.ring_gaps``)."""
        for gap in rows:
            n = int(self.c.get(_gaps.RING_COUNTER)) + 1
            row = self.c.row(_gaps.RING_TABLE, (n - 1) % _gaps.RING_SLOTS)
            row.set("n", 0)  # the old row stops being whole before any cell changes
            cells = _gaps.ring_row(n, gap)
            for column in _gaps.RING_COLUMNS[1:]:
                row.set(column, cells[column])
            row.set("n", n)
            self.c.set(_gaps.RING_COUNTER, n)  # publish after write

    def replayed(self, rows: int) -> None:
        self.c.add("writer.rows_replayed", rows)

    def replay_file_done(self) -> None:
        self.c.add("writer.replay_files_done", 1)

    def probes(self, total_in_this_process: int) -> None:
        # The prober thread counts; the main thread publishes the difference.
        delta = total_in_this_process - self._probes_seen
        if delta > 0:
            self.c.add("writer.probes", delta)
            self._probes_seen = total_in_this_process

    def backlog(self, files: int, rows: int, size: int, oldest_us: int) -> None:
        c = self.c
        c.set("writer.backup_files_pending", files)
        c.set("writer.backup_rows_pending", rows)
        c.set("writer.backup_bytes_pending", size)
        c.set("writer.backup_oldest_us", oldest_us)

    def outage(self, started_us: int) -> None:
        self.c.set("writer.outage_started_us", started_us)

    def disk(self, free_bytes: int, state: int, errno_code: int = 0) -> None:
        """Free bytes, DISK_STATE code and, while unwritable, the errno of the failure."""
        self.c.set("writer.disk_free_bytes", max(0, free_bytes))
        self.c.set("writer.disk_state", state)
        self.c.set("writer.disk_errno", errno_code)

    def batch_limit(self, limit: int) -> None:
        self.c.set("writer.batch_limit", limit)

    def oldest_unwritten(self) -> None:
        """Poll time of the first record not yet durable (0 when the ring is drained)."""
        c = self.c
        ts = 0
        if c.pending() > 0:
            ts = c.peek_ts_us(c.committed) or 0
        c.set("writer.oldest_unwritten_us", ts)


# --- figures: the readers' side -------------------------------------------------------------
_FROZEN = dict(frozen=True, slots=True)


@dataclass(**_FROZEN)
class Buffer:
    """The original feature's buffer figures plus the raw counters they come from.

    The original feature's overflow means records dropped, so ``overflow_count`` is the exact loss
    count (``lost``, the consumer's count of records overwritten before it read them) and
    ``overflow_rate_pct`` is records lost / records published over the last hour, from the
    consumer's loss buckets and the producer's publish buckets. Losses are counted when the
    writer commits past them, so while no writer runs they show up when one attaches.

    ``overwritten_before_commit`` (and ``overwritten_last_hour``) is the producer's count
    of slots reused before their records were committed: records at risk, which include
    records the writer had already read and then stored (not lost). ``overflowing_now``:
    slots were reused before commit this minute or the last (the early sign of a loss).
    """

    current_size: int
    max_size: int
    utilization_pct: float
    overflow_count: int
    overflow_rate_pct: float
    published: int
    committed: int
    lost: int
    padding: int
    published_last_hour: int
    overflowed_last_hour: int
    overwritten_before_commit: int
    overwritten_last_hour: int
    alert_active: bool
    alerts: int
    epoch: int
    created_us: int
    overflowing_now: bool


@dataclass(**_FROZEN)
class WriterBucket:
    start_us: int
    items: int
    batches_ok: int
    batches_failed: int
    avg_latency_ms: float


@dataclass(**_FROZEN)
class WriterWindow:
    """The original feature's rolling 5-minute writer metrics (counted in batches). ``success_rate_pct``
    is 100.0 when nothing was attempted; ``writes_in_window`` tells the two apart."""

    successful_writes: int
    failed_writes: int
    success_rate_pct: float
    avg_batch_size: float
    avg_write_latency_ms: float
    throughput_items_per_sec: float
    max_write_latency_ms: float
    items_in_window: int
    writes_in_window: int
    window_s: int
    buckets: tuple[WriterBucket, ...]


@dataclass(**_FROZEN)
class WriterState:
    """What the writer reports about the database, backups and disk (None: not reported)."""

    sink: str
    db_state: str
    last_commit_us: int | None
    last_commit_age_s: float | None
    outage_started_us: int | None
    outage_s: float | None
    backup_files_pending: int
    backup_rows_pending: int
    rows_written: int
    rows_duplicate: int
    rows_replayed: int
    rows_quarantined: int
    rows_spilled: int
    backup_files_written: int
    replay_files_done: int
    disk_state: str
    disk_error: str | None  # why the backup folder is unwritable (errno text), None otherwise
    disk_free_bytes: int | None
    batches_ok_total: int
    batches_failed_total: int
    retries: int
    last_batch_size: int
    batch_limit: int
    last_latency_ms: float
    last_error_code: int
    delivered: int
    started_us: int | None
    uptime_s: float | None
    probes: int
    backup_bytes_pending: int
    backup_oldest_us: int | None
    backup_oldest_age_s: float | None
    corrupt_lines: int
    gaps_recorded: dict[str, int]  # gap rows added to the gap table, by kind (pipeline/common/gaps.py)
    stuck_call: str | None  # the database call without an answer (None: none)
    stuck_for_s: float | None  # how long it has waited


@dataclass(**_FROZEN)
class RoleStatus:
    """Liveness of one process: ``running`` needs a non-stopped state, a live pid and a
    fresh heartbeat; ``reason`` says what failed first (None when running)."""

    running: bool
    state: str
    pid: int
    pid_alive: bool
    heartbeat_age_s: float | None
    starts: int
    reason: str | None


@dataclass(**_FROZEN)
class Roles:
    poller: RoleStatus
    writer: RoleStatus


@dataclass(**_FROZEN)
class Lag:
    records: int
    oldest_unwritten_us: int | None
    oldest_unwritten_age_s: float | None
    last_loss_age_s: float | None


@dataclass(**_FROZEN)
class PollerCounts:
    polls: int
    poll_errors: int
    overruns: int
    values: int
    bad_values: int
    suppressed: int
    started_us: int | None
    uptime_s: float | None
    source: str


@dataclass(**_FROZEN)
class PlcRow:
    """One PLC of the poller's table, with ages in seconds (None: never happened)."""

    plc_code: str
    connected: bool
    last_good_poll_us: int | None
    last_poll_us: int | None
    polls: int
    errors: int
    overruns: int
    last_duration_us: int
    tags: int
    values: int
    consecutive_errors: int
    last_error_us: int | None
    last_good_poll_age_s: float | None
    last_duration_ms: float


@dataclass(**_FROZEN)
class Figures:
    """Every derived figure of one snapshot (no health)."""

    ring: str
    taken_us: int
    buffer: Buffer
    writer_metrics: WriterWindow
    writer_state: WriterState
    roles: Roles
    lag: Lag
    poller: PollerCounts
    plcs: tuple[PlcRow, ...]


def to_json(obj: Any) -> Any:
    """Figures (or any of their parts, or a Health) as plain JSON values: dataclasses become
    dicts with their field names in declaration order, tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    return obj


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


def _age_s(now: int, then_us: int | float) -> float | None:
    return None if not then_us else max(0.0, (now - int(then_us)) / US)


def _round(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def overflow_window(snap, minutes: int = HOUR_BUCKETS) -> tuple[int, int]:
    """(published, overwritten before commit) over the last ``minutes`` minute buckets,
    current one included."""
    now_min = snap.taken_us // (HOUR_BUCKET_S * US)
    pub = over = 0
    for minute, p, o in snap.tables["hour"]:
        if minute and now_min - minutes < minute <= now_min:
            pub += p
            over += o
    return pub, over


def loss_window(snap, minutes: int = HOUR_BUCKETS) -> int:
    """Records found lost over the last ``minutes`` minute buckets, current one included."""
    now_min = snap.taken_us // (HOUR_BUCKET_S * US)
    return sum(int(n) for minute, n in snap.tables["loss_hour"] if minute and now_min - minutes < minute <= now_min)


def buffer_status(snap) -> Buffer:
    f = snap.fields
    cap = int(f["capacity"])
    published, committed = int(f["producer.published"]), int(f["consumer.committed"])
    used = max(0, min(published - committed, cap))
    hour_pub, hour_over = overflow_window(snap)
    hour_lost = loss_window(snap)
    now_min = snap.taken_us // (HOUR_BUCKET_S * US)
    lost = int(f["consumer.lost"])
    return Buffer(
        current_size=used,
        max_size=cap,
        utilization_pct=round(100.0 * used / cap, 2) if cap else 0.0,
        overflow_count=lost,
        # Losses found this hour may stem from records published before it: capped at 100 %.
        overflow_rate_pct=min(100.0, round(100.0 * hour_lost / hour_pub, 3)) if hour_pub else (100.0 if hour_lost else 0.0),
        published=published,
        committed=committed,
        lost=lost,
        padding=int(f["producer.padding"]),
        published_last_hour=hour_pub,
        overflowed_last_hour=hour_lost,
        overwritten_before_commit=int(f["producer.overwritten"]),
        overwritten_last_hour=hour_over,
        alert_active=bool(f["producer.alert_active"]),
        alerts=int(f["producer.alerts"]),
        epoch=int(f["epoch"]),
        created_us=int(f["created_us"]),
        overflowing_now=any(m in (now_min, now_min - 1) and o for m, _, o in snap.tables["hour"]),
    )


def writer_window(snap) -> WriterWindow:
    """The 5-minute metrics from the 10-second buckets; throughput divides by the part of
    the window the ring has existed."""
    now_idx = snap.taken_us // (WRITER_BUCKET_S * US)
    rows = sorted((b for b in snap.tables["writer_buckets"] if b[0] and now_idx - WRITER_BUCKETS < b[0] <= now_idx),
                  key=lambda b: b[0])
    ok = sum(r[1] for r in rows)
    failed = sum(r[2] for r in rows)
    items = sum(r[3] for r in rows)
    lat_sum = sum(r[4] for r in rows)
    lat_max = max((r[5] for r in rows), default=0)
    window_start_us = (now_idx - WRITER_BUCKETS + 1) * WRITER_BUCKET_S * US
    span_s = max(1.0, (snap.taken_us - max(window_start_us, int(snap.fields["created_us"]))) / US)
    return WriterWindow(
        successful_writes=ok,
        failed_writes=failed,
        success_rate_pct=round(100.0 * ok / (ok + failed), 3) if ok + failed else 100.0,
        avg_batch_size=round(items / ok, 1) if ok else 0.0,
        avg_write_latency_ms=round(lat_sum / ok / 1000.0, 3) if ok else 0.0,
        throughput_items_per_sec=round(items / span_s, 1),
        max_write_latency_ms=round(lat_max / 1000.0, 3),
        items_in_window=items,
        writes_in_window=ok + failed,
        window_s=WRITER_WINDOW_S,
        buckets=tuple(
            WriterBucket(idx * WRITER_BUCKET_S * US, it, bok, bf, round(ls / bok / 1000.0, 3) if bok else 0.0)
            for idx, bok, bf, it, ls, _ in rows
        ),
    )


ROLES = {"poller": "producer", "writer": "consumer"}


def role_status(snap, role: str, heartbeat_s: float, alive: Callable[[int], bool] = pid_alive) -> RoleStatus:
    """Liveness of ``role`` ("poller" or "writer") from its header words and /proc."""
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
    return RoleStatus(reason is None, L.ROLE_STATE.get(code, f"code {code}"), pid, pid_ok,
                      None if age is None else round(age, 3), int(f[f"{p}.starts"]), reason)


def writer_state(snap) -> WriterState:
    f = snap.fields
    now = snap.taken_us
    return WriterState(
        sink=SINK_KIND.get(int(f["writer.sink_kind"]), "unknown"),
        db_state=DB_STATE.get(int(f["writer.db_state"]), "unknown"),
        last_commit_us=int(f["writer.last_commit_us"]) or None,
        last_commit_age_s=_round(_age_s(now, f["writer.last_commit_us"])),
        outage_started_us=int(f["writer.outage_started_us"]) or None,
        outage_s=_round(_age_s(now, f["writer.outage_started_us"])),
        backup_files_pending=int(f["writer.backup_files_pending"]),
        backup_rows_pending=int(f["writer.backup_rows_pending"]),
        rows_written=int(f["writer.rows_written"]),
        rows_duplicate=int(f["writer.rows_duplicate"]),
        rows_replayed=int(f["writer.rows_replayed"]),
        rows_quarantined=int(f["writer.rows_quarantined"]),
        rows_spilled=int(f["writer.rows_spilled"]),
        backup_files_written=int(f["writer.backup_files_written"]),
        replay_files_done=int(f["writer.replay_files_done"]),
        disk_state=DISK_STATE.get(int(f["writer.disk_state"]), "unknown"),
        disk_error=_errno_text(int(f["writer.disk_errno"])),
        disk_free_bytes=int(f["writer.disk_free_bytes"]) or None,
        batches_ok_total=int(f["writer.batches_ok"]),
        batches_failed_total=int(f["writer.batches_failed"]),
        retries=int(f["writer.retries"]),
        last_batch_size=int(f["writer.last_batch_size"]),
        batch_limit=int(f["writer.batch_limit"]),
        last_latency_ms=round(int(f["writer.last_latency_us"]) / 1000.0, 3),
        last_error_code=int(f["writer.last_error_code"]),
        delivered=int(f["consumer.delivered"]),
        started_us=int(f["writer.started_us"]) or None,
        uptime_s=_round(_age_s(now, f["writer.started_us"])),
        probes=int(f["writer.probes"]),
        backup_bytes_pending=int(f["writer.backup_bytes_pending"]),
        backup_oldest_us=int(f["writer.backup_oldest_us"]) or None,
        backup_oldest_age_s=_round(_age_s(now, f["writer.backup_oldest_us"])),
        corrupt_lines=int(f["writer.corrupt_lines"]),
        gaps_recorded={k: int(f[f"writer.gaps_{k}"]) for k in GAP_KINDS},
        stuck_call=STUCK_CALL.get(int(f["writer.stuck_call"]), "unknown") if int(f["writer.stuck_call"]) else None,
        stuck_for_s=_round(_age_s(now, f["writer.stuck_since_us"]), 1),
    )


def _errno_text(code: int) -> str | None:
    if not code:
        return None
    return f"{errno.errorcode.get(code, 'errno ' + str(code))}: {os.strerror(code)}"


def oldest_unwritten_us(snap, ring_peek_us: int = 0) -> int:
    """Poll time of the oldest record not yet durable, 0 when none is waiting: the older of
    what the writer reports and ``ring_peek_us`` (read from the ring by the caller), so the
    figure keeps growing while the writer is dead and cannot report."""
    f = snap.fields
    if int(f["producer.published"]) <= int(f["consumer.committed"]):
        return 0
    candidates = [t for t in (int(f["writer.oldest_unwritten_us"]), int(ring_peek_us)) if t > 0]
    return min(candidates) if candidates else 0


def peek_pending_ts_us(observer: Observer, snap) -> int:
    """Poll time of the record at ``committed`` read from ``observer``, 0 if none is waiting
    or it was overwritten meanwhile (its seq no longer matches)."""
    committed, published = int(snap.fields["consumer.committed"]), int(snap.fields["producer.published"])
    if committed >= published:
        return 0
    rec = observer.records(committed, 1)[0]
    if int(rec["seq"]) != committed or int(rec["flags"]) & L.FLAG_PADDING or int(rec["ts_us"]) <= 0:
        return 0
    return int(rec["ts_us"])


def plc_rows(snap) -> tuple[PlcRow, ...]:
    out = []
    cols = {c: i for i, c in enumerate(PLC_COLUMNS)}
    for row in snap.tables["plcs"][: min(int(snap.fields["poller.plc_count"]), MAX_PLCS)]:
        r = {c: int(row[i]) for c, i in cols.items()}
        out.append(PlcRow(
            plc_code=decode_code(r["code0"], r["code1"]),
            connected=bool(r["connected"]),
            last_good_poll_us=r["last_good_poll_us"] or None,
            last_poll_us=r["last_poll_us"] or None,
            polls=r["polls"],
            errors=r["errors"],
            overruns=r["overruns"],
            last_duration_us=r["last_duration_us"],
            tags=r["tags"],
            values=r["values"],
            consecutive_errors=r["consecutive_errors"],
            last_error_us=r["last_error_us"] or None,
            last_good_poll_age_s=_round(_age_s(snap.taken_us, r["last_good_poll_us"])),
            last_duration_ms=round(r["last_duration_us"] / 1000.0, 3),
        ))
    return tuple(out)


def figures(snap, thresholds: "Thresholds | None" = None, ring_peek_us: int = 0,
            alive: Callable[[int], bool] = pid_alive) -> Figures:
    """Every figure of one snapshot taken with ``SCHEMA``. ``alive(pid)`` decides whether a
    role's pid still runs (a caller answering many requests may pass a cached one)."""
    t = thresholds or Thresholds()
    f = snap.fields
    buf = buffer_status(snap)
    oldest = oldest_unwritten_us(snap, ring_peek_us)
    return Figures(
        ring=snap.ring,
        taken_us=snap.taken_us,
        buffer=buf,
        writer_metrics=writer_window(snap),
        writer_state=writer_state(snap),
        roles=Roles(role_status(snap, "poller", t.heartbeat_s, alive), role_status(snap, "writer", t.heartbeat_s, alive)),
        lag=Lag(
            records=buf.current_size,
            oldest_unwritten_us=oldest or None,
            oldest_unwritten_age_s=_round(_age_s(snap.taken_us, oldest)),
            last_loss_age_s=_round(_age_s(snap.taken_us, f["consumer.last_lost_us"])),
        ),
        poller=PollerCounts(
            polls=int(f["poller.polls"]),
            poll_errors=int(f["poller.poll_errors"]),
            overruns=int(f["poller.overruns"]),
            values=int(f["poller.values"]),
            bad_values=int(f["poller.bad_values"]),
            suppressed=int(f["poller.suppressed"]),
            started_us=int(f["poller.started_us"]) or None,
            uptime_s=_round(_age_s(snap.taken_us, f["poller.started_us"])),
            source=SOURCE_KIND_NAMES.get(int(f["poller.source_kind"]), "unknown") if f["poller.started_us"] else "unknown",
        ),
        plcs=plc_rows(snap),
    )


# --- the ring's input rate and headroom (the supervisor's restart waits) ---------------------
class RateMeter:
    """The ring's input rate from its ``producer.published`` counter sampled over time.

    ``add(t_s, published)`` with a monotonic clock in seconds; ``rate()`` is records/s over
    the samples of the last ``window_s`` seconds (None until two samples span ``min_span_s``).
    A counter that goes down (a new ring) starts the window again.
    """

    def __init__(self, window_s: float = 10.0, min_span_s: float = 0.5) -> None:
        self.window_s = window_s
        self.min_span_s = min_span_s
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, t_s: float, published: int) -> None:
        if self._samples and published < self._samples[-1][1]:
            self._samples.clear()
        self._samples.append((t_s, published))
        while len(self._samples) > 2 and t_s - self._samples[1][0] >= self.window_s:
            self._samples.popleft()

    def rate(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (t0, p0), (t1, p1) = self._samples[0], self._samples[-1]
        if t1 - t0 < self.min_span_s:
            return None
        return (p1 - p0) / (t1 - t0)


def headroom_s(capacity: int, published: int, committed: int, rate: float | None) -> float | None:
    """Seconds until the ring overwrites records not yet committed, at ``rate`` records/s:
    free slots / rate. None when the rate is not known yet; ``math.inf`` when nothing is
    being published."""
    if rate is None:
        return None
    free = max(0, capacity - max(0, published - committed))
    return math.inf if rate <= 0 else free / rate


# --- health ---------------------------------------------------------------------------------
HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
# Order of the statuses, worst last; also the value of the tagpipe_health_status metric.
STATUS_RANK = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}


@dataclass(**_FROZEN)
class Thresholds:
    """Health limits. Each condition is entered at one value and left at a lower one."""

    alert_pct: float = 80.0  # BUFFER_ALERT_THRESHOLD
    alert_clear_margin_pct: float = 5.0  # leave "utilization high" below alert_pct - this
    max_lag_s: float = 30.0  # HEALTH_MAX_LAG_S: oldest unwritten record older -> degraded
    lag_clear_ratio: float = 0.5  # leave "backlog old" below max_lag_s * this
    heartbeat_s: float = 10.0  # HEALTH_HEARTBEAT_S: older heartbeat = process dead
    loss_hold_s: float = 120.0  # "values lost" stays on this long after the last loss
    crash_loop_starts: int = 3  # this many (re)starts of one role ...
    crash_loop_window_s: float = 300.0  # ... within this many seconds: a crash loop

    @classmethod
    def from_settings(cls, settings: Any) -> "Thresholds":
        """The limits from loaded settings: what the web process and ``status`` both use."""
        return cls(
            alert_pct=settings.buffer_alert_threshold,
            max_lag_s=settings.health_max_lag_s,
            heartbeat_s=settings.health_heartbeat_s,
        )


@dataclass(**_FROZEN)
class Check:
    code: str  # stable identifier (the page translates it)
    severity: str  # DEGRADED or UNHEALTHY
    message: str  # English, for the API and the logs


@dataclass(**_FROZEN)
class Health:
    status: str
    checks: tuple[Check, ...]
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

    Call under the caller's lock when shared between threads; a fresh instance
    (``pipeline status``) simply uses the entry thresholds.
    """

    thresholds: Thresholds = field(default_factory=Thresholds)
    _on: set = field(default_factory=set)
    # (taken_us, epoch, poller starts, writer starts) of the readings in the crash-loop window
    _starts: deque = field(default_factory=deque)

    def _restarts(self, fig: Figures) -> tuple[int, int]:
        """(poller, writer) starts counted within the crash-loop window (a new ring epoch
        starts the window again). Needs a series of readings: a one-shot reading sees 0."""
        window_us = self.thresholds.crash_loop_window_s * US
        q = self._starts
        entry = (fig.taken_us, fig.buffer.epoch, fig.roles.poller.starts, fig.roles.writer.starts)
        if q and q[-1][1] != entry[1]:
            q.clear()
        q.append(entry)
        while len(q) > 1 and entry[0] - q[0][0] > window_us:
            q.popleft()
        return entry[2] - q[0][2], entry[3] - q[0][3]

    def _crash_loops(self, fig: Figures) -> list[Check]:
        t = self.thresholds
        checks = []
        for role, n in zip(("poller", "writer"), self._restarts(fig)):
            if n >= t.crash_loop_starts:
                checks.append(Check(f"{role}_crash_loop", UNHEALTHY,
                                    f"{role} crash loop: started {n} times in the last {t.crash_loop_window_s:g} s"))
        return checks

    def _latch(self, code: str, enter: bool, leave: bool) -> bool:
        """Hysteresis: a condition turns on when ``enter``, and off only when ``leave``."""
        if code in self._on:
            if leave:
                self._on.discard(code)
        elif enter:
            self._on.add(code)
        return code in self._on

    def evaluate(self, fig: Figures | None, missing: str = "ring missing: no poller has created it") -> Health:
        """Health of ``fig``; None means the ring cannot be read, and ``missing`` says why."""
        t = self.thresholds
        if fig is None:
            self._on.clear()
            return Health(UNHEALTHY, (Check("ring_missing", UNHEALTHY, missing),), False, False, False, False)
        checks: list[Check] = []
        buf, wr, lag = fig.buffer, fig.writer_state, fig.lag
        poller, writer = fig.roles.poller, fig.roles.writer
        if not writer.running:
            checks.append(Check("writer_down", UNHEALTHY, f"values at risk: {writer.reason}"))
        if not poller.running:
            checks.append(Check("poller_down", UNHEALTHY, f"no new values: {poller.reason}"))
        checks.extend(self._crash_loops(fig))
        loss_age = lag.last_loss_age_s
        # A loss counted by the writer lately, or slots reused before commit now while no
        # writer runs (nobody holds a copy: certainly lost, counted once a writer attaches).
        # Slots reused while the writer runs may hold records it has already read: not a loss.
        recent_loss = (loss_age is not None and loss_age < t.loss_hold_s) or (buf.overflowing_now and not writer.running)
        if self._latch("values_lost", recent_loss, not recent_loss):
            checks.append(Check("values_lost", UNHEALTHY, "values lost: the ring overflowed (writer too slow or down)"))
        spill_ok = wr.disk_state in ("ok", "low")
        if wr.disk_state == "full":
            checks.append(Check("disk_full", UNHEALTHY, "backup disk full: values cannot be spilled"))
        elif wr.disk_state == "unwritable":
            checks.append(Check("disk_unwritable", UNHEALTHY,
                                f"backup folder cannot be written ({wr.disk_error or 'unknown error'}): values cannot be spilled"))
        elif wr.disk_state == "low":
            checks.append(Check("disk_low", DEGRADED, "backup disk space low"))
        util = buf.utilization_pct
        if self._latch("utilization_high", util >= t.alert_pct, util < t.alert_pct - t.alert_clear_margin_pct):
            checks.append(Check("utilization_high", DEGRADED, f"ring {util:.1f}% full (alert at {t.alert_pct:g}%)"))
        age = lag.oldest_unwritten_age_s or 0.0
        if self._latch("backlog_old", age > t.max_lag_s, age < t.max_lag_s * t.lag_clear_ratio):
            checks.append(Check("backlog_old", DEGRADED, f"oldest unwritten value is {age:.0f} s old (limit {t.max_lag_s:g} s)"))
        db = wr.db_state
        db_ok = db in ("up", "replaying")
        if writer.running:
            where = "values go to backup files" if spill_ok else "values wait in the ring (backup files cannot be written)"
            if db in ("down", "probing") and wr.last_error_code == ERR_DB_GONE:
                # Not a network blip that ends by itself: someone must put the file back.
                checks.append(Check("database_gone", UNHEALTHY, f"database file missing or replaced (see the writer log): {where}"
                                    " until it is restored"))
            elif db in ("down", "probing"):
                checks.append(Check("database_down", DEGRADED, f"database {db}: {where}"))
            elif db == "replaying":
                checks.append(Check("replaying", DEGRADED, "catching up: replaying backup files"))
            elif db == "unknown":
                checks.append(Check("database_unknown", DEGRADED, "database state not reported by the writer yet"))
            elif db == "not_answering":
                call, waited = wr.stuck_call or "a call", wr.stuck_for_s
                since = f" for {waited:.0f} s" if waited is not None else ""
                checks.append(Check("database_not_answering", DEGRADED,
                                    f"database not answering: {call} without an answer{since}; values go to backup files"))
            elif db == "login_refused":
                checks.append(Check("login_refused", DEGRADED, "login refused: fix the password (values go to backup files)"))
            elif db == "connecting":
                checks.append(Check("database_connecting", DEGRADED, "connecting to the database (no answer yet)"))
            if db == "up" and wr.backup_files_pending:
                checks.append(Check("backups_pending", DEGRADED, f"{wr.backup_files_pending} backup files waiting for replay"))
        status = max((c.severity for c in checks), key=STATUS_RANK.__getitem__, default=HEALTHY)
        buffer_ok = "utilization_high" not in self._on and "values_lost" not in self._on
        return Health(status, tuple(checks), buffer_ok, writer.running, poller.running, db_ok)


# --- the one read path ----------------------------------------------------------------------
@dataclass(**_FROZEN)
class Reading:
    """One reading of a ring: ``figures`` is None when it cannot be read, ``problem`` says why."""

    ring: str
    taken_us: int
    figures: Figures | None
    health: Health
    problem: str | None


class TelemetryReader:
    """Reads ring ``ring`` read-only: attaches lazily, re-attaches when the ring appears
    later or is replaced by a new segment, evaluates health with memory (hysteresis).

    Not thread-safe (the web's Monitor holds a lock around ``read``). Never writes to the
    ring and never signals a process. ``log``: where attach / problem lines go (None: silent).
    """

    def __init__(self, ring: str, thresholds: Thresholds, alive: Callable[[int], bool] = pid_alive,
                 log: logging.Logger | None = None) -> None:
        self.ring = ring
        self.thresholds = thresholds
        self.health = HealthEvaluator(thresholds)
        self._alive = alive
        self._log = log
        self._obs: Observer | None = None
        self._problem_said: str | None = None

    def _observer(self) -> tuple[Observer | None, str | None]:
        if self._obs is not None and self._obs.replaced():
            if self._log:
                self._log.info("ring %r was replaced or deleted; re-attaching", self.ring)
            self._obs.close()
            self._obs = None
        if self._obs is None:
            try:
                self._obs = Observer(self.ring, telemetry=SCHEMA)
            except RingMissing as e:
                return None, f"ring missing: {e}"
            except (LayoutMismatch, OSError, ValueError) as e:
                return None, f"ring unreadable: {e}"
            if self._log:
                self._log.info("attached read-only to ring %r (capacity %d)", self.ring, self._obs.capacity)
        return self._obs, None

    def read(self, missing_hint: str = "") -> Reading:
        """Snapshot the ring and evaluate health. Never raises for a missing ring;
        ``missing_hint`` is appended to the problem in the health check."""
        obs, problem = self._observer()
        if obs is None:
            if problem != self._problem_said and self._log:
                self._log.warning("%s", problem)
            self._problem_said = problem
            health = self.health.evaluate(None, (problem or "ring missing") + missing_hint)
            return Reading(self.ring, now_us(), None, health, problem)
        self._problem_said = None
        snap = obs.snapshot()
        fig = figures(snap, self.thresholds, peek_pending_ts_us(obs, snap), self._alive)
        return Reading(self.ring, snap.taken_us, fig, self.health.evaluate(fig), None)

    def recent_gaps(self) -> list[_gaps.Gap] | None:
        """The complete rows of the ring's recent_gaps table, newest first (see
        ``gaps.ring_gaps``): the counter is read before and after the copy. None when the
        ring cannot be read."""
        obs, _ = self._observer()
        if obs is None:
            return None
        before = int(obs.h.get(_gaps.RING_COUNTER))
        snap = obs.snapshot()
        after = int(obs.h.get(_gaps.RING_COUNTER))
        return _gaps.ring_gaps(snap.tables[_gaps.RING_TABLE], before, after)

    def close(self) -> None:
        if self._obs is not None:
            self._obs.close()
            self._obs = None


def read(ring: str, thresholds: Thresholds, missing_hint: str = "") -> Reading:
    """One reading of ``ring`` with a fresh health evaluator (``pipeline status``)."""
    reader = TelemetryReader(ring, thresholds)
    try:
        return reader.read(missing_hint)
    finally:
        reader.close()
