"""Web endpoint latency (p50/p99) at 200 requests/s while the pipeline carries a load.

    make bench BENCH_ARGS=web
    .venv/bin/python -m bench web [--seconds 5] [--rps 200] [--load 10000] [--direct]

Three scenarios run one after the other, each on its own ring:
  baseline    a trickle of 100 values/s (direct Producer/Consumer): the web process's own
              latency on this machine at this moment, for the ratios
  plant load  the poller's load mode publishes 10,000 values/s, the writer drains to SQLite
  full speed  the poller's load mode as fast as it can (--rate 0), the writer as it can
``--direct`` replaces the real poller/writer with a minimal ``shm.Producer``/``Consumer``
pair in this file (no database), to tell the web process's own cost from the pipeline's.

For each endpoint a client in another process sends requests on a fixed schedule of
``--rps`` per second over one keep-alive connection for ``--seconds`` and records each
request's latency (send to last byte). Goal: p99 under 10 ms at plant load.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENDPOINTS = ["/api/buffer/status", "/api/buffer/writer/metrics", "/api/buffer/health", "/api/buffer/metrics", "/api/status", "/metrics", "/"]
GOAL_P99_MS = 10.0


def _pct(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    k = min(len(sorted_ms) - 1, max(0, int(round(q * (len(sorted_ms) - 1)))))
    return sorted_ms[k]


def client(url: str, paths: list[str], rps: float, seconds: float) -> dict:
    """Paced requests (one every 1/rps s) per path; returns {path: {p50_ms, p99_ms, ...}}."""
    host, port = url.split("//", 1)[1].split(":")
    out = {}
    for path in paths:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        lat: list[float] = []
        statuses: dict[int, int] = {}
        late = 0
        n = int(rps * seconds)
        t0 = time.perf_counter() + 0.05
        for i in range(n):
            due = t0 + i / rps
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            elif wait < -1 / rps:
                late += 1
            s = time.perf_counter()
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            lat.append((time.perf_counter() - s) * 1000.0)
            statuses[r.status] = statuses.get(r.status, 0) + 1
        conn.close()
        lat.sort()
        out[path] = {"n": n, "p50_ms": _pct(lat, 0.50), "p99_ms": _pct(lat, 0.99), "max_ms": lat[-1], "late": late, "statuses": statuses}
    return out


def direct_producer(ring: str, rate: float, seconds: float) -> None:
    """Minimal load: ``rate`` values/s in 10 ms batches (0: batches of 1,000 flat out)."""
    import numpy as np

    from pipeline.common.telemetry import open_producer
    from shm import layout as L

    p = open_producer(ring, 100_000, 80.0)
    batch = np.zeros(1000 if rate <= 0 else max(1, int(rate / 100)), dtype=L.RECORD_DTYPE)
    batch["plc_code"], batch["tag_address"], batch["quality"] = b"KRCWO12ELOA101", b"D100", 1
    start = time.monotonic()
    sent = 0
    try:
        while time.monotonic() - start < seconds:
            if rate > 0:
                due = int(rate * (time.monotonic() - start))
                if sent >= due:
                    time.sleep(0.002)
                    continue
            batch["ts_us"] = time.time_ns() // 1000
            p.publish(batch)
            sent += len(batch)
    finally:
        p.close()


def direct_consumer(ring: str, seconds: float) -> None:
    from pipeline.common.telemetry import WriterMetrics, open_consumer

    c = open_consumer(ring, wait=True, stop=lambda: False)
    c.set("writer.db_state", 1)
    metrics = WriterMetrics(c)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            c.heartbeat()
            if not c.wait(0.1):
                continue
            s = time.perf_counter_ns()
            b = c.read(5000)
            c.commit(b)
            metrics.record_write(True, len(b.records), (time.perf_counter_ns() - s) // 1000)
            c.set("writer.last_commit_us", time.time_ns() // 1000)
    finally:
        c.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(ring: str, work: Path, port: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RING_", "WEB_", "SQLITE_", "BACKUP_", "ORACLE_", "NOTIFY_SOCKET"))}
    env.update(PYTHONPATH=str(REPO), RING_NAME=ring, WEB_PORT=str(port), SQLITE_PATH=str(work / "tagpipe.db"),
               BACKUP_FILE_PATH=str(work / "backup"), LOG_LEVEL="WARNING")
    return env


def _spawn(args: list[str], env: dict, cwd: Path) -> subprocess.Popen:
    # stderr to a file, not a pipe: nobody drains a pipe here, and a process logging
    # "records lost" at full speed would block on a full one.
    log = open(cwd / f"{args[1].replace('.', '_')}-{len(list(cwd.glob('*.log')))}.log", "w")
    proc = subprocess.Popen([sys.executable, *args], env=env, cwd=str(cwd), stdout=subprocess.DEVNULL, stderr=log)
    proc.log_path = log.name  # type: ignore[attr-defined]
    log.close()
    return proc


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def scenario(name: str, rate: float, args, direct: bool | None = None) -> list[tuple]:
    from pipeline.common.telemetry import SCHEMA
    from shm import Observer, delete_ring

    ring = f"bw{uuid.uuid4().hex[:10]}"
    port = _free_port()
    seconds_total = args.seconds * len(ENDPOINTS) + 15
    with tempfile.TemporaryDirectory(prefix="bench_web_") as tmp:
        work = Path(tmp)
        env = _env(ring, work, port)
        me = ["-m", "bench.bench_web"]
        direct = args.direct if direct is None else direct
        if direct:
            load = [_spawn(me + ["--role", "producer", "--ring", ring, "--rate", str(rate), "--for", str(seconds_total)], env, work),
                    _spawn(me + ["--role", "consumer", "--ring", ring, "--for", str(seconds_total)], env, work)]
        else:
            load = [_spawn(["-m", "pipeline.poller", "--rate", str(rate), "--duration", str(seconds_total)], env, work),
                    _spawn(["-m", "pipeline.writer"], env, work)]
        web = _spawn(["-m", "web"], env, work)
        procs = [*load, web]
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    time.sleep(0.1)
            time.sleep(3)  # let the load settle
            obs = Observer(ring, telemetry=SCHEMA)
            s0 = obs.snapshot().fields
            t0 = time.monotonic()
            out = subprocess.run([sys.executable, *me, "--role", "client", "--url", f"http://127.0.0.1:{port}",
                                  "--rps", str(args.rps), "--seconds", str(args.seconds)],
                                 env=env, cwd=str(work), capture_output=True, text=True, timeout=seconds_total + 60)
            dt = time.monotonic() - t0
            s1 = obs.snapshot().fields
            obs.close()
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                raise RuntimeError("client failed")
            res = json.loads(out.stdout)
            pub = (s1["producer.published"] - s0["producer.published"]) / dt
            com = (s1["consumer.committed"] - s0["consumer.committed"]) / dt
            lost = s1["consumer.lost"] - s0["consumer.lost"]
            print(f"\n{name}: published {pub:,.0f} values/s, committed {com:,.0f}/s, lost {lost:,} during the run "
                  f"({'direct Producer/Consumer' if direct else 'real poller load mode + writer to SQLite'})")
            print(f"  {'endpoint':<28}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'late':>6}  status")
            rows = []
            for path, r in res.items():
                print(f"  {path:<28}{r['p50_ms']:8.2f}{r['p99_ms']:8.2f}{r['max_ms']:8.1f}{r['late']:6d}  {r['statuses']}")
                rows.append((name, path, r["p50_ms"], r["p99_ms"]))
            return rows
        finally:
            _stop(procs)
            for p in procs:
                if p.returncode not in (0, None, -signal.SIGTERM):
                    tail = Path(p.log_path).read_text(errors="replace").strip().splitlines()[-1:]
                    print(f"  (process {p.args[1:4]} exit {p.returncode}: {tail})")
            try:
                delete_ring(ring, force=True)
            except Exception:
                pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench web")
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds per endpoint (default 5: 1,000 requests at 200/s)")
    ap.add_argument("--rps", type=float, default=200.0)
    ap.add_argument("--load", type=float, default=10_000.0, help="plant load in values/s")
    ap.add_argument("--direct", action="store_true", help="minimal Producer/Consumer instead of the real poller/writer")
    ap.add_argument("--role", choices=("client", "producer", "consumer"), help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--ring", help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--for", dest="for_s", type=float, default=60.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role == "client":
        print(json.dumps(client(args.url, ENDPOINTS, args.rps, args.seconds)))
        return 0
    if args.role == "producer":
        direct_producer(args.ring, args.rate, args.for_s)
        return 0
    if args.role == "consumer":
        direct_consumer(args.ring, args.for_s)
        return 0
    cmd = ".venv/bin/python -m bench web" + "".join(f" {a}" for a in (argv or []))
    print(f"command: {cmd}   (machine: {os.cpu_count()} cores, shared; load avg {os.getloadavg()[0]:.1f})")
    rows = scenario("baseline: 100 values/s", 100.0, args, direct=True)
    rows += scenario(f"plant load {args.load:,.0f} values/s", args.load, args)
    rows += scenario("full speed", 0.0, args)
    base = {r[1]: r for r in rows if r[0].startswith("baseline")}
    print(f"\n  {'endpoint':<28}{'p99 base':>9}{'p99 plant':>10}{'ratio':>7}{'p99 full':>9}{'ratio':>7}")
    for path in ENDPOINTS:
        b = base[path][3]
        pl = next(r[3] for r in rows if r[0].startswith("plant") and r[1] == path)
        fu = next(r[3] for r in rows if r[0].startswith("full") and r[1] == path)
        print(f"  {path:<28}{b:9.2f}{pl:10.2f}{pl / b:7.2f}{fu:9.2f}{fu / b:7.2f}")
    worst = max(r[3] for r in rows if r[0].startswith("plant"))
    print(f"\nworst p99 at plant load: {worst:.2f} ms (goal < {GOAL_P99_MS:g} ms): {'met' if worst < GOAL_P99_MS else 'NOT met'}"
          f"; load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other work on the machine counts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
