"""End to end: ``python -m pipeline --rate R --duration S`` (simulator load mode -> ring -> SQLite).

    make bench BENCH_ARGS="e2e"                                   # 250,000 values/s (the goal) for 60 s
    make bench BENCH_ARGS="e2e --rate=250000 --duration=60 --buffer-size=1000000"
    make bench BENCH_ARGS="e2e --logging-experiment"              # multiprocessing-logging vs SIGKILL

All three processes run as the supervisor's children on this machine, exactly as
``make run`` runs them (SQLite in a temporary folder, a ring of its own). Reported:
committed values/s over the load (and its slowest 10-second window), values lost (must be
0: every published value is checked in SQLite exactly once), peak resident memory (VmHWM)
of each process, and the time from start to the first committed value.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_kib(pid: int) -> tuple[int, int] | None:
    """(VmHWM, RssShmem) of ``pid`` in KiB: peak resident memory, and how much of the
    current resident memory is shared memory (the ring's pages count in every process
    that touched them)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmHWM:", "RssShmem:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (out["VmHWM"], out.get("RssShmem", 0)) if "VmHWM" in out else None


def _counters(ring: str) -> dict | None:
    from pipeline.common.telemetry import SCHEMA
    from shm import Observer, RingError

    try:
        with Observer(ring, telemetry=SCHEMA) as obs:
            f = obs.snapshot().fields
    except (RingError, OSError, ValueError):
        return None
    return {k: int(f[k]) for k in ("epoch", "producer.published", "consumer.committed", "consumer.delivered",
                                      "consumer.lost", "consumer.padding", "producer.overwritten")}


def sqlite_ceiling(rows_n: int = 200_000, batch: int = 20_000) -> float:
    """Rows/s of bare ``executemany`` + commit into the writer's own SQLite table (WAL,
    synchronous=FULL, prepared tuples): the most the writer could reach on this machine
    right now. Measured next to the run so the end-to-end figure reads as a ratio."""
    import sqlite3

    from pipeline.writer.sinks.sqlite import SCHEMA

    with tempfile.TemporaryDirectory(prefix="tagpipe-bench-sqlite-") as d:
        conn = sqlite3.connect(os.path.join(d, "t.db"))
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
        rows = [(1_700_000_000_000_000 + i, "LOADPLC01", f"D{i % 100}", float(i), "GOOD", 12345, i) for i in range(rows_n)]
        t = time.perf_counter()
        for k in range(0, rows_n, batch):
            conn.executemany("INSERT OR IGNORE INTO TAG_DATA VALUES (?,?,?,?,?,?,?)", rows[k : k + batch])
            conn.commit()
        dt = time.perf_counter() - t
        conn.close()
    return rows_n / dt


def cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system, /proc/<pid>/stat utime + stime) ``pid`` has used so far;
    None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_e2e(rate: float, duration: float, buffer_size: int | None) -> int:
    """Run the pipeline at ``rate`` for ``duration`` s, print the figures; 0 if nothing was
    lost or duplicated and the exit code was 0."""
    return 0 if measure(rate, duration, buffer_size)["ok"] else 1


