"""The Oracle sink through the real python-oracledb client (Thin) on a real socket.

Every test runs against the SQLite-backed emulator (seerdb's wire-protocol server) and,
when ORACLE_TEST_DSN / ORACLE_TEST_USER / ORACLE_TEST_PASSWORD are set, against that real
Oracle too (the ``[oracle]`` variants; skipped with the reason otherwise).
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pytest

from pipeline.writer.sinks.base import PermanentSinkError, Sink
from shm.layout import FLAG_NULL, QUALITY_BAD, QUALITY_UNCERTAIN
from tests.oracle_emulator.fixtures import *  # noqa: F401,F403  (fixtures)
from tests.oracle_emulator.fixtures import TS0_US, make_records, make_sink
from tests.oracle_emulator.targets import CURSOR_COLS, tag_data_cols
from tests.oracle_emulator.backend import Col

EPOCH_TOP_BIT = (1 << 63) | 0x1234_5678_9ABC  # synthetic epochs of replayed files have it


def ts(us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=us)


def test_oracle_rows_arrive_with_types_intact(target, tables):
    table, cursor_table = tables
    recs = make_records(range(100, 105))
    recs["ts_us"][1] += 1  # 1 us apart: fractional seconds must survive to the microsecond
    recs["quality"][2] = QUALITY_BAD  # BAD -> NULL value
    recs["flags"][3] = FLAG_NULL  # explicit NULL
    recs["quality"][4] = QUALITY_UNCERTAIN
    recs["value"][4] = -1234.5678
    recs["tag_address"][4] = b"D102"
    sink = make_sink(target, table, cursor_table)
    assert isinstance(sink, Sink) and sink.kind == "oracle"
    sink.open()
    try:
        res = sink.write(EPOCH_TOP_BIT, recs)
    finally:
        sink.close()
    assert (res.written, res.duplicates, res.rejected) == (5, 0, [])
    rows = target.rows(table, "SEQ")
    assert [r["SEQ"] for r in rows] == [100, 101, 102, 103, 104]
    assert {r["RING_EPOCH"] for r in rows} == {EPOCH_TOP_BIT}
    assert [r["TS"] for r in rows] == [ts(int(u)) for u in recs["ts_us"]]
    assert rows[1]["TS"].microsecond == (TS0_US + 101 * 1000 + 1) % 1_000_000
    assert [r["TAG_VALUE"] for r in rows] == [10.0, 10.1, None, None, -1234.5678]
    assert [r["QUALITY"] for r in rows] == ["GOOD", "GOOD", "BAD", "GOOD", "UNCERTAIN"]
    assert rows[0]["PLC_CODE"] == "KRCWO12ELOA101" and rows[4]["TAG_ADDRESS"] == "D102"
    assert target.rows(cursor_table) [0]["NEXT_SEQ"] == 105


def test_oracle_resent_records_are_duplicates_not_rows(target, tables):
    table, cursor_table = tables
    sink = make_sink(target, table, cursor_table)
    try:
        assert sink.write(7, make_records(range(0, 50))).written == 50
        again = sink.write(7, make_records(range(0, 50)))
        assert (again.written, again.duplicates) == (0, 50)
        overlap = sink.write(7, make_records(range(40, 80)))
        assert (overlap.written, overlap.duplicates) == (30, 10)
        other_epoch = sink.write(8, make_records(range(0, 10)))  # streams are independent
        assert other_epoch.written == 10
    finally:
        sink.close()
    assert len(target.rows(table)) == 90
    assert sorted((r["RING_EPOCH"], r["NEXT_SEQ"]) for r in target.rows(cursor_table)) == [(7, 80), (8, 10)]


def test_oracle_bad_rows_are_quarantined_before_commit_and_the_rest_commits(target):
    table, cursor_table = target.unique("TAG_DATA"), target.unique("TP_CURSOR")
    target.create_table(table, tag_data_cols(address_size=8, value_precision=6, value_scale=2), ("RING_EPOCH", "SEQ"))
    target.create_table(cursor_table, CURSOR_COLS, ("RING_EPOCH",))
    recs = make_records(range(0, 200))
    recs["tag_address"][[5, 150]] = b"D100-TOO-LONG"  # ORA-12899
    recs["value"][[17, 99]] = 12_345_678.0  # NUMBER(6,2) -> ORA-01438
    recs["value"][42] = np.nan  # never sent: refused before binding
    recs["value"][60] = 1e200  # no Oracle NUMBER holds it: the client would fail the whole batch (DPY-4003)
    recs["value"][61] = 5e-324
    recs["value"][62] = 0.0  # fine
    seen = {}

    def on_rejected(rows, errors):
        # Called before the commit: nothing of the batch is visible to others yet.
        seen["visible_rows"] = len(target.rows(table))
        seen["seqs"] = rows["seq"].tolist()
        seen["codes"] = [e.code for e in errors]

    sink = make_sink(target, table, cursor_table, ORACLE_INSERT_CHUNK_ROWS="100")  # two round trips
    try:
        res = sink.write(3, recs, on_rejected)
    finally:
        sink.close()
    assert seen["visible_rows"] == 0
    assert seen["seqs"] == [5, 17, 42, 60, 61, 99, 150]
    assert seen["codes"] == ["ORA-12899", "ORA-01438", "TAGPIPE-VALUE", "TAGPIPE-VALUE", "TAGPIPE-VALUE", "ORA-01438", "ORA-12899"]
    assert [r.index for r in res.rejected] == [5, 17, 42, 60, 61, 99, 150]
    assert res.written == 193 and res.duplicates == 0
    stored = sorted(r["SEQ"] for r in target.rows(table))
    assert stored == [s for s in range(200) if s not in (5, 17, 42, 60, 61, 99, 150)]
    assert target.rows(cursor_table)[0]["NEXT_SEQ"] == 200  # rejected rows are not sent again


def test_oracle_failing_quarantine_commits_nothing(target, tables):
    table, cursor_table = tables
    recs = make_records(range(0, 20))
    recs["value"][3] = np.inf

    def on_rejected(rows, errors):
        raise OSError("quarantine disk full")

    sink = make_sink(target, table, cursor_table)
    try:
        with pytest.raises(OSError):
            sink.write(1, recs, on_rejected)
        assert target.rows(table) == [] and target.rows(cursor_table) == []
        res = sink.write(1, recs, lambda rows, errors: None)  # the same batch, quarantine works now
        assert (res.written, len(res.rejected)) == (19, 1), res.rejected[:3]
    finally:
        sink.close()


def test_oracle_existing_table_with_other_column_names(target):
    table, cursor_table = target.unique("PLANT_DATA"), target.unique("TP_CURSOR")
    target.create_table(table, [
        Col("MEAS_TIME", "TIMESTAMP", nullable=False), Col("PLC_ID", "VARCHAR2", 32, nullable=False),
        Col("TAG_NAME", "VARCHAR2", 32, nullable=False), Col("VAL", "NUMBER"), Col("QUAL", "VARCHAR2", 12),
    ])  # no identity columns: exactly-once lives in the cursor table alone
    target.create_table(cursor_table, CURSOR_COLS, ("RING_EPOCH",))
    mapping = "TS=MEAS_TIME,PLC_CODE=PLC_ID,TAG_ADDRESS=TAG_NAME,TAG_VALUE=VAL,QUALITY=QUAL,RING_EPOCH=-,SEQ=-"
    sink = make_sink(target, table, cursor_table, ORACLE_COLUMNS=mapping)
    try:
        assert sink.write(11, make_records(range(0, 30))).written == 30
        assert sink.write(11, make_records(range(20, 40))).duplicates == 10
    finally:
        sink.close()
    rows = target.rows(table, "MEAS_TIME")
    assert len(rows) == 40
    assert rows[0] == {"MEAS_TIME": ts(TS0_US), "PLC_ID": "KRCWO12ELOA101", "TAG_NAME": "D100", "VAL": 0, "QUAL": "GOOD"}
    assert rows[-1]["VAL"] == 3.9


def test_oracle_missing_table_is_permanent(target, tables):
    _, cursor_table = tables
    sink = make_sink(target, "NO_SUCH_TABLE_X", cursor_table)
    try:
        with pytest.raises(PermanentSinkError) as err:
            sink.write(1, make_records(range(3)))
        assert err.value.code == "ORA-00942"
        assert sink.probe() is False  # the circuit stays open until the table exists
    finally:
        sink.close()


def test_oracle_missing_mapped_column_is_permanent(target, tables):
    table, cursor_table = tables
    sink = make_sink(target, table, cursor_table, ORACLE_COLUMNS="TS=MEAS_TIME")
    try:
        with pytest.raises(PermanentSinkError) as err:
            sink.write(1, make_records(range(3)))
        assert err.value.code == "ORA-00904"
    finally:
        sink.close()


def test_oracle_no_insert_privilege_is_permanent(target, tables):
    if target.kind != "emulator":
        pytest.skip("needs a second schema without grants on a real Oracle")
    table, cursor_table = tables
    target.make_read_only(table)
    sink = make_sink(target, table, cursor_table)
    try:
        with pytest.raises(PermanentSinkError) as err:
            sink.write(1, make_records(range(3)))
        assert err.value.code == "ORA-01031"
    finally:
        sink.close()


def test_oracle_bad_login_is_permanent_and_the_password_is_never_shown(target, tables, caplog):
    table, cursor_table = tables
    secret = "Wr0ng-s3cret-pw"
    caplog.set_level(logging.DEBUG)
    sink = make_sink(target, table, cursor_table, ORACLE_PASSWORD=secret, ORACLE_WALLET_PASSWORD="wallet-s3cret")
    try:
        sink.open()  # the pool is created; the login fails on first use
        with pytest.raises(PermanentSinkError) as err:
            sink.write(1, make_records(range(3)))
        assert err.value.code == "ORA-01017"
        assert sink.probe() is False
        shown = [str(err.value), repr(sink.cfg), sink.describe(), caplog.text]
    finally:
        sink.close()
    for text in shown:
        assert secret not in text and "wallet-s3cret" not in text

