"""The original feature's design, written as the issue describes it, for a side-by-side benchmark.

    python -m bench.original_design --rate R --seconds S --db PATH

One process: a producer thread that every 10 ms appends the values due by then (``rate x
elapsed``, like tagpipe's load mode; 1,000 tags on 10 PLCs, one poll timestamp per tick)
to a ``collections.deque(maxlen=100000)`` under a lock; a writer thread that takes a
batch when 500 values are waiting or 0.5 s has passed, whichever comes first, and
``executemany``-inserts it into SQLite (WAL, ``synchronous=FULL``) and commits. The table
has the original feature's columns (TS as ISO-8601 UTC text, PLC_CODE, TAG_ADDRESS,
TAG_VALUE, QUALITY) and no key. A full deque drops its oldest values, counted here.

After ``--seconds`` the producer stops and the writer drains what is left (at most
``--drain`` seconds). Prints one JSON line: produced, dropped (deque overflow), rows (in
the table at the end), undrained, elapsed_s, db_bytes, cpu_s (process CPU seconds).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import math
import os
import sqlite3
import sys
import threading
import time

MAXLEN = 100_000
BATCH = 500
INTERVAL_S = 0.5
TICK_S = 0.01
SCHEMA = """CREATE TABLE IF NOT EXISTS TAG_DATA (
    TS TEXT NOT NULL, PLC_CODE TEXT NOT NULL, TAG_ADDRESS TEXT NOT NULL, TAG_VALUE REAL, QUALITY TEXT NOT NULL)"""
INSERT = "INSERT INTO TAG_DATA (TS, PLC_CODE, TAG_ADDRESS, TAG_VALUE, QUALITY) VALUES (?, ?, ?, ?, ?)"
TAGS = [(f"LOADPLC{p:02d}", f"D{t}") for p in range(10) for t in range(100)]


class Buffer:
    """The locked deque: oldest values dropped when full, and counted."""

    def __init__(self, maxlen: int = MAXLEN) -> None:
        self.items: collections.deque = collections.deque(maxlen=maxlen)
        self.lock = threading.Lock()
        self.dropped = 0

    def extend(self, values: list) -> None:
        with self.lock:
            over = len(self.items) + len(values) - self.items.maxlen
            if over > 0:
                self.dropped += over
            self.items.extend(values)

    def take(self, n: int) -> list:
        with self.lock:
            k = min(n, len(self.items))
            return [self.items.popleft() for _ in range(k)]

    def __len__(self) -> int:
        return len(self.items)


def produce(buf: Buffer, rate: float, seconds: float, counts: dict) -> None:
    """Append ``rate`` values/s for ``seconds``, 10 ms ticks, catching up after a late tick."""
    t0 = time.monotonic()
    total = int(rate * seconds)
    produced = 0
    n_tags = len(TAGS)
    while produced < total:
        elapsed = time.monotonic() - t0
        due = min(total, int(rate * elapsed))
        k = due - produced
        if k > 0:
            ts = dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")
            vals = []
            for i in range(produced, due):
                plc, tag = TAGS[i % n_tags]
                vals.append((ts, plc, tag, math.sin(i * 0.001) * 100.0, "GOOD"))
            buf.extend(vals)
            produced = due
            counts["produced"] = produced
        time.sleep(max(0.0, t0 + (math.floor(elapsed / TICK_S) + 1) * TICK_S - time.monotonic()))
    counts["produced"] = produced


def write(buf: Buffer, db: str, stop: threading.Event, counts: dict) -> None:
    """Batches of 500 or whatever is there after 0.5 s; executemany, commit. Runs until
    ``stop`` is set and the deque is empty."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(SCHEMA)
    last = time.monotonic()
    try:
        while True:
            if len(buf) >= BATCH or (time.monotonic() - last >= INTERVAL_S and len(buf)) or (stop.is_set() and len(buf)):
                batch = buf.take(BATCH)
                conn.execute("BEGIN")
                conn.executemany(INSERT, batch)
                conn.execute("COMMIT")
                counts["written"] = counts.get("written", 0) + len(batch)
                last = time.monotonic()
            elif stop.is_set():
                return
            else:
                time.sleep(0.001)
    finally:
        conn.close()


def run(rate: float, seconds: float, db: str, drain_s: float) -> dict:
    """Run the design once; figures as described in the module docstring."""
    buf = Buffer()
    counts: dict = {"produced": 0, "written": 0}
    stop = threading.Event()
    cpu0, t0 = time.process_time(), time.monotonic()
    writer = threading.Thread(target=write, args=(buf, db, stop, counts), daemon=True)
    writer.start()
    produce(buf, rate, seconds, counts)
    elapsed = time.monotonic() - t0
    stop.set()
    writer.join(drain_s)
    undrained = len(buf)
    cpu = time.process_time() - cpu0
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT COUNT(*) FROM TAG_DATA").fetchone()[0] if not writer.is_alive() else counts["written"]
    if not writer.is_alive():
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    db_bytes = sum(os.path.getsize(db + sfx) for sfx in ("", "-wal") if os.path.exists(db + sfx))
    return {"produced": counts["produced"], "dropped": buf.dropped, "rows": rows, "undrained": undrained,
            "elapsed_s": elapsed, "db_bytes": db_bytes, "cpu_s": cpu}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.original_design")
    ap.add_argument("--rate", type=float, required=True, help="values/s offered")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--db", required=True, help="SQLite file to create")
    ap.add_argument("--drain", type=float, default=60.0, help="seconds the writer may take to empty the deque at the end")
    a = ap.parse_args(argv)
    print(json.dumps(run(a.rate, a.seconds, a.db, a.drain)), flush=True)
    # A writer still draining is a daemon thread: leave without waiting for it.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
