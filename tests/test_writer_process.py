"""The writer as a real process: exactly once through SIGKILLs, retries then a backup
file, orderly stop, bad settings, a second writer, waiting for the ring."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time


from tests.writer_helpers.util import (
    backup_files,
    db_counts,
    db_path,
    db_seqs,
    finish,
    halt,
    log_text,
    producer_done,
    ring_fields,
    ring_value,
    start_producer,
    start_writer,
    wait_until,
)


def test_writer_exactly_once_under_repeated_sigkill(ring_name, tmp_path):
    """Kill the writer with SIGKILL at random instants while a producer keeps publishing:
    every published record ends up in the table exactly once."""
    total = 60_000
    prod = start_producer(ring_name, tmp_path, count=total, rate=6000, batch=200)
    rng = random.Random(7)
    writer = start_writer(ring_name, tmp_path, BUFFER_BATCH_SIZE="300", BUFFER_WRITE_INTERVAL="0.05")
    try:
        for _ in range(6):
            # Kill only a writer that holds the consumer role, at a random instant after.
            wait_until(lambda: ring_value(ring_name, "consumer.pid") == writer.pid, 30, "writer attached", step=0.02)
            time.sleep(rng.uniform(0.05, 1.2))
            writer.send_signal(signal.SIGKILL)
            writer.wait(10)
            writer = start_writer(ring_name, tmp_path, BUFFER_BATCH_SIZE="300", BUFFER_WRITE_INTERVAL="0.05")
        published = producer_done(prod)
        assert published == total
        # The last writer may find everything already written: count starts once it attached.
        wait_until(lambda: ring_value(ring_name, "consumer.pid") == writer.pid, 30, "last writer attached", step=0.02)
        wait_until(lambda: db_counts(db_path(tmp_path))[0] >= total, 60, "all records in the table")
        rows, distinct = db_counts(db_path(tmp_path))
        assert (rows, distinct) == (total, total)
        assert db_seqs(db_path(tmp_path)) == list(range(total))
        f = ring_fields(ring_name)
        assert f["consumer.committed"] == total
        assert f["consumer.lost"] == 0
        assert f["consumer.starts"] == 7
        rc, err = finish(writer)
        assert rc == 0, err
    finally:
        halt(writer)
        halt(prod)


def test_writer_retries_then_writes_backup_file_while_database_locked(ring_name, tmp_path):
    """Another connection holds an exclusive lock: the batch is tried ORACLE_RETRY_MAX
    times (waits 1 s, 2 s), then goes to a fsynced CSV backup file and leaves the ring."""
    db = db_path(tmp_path)
    db.parent.mkdir(parents=True)
    prod = start_producer(ring_name, tmp_path, count=0)
    writer = start_writer(ring_name, tmp_path, ORACLE_RETRY_MAX="3", SQLITE_BUSY_TIMEOUT="0.2", DB_PROBE_MIN_INTERVAL="30", DB_PROBE_MAX_INTERVAL="60")
    try:
        wait_until(lambda: db_counts(db) == (0, 0) and db.exists() and "writing ring" in log_text(writer), 30, "writer ready")
        locker = sqlite3.connect(str(db), isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        halt(prod)
        prod = start_producer(ring_name, tmp_path, count=250, batch=250)
        assert producer_done(prod) == 250
        t0 = time.monotonic()
        wait_until(lambda: backup_files(tmp_path), 30, "a backup file")
        took = time.monotonic() - t0
        assert took >= 2.5, f"backup written after {took:.1f} s: the 1 s + 2 s retry waits were skipped"
        wait_until(lambda: ring_fields(ring_name)["consumer.committed"] == 250, 10, "records to leave the ring")
        name = backup_files(tmp_path)[0]
        assert name.startswith("backup_") and name.endswith(".csv")
        lines = (tmp_path / "backup" / name).read_text().splitlines()
        assert lines[0] == "timestamp,plc_code,tag_address,tag_value,quality,ring_epoch,seq"
        assert len(lines) == 251
        ts, plc, tag, value, quality, epoch, seq = lines[1].split(",")
        assert len(ts) == 26 and ts[10] == "T" and ts[19] == "."  # 2025-01-15T10:30:45.123456
        assert (plc, tag, float(value), quality, int(seq)) == ("KRCWO12ELOA101", "D100", 0.0, "GOOD", 0)
        f = ring_fields(ring_name)
        assert f["writer.batches_failed"] == 3
        assert f["writer.retries"] == 2
        assert f["writer.rows_spilled"] == 250
        assert f["writer.backup_files_written"] == 1
        log = log_text(writer)
        assert log.count("failed (attempt") == 3
        locker.execute("ROLLBACK")
        locker.close()
    finally:
        halt(writer)
        halt(prod)


def test_writer_orderly_stop_flushes_within_the_deadline(ring_name, tmp_path):
    prod = start_producer(ring_name, tmp_path, count=30_000, rate=0, batch=1000)
    assert producer_done(prod) == 30_000
    # A long write interval: without the stop-time flush the tail would stay in the ring.
    writer = start_writer(ring_name, tmp_path, BUFFER_BATCH_SIZE="1000", BUFFER_WRITE_INTERVAL="30", SHUTDOWN_TIMEOUT="5")
    try:
        wait_until(lambda: "writing ring" in log_text(writer), 30, "writer ready")
        t0 = time.monotonic()
        writer.send_signal(signal.SIGTERM)
        rc = writer.wait(15)
        took = time.monotonic() - t0
        assert rc == 0, log_text(writer)
        assert took < 10
        assert db_counts(db_path(tmp_path)) == (30_000, 30_000)
        f = ring_fields(ring_name)
        assert f["consumer.committed"] == f["producer.published"] == 30_000
        assert f["consumer.state"] == 0 and f["consumer.pid"] == 0
        assert "everything published was written" in log_text(writer)
    finally:
        halt(writer)
        halt(prod)


def test_writer_bad_setting_exits_2_with_one_line(ring_name, tmp_path):
    for name, value in (("BUFFER_BATCH_SIZE", "abc"), ("ORACLE_RETRY_MAX", "0"), ("DB_PROBE_MIN_INTERVAL", "-1")):
        writer = start_writer(ring_name, tmp_path, **{name: value})
        rc = writer.wait(30)
        halt(writer)
        err = log_text(writer).strip()
        assert rc == 2
        assert len(err.splitlines()) == 1, err
        assert name in err and value in err
    assert not os.path.exists(f"/dev/shm/{ring_name}.ring")  # nothing was opened
    assert not (tmp_path / "backup").exists()


def test_second_writer_exits_4_and_first_waits_for_the_ring(ring_name, tmp_path):
    first = start_writer(ring_name, tmp_path)
    prod = None
    try:
        wait_until(lambda: "waiting for ring" in log_text(first), 30, "the writer to wait for the ring")
        second = start_writer(ring_name, tmp_path)
        rc = second.wait(30)
        halt(second)
        err = [line for line in log_text(second).splitlines() if "effective settings" not in line]
        assert rc == 4, err
        assert len(err) == 1 and ("consumer" in err[0].lower() or "writer" in err[0].lower()), err
        prod = start_producer(ring_name, tmp_path, count=1000)
        assert producer_done(prod) == 1000
        wait_until(lambda: db_counts(db_path(tmp_path)) == (1000, 1000), 30, "records written after the ring appeared")
        rc, log = finish(first)
        assert rc == 0, log
    finally:
        halt(first)
        if prod is not None:
            halt(prod)


def test_writer_follows_a_replaced_ring(ring_name, tmp_path):
    """The ring is deleted and created anew under a running writer: it attaches to the new
    one (``Writer.run``) and writes the new epoch's records too, each once."""
    from shm import delete_ring

    prod = start_producer(ring_name, tmp_path, count=5_000, rate=0, batch=500)
    writer = start_writer(ring_name, tmp_path, BUFFER_WRITE_INTERVAL="0.05")
    prod2 = None
    try:
        assert producer_done(prod) == 5_000
        wait_until(lambda: db_counts(db_path(tmp_path))[0] >= 5_000, 60, "the first ring written")
        halt(prod)
        first_epoch = ring_value(ring_name, "epoch")
        delete_ring(ring_name, force=True)  # the writer still holds the consumer role
        prod2 = start_producer(ring_name, tmp_path, count=3_000, rate=0, batch=500)
        assert producer_done(prod2) == 3_000
        assert ring_value(ring_name, "epoch") != first_epoch
        wait_until(lambda: db_counts(db_path(tmp_path))[0] >= 8_000, 60, "the new ring written")
        assert db_counts(db_path(tmp_path)) == (8_000, 8_000)
        wait_until(lambda: ring_value(ring_name, "consumer.pid") == writer.pid, 30, "writer attached to the new ring")
        assert ring_value(ring_name, "consumer.committed") == 3_000
        rc, err = finish(writer)
        assert rc == 0, err
        assert "was replaced; attaching to the new one" in err and "everything published was written" in err
    finally:
        halt(writer)
        halt(prod)
        halt(prod2)


