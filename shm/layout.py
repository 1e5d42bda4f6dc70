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
                             FLAG_NULL (value is NULL), FLAG_GAP (not a value: a gap
                             of collection, see pipeline/common/gaps.py)
    58     6    reserved     zero

The ring's epoch (a random 63-bit id chosen when the segment is created) is in the
header, so a record's identity is (epoch, seq).

Header: little-endian uint64 words (float64 where ``kind`` says so). Each word has
exactly one writer (its ``owner``): ``creator`` words are written once at creation,
``producer`` words only by the poller, ``consumer`` words only by the writer. Each
owner's hot words sit on their own 64-byte lines. Words 128 and up are the telemetry
area, whose words and tables the caller declares (``shm.telemetry``). Counters only go up; a restart shows
as a new ``*.starts`` value or a new epoch, never as a silent reset. Any change to this
file's offsets or dtype must bump ``LAYOUT_VERSION``.

The table of fields (name, word index, kind, owner, meaning) is ``FIELDS``;
``describe_layout()`` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAGIC = int.from_bytes(b"TAGPIPE1", "little")
LAYOUT_VERSION = 2  # 2: telemetry area laid out by the caller's schema (shm.telemetry)

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
FLAG_GAP = 0x04  # a gap-ledger record (pipeline/common/gaps.py), routed to the gap table

HEADER_BYTES = 16384
HEADER_WORDS = HEADER_BYTES // 8

# Capacity bounds: at least one full batch fits; at most what a plant server can spare.
MIN_CAPACITY = 16
MAX_CAPACITY = 50_000_000  # 3.2 GB of records

# Enumeration stored in the roles' state words.
ROLE_STATE = {0: "stopped", 1: "running", 2: "stopping", 3: "waiting"}


@dataclass(frozen=True)
class Field:
    name: str
    word: int
    kind: str  # "u64", "i64" or "f64"
    owner: str  # "creator", "producer" or "consumer"
    doc: str


def _region(base: int, owner: str, rows: list[tuple[str, str, str]]) -> list[Field]:
    return [Field(name, base + i, kind, owner, doc) for i, (name, kind, doc) in enumerate(rows)]


# Word bases of each region (each a multiple of 8 words = one 64-byte line). Words from
# 128 on are the telemetry area, laid out by the caller's schema (see ``shm.telemetry``).
IDENTITY_BASE = 0
PRODUCER_BASE = 16
CONSUMER_BASE = 48

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
            ("telemetry_schema", "u64", "fingerprint of the telemetry schema of the creator (0: none)"),
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
            ("consumer.committed", "u64", "records below this seq are durable (the consumer said so in commit())"),
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
)

FIELD_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}

assert len({f.word for f in FIELDS}) == len(FIELDS)


def segment_bytes(capacity: int) -> int:
    """Bytes of shared memory a ring of ``capacity`` records takes."""
    return HEADER_BYTES + capacity * RECORD_SIZE


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
