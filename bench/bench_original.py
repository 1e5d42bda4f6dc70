"""The original single-process design against tagpipe, side by side at the same offered rates.

    make bench BENCH_ARGS="original"     # = python -m bench original --seconds=60
    python -m bench original --rates=50000,100000,150000 --seconds=60 --budget=720

For each offered rate, lowest first, one 60-second run of each design, one after the
other (never at the same time: the machine has 2 cores):

* **original** (``bench/original_design.py``): one process, a producer thread, a locked
  ``deque(maxlen=100000)``, a writer thread committing ``executemany`` batches of 500 or
  every 0.5 s into SQLite (WAL, ``synchronous=FULL``), the original five columns.
* **tagpipe**: ``python -m pipeline --rate R --duration S`` (poller load mode, writer,
  web; the default 100,000-record ring), checked row by row in SQLite (``bench_e2e``).

A design is lossless at a rate when every offered value is in its table at the end. Once a
design loses values it is not run at higher rates. Reported: each design's highest
lossless rate and their ratio (goal: tagpipe >= 1.5 x the original), plus the CPU each used
(in cores: the original process over its run, tagpipe's four processes from 2 s to the
end of the load) and database bytes per row. ``--budget`` (seconds) stops stepping up before the run would
outlast it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CMD = 'make bench BENCH_ARGS="original"   (python -m bench original)'


def run_original(rate: float, seconds: float, folder: Path) -> dict:
    """One run of the original design in its own process; its JSON figures plus "lost"."""
    db = folder / f"original-{int(rate)}.db"
    out = subprocess.run(
        [sys.executable, "-m", "bench.original_design", "--rate", f"{rate:g}", "--seconds", f"{seconds:g}", "--db", str(db)],
        cwd=REPO, capture_output=True, text=True, timeout=seconds + 180,
    )
    if out.returncode != 0:
        raise RuntimeError(f"original design failed: {out.stderr.strip()[-500:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["lost"] = r["produced"] - r["rows"]
    r["offered"] = int(rate * seconds)
    for sfx in ("", "-wal", "-shm"):
        Path(str(db) + sfx).unlink(missing_ok=True)
    return r


def run_tagpipe(rate: float, seconds: float) -> dict:
    """One run of ``python -m pipeline --rate R --duration S`` (bench_e2e.measure)."""
    from bench.bench_e2e import measure

    return measure(rate, seconds, None, cpu_window=(2.0, seconds), with_ceiling=False, quiet=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench original")
    ap.add_argument("--rates", default="50000,100000,150000,200000,250000,300000,350000", help="offered values/s, stepped up")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each run")
    ap.add_argument("--budget", type=float, default=720.0, help="stop stepping up before the whole run passes this many seconds")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    rates = [float(x) for x in a.rates.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="bench-original-"))
    best = {"original": 0.0, "tagpipe": 0.0}
    failed = {"original": False, "tagpipe": False}
    t0 = time.monotonic()
    print(f"command: {CMD}; {a.seconds:g} s per run; load average {os.getloadavg()[0]:.2f} (2 cores shared: compare side by side)")
    print(f"{'offered/s':>10} | {'design':<8} | {'offered':>11} | {'in SQLite':>11} | {'lost':>9} | {'lost %':>6} | {'cores':>5} | bytes/row")
    try:
        for rate in rates:
            for design in ("original", "tagpipe"):
                if failed[design]:
                    continue
                if time.monotonic() - t0 + a.seconds + 15 > a.budget:
                    print(f"budget of {a.budget:g} s reached: not stepping further ({design} at {rate:,.0f}/s not run)")
                    failed[design] = True
                    continue
                if design == "original":
                    r = run_original(rate, a.seconds, folder)
                    offered, rows, lost = r["offered"], r["rows"], r["lost"] + (r["offered"] - r["produced"])
                    cpu = f"{r['cpu_s'] / r['elapsed_s']:5.2f}"
                    bpr = r["db_bytes"] / rows if rows else 0.0
                    ok = lost == 0 and r["undrained"] == 0
                else:
                    r = run_tagpipe(rate, a.seconds)
                    offered, rows, lost = int(rate * a.seconds), r["rows"], r["lost"] + max(0, int(rate * a.seconds) - r["published"])
                    cpu = f"{sum(r['cpu'].values()):5.2f}" if r["cpu"] else "    -"
                    bpr = r["db_bytes_per_row"]
                    ok = r["ok"] and lost == 0
                print(f"{rate:>10,.0f} | {design:<8} | {offered:>11,} | {rows:>11,} | {lost:>9,} | {lost / max(offered, 1):>6.1%} | {cpu} | {bpr:.1f}", flush=True)
                if ok:
                    best[design] = max(best[design], rate)
                else:
                    failed[design] = True
            if all(failed.values()):
                break
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    o, t = best["original"], best["tagpipe"]
    print(f"highest lossless rate over {a.seconds:g} s: original {o:,.0f} values/s, tagpipe {t:,.0f} values/s"
          + (f"; ratio {t / o:.2f} (goal >= 1.5)" if o else "; the original lost values at every rate tried"))
    if not failed["tagpipe"]:
        print("tagpipe lost nothing at the highest rate tried: its limit is above it (add higher --rates)")
    print(f"load average after: {os.getloadavg()[0]:.2f}; whole run {time.monotonic() - t0:.0f} s")
    return 0 if o and t / o >= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
