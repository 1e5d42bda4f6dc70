"""Record content that encodes its own seq, so a torn or misplaced record is detectable.

Shared by the helper processes (``role.py``, ``bench``) and the tests: every field of
record ``seq`` is a function of ``seq``.
"""

from __future__ import annotations

import numpy as np

from shm.layout import RECORD_DTYPE

TS0 = 1_700_000_000_000_000  # us: 2023-11-14
PLCS = np.array([b"PLC%02d" % i for i in range(50)], dtype="S16")
TAGS = np.array([b"D%d" % i for i in range(997)], dtype="S16")


def make_records(start: int, n: int) -> np.ndarray:
    """Records ``start`` .. ``start + n - 1`` (seq filled in too)."""
    seq = np.arange(start, start + n, dtype=np.uint64)
    recs = np.zeros(n, dtype=RECORD_DTYPE)
    recs["seq"] = seq
    recs["ts_us"] = TS0 + seq.astype(np.int64)
    recs["value"] = seq.astype(np.float64) * 0.5
    recs["plc_code"] = PLCS[seq % 50]
    recs["tag_address"] = TAGS[seq % 997]
    recs["quality"] = 1 + (seq % 3).astype(np.uint8)
    return recs


def put_args(seq: int) -> tuple:
    """Arguments of ``Producer.put`` for record ``seq`` (same content as make_records)."""
    return (TS0 + seq, seq * 0.5, PLCS[seq % 50].tobytes().rstrip(b"\0"), TAGS[seq % 997].tobytes().rstrip(b"\0"), 1 + seq % 3)


def count_bad(recs: np.ndarray) -> int:
    """How many records do not carry the content their seq implies (torn, misplaced)."""
    if len(recs) == 0:
        return 0
    seq = recs["seq"]
    ok = (
        (recs["ts_us"] == TS0 + seq.astype(np.int64))
        & (recs["value"] == seq.astype(np.float64) * 0.5)
        & (recs["plc_code"] == PLCS[seq % 50])
        & (recs["tag_address"] == TAGS[seq % 997])
        & (recs["quality"] == 1 + (seq % 3).astype(np.uint8))
        & (recs["flags"] == 0)
    )
    return int(len(recs) - ok.sum())
