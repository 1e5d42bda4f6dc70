"""The original single-process design against tagpipe, side by side at the same offered rates.

    make bench BENCH_ARGS="original"     # = python -m bench original --seconds=60
    python -m bench original --start=100000 --runs=4 --seconds=60 --budget=720

Each design is run ``--runs`` times for 60 s at an offered rate chosen from its own
results so far (``next_rate``: start at 100,000 values/s, 1.5x up while nothing is lost,
then halfway between its highest lossless and lowest lossy rate), the two designs taking
turns, one at a time (the machine has 2 cores), so both see the same machine:

* **original** (``bench/original_design.py``): one process, a producer thread, a locked
  ``deque(maxlen=100000)``, a writer thread committing ``executemany`` batches of 500 or
  every 0.5 s into SQLite (WAL, ``synchronous=FULL``), the original five columns.
* **tagpipe**: ``python -m pipeline --rate R --duration S`` (poller load mode, writer,
  web; the default 100,000-record ring), checked row by row in SQLite (``bench_e2e``).

A design is lossless at a rate when every offered value is in its table at the end.
Reported: each design's highest
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


def next_rate(lo: float, hi: float | None, start: float, step: float) -> float:
    """The next offered rate to try for one design: ``start`` first, 1.5x the highest
    lossless rate while none has lost values yet, then halfway between the highest
    lossless and the lowest lossy rate (bisection), rounded to ``step``."""
    if lo == 0 and hi is None:
        return start
    if hi is None:
        return round(lo * 1.5 / step) * step
    return round((lo + hi) / 2 / step) * step if lo else round(hi / 2 / step) * step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench original")
    ap.add_argument("--start", type=float, default=100_000, help="first offered rate of each design (values/s)")
    ap.add_argument("--runs", type=int, default=4, help="runs per design: step up by 1.5x until values are lost, then bisect")
    ap.add_argument("--step", type=float, default=5_000, help="rates are rounded to this (values/s)")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each run")
    ap.add_argument("--budget", type=float, default=720.0, help="stop before the whole run would pass this many seconds")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    folder = Path(tempfile.mkdtemp(prefix="bench-original-"))
    lo = {"original": 0.0, "tagpipe": 0.0}  # highest lossless rate so far
    hi: dict[str, float | None] = {"original": None, "tagpipe": None}  # lowest lossy rate so far
    t0 = time.monotonic()
    print(f"command: {CMD}; {a.seconds:g} s per run; load average {os.getloadavg()[0]:.2f} (2 cores shared: compare side by side)")
    print(f"{'offered/s':>10} | {'design':<8} | {'offered':>11} | {'in SQLite':>11} | {'lost':>9} | {'lost %':>6} | {'cores':>5} | bytes/row")
    try:
        for _ in range(a.runs):
            for design in ("original", "tagpipe"):  # alternate: both see the same machine
                if time.monotonic() - t0 + a.seconds + 20 > a.budget:
                    print(f"budget of {a.budget:g} s reached: {design} not run again")
                    continue
                rate = next_rate(lo[design], hi[design], a.start, a.step)
                if hi[design] is not None and rate in (lo[design], hi[design]):
                    continue  # bracketed to the step: nothing left to learn
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
                    lo[design] = max(lo[design], rate)
                else:
                    hi[design] = rate if hi[design] is None else min(hi[design], rate)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for d in ("original", "tagpipe"):
        print(f"{d}: highest lossless rate over {a.seconds:g} s {lo[d]:,.0f} values/s"
              + (f", lost values at {hi[d]:,.0f}/s" if hi[d] else ", never lost values (its limit is higher)"))
    o, t = lo["original"], lo["tagpipe"]
    print(f"ratio tagpipe / original: {t / o:.2f} (goal >= 1.5)" if o else "the original lost values at every rate tried")
    print(f"load average after: {os.getloadavg()[0]:.2f}; whole run {time.monotonic() - t0:.0f} s")
    return 0 if o and t / o >= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
