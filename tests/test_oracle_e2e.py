"""End to end: producer process -> ring -> ``python -m pipeline.writer`` -> Oracle wire
protocol -> database, with the writer SIGKILLed while the server keeps running."""

from __future__ import annotations

import random
import signal
import time

from tests.oracle_emulator.fixtures import *  # noqa: F401,F403  (fixtures)
from tests.writer_helpers.util import finish, halt, log_text, producer_done, ring_fields, start_producer, start_writer, wait_until


def test_oracle_writer_sigkilled_repeatedly_loses_nothing_and_duplicates_nothing(ring_name, tmp_path, target, tables):
    table, cursor_table = tables
    total = 12_000
    env = target.env(ORACLE_TABLE=table, ORACLE_CURSOR_TABLE=cursor_table, BUFFER_BATCH_SIZE="500",
                     BUFFER_WRITE_INTERVAL="0.1", ORACLE_POOL_MIN="1", ORACLE_POOL_MAX="2")
    prod = start_producer(ring_name, tmp_path, count=total, rate=3000, batch=200)
    writer = start_writer(ring_name, tmp_path, **env)
    rng = random.Random(11)
    try:
        for _ in range(4):
            wait_until(lambda: "writing ring" in log_text(writer), 60, "the writer to attach")
            time.sleep(rng.uniform(0.3, 1.2))
            writer.send_signal(signal.SIGKILL)
            writer.wait(10)
            writer = start_writer(ring_name, tmp_path, **env)
        assert producer_done(prod) == total
        # The last writer may find everything already committed by its predecessor: wait
        # until it holds the consumer role before counting starts.
        wait_until(lambda: "writing ring" in log_text(writer), 60, "the last writer to attach")
        wait_until(lambda: ring_fields(ring_name)["consumer.committed"] >= total, 120, "every record committed from the ring")
        # On a loaded machine a slow call may spill a batch to a backup file (durable, so
        # it left the ring): its rows reach the table when it has been replayed.
        wait_until(lambda: ring_fields(ring_name)["writer.backup_rows_pending"] == 0, 120, "backup files replayed")
        rows = target.rows(table)
        epochs = {r["RING_EPOCH"] for r in rows}
        seqs = sorted(r["SEQ"] for r in rows)
        assert len(epochs) == 1
        assert seqs == list(range(total)), f"{len(seqs)} rows, {len(set(seqs))} distinct"
        assert target.rows(cursor_table)[0]["NEXT_SEQ"] == total
        f = ring_fields(ring_name)
        assert f["consumer.lost"] == 0 and f["consumer.starts"] == 5
        rc, err = finish(writer)
        assert rc == 0, err
        assert target.password not in err
    finally:
        halt(writer)
        halt(prod)


def test_oracle_writer_into_an_existing_table_quarantines_bad_rows(ring_name, tmp_path, target):
    """The writer process on a mapped plant table without identity columns: rows the
    database refuses (ORA-01438 here) land in the quarantine file with their code, the
    rest in the table, each once."""
    import csv

    from tests.oracle_emulator.backend import Col
    from tests.oracle_emulator.targets import CURSOR_COLS

    table, cursor_table = target.unique("MEAS_DATA"), target.unique("TP_CURSOR")
    target.create_table(table, [Col("MEAS_TIME", "TIMESTAMP", nullable=False), Col("PLC_ID", "VARCHAR2", 32, nullable=False),
                                Col("TAG_NAME", "VARCHAR2", 32, nullable=False), Col("VAL", "NUMBER", 10, 2)])
    target.create_table(cursor_table, CURSOR_COLS, ("RING_EPOCH",))
    total, bad_every = 3_000, 250  # the producer gives every 250th record the value 1e12
    env = target.env(ORACLE_TABLE=table, ORACLE_CURSOR_TABLE=cursor_table, BUFFER_BATCH_SIZE="500", BUFFER_WRITE_INTERVAL="0.1",
                     ORACLE_COLUMNS="TS=MEAS_TIME,PLC_CODE=PLC_ID,TAG_ADDRESS=TAG_NAME,TAG_VALUE=VAL,QUALITY=-,RING_EPOCH=-,SEQ=-")
    prod = start_producer(ring_name, tmp_path, count=total, rate=0, batch=500, bad_every=bad_every)
    writer = start_writer(ring_name, tmp_path, **env)
    try:
        assert producer_done(prod) == total
        wait_until(lambda: ring_fields(ring_name)["consumer.committed"] >= total, 120, "every record committed from the ring")
        bad = total // bad_every
        rows = target.rows(table)
        assert len(rows) == total - bad
        assert all(r["VAL"] < 1e12 for r in rows)
        qfiles = sorted((tmp_path / "backup" / "quarantine").glob("quarantine_*.csv"))
        assert qfiles, "no quarantine file"
        quarantined = [r for f in qfiles for r in csv.DictReader(f.open())]
        assert len(quarantined) == bad
        assert {r["error_code"] for r in quarantined} == {"ORA-01438"}
        assert target.rows(cursor_table)[0]["NEXT_SEQ"] == total
        rc, err = finish(writer)
        assert rc == 0, err
    finally:
        halt(writer)
        halt(prod)
