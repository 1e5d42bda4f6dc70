"""Rows/s through the Oracle sink into the emulator, batch sizes 500 .. 50,000.

    .venv/bin/python -m bench oracle [--quick]

EMULATOR FIGURE: the server is seerdb's Oracle wire-protocol server over SQLite
(tests/oracle_emulator), run as its own process. What this measures is the client path
(python-oracledb Thin: binds, TTC encoding, one executemany round trip per batch, the
cursor read/update and the commit) plus tagpipe's own code (numpy -> bind rows), against
a server that applies rows one at a time in Python. It says nothing about how fast a real
Oracle takes these rows. Side by side, the same batches are converted to bind rows alone
(no database), which shows how much of a batch's time is ours.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SIZES = (500, 2_000, 10_000, 50_000)


def _records(start: int, n: int) -> np.ndarray:
    from shm.layout import RECORD_DTYPE

    r = np.zeros(n, dtype=RECORD_DTYPE)
    r["seq"] = np.arange(start, start + n, dtype=np.uint64)
    r["ts_us"] = 1_736_937_045_123_456 + r["seq"].astype(np.int64) * 1000
    r["value"] = np.sin(r["seq"] / 100.0) * 1000
    r["plc_code"], r["tag_address"], r["quality"] = b"KRCWO12ELOA101", b"D100", 1
    r["quality"][::97] = 2  # a few BAD rows: NULL values
    return r


def _start_emulator(folder: str) -> tuple[subprocess.Popen, int]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "tests.oracle_emulator", "--db", os.path.join(folder, "emulator.db")],
                            cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"emulator did not start: {line!r}")
    return proc, int(line.split()[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench oracle")
    ap.add_argument("--quick", action="store_true", help="fewer rows per batch size")
    ap.add_argument("--chunk", type=int, default=500, help="ORACLE_INSERT_CHUNK_ROWS (the emulator re-parses a message "
                    "once per 8 KB packet, so its cost grows with the square of the rows per round trip)")
    args, _ = ap.parse_known_args(argv)
    from pipeline.common.settings import load_settings
    from pipeline.writer.sinks.oracle import OracleSink

    with tempfile.TemporaryDirectory(prefix="bench-oracle-") as folder:
        server, port = _start_emulator(folder)
        try:
            settings = load_settings({"ORACLE_DSN": f"127.0.0.1:{port}/FREEPDB1", "ORACLE_USERNAME": "TAGPIPE",
                                      "ORACLE_PASSWORD": "tagpipe-secret", "ORACLE_POOL_MIN": "1", "ORACLE_POOL_MAX": "1",
                                      "ORACLE_CALL_TIMEOUT_MS": "600000", "ORACLE_INSERT_CHUNK_ROWS": str(args.chunk)}, env_file=None)
            sink = OracleSink.from_settings(settings)
            sink.open()
            print("EMULATOR FIGURES (seerdb wire-protocol server over SQLite, own process): client path + tagpipe code, not Oracle")
            print(f"ORACLE_INSERT_CHUNK_ROWS={args.chunk}")
            print(f"{'batch':>7} {'rows':>8} {'rows/s':>9} {'ms/batch':>9} {'bind-only rows/s':>17} {'bind share':>10}")
            results = []
            for i, size in enumerate(SIZES):
                total = max(size * (1 if args.quick else 2), 5_000 if args.quick else 40_000)
                batches = [_records(s, min(size, total - s)) for s in range(0, total, size)]
                epoch = 1000 + i
                sink.write(epoch + 10**6, _records(0, 10))  # warm: connection, statement cache
                t0 = time.perf_counter()
                written = sum(sink.write(epoch, b).written for b in batches)
                took = time.perf_counter() - t0
                assert written == total, (written, total)
                t1 = time.perf_counter()
                for b in batches:
                    sink.bind_rows(epoch, b, np.arange(len(b)))
                bind = time.perf_counter() - t1
                results.append((size, total, total / took, took / len(batches) * 1000, total / bind, bind / took))
                print(f"{size:>7,} {total:>8,} {total / took:>9,.0f} {took / len(batches) * 1000:>9.1f} {total / bind:>17,.0f} {bind / took:>9.1%}", flush=True)
            sink.close()
        finally:
            server.terminate()
            server.wait(10)
    best = max(r[2] for r in results)
    print(f"best {best:,.0f} rows/s; largest/smallest batch throughput ratio {results[-1][2] / results[0][2]:.2f}x")
    print("command: .venv/bin/python -m bench oracle" + (" --quick" if args.quick else "") + (f" --chunk={args.chunk}" if args.chunk != 500 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