def test_records_leave_the_ring_in_one_place():
    """``Writer._durable`` is the only caller of ``Consumer.commit`` in the writer: "where
    does a record become durable" has one answer in the code."""
    import ast
    from pathlib import Path

    import pipeline.writer
    from conftest import parse_python

    callers = []
    for path in sorted(Path(pipeline.writer.__file__).parent.rglob("*.py")):
        tree = parse_python(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "commit"
                            and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "consumer"):
                        callers.append(f"{path.name}:{fn.name}")
    assert callers == ["loop.py:_durable"], callers


def test_writer_buckets_the_losses_it_finds_so_the_overflow_rate_is_the_exact_loss(ring_name, tmp_path):
    """Issue 12 item 4: 1,500 records into a 1,000 ring before any writer: the real writer
    finds 500 lost and puts them in this minute's loss bucket (overflow = records dropped)."""
    from pipeline.common.telemetry import SCHEMA, buffer_status
    from shm import Observer

    prod = start_producer(ring_name, tmp_path, count=1500, capacity=1000, batch=100)
    writer = None
    try:
        assert producer_done(prod) == 1500
        writer = start_writer(ring_name, tmp_path)
        wait_until(lambda: ring_value(ring_name, "consumer.committed") == 1500, 30, "the writer committed past everything")
        wait_until(lambda: ring_value(ring_name, "writer.lost_bucketed") == 500, 10, "losses bucketed")
        with Observer(ring_name, telemetry=SCHEMA) as obs:
            b = buffer_status(obs.snapshot())
        assert b.overflow_count == b.lost == b.overflowed_last_hour == 500
        assert abs(b.overflow_rate_pct - 100 * 500 / 1500) < 0.01
        assert db_counts(db_path(tmp_path))[0] == 1000
        rc, err = finish(writer)
        assert rc == 0, err
    finally:
        halt(writer)
        halt(prod)
