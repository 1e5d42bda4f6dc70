"""Shared fixtures: unique rings (deleted afterwards), temp folders, system-program checks."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, TypeVar

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"

# In CI (.ci/run) a missing system program is a failure, not a skip.
REQUIRE_ALL = os.environ.get("TAGPIPE_REQUIRE_ALL") == "1"

T = TypeVar("T")


def require_program(name: str) -> str:
    """Path of a system program, or skip the test with a visible reason (fail in CI)."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)
    if path:
        return path
    msg = f"{name} is not installed (apt-get install it; .ci/run does)"
    if REQUIRE_ALL:
        pytest.fail(msg + " and TAGPIPE_REQUIRE_ALL=1")
    pytest.skip(msg)


@pytest.fixture
def ring_name():
    """A unique ring name; the ring, its doorbell and lock files are deleted afterwards."""
    from shm import delete_ring

    name = f"t{uuid.uuid4().hex[:12]}"
    yield name
    delete_ring(name, force=True)
    from pipeline.common import latest

    latest.remove(name)  # the poller's live-values table (issue 15)


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a child process: the repo importable, no stray tagpipe settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORACLE_", "BUFFER_", "RING_", "WEB_", "SQLITE_", "BACKUP_", "TAGS_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def spawn(args: list[str], cwd: str | Path, **env: str) -> subprocess.Popen:
    """Start ``python <args>`` as a separate interpreter (not a fork child)."""
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=str(cwd),
        env=child_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(args: list[str], cwd: str | Path, timeout: float = 60.0, **env: str) -> subprocess.CompletedProcess:
    """Run ``python <args>`` to the end as a separate interpreter; output captured as text.
    Raises subprocess.TimeoutExpired after ``timeout`` seconds (the child is killed)."""
    return subprocess.run([sys.executable, *args], cwd=str(cwd), env=child_env(**env), capture_output=True,
                          text=True, timeout=timeout)


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Make sure a child is gone (by pid): SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_until(cond: Callable[[], T], timeout: float, what: str = "condition", step: float = 0.1) -> T:
    """Poll ``cond()`` every ``step`` seconds until it returns something true (returned), or
    raise AssertionError naming ``what`` after ``timeout`` seconds (monotonic clock)."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago; nothing listens there, so a
    connection to it is refused until a test's server binds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_python(text: str):
    """``ast.parse`` with the garbage collector held off: CPython 3.11.7 raises "SystemError:
    AST constructor recursion depth mismatch" when a collection runs finalizers in the
    middle of building the tree (earlier tests leave asyncio objects to the collector).
    bench/__main__.py does the same for the benchmark list."""
    import ast
    import gc

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(text)
    finally:
        if was_enabled:
            gc.enable()
