"""The ring's binary layout: one record dtype and one header table, defined here only.

Segment = header (``HEADER_BYTES``) followed by ``capacity`` records of ``RECORD_DTYPE``.

Record (64 bytes, little-endian, numpy structured dtype ``RECORD_DTYPE``)::

    offset size field        meaning
    0      8    seq          uint64 sequence number, never wraps; slot = seq % capacity
    8      8    ts_us        int64 poll time, microseconds since 1970-01-01 UTC
    16     8    value        float64 tag value (meaningless when quality is BAD or
                             flags has FLAG_NULL: stored as NULL)
    24     16   plc_code     ASCII, NUL padded, at most 16 bytes (e.g. KRCWO12ELOA101)
    40     16   tag_address  ASCII, NUL padded, at most 16 bytes (e.g. D100)
    56     1    quality      QUALITY_GOOD=1, QUALITY_BAD=2, QUALITY_UNCERTAIN=3
    57     1    flags        FLAG_PADDING (hole left by a producer killed mid-publish),
                             FLAG_NULL (value is NULL)
    58     6    reserved     zero

The ring's epoch (a random 63-bit id chosen when the segment is created) is in the
header, so a record's identity is (epoch, seq).

Header: little-endian uint64 words (float64 where ``kind`` says so). Each word has
exactly one writer (its ``owner``): ``creator`` words are written once at creation,
``producer`` words only by the poller, ``consumer`` words only by the writer. Each
owner's hot words sit on their own 64-byte lines. Counters only go up; a restart shows
as a new ``*.starts`` value or a new epoch, never as a silent reset. Any change to this
file's offsets or dtype must bump ``LAYOUT_VERSION``.

The table of fields (name, word index, kind, owner, meaning) is ``FIELDS``;
``describe_layout()`` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAGIC = int.from_bytes(b"TAGPIPE1", "little")
LAYOUT_VERSION = 1

RECORD_DTYPE = np.dtype(
    [
        ("seq", "<u8"),
        ("ts_us", "<i8"),
        ("value", "<f8"),
        ("plc_code", "S16"),
        ("tag_address", "S16"),
        ("quality", "u1"),
        ("flags", "u1"),
        ("reserved", "V6"),
    ]
)
RECORD_SIZE = RECORD_DTYPE.itemsize
assert RECORD_SIZE == 64

PLC_CODE_MAX = 16
TAG_ADDRESS_MAX = 16

QUALITY_GOOD = 1
QUALITY_BAD = 2
QUALITY_UNCERTAIN = 3
QUALITY_NAMES = {QUALITY_GOOD: "GOOD", QUALITY_BAD: "BAD", QUALITY_UNCERTAIN: "UNCERTAIN"}
QUALITY_CODES = {name: code for code, name in QUALITY_NAMES.items()}

FLAG_PADDING = 0x01
FLAG_NULL = 0x02

HEADER_BYTES = 16384
HEADER_WORDS = HEADER_BYTES // 8

# Capacity bounds: at least one full batch fits; at most what a plant server can spare.
MIN_CAPACITY = 16
MAX_CAPACITY = 50_000_000  # 3.2 GB of records

# Rolling windows kept in the header so a restarted reader still answers.
HOUR_BUCKETS = 60  # one per minute: producer's published / overwritten counts
HOUR_BUCKET_S = 60
WRITER_BUCKETS = 30  # one per 10 s: the writer's 5-minute rolling metrics
WRITER_BUCKET_S = 10
MAX_PLCS = 64  # per-PLC state slots written by the poller
PLC_SLOT_WORDS = 16

# Enumerations stored in header words.
ROLE_STATE = {0: "stopped", 1: "running", 2: "stopping", 3: "waiting"}
DB_STATE = {0: "unknown", 1: "up", 2: "down", 3: "probing", 4: "replaying"}
# issue 18: the writer's first contact, a call that does not answer, a refused login.
DB_STATE.update({5: "connecting", 6: "not_answering", 7: "login_refused"})
DB_STATE_CODES = {name: code for code, name in DB_STATE.items()}
# issue 18: which database call the writer is waiting for (writer.stuck_call).
STUCK_CALL = {0: "none", 1: "connect", 2: "write", 3: "first contact"}
STUCK_CALL_CODES = {name: code for code, name in STUCK_CALL.items()}
SINK_KIND = {0: "none", 1: "sqlite", 2: "oracle"}
DISK_STATE = {0: "ok", 1: "low", 2: "full"}


@dataclass(frozen=True)
class Field:
    name: str
    word: int
    kind: str  # "u64", "i64" or "f64"
    owner: str  # "creator", "producer" or "consumer"
    doc: str


def _region(base: int, owner: str, rows: list[tuple[str, str, str]]) -> list[Field]:
    return [Field(name, base + i, kind, owner, doc) for i, (name, kind, doc) in enumerate(rows)]


# Word bases of each region (each a multiple of 8 words = one 64-byte line).
IDENTITY_BASE = 0
PRODUCER_BASE = 16
CONSUMER_BASE = 48
PRODUCER_STATS_BASE = 128
HOUR_BUCKETS_BASE = 256  # HOUR_BUCKETS x 4 words: minute, published, overwritten, spare
WRITER_STATS_BASE = 512
WRITER_BUCKETS_BASE = 640  # WRITER_BUCKETS x 8 words, see WRITER_BUCKET_FIELDS
PLC_TABLE_BASE = 1024  # MAX_PLCS x PLC_SLOT_WORDS words, see PLC_SLOT_FIELDS

FIELDS: list[Field] = (
    _region(
        IDENTITY_BASE,
        "creator",
        [
            ("magic", "u64", "b'TAGPIPE1' little-endian"),
            ("layout_version", "u64", "LAYOUT_VERSION of the creator"),
            ("record_size", "u64", "bytes per record (64)"),
            ("capacity", "u64", "records in the ring"),
            ("data_offset", "u64", "byte offset of record 0 (HEADER_BYTES)"),
            ("epoch", "u64", "random id of this ring; part of every record's identity"),
            ("created_us", "i64", "creation time, us since epoch UTC"),
            ("header_bytes", "u64", "HEADER_BYTES"),
        ],
    )
    + _region(
        PRODUCER_BASE,
        "producer",
        [
            ("producer.claim", "u64", "end of the records being written (set before copying)"),
            ("producer.published", "u64", "end of the records fully written (set after copying)"),
            ("producer.heartbeat_us", "i64", "last sign of life, us since epoch UTC"),
            ("producer.pid", "u64", "pid of the current producer (0 when none)"),
            ("producer.starts", "u64", "how many producers have attached"),
            ("producer.state", "u64", "ROLE_STATE code"),
            ("producer.overwritten", "u64", "records overwritten before the consumer committed them (producer's count)"),
            ("producer.overwritten_upto", "u64", "records below this seq have been overwritten or committed"),
            ("producer.padding", "u64", "padding records published to fill holes left by killed producers"),
            ("producer.batches", "u64", "publish calls"),
            ("producer.alert_active", "u64", "1 while utilization is above BUFFER_ALERT_THRESHOLD"),
            ("producer.alerts", "u64", "times utilization crossed BUFFER_ALERT_THRESHOLD upwards"),
        ],
    )
    + _region(
        CONSUMER_BASE,
        "consumer",
        [
            ("consumer.committed", "u64", "records below this seq are durable (database or fsynced backup)"),
            ("consumer.heartbeat_us", "i64", "last sign of life, us since epoch UTC"),
            ("consumer.pid", "u64", "pid of the current consumer (0 when none)"),
            ("consumer.starts", "u64", "how many consumers have attached"),
            ("consumer.state", "u64", "ROLE_STATE code"),
            ("consumer.lost", "u64", "records overwritten before the consumer could read them (exact)"),
            ("consumer.padding", "u64", "padding records skipped"),
            ("consumer.delivered", "u64", "records made durable (excluding padding)"),
            ("consumer.batches", "u64", "batches committed"),
            ("consumer.last_lost_us", "i64", "when records were last found lost"),
            # Commit journal: totals are written here first, then ``committed`` (the commit
            # point), then copied to the totals above; a consumer killed in between
            # finishes the copy when the next one attaches, so counts stay exact.
            ("consumer.j_end", "u64", "journal: committed value of the last commit"),
            ("consumer.j_lost", "u64", "journal: consumer.lost after the last commit"),
            ("consumer.j_padding", "u64", "journal: consumer.padding after the last commit"),
            ("consumer.j_delivered", "u64", "journal: consumer.delivered after the last commit"),
            ("consumer.j_batches", "u64", "journal: consumer.batches after the last commit"),
        ],
    )
    + _region(
        PRODUCER_STATS_BASE,
        "producer",
        [
            ("poller.polls", "u64", "poll cycles completed (all groups)"),
            ("poller.poll_errors", "u64", "poll cycles with a failed read"),
            ("poller.overruns", "u64", "polls that took longer than their interval"),
            ("poller.values", "u64", "values published"),
            ("poller.bad_values", "u64", "BAD-quality values published"),
            ("poller.suppressed", "u64", "values suppressed by deadband (report by exception)"),
            ("poller.plc_count", "u64", "PLC slots in use in the PLC table"),
            ("poller.started_us", "i64", "when the current poller started"),
            ("poller.source_kind", "u64", "0 simulator, 1 modbus, 2 load mode, 3 mixed, 4 mc, 5 opcua"),
        ],
    )
    + _region(
        WRITER_STATS_BASE,
        "consumer",
        [
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
            ("writer.last_error_code", "u64", "0, or a code for the last database error class"),
            ("writer.probes", "u64", "database probes made while the circuit was open (total)"),
            ("writer.backup_bytes_pending", "u64", "bytes of backup files waiting for replay"),
            ("writer.backup_oldest_us", "i64", "poll time of the oldest row in backup files waiting for replay (0: none)"),
            ("writer.corrupt_lines", "u64", "unreadable backup-file lines sent to quarantine (total; also in rows_quarantined)"),
            # issue 18: a database call that has not answered for a while (or was abandoned).
            ("writer.stuck_call", "u64", "STUCK_CALL code of the database call not answering (0: none)"),
            ("writer.stuck_since_us", "i64", "when that call started (0: none)"),
        ],
    )
)

# One 10-second bucket of writer metrics: bucket index is floor(time_s / WRITER_BUCKET_S).
WRITER_BUCKET_FIELDS = ("index", "batches_ok", "batches_failed", "items", "latency_us_sum", "latency_us_max")
WRITER_BUCKET_WORDS = 8
# One minute of the producer's hour window.
HOUR_BUCKET_FIELDS = ("minute", "published", "overwritten")
HOUR_BUCKET_WORDS = 4
# One PLC slot (words): code (2 words, ASCII), then the counters.
PLC_SLOT_FIELDS = (
    "code0",
    "code1",
    "connected",
    "last_good_poll_us",
    "last_poll_us",
    "polls",
    "errors",
    "overruns",
    "last_duration_us",
    "tags",
    "values",
    "consecutive_errors",
    "last_error_us",
)

FIELD_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}

assert HOUR_BUCKETS_BASE + HOUR_BUCKETS * HOUR_BUCKET_WORDS <= WRITER_STATS_BASE
assert WRITER_BUCKETS_BASE + WRITER_BUCKETS * WRITER_BUCKET_WORDS <= PLC_TABLE_BASE
assert PLC_TABLE_BASE + MAX_PLCS * PLC_SLOT_WORDS <= HEADER_WORDS
assert len(PLC_SLOT_FIELDS) <= PLC_SLOT_WORDS
assert len({f.word for f in FIELDS}) == len(FIELDS)


def segment_bytes(capacity: int) -> int:
    """Bytes of shared memory a ring of ``capacity`` records takes."""
    return HEADER_BYTES + capacity * RECORD_SIZE


def encode_code(text: str) -> tuple[int, int]:
    """Pack an ASCII code of at most 16 bytes into two header words."""
    raw = text.encode("ascii")
    if len(raw) > 16:
        raise ValueError(f"code {text!r} is longer than 16 bytes")
    raw = raw.ljust(16, b"\0")
    return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")


def decode_code(w0: int, w1: int) -> str:
    raw = int(w0).to_bytes(8, "little") + int(w1).to_bytes(8, "little")
    return raw.rstrip(b"\0").decode("ascii", "replace")


def check_field_text(what: str, text: str, limit: int = 16) -> bytes:
    """Validate a plc_code / tag_address where it enters: ASCII, 1..limit bytes.

    Raises ValueError with a message naming ``what`` and the value; never truncates.
    """
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {text!r} must be ASCII") from None
    if not raw:
        raise ValueError(f"{what} must not be empty")
    if len(raw) > limit:
        raise ValueError(f"{what} {text!r} is {len(raw)} bytes long; at most {limit} fit in a record")
    # Printable ASCII without space, comma or quotes: codes travel through CSV backup and
    # quarantine files and must come back byte for byte.
    bad = sorted({chr(b) for b in raw if b <= 0x20 or b >= 0x7F or b in b",\"'"})
    if bad:
        raise ValueError(
            f"{what} {text!r} must not contain spaces, control characters, commas or quotes (found {''.join(bad)!r})"
        )
    return raw


def describe_layout() -> str:
    lines = [f"{'word':>5} {'kind':4} {'owner':9} name: meaning"]
    for f in FIELDS:
        lines.append(f"{f.word:>5} {f.kind:4} {f.owner:9} {f.name}: {f.doc}")
    return "\n".join(lines)
