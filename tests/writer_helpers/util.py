"""Shared helpers of the writer and spool tests: real processes, real SQLite files."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.conftest import child_env, stop, wait_until  # noqa: F401 (wait_until: re-exported)


def spawn(args: list[str], cwd: Path, log_name: str | None = None, **env: str) -> subprocess.Popen:
    """Start ``python <args>`` (separate interpreter). stderr goes to ``cwd/<log_name>`` so a
    chatty child can never block on a full pipe; stdout stays a pipe (producer progress)."""
    import sys

    log_path = Path(cwd) / (log_name or f"{args[1].rsplit('.', 1)[-1]}-{time.monotonic_ns()}.log")
    err = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, *args], cwd=str(cwd), env=child_env(**env), stdout=subprocess.PIPE, stderr=err, text=True)
    err.close()
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def log_text(proc: subprocess.Popen) -> str:
    return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


def start_producer(ring: str, cwd: Path, count: int, rate: float = 0.0, capacity: int = 100_000, batch: int = 100, linger: bool = True, bad_every: int = 0) -> subprocess.Popen:
    args = ["-m", "tests.writer_helpers.producer", ring, "--capacity", str(capacity), "--count", str(count), "--rate", str(rate), "--batch", str(batch)]
    if linger:
        args.append("--linger")
    if bad_every:
        args += ["--bad-every", str(bad_every)]
    return spawn(args, cwd, None)


def producer_done(proc: subprocess.Popen, timeout: float = 120.0) -> int:
    """Wait for the producer's ``done N`` line; returns N (records published)."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("done "):
            return int(line.split()[1])
        if not line and proc.poll() is not None:
            raise AssertionError(f"producer exited {proc.returncode}: {log_text(proc)}")
    raise AssertionError("producer did not finish")


def writer_env(ring: str, tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        "RING_NAME": ring,
        "SQLITE_PATH": str(tmp / "data" / "tagpipe.db"),
        "BACKUP_FILE_PATH": str(tmp / "backup"),
        "LOG_LEVEL": "INFO",
        "SHUTDOWN_TIMEOUT": "10",
    }
    env.update(extra)
    return env


def start_writer(ring: str, tmp: Path, **extra: str) -> subprocess.Popen:
    return spawn(["-m", "pipeline.writer"], tmp, None, **writer_env(ring, tmp, **extra))


def db_path(tmp: Path) -> Path:
    return tmp / "data" / "tagpipe.db"


def db_counts(path: Path) -> tuple[int, int]:
    """(rows, distinct identities) in TAG_DATA; (0, 0) if the table does not exist yet."""
    if not path.exists():
        return 0, 0
    conn = sqlite3.connect(str(path), timeout=5)
    try:
        return conn.execute("SELECT COUNT(*), COUNT(DISTINCT RING_EPOCH || ':' || SEQ) FROM TAG_DATA").fetchone()
    except sqlite3.OperationalError:
        return 0, 0
    finally:
        conn.close()


def db_seqs(path: Path) -> list[int]:
    conn = sqlite3.connect(str(path), timeout=5)
    try:
        return [r[0] for r in conn.execute("SELECT SEQ FROM TAG_DATA WHERE RING_EPOCH >= 0 ORDER BY SEQ")]
    finally:
        conn.close()


def ring_fields(ring: str) -> dict:
    from pipeline.common.telemetry import SCHEMA
    from shm import Observer

    with Observer(ring, telemetry=SCHEMA) as obs:
        return obs.snapshot().fields


def halt(proc: subprocess.Popen | None, timeout: float = 20.0) -> None:
    """Make sure a child is gone (SIGTERM, then SIGKILL, by pid) and close its pipe."""
    if proc is None:
        return
    stop(proc, timeout)
    if proc.stdout is not None:
        proc.stdout.close()


def ring_value(ring: str, name: str, default=None):
    """One header word of a ring, or ``default`` while the ring does not exist yet."""
    from shm import RingError

    try:
        return ring_fields(ring)[name]
    except RingError:
        return default


def finish(proc: subprocess.Popen, timeout: float = 20.0) -> tuple[int, str]:
    """SIGTERM and wait; returns (exit code, stderr text)."""
    halt(proc, timeout)
    return proc.returncode, log_text(proc)


def backup_files(tmp: Path) -> list[str]:
    folder = tmp / "backup"
    return sorted(n for n in os.listdir(folder) if n.startswith("backup_")) if folder.exists() else []
