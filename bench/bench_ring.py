"""Move records between two unrelated processes: the ring versus multiprocessing.Queue.

    make bench BENCH_ARGS="ring"            (or: .venv/bin/python -m bench ring [--n N] [--rounds R])

Side by side in one run, each moving ``--n`` records (default 1,000,000) from a producer
process to a consumer process:

* ``queue x1``    multiprocessing.Queue, one record (a tuple) per ``put`` (the baseline)
* ``queue x500``  multiprocessing.Queue, lists of 500 records per ``put``
* ``ring put``    ``Producer.put`` one record at a time (``flush()`` every 500)
* ``ring x500``   ``Producer.publish`` of 500-record numpy batches

The ring's producer and consumer are started with ``subprocess`` (separate interpreters
that share nothing but the ring's name); the Queue pair must be started by one parent
(``multiprocessing``, spawn context), as a Queue cannot be attached by name. The
consumer reads the ring in batches of up to 20,000 records and commits each; it does no
per-record work (the writer's own cost is measured in the writer's benchmark). Time runs
from the producer's first record to the consumer's last (CLOCK_MONOTONIC is system-wide),
median of ``--rounds``. Goals: ring x500 >= 50x queue x1, ring put >= 8x queue x1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECORD = (1_700_000_000_000_000, 1234.5, b"KRCWO12ELOA101", b"D100", 1)
GOALS = {"ring x500": 50.0, "ring put": 8.0}


# --- multiprocessing.Queue pair ----------------------------------------------------------
def _queue_producer(q, n: int, batch: int, out) -> None:
    ts, value, plc, tag, quality = RECORD
    # Distinct tuples, as a poller's would be (pickle would shrink 500 copies of one).
    chunk = [(ts + i, value + i, plc, tag, quality) for i in range(batch)]
    t0 = time.monotonic()
    if batch == 1:
        put = q.put
        for i in range(n):
            put((ts + i, value, plc, tag, quality))
    else:
        for _ in range(n // batch):
            q.put(chunk)
    out.put(("t0", t0))


def _queue_consumer(q, n: int, batch: int, out) -> None:
    got = 0
    get = q.get
    if batch == 1:
        for _ in range(n):
            get()
        got = n
    else:
        while got < n:
            got += len(get())
    out.put(("t1", time.monotonic()))


def run_queue(n: int, batch: int) -> dict:
    ctx = mp.get_context("spawn")
    q, out = ctx.Queue(), ctx.Queue()
    cons = ctx.Process(target=_queue_consumer, args=(q, n, batch, out))
    prod = ctx.Process(target=_queue_producer, args=(q, n, batch, out))
    cons.start()
    prod.start()
    times = dict(out.get(timeout=600) for _ in range(2))
    prod.join(60)
    cons.join(60)
    return {"records": n, "seconds": times["t1"] - times["t0"], "lost": 0}


# --- ring pair (two unrelated interpreters) ----------------------------------------------
def ring_child(role: str, ring: str, n: int, mode: str, capacity: int) -> None:
    """Body of a ring child process; prints one JSON line."""
    # As the poller and the writer open it: with the telemetry schema and its minute buckets.
    from pipeline.common.telemetry import open_consumer, open_producer
    from shm.layout import RECORD_DTYPE

    if role == "producer":
        p = open_producer(ring, capacity, alert_threshold_pct=100.0)
        recs = __import__("numpy").zeros(500, dtype=RECORD_DTYPE)
        recs["ts_us"], recs["value"], recs["plc_code"], recs["tag_address"], recs["quality"] = RECORD
        put, flush = p.put, p.flush
        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.readline()  # go
        t0 = time.monotonic()
        if mode == "put":
            ts, value, plc, tag, q = RECORD
            for i in range(n // 500):
                for k in range(500):
                    put(ts + k, value, plc, tag, q)
                flush()
        else:
            for _ in range(n // 500):
                p.publish(recs)
        print(json.dumps({"t0": t0, "t_prod": time.monotonic()}), flush=True)
        p.close()
    else:
        c = open_consumer(ring, wait=True)
        print(json.dumps({"ready": True}), flush=True)
        delivered = lost = 0
        while delivered + lost < n:
            if not c.wait(0.5):
                continue
            b = c.read(20_000)
            delivered += len(b.records)
            lost += b.lost
            c.commit(b)
        print(json.dumps({"t1": time.monotonic(), "delivered": delivered, "lost": lost}), flush=True)
        c.close()


def _spawn_child(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = "import sys; from bench.bench_ring import ring_child; ring_child(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))"
    return subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env, cwd=str(REPO))


def run_ring(n: int, mode: str, capacity: int) -> dict:
    from shm import delete_ring

    ring = f"bench{uuid.uuid4().hex[:8]}"
    procs = []
    try:
        prod = _spawn_child("producer", ring, str(n), mode, str(capacity))
        procs.append(prod)
        json.loads(prod.stdout.readline())
        cons = _spawn_child("consumer", ring, str(n), mode, str(capacity))
        procs.append(cons)
        json.loads(cons.stdout.readline())
        prod.stdin.write("go\n")
        prod.stdin.flush()
        a = json.loads(prod.stdout.readline())
        b = json.loads(cons.stdout.readline())
        return {"records": b["delivered"], "seconds": b["t1"] - a["t0"], "lost": b["lost"]}
    finally:
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        delete_ring(ring, force=True)


def shm_bytes_per_100k() -> tuple[int, int]:
    from shm import Producer, delete_ring
    from shm import layout as L
    from shm import segment as S

    ring = f"bench{uuid.uuid4().hex[:8]}"
    try:
        with Producer.open(ring, 100_000):
            return L.segment_bytes(100_000), os.stat(S.segment_path(ring)).st_size
    finally:
        delete_ring(ring, force=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench ring")
    ap.add_argument("--n", type=int, default=1_000_000, help="records per run (multiple of 500)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each variant; the median counts")
    ap.add_argument("--capacity", type=int, default=0,
                    help="ring capacity (BUFFER_MAX_SIZE); default: --n, so a consumer descheduled by a"
                         " busy machine costs time, never records")
    a = ap.parse_args(argv)
    n = a.n // 500 * 500
    a.capacity = a.capacity or n
    variants = {
        "queue x1": lambda: run_queue(n, 1),
        "queue x500": lambda: run_queue(n, 500),
        "ring put": lambda: run_ring(n, "put", a.capacity),
        "ring x500": lambda: run_ring(n, "batch", a.capacity),
    }
    results: dict[str, list[dict]] = {k: [] for k in variants}
    for r in range(a.rounds):  # interleaved, so machine noise hits every variant alike
        for name, fn in variants.items():
            results[name].append(fn())
    print(f"command: python -m bench ring --n {n} --rounds {a.rounds} --capacity {a.capacity}")
    print(f"{n:,} records per run, producer -> consumer in another process; median of {a.rounds} runs")
    base = statistics.median(n / x["seconds"] for x in results["queue x1"])
    ok = True
    print(f"{'variant':<12} {'records/s':>14} {'x queue x1':>11} {'lost':>6}  goal")
    for name, runs in results.items():
        rate = statistics.median(x["records"] / x["seconds"] for x in runs)
        lost = max(x["lost"] for x in runs)
        ratio = rate / base
        goal = GOALS.get(name)
        verdict = "" if goal is None else (f">= {goal:g}x: " + ("met" if ratio >= goal and lost == 0 else "MISSED"))
        ok &= goal is None or (ratio >= goal and lost == 0)
        print(f"{name:<12} {rate:>14,.0f} {ratio:>10.1f}x {lost:>6}  {verdict}")
    declared, actual = shm_bytes_per_100k()
    print(f"shared memory for 100,000 records: {actual:,} bytes ({actual / 1e6:.2f} MB; layout says {declared:,};"
          f" original feature: about 25 MB; limit 6.5 MB)")
    return 0 if ok and actual <= 6_500_000 else 1


if __name__ == "__main__":
    sys.exit(main())
