"""The gap ledger with real faults and real processes: each kind of gap becomes one row of
TAG_DATA_GAP, once, across a writer SIGKILL and a database outage with replay."""

from __future__ import annotations

import signal
import sqlite3
import time

from tests.test_spool_outage import FAST, _lock, _unlock
from tests.writer_helpers.util import (
    backup_files,
    db_counts,
    db_path,
    halt,
    log_text,
    producer_done,
    ring_fields,
    spawn,
    start_producer,
    start_writer,
    wait_until,
)


def gaps(db, kind: str | None = None) -> list[dict]:
    """Rows of the gap table (as dicts), oldest first."""
    conn = sqlite3.connect(str(db), timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        sql = "SELECT * FROM TAG_DATA_GAP" + (" WHERE KIND = ?" if kind else "") + " ORDER BY START_TS, FIRST_SEQ"
        return [dict(r) for r in conn.execute(sql, (kind,) if kind else ())]
    finally:
        conn.close()


def data_ts(db, seq: int) -> int:
    conn = sqlite3.connect(str(db), timeout=5)
    try:
        return conn.execute("SELECT TS FROM TAG_DATA WHERE SEQ = ? AND RING_EPOCH >= 0", (seq,)).fetchone()[0]
    finally:
        conn.close()


def _overrun_while_stopped(ring_name, tmp_path, writer, first: int, more: int, capacity: int):
    """With ``first`` records already written, SIGSTOP the writer, publish ``more``
    records through a new producer (ring of ``capacity``), SIGCONT."""
    writer.send_signal(signal.SIGSTOP)
    try:
        prod = start_producer(ring_name, tmp_path, count=more, capacity=capacity, batch=100)
        assert producer_done(prod) == first + more  # "done" reports the ring's published total
    finally:
        writer.send_signal(signal.SIGCONT)
    return prod


def test_ring_overrun_with_the_writer_stopped_is_one_overwritten_gap(ring_name, tmp_path):
    db = db_path(tmp_path)
    cap = 1000
    prod = start_producer(ring_name, tmp_path, count=500, capacity=cap, batch=100)
    writer = start_writer(ring_name, tmp_path, BUFFER_WRITE_INTERVAL="0.1")
    try:
        assert producer_done(prod) == 500
        wait_until(lambda: db.exists() and db_counts(db)[0] == 500, 30, "first records written")
        halt(prod)
        prod = _overrun_while_stopped(ring_name, tmp_path, writer, 500, 3000, cap)
        # seqs 500..3499 published into 1,000 slots: 500..2499 were overwritten unread.
        wait_until(lambda: ring_fields(ring_name)["consumer.committed"] == 3500, 30, "caught up")
        [g] = gaps(db)
        assert (g["KIND"], g["FIRST_SEQ"], g["LAST_SEQ"], g["ROW_COUNT"], g["PLC_CODE"]) == ("overwritten", 500, 2499, 2000, "*")
        # The neighbours' poll times: the last record read before, the first one after.
        assert (g["START_TS"], g["END_TS"]) == (data_ts(db, 499), data_ts(db, 2500))
        assert db_counts(db)[0] == 1500
        f = ring_fields(ring_name)
        assert f["consumer.lost"] == 2000 and f["writer.gaps_overwritten"] == 1
    finally:
        halt(writer)
        halt(prod)


def test_overwritten_gap_spilled_during_an_outage_is_replayed_once_across_a_writer_sigkill(ring_name, tmp_path):
    """The database is down when the overrun is found: the gap goes to a backup file with
    the data; the writer is SIGKILLed, restarted after the outage, and replays it: one row."""
    db = db_path(tmp_path)
    cap = 1000
    prod = start_producer(ring_name, tmp_path, count=200, capacity=cap, batch=100)
    writer = start_writer(ring_name, tmp_path, **FAST)
    try:
        assert producer_done(prod) == 200
        wait_until(lambda: db.exists() and db_counts(db)[0] == 200, 30, "first records written")
        halt(prod)
        locker = _lock(db)
        prod = _overrun_while_stopped(ring_name, tmp_path, writer, 200, 3000, cap)
        wait_until(lambda: ring_fields(ring_name)["consumer.committed"] == 3200, 30, "all spilled")
        text = "".join((tmp_path / "backup" / n).read_text() for n in backup_files(tmp_path))
        assert text.count("GAP:overwritten") == 1
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
        _unlock(locker)
        writer = start_writer(ring_name, tmp_path, **FAST)
        wait_until(lambda: not backup_files(tmp_path), 60, "replayed")
        [g] = gaps(db)
        assert (g["KIND"], g["FIRST_SEQ"], g["LAST_SEQ"], g["ROW_COUNT"]) == ("overwritten", 200, 2199, 2000)
        assert db_counts(db)[0] == 1200
        # Replaying the same file again (an operator copies it back) adds nothing.
        replayed = tmp_path / "backup" / "replayed"
        for f in replayed.iterdir():
            (tmp_path / "backup" / f.name).write_bytes(f.read_bytes())
        wait_until(lambda: not backup_files(tmp_path), 60, "replayed again")
        assert len(gaps(db)) == 1
    finally:
        halt(writer)
        halt(prod)


def test_quarantined_rows_are_one_gap_per_batch_with_file_and_line_count(ring_name, tmp_path):
    db = db_path(tmp_path)
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(str(db))
    conn.executescript(
        "CREATE TABLE TAG_DATA (TS INTEGER NOT NULL, PLC_CODE TEXT NOT NULL, TAG_ADDRESS TEXT NOT NULL,"
        " TAG_VALUE REAL CHECK (TAG_VALUE IS NULL OR TAG_VALUE < 1e9), QUALITY TEXT NOT NULL,"
        " RING_EPOCH INTEGER NOT NULL, SEQ INTEGER NOT NULL, PRIMARY KEY (RING_EPOCH, SEQ)) WITHOUT ROWID"
    )
    conn.close()
    prod = start_producer(ring_name, tmp_path, count=2000, batch=500, bad_every=100)
    writer = start_writer(ring_name, tmp_path)
    try:
        assert producer_done(prod) == 2000
        wait_until(lambda: ring_fields(ring_name)["consumer.committed"] == 2000, 30, "all committed")
        rows = gaps(db, "quarantine")
        [qfile] = list((tmp_path / "backup" / "quarantine").iterdir())
        assert rows and sum(r["ROW_COUNT"] for r in rows) == 20
        assert {r["DETAIL"] for r in rows} == {qfile.name}
        # Each row's identity is the first refused seq (every 100th record is refused).
        assert all(r["FIRST_SEQ"] % 100 == 99 for r in rows)
        assert ring_fields(ring_name)["writer.gaps_quarantine"] == len(rows)
    finally:
        halt(writer)
        halt(prod)


def test_poller_sigkilled_and_restarted_is_one_poller_down_gap(ring_name, tmp_path):
    db = db_path(tmp_path)
    env = {"RING_NAME": ring_name}
    poller = spawn(["-m", "pipeline.poller"], tmp_path, None, **env)
    writer = start_writer(ring_name, tmp_path, BUFFER_WRITE_INTERVAL="0.1")
    try:
        wait_until(lambda: db.exists() and db_counts(db)[0] > 0, 30, "simulator data written")
        time.sleep(0.5)
        killed_pid = poller.pid
        poller.send_signal(signal.SIGKILL)
        poller.wait(10)
        killed_at = int(time.time() * 1e6)
        time.sleep(2.0)
        restarted_at = int(time.time() * 1e6)
        poller2 = spawn(["-m", "pipeline.poller"], tmp_path, None, **env)
        poller = poller2
        wait_until(lambda: len(gaps(db, "poller_down")) == 1, 30, "poller_down gap written")
        # The writer is SIGKILLed and restarted: the gap is still there once.
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
        writer = start_writer(ring_name, tmp_path, BUFFER_WRITE_INTERVAL="0.1")
        wait_until(lambda: "writing ring" in log_text(writer), 30, "writer back")
        time.sleep(1.0)
        [g] = gaps(db, "poller_down")
        assert g["DETAIL"] == f"killed_pid_{killed_pid}"
        # From the dead poller's last heartbeat (at most ~1 s before the kill) to the restart.
        assert killed_at - 3_000_000 < g["START_TS"] <= killed_at
        assert restarted_at <= g["END_TS"] < restarted_at + 30_000_000
        assert g["END_TS"] - g["START_TS"] >= 2_000_000
        assert gaps(db, "plc_unreachable") == [] and gaps(db, "overwritten") == []
    finally:
        halt(writer)
        halt(poller)


def test_modbus_plc_stopped_and_restarted_is_one_unreachable_gap(ring_name, tmp_path):
    from tests.poller_helpers.modbus_server import ModbusTestServer

    db = db_path(tmp_path)
    server = ModbusTestServer(holding=[7] * 16).start()
    tags = tmp_path / "tags.toml"
    tags.write_text(f"""
[[plcs]]
code = "KRCWO12ELOA101"
protocol = "modbus"
host = "127.0.0.1"
port = {server.port}
timeout_s = 0.5
  [[plcs.groups]]
  interval_s = 0.2
  tags = [
    {{ address = "hr:0", type = "int16" }},
    {{ address = "hr:1", type = "int16" }},
  ]
""")
    poller = spawn(["-m", "pipeline.poller"], tmp_path, None, RING_NAME=ring_name, TAGS_FILE=str(tags))
    writer = start_writer(ring_name, tmp_path, BUFFER_WRITE_INTERVAL="0.1")
    try:
        wait_until(lambda: db.exists() and db_counts(db)[0] > 0, 30, "Modbus values written")
        stopped_at = int(time.time() * 1e6)
        server.stop()
        time.sleep(2.0)
        server.start()
        restarted_at = int(time.time() * 1e6)
        wait_until(lambda: len(gaps(db, "plc_unreachable")) == 1, 30, "plc_unreachable gap written")
        time.sleep(1.0)
        [g] = gaps(db, "plc_unreachable")
        assert g["PLC_CODE"] == "KRCWO12ELOA101"
        assert stopped_at <= g["START_TS"] < restarted_at and restarted_at - 1_000_000 <= g["END_TS"]
        assert g["END_TS"] - g["START_TS"] >= 1_000_000
        assert g["DETAIL"] not in ("", "-")
        # The BAD rows of the episode stay as they are.
        conn = sqlite3.connect(str(db))
        bad = conn.execute("SELECT COUNT(*) FROM TAG_DATA WHERE QUALITY = 'BAD' AND TS BETWEEN ? AND ?",
                           (g["START_TS"], g["END_TS"])).fetchone()[0]
        conn.close()
        assert bad >= 2
        assert ring_fields(ring_name)["writer.gaps_plc_unreachable"] == 1
    finally:
        halt(writer)
        halt(poller)
        server.stop()


def test_ring_replaced_under_the_writer_is_one_poller_down_gap_in_the_new_stream(ring_name, tmp_path):
    from shm import delete_ring

    from tests.writer_helpers.util import ring_value

    db = db_path(tmp_path)
    prod = start_producer(ring_name, tmp_path, count=1000, batch=500)
    writer = start_writer(ring_name, tmp_path, BUFFER_WRITE_INTERVAL="0.05")
    prod2 = None
    try:
        assert producer_done(prod) == 1000
        wait_until(lambda: db.exists() and db_counts(db)[0] == 1000, 60, "the first ring written")
        halt(prod)
        stopped_at = int(time.time() * 1e6)
        delete_ring(ring_name, force=True)  # the writer still holds the consumer role
        time.sleep(0.5)
        prod2 = start_producer(ring_name, tmp_path, count=300, batch=100)
        assert producer_done(prod2) == 300
        new_epoch = ring_value(ring_name, "epoch")
        wait_until(lambda: db_counts(db)[0] == 1300, 60, "the new ring written")
        [g] = gaps(db)
        assert (g["KIND"], g["FIRST_SEQ"], g["DETAIL"]) == ("poller_down", 0, "ring_replaced")
        assert g["RING_EPOCH"] & ((1 << 64) - 1) == new_epoch
        # From the old ring's last producer heartbeat to the new ring's creation.
        assert stopped_at - 3_000_000 < g["START_TS"] <= stopped_at
        assert g["END_TS"] - g["START_TS"] >= 500_000
        assert ring_fields(ring_name)["writer.gaps_poller_down"] == 1
    finally:
        halt(writer)
        halt(prod)
        halt(prod2)


def test_unreachable_gap_published_during_an_outage_is_recorded_once_after_writer_sigkill_and_replay(ring_name, tmp_path):
    """The poller's gap record reaches a backup file while the database is locked; the
    writer is SIGKILLed, the database comes back, a new writer replays: one row."""
    from tests.poller_helpers.modbus_server import ModbusTestServer

    db = db_path(tmp_path)
    server = ModbusTestServer(holding=[7] * 16).start()
    tags = tmp_path / "tags.toml"
    tags.write_text(f"""
[[plcs]]
code = "KRCWO12ELOA102"
protocol = "modbus"
host = "127.0.0.1"
port = {server.port}
timeout_s = 0.5
  [[plcs.groups]]
  interval_s = 0.2
  tags = [ {{ address = "hr:0", type = "int16" }} ]
""")
    poller = spawn(["-m", "pipeline.poller"], tmp_path, None, RING_NAME=ring_name, TAGS_FILE=str(tags))
    writer = start_writer(ring_name, tmp_path, **FAST)
    locker = None
    try:
        wait_until(lambda: db.exists() and db_counts(db)[0] > 0, 30, "Modbus values written")
        locker = _lock(db)
        server.stop()
        time.sleep(1.5)
        server.start()

        def spilled() -> bool:
            return any("GAP:plc_unreachable" in (tmp_path / "backup" / n).read_text() for n in backup_files(tmp_path))

        wait_until(spilled, 30, "the gap line in a backup file")
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
        _unlock(locker)
        locker = None
        writer = start_writer(ring_name, tmp_path, **FAST)
        wait_until(lambda: len(gaps(db, "plc_unreachable")) == 1 and not backup_files(tmp_path), 60, "replayed")
        time.sleep(1.0)
        [g] = gaps(db, "plc_unreachable")
        assert g["PLC_CODE"] == "KRCWO12ELOA102" and g["END_TS"] - g["START_TS"] >= 1_000_000
        assert len(gaps(db)) == 1
    finally:
        if locker is not None:
            _unlock(locker)
        halt(writer)
        halt(poller)
        server.stop()


def test_poller_stopped_cleanly_closes_its_open_episode_and_the_next_start_says_stopped(ring_name, tmp_path):
    """A PLC that never answers, then SIGTERM: the open episode ends with the poller (one
    plc_unreachable row up to the stop); the next start records poller_down "stopped"."""
    from tests.poller_helpers.modbus_server import refused_port

    db = db_path(tmp_path)
    tags = tmp_path / "tags.toml"
    tags.write_text(f"""
[[plcs]]
code = "KRCWO12ELOA103"
protocol = "modbus"
host = "127.0.0.1"
port = {refused_port()}
timeout_s = 0.3
  [[plcs.groups]]
  interval_s = 0.2
  tags = [ {{ address = "hr:0", type = "int16" }} ]
""")
    env = {"RING_NAME": ring_name, "TAGS_FILE": str(tags)}
    poller = spawn(["-m", "pipeline.poller"], tmp_path, None, **env)
    writer = start_writer(ring_name, tmp_path, BUFFER_WRITE_INTERVAL="0.1")
    try:
        wait_until(lambda: db.exists() and db_counts(db)[0] > 0, 30, "the BAD row written")
        time.sleep(1.0)  # a few more failed polls
        halt(poller)  # SIGTERM: a clean stop
        assert poller.returncode == 0, log_text(poller)
        stopped_at = int(time.time() * 1e6)
        wait_until(lambda: len(gaps(db, "plc_unreachable")) == 1, 30, "the open episode recorded")
        [u] = gaps(db, "plc_unreachable")
        assert u["PLC_CODE"] == "KRCWO12ELOA103" and u["END_TS"] <= stopped_at and u["END_TS"] > u["START_TS"]
        time.sleep(1.0)
        poller = spawn(["-m", "pipeline.poller"], tmp_path, None, **env)
        wait_until(lambda: len(gaps(db, "poller_down")) == 1, 30, "poller_down gap written")
        [d] = gaps(db, "poller_down")
        assert d["DETAIL"] == "stopped" and d["START_TS"] <= stopped_at < d["END_TS"]
    finally:
        halt(writer)
        halt(poller)
