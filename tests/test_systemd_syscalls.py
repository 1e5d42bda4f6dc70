"""The units' seccomp filter (SystemCallFilter=@system-service) allows every system call the
processes make: each runs a full cycle under strace and its calls are checked against the
set systemd-analyze expands from the units' own filter."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import REPO, child_env, require_program
from test_run_e2e import free_port

pytestmark = pytest.mark.slow


def _unit_filter() -> str:
    text = (REPO / "deploy" / "systemd" / "tagpipe-writer.service").read_text()
    filters = re.findall(r"^SystemCallFilter=(.+)$", text, re.M)
    assert len(filters) == 1
    for unit in ("tagpipe-poller.service", "tagpipe-web.service"):
        assert f"SystemCallFilter={filters[0]}\n" in (REPO / "deploy" / "systemd" / unit).read_text()
    return filters[0].strip()


def _allowed(analyze: str, spec: str) -> set[str]:
    """Expand a SystemCallFilter= allow list (groups and names) with systemd's own tables."""
    out = subprocess.run([analyze, "syscall-filter"], capture_output=True, text=True, timeout=60).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = line.strip()
            groups[current] = []
        elif current and line.strip() and not line.strip().startswith("#"):
            groups[current].append(line.strip())
    allowed: set[str] = set()

    def add(item: str) -> None:
        if item.startswith("@"):
            for member in groups[item]:
                add(member)
        else:
            allowed.add(item)

    for item in spec.split():
        add(item)
    return allowed


def _traced_child(strace_pid: int) -> int:
    with open(f"/proc/{strace_pid}/task/{strace_pid}/children") as fh:
        return int(fh.read().split()[0])


def test_systemd_syscall_filter_allows_everything_the_processes_do(tmp_path, ring_name):
    analyze = require_program("systemd-analyze")
    strace = require_program("strace")
    probe = subprocess.run([strace, "-o", os.devnull, "true"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here: {probe.stderr.strip()[:200]}")
    allowed = _allowed(analyze, _unit_filter())
    assert {"openat", "mmap", "flock", "futex", "socket"} <= allowed
    port = free_port()
    env = child_env(RING_NAME=ring_name, WEB_PORT=str(port))
    procs = {}
    try:
        for name, module in (("writer", "pipeline.writer"), ("poller", "pipeline.poller"), ("web", "web")):
            procs[name] = subprocess.Popen([strace, "-f", "-c", "-o", str(tmp_path / f"{name}.calls"), sys.executable, "-m", module],
                                           cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (tmp_path / "data" / "tagpipe.db").exists():
            time.sleep(0.2)
        time.sleep(3)  # a few polls, commits and web samples
        for path in ("/", "/api/status", "/metrics", "/api/buffer/health"):
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).read()
                    break
                except urllib.error.HTTPError:
                    break
                except OSError:
                    time.sleep(0.2)
        for name in ("poller", "writer", "web"):  # the units' stop order
            os.kill(_traced_child(procs[name].pid), signal.SIGTERM)
            assert procs[name].wait(60) == 0
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
    for name in ("poller", "writer", "web"):
        rows = (tmp_path / f"{name}.calls").read_text().splitlines()
        calls = {r.split()[-1] for r in rows[2:] if r.strip() and not r.startswith("-") and r.split()[-1] != "total"}
        assert len(calls) > 20, (name, rows[:5])
        assert calls <= allowed, f"{name} makes system calls the units' filter refuses: {sorted(calls - allowed)}"