def measure(rate: float, duration: float, buffer_size: int | None, cpu_window: tuple[float, float] | None = None,
            with_ceiling: bool = True, quiet: bool = False) -> dict:
    """Run ``python -m pipeline --rate R --duration S`` and return its figures: "ok" (no
    value lost or duplicated, exit 0), "published", "rows", "lost", "sustained" (values/s),
    "db_bytes_per_row" (database file size after the run / rows), and with ``cpu_window``
    (start, end seconds after start) "cpu": process name -> CPU share of one core over
    that window (utime + stime from /proc/<pid>/stat). Prints unless ``quiet``."""
    say = (lambda *a, **k: None) if quiet else print
    ring = f"bench-e2e-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="tagpipe-bench-e2e-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORACLE_", "BUFFER_", "RING_", "WEB_", "SQLITE_", "BACKUP_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env.update(RING_NAME=ring, WEB_PORT=str(_free_port()), PYTHONPATH=str(REPO), LOG_LEVEL="INFO")
    if buffer_size:
        env["BUFFER_MAX_SIZE"] = str(buffer_size)
    cmd = [sys.executable, "-m", "pipeline", "--rate", f"{rate:g}", "--duration", f"{duration:g}"]
    say(f"load average before: {os.getloadavg()[0]:.2f} (2 cores; other engineers' tests may be running)")
    ceiling = sqlite_ceiling() if with_ceiling else 0.0
    if with_ceiling:
        say(f"bare SQLite ceiling now (executemany of 20,000 prepared rows + commit, WAL, synchronous=FULL): {ceiling:,.0f} rows/s")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pids: dict[str, int] = {"supervisor": proc.pid}
    log_tail: list[str] = []

    def read_stderr() -> None:
        for line in proc.stderr:
            log_tail.append(line.rstrip())
            del log_tail[:-40]
            m = re.search(r"started (\w+) \(pid (\d+)", line)
            if m:
                pids[m.group(1)] = int(m.group(2))

    threading.Thread(target=read_stderr, daemon=True).start()
    hwm: dict[str, int] = {}
    shmem: dict[str, int] = {}
    samples: list[tuple[float, int]] = []  # (t, delivered)
    first_commit_s = None
    cpu_at: dict[str, dict[str, float]] = {}  # "start"/"end" -> process -> CPU s
    cpu_t: dict[str, float] = {}
    try:
        while proc.poll() is None:
            for name, pid in list(pids.items()):
                v = _mem_kib(pid)
                if v:
                    hwm[name] = max(hwm.get(name, 0), v[0])
                    shmem[name] = max(shmem.get(name, 0), v[1])
            c = _counters(ring)
            now = time.monotonic() - t0
            if c:
                samples.append((now, c["consumer.delivered"]))
                if first_commit_s is None and c["consumer.delivered"] > 0:
                    first_commit_s = now
            if cpu_window is not None:
                for mark, at in (("start", cpu_window[0]), ("end", cpu_window[1])):
                    if mark not in cpu_at and now >= at:
                        cpu_t[mark] = time.monotonic()
                        cpu_at[mark] = {k: v for k, v in ((n, cpu_s(p)) for n, p in list(pids.items())) if v is not None}
            if now > duration + 120:
                print("timed out: stopping the run", file=sys.stderr)
                proc.send_signal(signal.SIGINT)
                proc.wait(60)
                break
            time.sleep(0.2)
        code = proc.wait(60)
        final = _counters(ring)
        if final is None:
            print("the ring is gone: no figures", file=sys.stderr)
            return {"ok": False, "published": 0, "rows": 0, "lost": 0, "sustained": 0.0, "ceiling": ceiling,
                    "db_bytes_per_row": 0.0, "cpu": {}, "exit": code}
        db = work / "data" / "tagpipe.db"
        conn = sqlite3.connect(db)
        rows = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT SEQ) FROM TAG_DATA WHERE RING_EPOCH = ?", (final["epoch"],)).fetchone()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        db_bytes = sum(f.stat().st_size for f in db.parent.glob(db.name + "*"))
    finally:
        if proc.poll() is None:
            proc.kill()
        from shm import delete_ring

        delete_ring(ring, force=True)
        shutil.rmtree(work, ignore_errors=True)
    expected = final["producer.published"] - final["consumer.padding"]
    lost = expected - rows[1]  # published values missing from SQLite (the truth)
    moving = [(t, d) for t, d in samples if 0 < d < expected]
    t_first, t_last = (moving[0][0], moving[-1][0]) if len(moving) > 1 else (0.0, 0.0)
    sustained = (moving[-1][1] - moving[0][1]) / (t_last - t_first) if t_last > t_first else 0.0
    windows = []
    for t, d in moving:
        later = [(t2, d2) for t2, d2 in moving if t2 >= t + 10]
        if later:
            t2, d2 = later[0]
            windows.append((d2 - d) / (t2 - t))
    say(f"command: {' '.join(cmd)}  (cwd: a temporary folder; RING_NAME={ring}{f', BUFFER_MAX_SIZE={buffer_size}' if buffer_size else ''})")
    say(f"exit code {code}; published {final['producer.published']:,}; in SQLite {rows[0]:,} rows ({rows[1]:,} distinct);"
          f" lost {lost:,} (ring: consumer.lost {final['consumer.lost']:,}, producer.overwritten {final['producer.overwritten']:,})")
    say(f"sustained committed: {sustained:,.0f} values/s over {t_last - t_first:.1f} s " + (f" ({sustained / ceiling:.0%} of the bare SQLite ceiling)" if ceiling else "")
          + (f"; slowest 10 s window {min(windows):,.0f} values/s" if windows else ""))
    say(f"time from start to the first committed value: {first_commit_s:.2f} s" if first_commit_s else "no value committed")
    say("peak resident memory (VmHWM; in brackets the shared ring pages counted in it): "
          + ", ".join(f"{k} {v / 1024:.0f} MiB [{shmem.get(k, 0) / 1024:.0f}]" for k, v in sorted(hwm.items())))
    say(f"load average after: {os.getloadavg()[0]:.2f}")
    cpu = {}
    if "start" in cpu_at and "end" in cpu_at:
        span = cpu_t["end"] - cpu_t["start"]
        cpu = {k: (cpu_at["end"][k] - cpu_at["start"][k]) / span for k in cpu_at["end"] if k in cpu_at["start"]}
        say(f"CPU over {cpu_window[0]:g}-{cpu_window[1]:g} s (share of one core): "
            + ", ".join(f"{k} {v:.1%}" for k, v in sorted(cpu.items())) + f"; all {sum(cpu.values()):.1%}")
    bytes_per_row = db_bytes / rows[0] if rows[0] else 0.0
    say(f"database file after the run: {db_bytes:,} bytes, {bytes_per_row:.1f} bytes per row")
    ok = not (code != 0 or lost or rows[0] != rows[1] or rows[0] != expected)
    if not ok:
        say("FAILED: values lost or duplicated, or a bad exit code; last log lines:\n" + "\n".join(log_tail[-15:]), file=sys.stderr)
    return {"ok": ok, "published": final["producer.published"], "rows": rows[0], "lost": lost, "sustained": sustained,
            "ceiling": ceiling, "db_bytes_per_row": bytes_per_row, "cpu": cpu, "exit": code}


