"""Record helpers shared by the SQLite sink, backup files and replay.

Identity streams: a ring's epoch is a random 63-bit number, so its top bit is clear.
Rows that come from a file without identity (the original five-column backup format, or a
corrected quarantine file written back) get a *synthetic* stream: an epoch derived from the
file's name with the top bit set (so it never collides with a ring epoch) and seq = the
row's line number. Replaying the same file twice therefore gives the same identities.
"""

from __future__ import annotations

import hashlib

import numpy as np

from shm import layout as L

SYNTHETIC_BIT = 1 << 63
# Quality code -> name for every uint8 value; an unknown code shows as "Q<n>".
_QUALITY_TABLE = np.array([L.QUALITY_NAMES.get(i, f"Q{i}") for i in range(256)], dtype=object)


def synthetic_epoch(name: str) -> int:
    """The identity stream of a file without identity columns: 64 bits, top bit set."""
    h = int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little")
    return SYNTHETIC_BIT | (h & (SYNTHETIC_BIT - 1))


def is_synthetic(epoch: int) -> bool:
    return bool(int(epoch) & SYNTHETIC_BIT)


def signed64(epoch: int) -> int:
    """``epoch`` (unsigned 64-bit) as SQLite's signed INTEGER (synthetic epochs become negative)."""
    e = int(epoch)
    return e - (1 << 64) if e >= SYNTHETIC_BIT else e


def null_mask(records: np.ndarray) -> np.ndarray:
    """True where the value is stored as NULL (BAD quality or FLAG_NULL)."""
    return (records["quality"] == L.QUALITY_BAD) | ((records["flags"] & L.FLAG_NULL) != 0)


def columns(records: np.ndarray) -> tuple[list, list, list, list, list, list]:
    """Python columns of a record array: ts_us, plc_code, tag_address, value (None for
    NULL), quality name, seq. Vectorised: this is the hot path of every write."""
    ts = records["ts_us"].tolist()
    plc, tag = code_columns(records)
    values = records["value"].tolist()
    mask = null_mask(records) | ~np.isfinite(records["value"])
    for i in np.flatnonzero(mask).tolist():
        values[i] = None
    quality = _QUALITY_TABLE[records["quality"]].tolist()
    # The same 64 bits read as signed (SQLite's INTEGER), without a copy of the column.
    seq = records["seq"].view(np.int64).tolist()
    return ts, plc, tag, values, quality, seq


ROW_WIDTH = 7  # TS, PLC_CODE, TAG_ADDRESS, TAG_VALUE, QUALITY, RING_EPOCH, SEQ


def flat_row_values(records: np.ndarray, epoch: int) -> list:
    """The row values of ``records`` in one flat list, row after row, ``ROW_WIDTH`` values
    a row in the order TS (us), PLC_CODE, TAG_ADDRESS, TAG_VALUE (None for NULL), QUALITY
    (name), RING_EPOCH (``epoch`` as given), SEQ.

    This is the form a multi-row INSERT takes its parameters in: building it with seven
    strided slice assignments instead of zipping tuples and flattening them took the
    conversion from ~0.85 to ~0.3 us per row (BENCHMARKS.md, throughput)."""
    ts, plc, tag, values, quality, seq = columns(records)
    n = len(ts)
    w = ROW_WIDTH
    flat: list = [None] * (w * n)
    flat[0::w] = ts
    flat[1::w] = plc
    flat[2::w] = tag
    flat[3::w] = values
    flat[4::w] = quality
    flat[5::w] = [epoch] * n
    flat[6::w] = seq
    return flat


def text_columns(records: np.ndarray) -> tuple[list[str], list[str], list[str], list[str], list[str], list[int]]:
    """``columns()`` as CSV text, the backup and quarantine files' form: ts as ISO-8601 UTC
    with microseconds, value as ``repr`` ("" for NULL); seq stays int."""
    ts = np.datetime_as_string(records["ts_us"].astype("datetime64[us]"), unit="us").tolist()
    _, plc, tag, values, quality, seq = columns(records)
    vals = ["" if v is None else repr(v) for v in values]
    return ts, plc, tag, vals, quality, seq


