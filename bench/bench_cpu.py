"""CPU of the whole pipeline in steady state: at 10,000 values/s, and with the demo plant.

    make bench BENCH_ARGS="cpu"     # = python -m bench cpu --seconds=30 --warmup=10

Two runs of ``python -m pipeline`` (supervisor, poller, writer, web: exactly as ``make
run``; SQLite with ``synchronous=FULL`` in a temporary folder, a ring of its own):

* **load**: ``--rate 10000`` (the poller's load mode: 10,000 values/s, 1,000 tags);
* **demo plant**: no ``--rate``: the built-in simulated plant, as a fresh install runs.

After ``--warmup`` seconds (start-up: interpreters, imports, the first database open) each
process's CPU time (utime + stime from ``/proc/<pid>/stat``) is read, again ``--seconds``
later; the difference over the wall time is its share of one core. The run is then
stopped with SIGTERM (an orderly stop) and must exit 0. Goal: all processes together
<= 10 % of one core at 10,000 values/s; the demo plant near idle. The web process and the
supervisor are shown on their own: with no client they should cost next to nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CMD = 'make bench BENCH_ARGS="cpu"   (python -m bench cpu)'
PROCESSES = ("supervisor", "poller", "writer", "web")


def steady_cpu(extra_args: list[str], warmup_s: float, seconds: float) -> dict[str, float]:
    """Share of one core of each pipeline process over ``seconds`` after ``warmup_s``
    (process name -> fraction; 1.0 = one core busy). Raises RuntimeError if a process is
    missing or the pipeline does not stop cleanly."""
    from bench.bench_e2e import _free_port, cpu_s
    from shm import delete_ring

    ring = f"bench-cpu-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="tagpipe-bench-cpu-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORACLE_", "BUFFER_", "RING_", "WEB_", "SQLITE_", "BACKUP_", "NOTIFY_SOCKET", "WATCHDOG_", "TAGS_"))}
    env.update(RING_NAME=ring, WEB_PORT=str(_free_port()), PYTHONPATH=str(REPO), LOG_LEVEL="INFO")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *extra_args], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pids = {"supervisor": proc.pid}
    tail: list[str] = []

    def read_stderr() -> None:
        for line in proc.stderr:
            tail.append(line.rstrip())
            del tail[:-30]
            m = re.search(r"started (\w+) \(pid (\d+)", line)
            if m:
                pids[m.group(1)] = int(m.group(2))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        time.sleep(warmup_s)
        if set(pids) != set(PROCESSES) or proc.poll() is not None:
            raise RuntimeError(f"pipeline not running with all processes after {warmup_s:g} s (have {sorted(pids)}):\n" + "\n".join(tail[-10:]))
        t0 = time.monotonic()
        c0 = {k: cpu_s(p) for k, p in pids.items()}
        time.sleep(seconds)
        c1 = {k: cpu_s(p) for k, p in pids.items()}
        dt = time.monotonic() - t0
        if any(v is None for v in (*c0.values(), *c1.values())):
            raise RuntimeError("a process ended during the measurement:\n" + "\n".join(tail[-10:]))
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        if code != 0:
            raise RuntimeError(f"the pipeline exited {code} after SIGTERM:\n" + "\n".join(tail[-10:]))
        return {k: (c1[k] - c0[k]) / dt for k in PROCESSES}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        delete_ring(ring, force=True)
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench cpu")
    ap.add_argument("--seconds", type=float, default=30.0, help="measurement window")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds skipped after start")
    ap.add_argument("--rate", type=float, default=10_000.0, help="load run: values/s")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    print(f"command: {CMD}; window {a.seconds:g} s after {a.warmup:g} s; load average {os.getloadavg()[0]:.2f} (2 cores shared)")
    runs = {
        f"load {a.rate:,.0f} values/s": steady_cpu(["--rate", f"{a.rate:g}", "--duration", f"{a.warmup + a.seconds + 30:g}"], a.warmup, a.seconds),
        "demo plant": steady_cpu([], a.warmup, a.seconds),
    }
    print(f"{'run':<24} " + " ".join(f"{p:>10}" for p in PROCESSES) + f" {'all':>8}   (share of one core)")
    for name, cpu in runs.items():
        print(f"{name:<24} " + " ".join(f"{cpu[p]:>10.2%}" for p in PROCESSES) + f" {sum(cpu.values()):>8.2%}")
    load = runs[f"load {a.rate:,.0f} values/s"]
    idle = runs["demo plant"]
    print(f"web + supervisor with the demo plant: {idle['web'] + idle['supervisor']:.2%} of one core")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0 if sum(load.values()) <= 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
