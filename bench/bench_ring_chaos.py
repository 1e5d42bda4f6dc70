"""The ring under hundreds of random SIGKILLs of its producer and consumer (minutes).

    make bench BENCH_ARGS="ring_chaos"      (or: .venv/bin/python -m bench ring_chaos [--duration=S])

The long version of ``tests/test_ring_chaos.py``: a producer process publishing batches
(and single puts) at 20,000 records/s into an 8,000-record ring, a consumer process that
stores every delivered identity in its own SQLite file before committing it in the ring
(and now and then stalls 0.45-0.9 s, like a slow database, so the ring overflows), and a
SIGKILL of one or the other every 0.2-1.0 s, each restarted at once. Half the producer
kills are aimed between claim and publish (the producer's publish-stall test hook, see
``tests/ring_helpers/chaos.py``), so the padding path runs for real. At the end the ring is drained and
checked: published == delivered + lost + padding (header counters), 0 torn records,
0 duplicates, SQLite rows == consumer.delivered + stored_then_overwritten (records a
killed consumer had stored but not committed, overwritten before its successor could
read them again: in SQLite and counted lost). Exit 1 if anything is off.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench ring_chaos")
    ap.add_argument("--duration", type=float, default=240.0, help="seconds of kills")
    ap.add_argument("--capacity", type=int, default=8000)
    ap.add_argument("--rate", type=float, default=20_000, help="producer records/s")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stall-p", type=float, default=0.005, help="chance per batch of a 0.45-0.9 s consumer stall")
    ap.add_argument("--aim-p", type=float, default=0.5, help="share of producer kills aimed between claim and publish")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))  # the helper processes live with the tests
    from ring_helpers.chaos import problems, run_chaos

    from shm import delete_ring

    ring = f"chaos{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tagpipe-chaos-") as tmp:
        try:
            r = run_chaos(ring, Path(tmp), a.duration, a.capacity, a.rate, a.seed, stall_p=a.stall_p, aim_p=a.aim_p,
                          log=lambda m: print(f"  {time.monotonic() - t0:6.1f} s: {m}", flush=True))
        finally:
            delete_ring(ring, force=True)
    print(f"command: python -m bench ring_chaos --duration={a.duration:g} --capacity={a.capacity}"
          f" --rate={a.rate:g} --seed={a.seed} --stall-p={a.stall_p:g} --aim-p={a.aim_p:g}")
    print(f"{r['kills_producer']} producer kills, {r['kills_consumer']} consumer kills in {a.duration:g} s")
    for k, v in r.items():
        print(f"  {k:<24} {v:>12,}")
    bad = problems(r)
    if r["kills_producer"] >= 10 and not r["kills_between_claim_and_publish"] and a.aim_p > 0:
        bad.append("no producer kill landed between claim and publish (the padding path did not run)")
    print("reckoning: " + ("exact (published == delivered + lost + padding; 0 torn; 0 duplicates;"
                           " SQLite rows == delivered + stored_then_overwritten)" if not bad else "WRONG: " + "; ".join(bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
