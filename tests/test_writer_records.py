"""Conversion of ring records into the values the SQLite sink binds: the fast paths
(codes cached by their raw bytes, seq read as signed without a copy) give exactly what
the plain per-field conversion gives, and the values survive SQLite bit for bit."""

from __future__ import annotations

import sqlite3
import struct

import numpy as np
import pytest

from pipeline.writer import records as R
from pipeline.writer.sinks.sqlite import TABLE, SqliteSink
from shm.layout import FLAG_NULL, QUALITY_BAD, QUALITY_GOOD, QUALITY_UNCERTAIN, RECORD_DTYPE

# Codes a record can carry, including what validation at the poller would refuse but a
# ring written by another producer could still hold: bytes that are not ASCII, embedded
# NULs, all 16 bytes used (no padding), empty.
PLCS = [b"KRCWO12ELOA101", b"P" * 16, b"", b"\xffX", b"a\x00b", b"\x80", b"PLC-1\x00\x00x"]
TAGS = [b"D100", b"T" * 16, b"x", b"", b"\x00z", b"\xc3\xa9\x00", b"M0.1"]


def _slow_decode(raw: bytes) -> str:
    # What numpy's S16 gives for one field (trailing NULs dropped), decoded as the sink
    # always did: ASCII, U+FFFD for any other byte.
    return raw.rstrip(b"\x00").decode("ascii", "replace")


