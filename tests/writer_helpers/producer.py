"""Test helper: publish records into a ring with ``shm.Producer`` (stands in for the poller).

    python -m tests.writer_helpers.producer RING --capacity N --count N --rate R [--batch B] [--bad-every K]

Publishes ``count`` records at about ``rate`` records/s in batches of ``batch``, then
keeps the producer role (heartbeat) until SIGTERM if ``--linger``. Prints
``published <n>`` on stdout after every publish batch when ``--progress`` is set, and
``done <n>`` at the end. Values are the seq as a float (``--bad-every K``: every Kth record
gets value 1e12, which a test's CHECK constraint refuses).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

import numpy as np

from pipeline.common.telemetry import open_producer
from shm import layout as L


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("ring")
    p.add_argument("--capacity", type=int, default=100_000)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--rate", type=float, default=0.0, help="records/s (0: as fast as possible)")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--bad-every", type=int, default=0)
    p.add_argument("--linger", action="store_true")
    p.add_argument("--progress", action="store_true")
    a = p.parse_args(argv)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    prod = open_producer(a.ring, a.capacity)
    t0 = time.monotonic()
    sent = 0
    try:
        while sent < a.count and not stop:
            n = min(a.batch, a.count - sent)
            recs = np.zeros(n, dtype=L.RECORD_DTYPE)
            base = prod.published
            recs["ts_us"] = time.time_ns() // 1000
            recs["value"] = np.arange(base, base + n, dtype=np.float64)
            if a.bad_every:
                idx = np.arange(base, base + n)
                recs["value"][idx % a.bad_every == a.bad_every - 1] = 1e12
            recs["plc_code"] = b"KRCWO12ELOA101"
            recs["tag_address"] = [f"D{100 + (i % 50)}".encode() for i in range(base, base + n)]
            recs["quality"] = L.QUALITY_GOOD
            prod.publish(recs)
            sent += n
            if a.progress:
                print(f"published {prod.published}", flush=True)
            if a.rate > 0:
                ahead = sent / a.rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        print(f"done {prod.published}", flush=True)
        while a.linger and not stop:
            prod.heartbeat()
            time.sleep(0.05)
    finally:
        prod.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
