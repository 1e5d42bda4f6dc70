"""Replay benchmark: rows/s from backup files into SQLite, and how long live lag takes to
come back down after a database outage at 10,000 values/s.

    python -m bench replay [--rows N] [--outage S] [--rate R] [--full]

* **replay rate**: N rows in backup files (100,000 per file, the default rotation) written
  back by the writer's own ``Replay`` into a fresh SQLite file (synchronous=FULL), in this
  process; compared with the input rate: replay must outpace it for lag to recover.
* **lag recovery**: real processes. A producer publishes R values/s into a 100,000-record
  ring; ``python -m pipeline.writer`` (default settings) writes to SQLite; this process
  holds SQLite's write lock for S seconds (default 60; ``--full``: the 5 minutes of the
  issue). Reported: rows spilled, ring loss, the time from the database's return until
  every backup file is replayed and live data goes to the database again, and the live lag
  (now - poll time of the oldest record not yet in the database) at that point.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CMD = "make bench BENCH_ARGS=replay   (python -m bench replay; --full for a 5-minute outage)"


def replay_rate(n: int, folder: Path) -> float:
    from bench.bench_writer import _records  # the same synthetic records as the writer benchmark
    from pipeline.writer import backup as B
    from pipeline.writer.quarantine import Quarantine
    from pipeline.writer.replay import Replay
    from pipeline.writer.sinks.sqlite import SqliteSink
    from pipeline.writer.spool import Spool

    bdir = folder / "replay-backup"
    recs = _records(n, time.time_ns() // 1000)
    recs["seq"] = range(n)
    for off in range(0, n, 100_000):
        w = B.BackupWriter(str(bdir))
        w.append(4242, recs[off : off + 100_000])
        w.close()
    spool = Spool(str(bdir), 100_000, 86400)
    spool.scan()
    sink = SqliteSink(str(folder / "replay.db"))
    sink.open()

    class M:  # metrics are not the point here
        def __getattr__(self, name):
            return lambda *a, **k: None

    q = Quarantine(str(bdir / "quarantine"))
    rep = Replay(spool, sink, q, M(), 20_000, lambda src, ep: (lambda rows, errs: q.add_rows(ep, rows, errs, src)), lambda rows, res, lat: None)
    t0 = time.perf_counter()
    while spool.pending:
        rep.step()
    dt = time.perf_counter() - t0
    sink.close()
    conn = sqlite3.connect(str(folder / "replay.db"))
    got = conn.execute("SELECT COUNT(*) FROM TAG_DATA").fetchone()[0]
    conn.close()
    assert got == n, (got, n)
    return n / dt


def lag_recovery(rate: float, outage_s: float, folder: Path) -> dict:
    # The writer benchmark's paced producer, ring wait and writer start.
    from bench.bench_writer import start_paced_producer, start_writer, wait_for_ring
    from shm import delete_ring

    ring = f"br{uuid.uuid4().hex[:10]}"
    work = folder / ring
    work.mkdir()
    db = work / "w.db"
    warm, after = 5.0, 3.0
    count = int(rate * (outage_s + warm + 600))
    prod = start_paced_producer(ring, rate, count)
    writer = None
    res: dict = {}
    try:
        obs = wait_for_ring(ring)
        writer = start_writer(ring, work, db, open(work / "writer.log", "w"))
        time.sleep(warm)
        lock = sqlite3.connect(str(db), isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        time.sleep(outage_s)
        f = obs.snapshot().fields
        res["spilled_during_outage"] = f["writer.rows_spilled"]
        lock.execute("ROLLBACK")
        lock.close()
        t_up = time.monotonic()
        res["detected_s"] = None
        while True:
            f = obs.snapshot().fields
            if res["detected_s"] is None and f["writer.db_state"] in (1, 4):
                res["detected_s"] = time.monotonic() - t_up
            if f["writer.db_state"] == 1 and f["writer.backup_files_pending"] == 0:
                break
            if time.monotonic() - t_up > 900:
                res["timeout"] = True
                break
            time.sleep(0.05)
        res["recovery_s"] = time.monotonic() - t_up
        now = time.time_ns() // 1000
        oldest = f["writer.backup_oldest_us"] or f["writer.oldest_unwritten_us"]
        res["lag_at_recovery_s"] = (now - oldest) / 1e6 if oldest else 0.0
        time.sleep(after)
        f = obs.snapshot().fields
        res["lag_after_s"] = ((time.time_ns() // 1000) - f["writer.oldest_unwritten_us"]) / 1e6 if f["writer.oldest_unwritten_us"] else 0.0
        res["lost"] = f["consumer.lost"]
        res["replayed"] = f["writer.rows_replayed"]
        res["backlog_rows"] = res["spilled_during_outage"]
        obs.close()
    finally:
        for p in (writer, prod):
            if p is not None:
                p.terminate()
                p.wait(60)
        delete_ring(ring, force=True)
    conn = sqlite3.connect(str(db))
    rows, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT SEQ) FROM TAG_DATA").fetchone()
    conn.close()
    res["rows"], res["distinct"] = rows, distinct
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench replay")
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--rate", type=float, default=10_000.0)
    ap.add_argument("--outage", type=float, default=60.0, help="outage length in seconds (default 60, scaled down from 300)")
    ap.add_argument("--full", action="store_true", help="a 5-minute outage, as in the issue")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    outage = 300.0 if a.full else a.outage
    folder = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    try:
        print(f"command: {CMD}; load average {os.getloadavg()[0]:.2f} (2 cores shared)")
        r = replay_rate(a.rows, folder)
        print(f"\n-- replay: {a.rows:,} rows from backup files into SQLite: {r:,.0f} rows/s ({r / a.rate:.1f}x an input of {a.rate:,.0f} values/s)")
        print(f"\n-- outage of {outage:.0f} s at {a.rate:,.0f} values/s (real writer and producer processes)")
        res = lag_recovery(a.rate, outage, folder)
        print(f"rows spilled during the outage : {res['spilled_during_outage']:,}")
        det = res["detected_s"] or 0.0
        print(f"database back -> probe answers : {det:.1f} s  (prober backoff, at most DB_PROBE_MAX_INTERVAL x1.2)")
        print(f"probe answers -> caught up     : {res['recovery_s'] - det:.1f} s  (replay of the backlog while live data keeps spilling)")
        print(f"database back -> caught up     : {res['recovery_s']:.1f} s  (outage/recovery {outage / max(res['recovery_s'], 1e-9):.1f}x)")
        print(f"live lag when caught up        : {res['lag_at_recovery_s']:.2f} s; {3:.0f} s later: {res['lag_after_s']:.2f} s")
        print(f"ring records lost              : {res['lost']}")
        print(f"table rows / distinct          : {res['rows']:,} / {res['distinct']:,}")
        ok = res["lost"] == 0 and res["rows"] == res["distinct"] and not res.get("timeout")
        return 0 if ok else 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
