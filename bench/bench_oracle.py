"""Rows/s through the Oracle sink into the emulator, batch sizes 500 .. 50,000.

    .venv/bin/python -m bench oracle [--quick]

EMULATOR FIGURE: the server is seerdb's Oracle wire-protocol server over SQLite
(tests/oracle_emulator), run as its own process. What this measures is the client path
(python-oracledb Thin: binds, TTC encoding, one executemany round trip per batch, the
cursor read/update and the commit) plus tagpipe's own code (numpy -> bind rows), against
a server that applies rows one at a time in Python. It says nothing about how fast a real
Oracle takes these rows. Side by side, the same batches are converted to bind rows alone
(no database), which shows how much of a batch's time is ours.

NO-SERVER FIGURE (``--no-server`` for this part alone; it also runs first in the default
run): the same ``OracleSink.write`` with the network and the server taken out: its
pooled connection is replaced by an in-process stand-in whose cursor accepts every call at
once (the cursor row read and update, ``setinputsizes``, each chunk's ``executemany``
with ``batcherrors``, the commit). Everything tagpipe does per batch still runs (cursor
position, duplicate filter, numpy -> bind rows, the rejects, chunking): rows/s here is
what the sink can hand the driver, an upper bound no database can raise.
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


class _NullCursor:
    """A cursor that accepts every call at once and keeps the cursor table's one value per
    epoch, so the sink's exactly-once bookkeeping runs as against a database."""

    def __init__(self, positions: dict[int, int]) -> None:
        self.positions, self._row, self.rows_handed = positions, None, 0

    def execute(self, sql: str, args=None) -> None:
        if sql.lstrip().upper().startswith("SELECT"):
            epoch = int(args[0]) if args else None
            self._row = (self.positions[epoch],) if epoch in self.positions else None
        elif sql.lstrip().upper().startswith("UPDATE"):
            self.positions[int(args[2])] = int(args[0])
        else:  # INSERT into the cursor table
            self.positions[int(args[0])] = int(args[1])

    def fetchone(self):
        return self._row

    def fetchall(self) -> list:
        return []

    def setinputsizes(self, *sizes) -> None:
        pass

    def executemany(self, sql: str, rows: list, batcherrors: bool = False, **kw) -> None:
        self.rows_handed += len(rows)

    def getbatcherrors(self) -> list:
        return []

    def close(self) -> None:
        pass

    def __enter__(self) -> "_NullCursor":
        return self

    def __exit__(self, *exc) -> None:
        pass


class _NullConnection:
    def __init__(self) -> None:
        self.positions: dict[int, int] = {}
        self.cur = _NullCursor(self.positions)

    def cursor(self) -> _NullCursor:
        return self.cur

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass


def no_server(quick: bool, chunk: int) -> list[tuple[int, int, float]]:
    """(batch size, rows, rows/s) of ``OracleSink.write`` against ``_NullConnection``."""
    import contextlib

    from pipeline.common.settings import load_settings
    from pipeline.writer.sinks.oracle import OracleSink

    settings = load_settings({"ORACLE_DSN": "127.0.0.1:9/NOSERVER", "ORACLE_USERNAME": "TAGPIPE", "ORACLE_PASSWORD": "x",
                              "ORACLE_INSERT_CHUNK_ROWS": str(chunk)}, env_file=None)
    sink = OracleSink.from_settings(settings)
    conn = _NullConnection()
    sink.connection = lambda call_timeout_ms=None: contextlib.nullcontext(conn)  # no pool, no network
    print(f"NO-SERVER FIGURES: OracleSink.write with an in-process connection that accepts every call (ORACLE_INSERT_CHUNK_ROWS={chunk})")
    print(f"{'batch':>7} {'rows':>9} {'rows/s':>10} {'ms/batch':>9}")
    out = []
    for i, size in enumerate(SIZES):
        total = max(size * 4, 100_000 if quick else 400_000)
        batches = [_records(s, min(size, total - s)) for s in range(0, total, size)]
        handed = conn.cur.rows_handed
        t0 = time.perf_counter()
        written = sum(sink.write(2000 + i, b).written for b in batches)
        took = time.perf_counter() - t0
        assert written == total == conn.cur.rows_handed - handed, (written, total)
        assert sink.write(2000 + i, batches[-1]).duplicates == len(batches[-1])  # the cursor position held
        out.append((size, total, total / took))
        print(f"{size:>7,} {total:>9,} {total / took:>10,.0f} {took / len(batches) * 1000:>9.2f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench oracle")
    ap.add_argument("--quick", action="store_true", help="fewer rows per batch size")
    ap.add_argument("--chunk", type=int, default=500, help="ORACLE_INSERT_CHUNK_ROWS (the emulator re-parses a message "
                    "once per 8 KB packet, so its cost grows with the square of the rows per round trip)")
    ap.add_argument("--no-server", action="store_true", help="only the sink's own code path, network and server taken out")
    args, _ = ap.parse_known_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f} (2 cores shared with other engineers: noisy)")
    free = no_server(args.quick, args.chunk if args.chunk != 500 else 5_000)
    print(f"sink alone: {min(r[2] for r in free):,.0f}-{max(r[2] for r in free):,.0f} rows/s handed to the driver")
    if args.no_server:
        print("command: .venv/bin/python -m bench oracle --no-server" + (" --quick" if args.quick else ""))
        return 0
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
