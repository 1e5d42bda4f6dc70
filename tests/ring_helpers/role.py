"""One ring role in its own interpreter, driven by the ring tests and benchmarks.

    python tests/ring_helpers/role.py COMMAND --ring NAME [options]

Each command prints JSON lines on stdout (``{"event": ...}``), flushed, so the test can
follow it; ``--then`` says how it ends: ``exit`` (close normally), ``hold`` (keep the
role until SIGTERM/SIGKILL), ``kill`` (SIGKILL itself without closing anything).
Record content encodes its seq (``content.py``), so consumers count torn records.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import sys
import time

import numpy as np

import content
from shm import Consumer, Observer, Producer
from shm import layout as L

STOP = False


def _on_term(signum, frame) -> None:
    global STOP
    STOP = True


def say(event: str, **kw) -> None:
    print(json.dumps({"event": event, "pid": os.getpid(), **kw}), flush=True)


def finish(then: str, endpoint=None) -> int:
    if then == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if then == "hold":
        say("holding")
        while not STOP:
            time.sleep(0.02)
    if endpoint is not None:
        endpoint.close()
    say("closed")
    return 0


def publish_n(p: Producer, count: int, batch: int, mode: str) -> None:
    done = 0
    while done < count:
        k = min(batch, count - done)
        start = p.published
        if mode == "put":
            for seq in range(start, start + k):
                p.put(*content.put_args(seq))
            p.flush()
        else:
            p.publish(content.make_records(start, k))
        done += k


def cmd_produce(a) -> int:
    p = Producer.open(a.ring, a.capacity, a.alert)
    say("ready", published=p.published, capacity=p.capacity, notes=p.notes)
    publish_n(p, a.count, a.batch, a.mode)
    say("published", published=p.published, overwritten=int(p.get("producer.overwritten")),
        padding=int(p.get("producer.padding")), alerts=int(p.get("producer.alerts")))
    return finish(a.then, p)


def consume_loop(c: Consumer, a, stop_when) -> dict:
    tot = {"delivered": 0, "lost": 0, "padding": 0, "torn": 0, "batches": 0, "first": None, "last": None}
    while not stop_when(tot):
        if not c.wait(a.wait_s):
            continue
        b = c.read(a.max_n)
        tot["torn"] += content.count_bad(b.records)
        if len(b.records):
            tot["first"] = int(b.records["seq"][0]) if tot["first"] is None else tot["first"]
            tot["last"] = int(b.records["seq"][-1])
        tot["delivered"] += len(b.records)
        tot["lost"] += b.lost
        tot["padding"] += b.padding
        tot["batches"] += 1
        if a.commit:
            c.commit(b)
    return tot


def cmd_consume(a) -> int:
    c = Consumer.open(a.ring, wait=True, on_wait=lambda r: say("waiting", reason=r))
    say("ready", committed=c.committed, published=c.published)
    deadline = time.monotonic() + a.timeout_s

    def done(tot) -> bool:
        if STOP or time.monotonic() > deadline:
            return True
        if a.count is not None:
            return tot["delivered"] >= a.count
        return c.backlog() == 0 and tot["batches"] > 0

    tot = consume_loop(c, a, done)
    say("consumed", committed=c.committed, **tot)
    return finish(a.then, c)


def cmd_observe(a) -> int:
    o = Observer(a.ring)
    snap = o.snapshot()
    errors = {}
    try:
        o.data["value"][0] = 1.0
    except Exception as e:  # the point: this must fail
        errors["data"] = type(e).__name__
    try:
        o.h.set("consumer.committed", 0)
    except Exception as e:
        errors["header_set"] = type(e).__name__
    try:
        o.h.u[0] = 0
    except Exception as e:
        errors["header_word"] = type(e).__name__
    f = snap.fields
    say("observed", capacity=o.capacity, epoch=o.epoch, published=f["producer.published"],
        committed=f["consumer.committed"], errors=errors, first=o.records(0, 1)["seq"].tolist())
    return finish(a.then, o)


def cmd_hold(a) -> int:
    if a.role == "producer":
        ep = Producer.open(a.ring, a.capacity, lock_retry_s=a.lock_retry_s)
    else:
        ep = Consumer.open(a.ring, wait=True, lock_retry_s=a.lock_retry_s)
    say("ready", role=a.role)
    return finish(a.then, ep)


def cmd_tear(a) -> int:
    """Publish ``count`` good records, then claim ``hole`` more, write half of them (and
    half of the next one's bytes) and die by SIGKILL before publishing."""
    p = Producer.open(a.ring, a.capacity)
    publish_n(p, a.count, a.batch, "publish")
    start = p.published
    end = start + a.hole
    p.h.u[L.FIELD_BY_NAME["producer.claim"].word] = end
    torn = content.make_records(start, a.hole)
    half = a.hole // 2
    for k in range(half):
        p.data[(start + k) % p.capacity] = torn[k]
    raw = torn[half : half + 1].view(np.uint8)
    slot = np.frombuffer(p._shm.buf, dtype=np.uint8, count=L.RECORD_SIZE,
                         offset=L.HEADER_BYTES + ((start + half) % p.capacity) * L.RECORD_SIZE)
    slot[: L.RECORD_SIZE // 2] = raw[: L.RECORD_SIZE // 2]
    say("torn", published=p.published, claim=end)
    os.kill(os.getpid(), signal.SIGKILL)
    return 1


def cmd_chaos_produce(a) -> int:
    rnd = random.Random(a.seed or os.getpid())
    p = Producer.open(a.ring, a.capacity)
    say("ready", published=p.published, notes=p.notes)
    t0, sent = time.monotonic(), 0
    while not STOP:
        if a.rate and sent > a.rate * (time.monotonic() - t0):
            time.sleep(0.002)
            continue
        k = rnd.randint(1, a.batch)
        sent += k
        start = p.published
        if rnd.random() < 0.3:
            for seq in range(start, start + k):
                p.put(*content.put_args(seq))
            p.flush()
        else:
            p.publish(content.make_records(start, k))
        if rnd.random() < 0.2:
            time.sleep(rnd.random() * 0.005)
    p.close()
    return 0


def cmd_chaos_consume(a) -> int:
    """Record every delivered identity durably in SQLite, then commit it in the ring.

    Table ``rows``: one row per identity. ``runs``: per consumer run, how many inserts
    were ignored as already present (``redelivered``: allowed only for records a killed
    predecessor stored but never committed, i.e. seq <= the highest seq stored before
    this run started) and how many were true duplicates (``dup``), and torn records.

    ``orphan_lost``: records a killed predecessor stored but never committed in the ring,
    which the producer overwrote before this run could read them again: they are in
    ``rows`` *and* counted lost by the ring. Written with the batch that passes them; a
    run drops the entries of batches its predecessor never committed, so at the end
    ``rows == consumer.delivered + SUM(orphan_lost.n)`` exactly.
    """
    db = sqlite3.connect(a.db, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS rows (epoch INTEGER, seq INTEGER, PRIMARY KEY (epoch, seq)) WITHOUT ROWID")
    db.execute("CREATE TABLE IF NOT EXISTS runs (run INTEGER PRIMARY KEY AUTOINCREMENT, pid INTEGER, max_before INTEGER,"
               " redelivered INTEGER DEFAULT 0, dup INTEGER DEFAULT 0, torn INTEGER DEFAULT 0)")
    db.execute("CREATE TABLE IF NOT EXISTS orphan_lost (batch_end INTEGER PRIMARY KEY, n INTEGER)")
    c = Consumer.open(a.ring, wait=True, stop=lambda: STOP)
    if c is None:
        return 0
    pid = os.getpid()
    max_before = db.execute("SELECT COALESCE(MAX(seq), -1) FROM rows WHERE epoch=?", (c.epoch,)).fetchone()[0]
    run_id = db.execute("INSERT INTO runs (pid, max_before) VALUES (?, ?)", (pid, max_before)).lastrowid
    db.execute("DELETE FROM orphan_lost WHERE batch_end > ?", (c.committed,))
    orphans = sorted(r[0] for r in db.execute("SELECT seq FROM rows WHERE epoch=? AND seq >= ?", (c.epoch, c.committed)))
    say("ready", committed=c.committed, max_before=max_before)
    rnd = random.Random(pid)
    while not STOP:
        if not c.wait(0.2):
            continue
        if rnd.random() < a.stall_p:  # a slow database: the ring overflows meanwhile
            time.sleep(rnd.uniform(0.45, 0.9))  # > 8,000 records at 20,000/s
        b = c.read(a.max_n)
        torn = content.count_bad(b.records)
        seqs = [int(s) for s in b.records["seq"]]
        db.execute("BEGIN")
        existing: set[int] = set()
        if seqs:
            existing = {r[0] for r in db.execute(
                "SELECT seq FROM rows WHERE epoch=? AND seq BETWEEN ? AND ?", (b.epoch, seqs[0], seqs[-1]))}
        redelivered = sum(1 for s in existing if s <= max_before)
        dup = len(existing) - redelivered
        db.executemany("INSERT OR IGNORE INTO rows VALUES (?, ?)", ((b.epoch, s) for s in seqs))
        passed = [s for s in orphans if s < b.end]
        if passed:
            orphans = orphans[len(passed):]
            gone = len(set(passed) - set(seqs))
            if gone:
                db.execute("INSERT OR REPLACE INTO orphan_lost VALUES (?, ?)", (b.end, gone))
        db.execute("UPDATE runs SET redelivered = redelivered + ?, dup = dup + ?, torn = torn + ? WHERE run = ?",
                   (redelivered, dup, torn, run_id))
        db.execute("COMMIT")  # durable first ...
        c.commit(b)  # ... then the ring lets the records go
    c.close()
    db.close()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(name):
        p = sub.add_parser(name)
        p.add_argument("--ring", required=True)
        p.add_argument("--then", choices=("exit", "hold", "kill"), default="exit")
        return p

    p = common("produce")
    p.add_argument("--capacity", type=int, default=1000)
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--mode", choices=("publish", "put"), default="publish")
    p.add_argument("--alert", type=float, default=80.0)
    p = common("consume")
    p.add_argument("--count", type=int)
    p.add_argument("--max-n", type=int, default=100)
    p.add_argument("--commit", type=int, default=1)
    p.add_argument("--wait-s", type=float, default=0.2)
    p.add_argument("--timeout-s", type=float, default=60.0)
    p = common("observe")
    p = common("hold")
    p.add_argument("--role", choices=("producer", "consumer"), required=True)
    p.add_argument("--capacity", type=int, default=1000)
    p.add_argument("--lock-retry-s", type=float, default=3.0)
    p = common("tear")
    p.add_argument("--capacity", type=int, default=1000)
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--hole", type=int, default=10)
    p = common("chaos-produce")
    p.add_argument("--capacity", type=int, default=1000)
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=float, default=0.0, help="records/s (0: flat out)")
    p = common("chaos-consume")
    p.add_argument("--db", required=True)
    p.add_argument("--max-n", type=int, default=300)
    p.add_argument("--stall-p", type=float, default=0.0, help="chance per batch of a 0.45-0.9 s stall")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_term)
    return globals()["cmd_" + a.cmd.replace("-", "_")](a)


if __name__ == "__main__":
    sys.exit(main())