def _records(n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    recs = np.zeros(n, dtype=RECORD_DTYPE)
    recs["seq"] = np.arange(n, dtype=np.uint64) + 1_000
    recs["ts_us"] = 1_700_000_000_000_000 + rng.integers(0, 10**9, n)
    recs["value"] = rng.normal(0, 1e6, n)
    recs["plc_code"] = [PLCS[i % len(PLCS)] for i in range(n)]
    recs["tag_address"] = [TAGS[(i * 3) % len(TAGS)] for i in range(n)]
    recs["quality"] = [(QUALITY_GOOD, QUALITY_UNCERTAIN, QUALITY_BAD)[i % 3] for i in range(n)]
    return recs


@pytest.fixture(autouse=True)
def _cold_caches():
    # Each test starts with empty caches, so the "first seen" path is exercised too.
    for cache in (R._TEXT, R._PLC, R._TAG):
        cache.clear()
    yield


def test_code_columns_equal_a_per_field_decode_for_unusual_bytes():
    recs = _records(len(PLCS) * len(TAGS))
    expect_plc = [_slow_decode(p) for p in recs["plc_code"].tolist()]
    expect_tag = [_slow_decode(t) for t in recs["tag_address"].tolist()]
    for _ in range(2):  # cold, then from the cache
        plc, tag = R.code_columns(recs)
        assert plc == expect_plc and tag == expect_tag
    assert R.decode_codes(recs["plc_code"].tolist()) == expect_plc
    assert R.decode_codes(recs["tag_address"].tolist()) == expect_tag
    assert "\ufffdX" in plc and "a\x00b" in plc and "P" * 16 in plc and "" in plc
    assert "\x00z" in tag and "\ufffd\ufffd" in tag and "T" * 16 in tag


def test_a_code_ending_in_nuls_next_to_an_empty_one_is_not_confused_with_its_neighbour():
    # The cache key is both fields' bytes with the trailing NULs dropped: (b"AB", b"")
    # and (b"A", b"B"-shifted) must stay distinct, and so must PLC padding vs tag bytes.
    recs = np.zeros(4, dtype=RECORD_DTYPE)
    recs["plc_code"] = [b"AB", b"A", b"A" + b"\x00" * 15, b"A"]
    recs["tag_address"] = [b"", b"B", b"B", b"\x00B"]
    plc, tag = R.code_columns(recs)
    assert plc == ["AB", "A", "A", "A"]
    assert tag == ["", "B", "B", "\x00B"]


def test_code_columns_of_views_and_new_codes_in_a_later_batch():
    recs = _records(40)
    strided, picked = recs[::3], recs[[5, 1, 39, 5]]
    for part in (strided, picked, recs[7:9], recs[:0]):
        plc, tag = R.code_columns(part)
        assert plc == [_slow_decode(p) for p in part["plc_code"].tolist()]
        assert tag == [_slow_decode(t) for t in part["tag_address"].tolist()]
    later = _records(3)
    later["plc_code"] = b"NEWPLC"
    later["tag_address"][1] = b"NEW.TAG"
    plc, tag = R.code_columns(later)
    assert plc == ["NEWPLC"] * 3 and tag[1] == "NEW.TAG"


def test_the_caches_are_bounded(monkeypatch):
    monkeypatch.setattr(R, "_CACHE_MAX", 10)
    for start in range(0, 60, 12):
        recs = np.zeros(12, dtype=RECORD_DTYPE)
        recs["plc_code"] = b"P"
        recs["tag_address"] = [f"D{start + i}".encode() for i in range(12)]
        plc, tag = R.code_columns(recs)
        assert tag == [f"D{start + i}" for i in range(12)] and plc == ["P"] * 12
        assert R.decode_codes(recs["tag_address"].tolist()) == tag
        # Cleared before a batch's new codes go in: never more than the bound + one batch.
        assert len(R._PLC) <= 10 + 12 and len(R._TAG) == len(R._PLC) and len(R._TEXT) <= 10 + 12


def test_columns_nulls_quality_names_and_seq_as_signed_64_bits():
    recs = np.zeros(6, dtype=RECORD_DTYPE)
    recs["plc_code"], recs["tag_address"] = b"P", b"T"
    recs["value"] = [1.5, np.nan, np.inf, -np.inf, 7.0, 8.0]
    recs["quality"] = [QUALITY_GOOD, QUALITY_GOOD, QUALITY_UNCERTAIN, QUALITY_GOOD, QUALITY_BAD, 9]
    recs["flags"] = [0, 0, 0, 0, 0, FLAG_NULL]
    recs["seq"] = np.array([0, 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1], dtype=np.uint64)
    _, _, _, values, quality, seq = R.columns(recs)
    assert values == [1.5, None, None, None, None, None]
    assert quality == ["GOOD", "GOOD", "UNCERTAIN", "GOOD", "BAD", "Q9"]
    assert seq == [0, 1, 2**62, 2**63 - 1, -(2**63), -1]
    assert R.columns(recs[::2])[5] == [0, 2**62, -(2**63)]


def test_values_survive_the_sink_bit_for_bit_with_codes_nulls_and_quality(tmp_path):
    recs = _records(500)
    # Values whose last bits matter: subnormals, the largest double, -0.0, a NaN payload
    # stored as NULL.
    recs["value"][:5] = [5e-324, np.finfo(np.float64).max, -0.0, 0.1 + 0.2, np.nan]
    recs["quality"][:5] = QUALITY_GOOD
    recs["flags"][10] = FLAG_NULL
    recs["quality"][10] = QUALITY_GOOD
    path = str(tmp_path / "r.db")
    sink = SqliteSink(path)
    try:
        res = sink.write(42, recs)
    finally:
        sink.close()
    assert res.written == len(recs)
    with sqlite3.connect(path) as conn:
        got = conn.execute(f"SELECT SEQ, TS, PLC_CODE, TAG_ADDRESS, TAG_VALUE, QUALITY, RING_EPOCH FROM {TABLE} ORDER BY SEQ").fetchall()
    assert len(got) == len(recs)
    names = {QUALITY_GOOD: "GOOD", QUALITY_BAD: "BAD", QUALITY_UNCERTAIN: "UNCERTAIN"}
    for row, rec in zip(got, recs):
        seq, ts, plc, tag, value, quality, epoch = row
        assert (seq, ts, epoch) == (int(rec["seq"]), int(rec["ts_us"]), 42)
        assert plc == _slow_decode(bytes(rec["plc_code"])) and tag == _slow_decode(bytes(rec["tag_address"]))
        assert quality == names[int(rec["quality"])]
        null = int(rec["quality"]) == QUALITY_BAD or int(rec["flags"]) & FLAG_NULL or not np.isfinite(rec["value"])
        if null:
            assert value is None
        elif rec["value"] == 0:
            assert value == 0.0  # SQLite stores a REAL -0.0 as 0 (its own rule, not ours)
        else:
            assert struct.pack("<d", value) == struct.pack("<d", float(rec["value"]))
    # What the sink binds keeps every bit, the sign of -0.0 included.
    flat = R.flat_row_values(recs[:5], 42)
    bound = flat[3 :: R.ROW_WIDTH]
    assert [struct.pack("<d", v) for v in bound[:4]] == [struct.pack("<d", float(v)) for v in recs["value"][:4]]
    assert bound[4] is None
