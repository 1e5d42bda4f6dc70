"""pytest fixtures and helpers shared by tests/test_oracle_*.py (import with ``*``)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.common.settings import load_settings
from shm.layout import QUALITY_GOOD, RECORD_DTYPE

from .proxy import FaultProxy
from .targets import EmulatorTarget, OracleTarget, Target, real_oracle_reason, tag_data_cols, CURSOR_COLS

__all__ = ["target", "tables", "proxy", "make_records", "make_sink", "Target"]

TS0_US = 1_736_937_045_123_456  # 2025-01-15T10:30:45.123456Z


@pytest.fixture(params=["emulator", pytest.param("oracle", marks=pytest.mark.oracle_real)])
def target(request, tmp_path):
    """The database the test runs against: the emulator, or a real Oracle if configured."""
    if request.param == "oracle":
        reason = real_oracle_reason()
        if reason:
            pytest.skip(reason)
        t: Target = OracleTarget()
    else:
        t = EmulatorTarget(tmp_path)
    yield t
    t.close()


@pytest.fixture
def tables(target):
    """Fresh TAG_DATA-shaped and cursor tables; returns (table, cursor_table)."""
    table, cursor_table = target.unique("TAG_DATA"), target.unique("TP_CURSOR")
    target.create_table(table, tag_data_cols(), ("RING_EPOCH", "SEQ"))
    target.create_table(cursor_table, CURSOR_COLS, ("RING_EPOCH",))
    return table, cursor_table


@pytest.fixture
def proxy(target):
    p = FaultProxy(target.port, target.host)
    yield p
    p.close()


def make_records(seqs, ts_us=None, values=None, plc=b"KRCWO12ELOA101", addr=b"D100", quality=QUALITY_GOOD, flags=0) -> np.ndarray:
    """A RECORD_DTYPE batch: seq as given, ts 1 ms apart from TS0 + 0.123456 s, value = seq / 10."""
    seqs = np.asarray(list(seqs), dtype=np.uint64)
    r = np.zeros(len(seqs), dtype=RECORD_DTYPE)
    r["seq"] = seqs
    r["ts_us"] = TS0_US + seqs.astype(np.int64) * 1000 if ts_us is None else ts_us
    r["value"] = seqs / 10.0 if values is None else values
    r["plc_code"], r["tag_address"], r["quality"], r["flags"] = plc, addr, quality, flags
    return r


def make_sink(target: Target, table: str, cursor_table: str, port: int | None = None, **env: str):
    """An OracleSink for ``target`` (through a proxy when ``port`` is given)."""
    from pipeline.writer.sinks.oracle import OracleSink

    settings = load_settings(target.env(port, ORACLE_TABLE=table, ORACLE_CURSOR_TABLE=cursor_table, **env), env_file=None)
    return OracleSink.from_settings(settings)
