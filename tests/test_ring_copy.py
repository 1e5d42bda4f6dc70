"""The ring's record copies (in on publish, out on read) move records as raw bytes: every
field arrives intact, across the wrap and from strided sources."""

from __future__ import annotations

import numpy as np

from shm import layout as L
from shm.header import _copy_in, _copy_out


def _recs(n: int, base: int = 0) -> np.ndarray:
    rng = np.random.default_rng(base)
    r = np.zeros(n, dtype=L.RECORD_DTYPE)
    r["seq"] = np.arange(base, base + n, dtype=np.uint64)
    r["ts_us"] = rng.integers(-(2**62), 2**62, n)
    r["value"] = rng.normal(0, 1e300, n)
    r["value"][::7] = np.nan
    r["plc_code"] = [bytes(rng.integers(0, 256, 16, dtype=np.uint8)) for _ in range(n)]
    r["tag_address"] = [f"D{i}".encode() for i in range(n)]
    r["quality"] = rng.integers(0, 256, n)
    r["flags"] = rng.integers(0, 256, n)
    r["reserved"] = [bytes(rng.integers(0, 256, 6, dtype=np.uint8)) for _ in range(n)]
    return r


def test_copy_in_and_out_keep_every_byte_across_the_wrap():
    cap = 10
    data = np.zeros(cap, dtype=L.RECORD_DTYPE)
    recs = _recs(7, base=100)
    _copy_in(data, 6, recs)  # slots 6..9 then 0..2
    assert data[6:].tobytes() + data[:3].tobytes() == recs.tobytes()
    out = _copy_out(data, 6, 7)
    assert out.dtype == L.RECORD_DTYPE and out.flags.c_contiguous
    assert out.tobytes() == recs.tobytes()
    # A private copy: changing the ring afterwards does not change what was read.
    data["value"] = 0.0
    assert out.tobytes() == recs.tobytes()
    assert _copy_out(data, 3, 0).tobytes() == b""


def test_copy_in_from_a_strided_view():
    cap = 8
    data = np.zeros(cap, dtype=L.RECORD_DTYPE)
    recs = _recs(12, base=5)
    strided = recs[::2]  # 6 records, every other one
    _copy_in(data, 5, strided)
    assert _copy_out(data, 5, 6).tobytes() == np.ascontiguousarray(strided).tobytes()