def _mplog_child_noisy() -> None:
    import logging

    log = logging.getLogger("noisy")
    i = 0
    while True:
        log.info("noisy line %d %s", i, "x" * 200)
        i += 1
        time.sleep(0.001)


def _mplog_child_steady() -> None:
    import logging

    log = logging.getLogger("steady")
    i = 0
    while True:
        log.info("steady line %d", i)
        i += 1
        time.sleep(0.01)


def logging_experiment(kills: int) -> int:
    """multiprocessing-logging (fork, one shared queue): SIGKILL a logging child repeatedly
    and watch whether another child's lines still arrive. Prints after how many kills they
    stopped for good (DESIGN.md section 9), or that they never did."""
    import logging
    import multiprocessing as mp

    import multiprocessing_logging

    counts: dict[str, int] = {}

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            counts[record.name] = counts.get(record.name, 0) + 1

    ctx = mp.get_context("fork")
    mp.set_start_method("fork", force=True)
    root = logging.getLogger()
    root.handlers[:] = [Count()]
    root.setLevel("INFO")
    multiprocessing_logging.install_mp_handler()
    steady = ctx.Process(target=_mplog_child_steady)
    steady.start()
    wedged_after = None
    try:
        for k in range(1, kills + 1):
            noisy = ctx.Process(target=_mplog_child_noisy)
            noisy.start()
            time.sleep(0.05 + (k % 7) * 0.013)
            os.kill(noisy.pid, signal.SIGKILL)
            noisy.join()
            before = counts.get("steady", 0)
            time.sleep(2.0)
            if counts.get("steady", 0) == before:
                wedged_after = k
                break
    finally:
        os.kill(steady.pid, signal.SIGKILL)
        steady.join()
    print("command: make bench BENCH_ARGS=\"e2e --logging-experiment\"")
    if wedged_after:
        print(f"multiprocessing-logging: the steady child's lines stopped for good after {wedged_after} SIGKILL(s) of another child")
    else:
        print(f"multiprocessing-logging: lines kept flowing through {kills} SIGKILLs")
    sys.stdout.flush()
    os._exit(0)  # the wedged queue's feeder threads would block interpreter exit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench e2e", description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=250_000, help="values/s the simulator's load mode publishes")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    p.add_argument("--buffer-size", type=int, default=None, help="BUFFER_MAX_SIZE for the run (default: the setting's default)")
    p.add_argument("--logging-experiment", action="store_true", help="only the multiprocessing-logging SIGKILL experiment")
    p.add_argument("--kills", type=int, default=100, help="logging experiment: SIGKILLs to try")
    args = p.parse_args(argv or [])
    if args.logging_experiment:
        return logging_experiment(args.kills)
    return run_e2e(args.rate, args.duration, args.buffer_size)


if __name__ == "__main__":
    sys.exit(main())
