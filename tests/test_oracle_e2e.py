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
        wait_until(lambda: ring_fields(ring_name)["consumer.committed"] >= total, 120, "every record committed from the ring")
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