# Codes decoded so far. A plant has a few thousand tags; past this many entries a cache
# starts again (a bound on memory, not a cache policy).
_CACHE_MAX = 100_000
_TEXT: dict[bytes, str] = {}  # one field's raw bytes -> text (decode_codes)
# The record's raw code bytes, plc_code and tag_address together (trailing NULs dropped, as
# numpy gives them) -> the plc_code text, and -> the tag_address text (code_columns).
_PLC: dict[bytes, str] = {}
_TAG: dict[bytes, str] = {}
_CODE_SIZE = L.RECORD_DTYPE["plc_code"].itemsize
_PAIR_OFFSET = L.RECORD_DTYPE.fields["plc_code"][1]
if L.RECORD_DTYPE.fields["tag_address"][1] != _PAIR_OFFSET + _CODE_SIZE or L.RECORD_DTYPE["tag_address"].itemsize != _CODE_SIZE:
    raise ImportError("records.code_columns needs plc_code and tag_address adjacent and of one size in RECORD_DTYPE")
# One field spanning both codes: a single tolist() gives one bytes object per row, the key
# of both caches (its hash is computed once and kept by the bytes object).
_PAIR_DTYPE = np.dtype({"names": ["pair"], "formats": [f"S{2 * _CODE_SIZE}"], "offsets": [_PAIR_OFFSET], "itemsize": L.RECORD_DTYPE.itemsize})


def decode_codes(raw: list[bytes]) -> list[str]:
    """ASCII text of NUL-padded plc_code / tag_address bytes (numpy drops the padding);
    a byte that is not ASCII becomes U+FFFD."""
    # A plant has few distinct codes: each is decoded once, and the per-row work is one
    # dict lookup done in C (map), not a Python-level loop.
    try:
        return list(map(_TEXT.__getitem__, raw))
    except KeyError:
        if len(_TEXT) > _CACHE_MAX:
            _TEXT.clear()
        for b in set(raw).difference(_TEXT):
            _TEXT[b] = b.decode("ascii", "replace")
        return list(map(_TEXT.__getitem__, raw))


def code_columns(records: np.ndarray) -> tuple[list[str], list[str]]:
    """(plc_code texts, tag_address texts) of ``records``, the same strings as
    ``decode_codes`` of each field: ASCII, NUL padding dropped, U+FFFD for a byte that is
    not ASCII.

    The hot path of every write: codes are cached by the raw 32 bytes of the pair, so a
    row costs one ``tolist`` element and two C-level dict lookups (~0.1 us per row
    instead of ~0.23 with a lookup per field in a Python loop; BENCHMARKS.md, throughput)."""
    if records.dtype != L.RECORD_DTYPE:
        return decode_codes(records["plc_code"].tolist()), decode_codes(records["tag_address"].tolist())
    keys = records.view(_PAIR_DTYPE)["pair"].tolist()
    try:
        return list(map(_PLC.__getitem__, keys)), list(map(_TAG.__getitem__, keys))
    except KeyError:
        if len(_PLC) > _CACHE_MAX:
            _PLC.clear()
            _TAG.clear()
        for k in set(keys).difference(_PLC):
            # numpy dropped the trailing NULs of the pair; pad back to split it, then drop
            # each field's own padding as numpy does for one field (embedded NULs stay).
            full = k.ljust(2 * _CODE_SIZE, b"\0")
            _PLC[k] = full[:_CODE_SIZE].rstrip(b"\0").decode("ascii", "replace")
            _TAG[k] = full[_CODE_SIZE:].rstrip(b"\0").decode("ascii", "replace")
        return list(map(_PLC.__getitem__, keys)), list(map(_TAG.__getitem__, keys))


def make_records(
    ts_us: list[int], plc: list[str], tag: list[str], values: list[float | None], quality: list[int], seq: list[int]
) -> np.ndarray:
    """A RECORD_DTYPE array from parsed columns (None values become FLAG_NULL)."""
    n = len(ts_us)
    out = np.zeros(n, dtype=L.RECORD_DTYPE)
    if n == 0:
        return out
    out["ts_us"] = ts_us
    out["plc_code"] = [p.encode("ascii") for p in plc]
    out["tag_address"] = [t.encode("ascii") for t in tag]
    nulls = np.array([v is None for v in values], dtype=bool)
    out["value"] = [0.0 if v is None else v for v in values]
    out["quality"] = quality
    out["flags"] = np.where(nulls, L.FLAG_NULL, 0).astype(np.uint8)
    out["seq"] = np.array(seq, dtype=np.uint64)
    return out
