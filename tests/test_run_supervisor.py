"""The supervisor (``python -m pipeline``) with tiny child processes: order, restarts, exit codes.

Real processes and real signals: the supervisor runs as a separate interpreter and spawns
``tests/test_run_fakechild.py`` children exactly as it spawns the poller, writer and web.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from conftest import spawn, stop

LINE_RE = re.compile(r"^(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} )?(DEBUG|INFO|WARNING|ERROR|CRITICAL) \[(\w+)/[\w.]+\] .*$")


class Lines:
    """Collects a pipe's lines in a thread, so the test can poll for conditions."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._t.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def count(self, pattern: str) -> int:
        rx = re.compile(pattern)
        return sum(1 for line in list(self.lines) if rx.search(line))

    def wait_for(self, pattern: str, timeout: float = 30.0, n: int = 1) -> list[str]:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            hits = [line for line in list(self.lines) if rx.search(line)]
            if len(hits) >= n:
                return hits
            time.sleep(0.05)
        raise AssertionError(f"no {n} line(s) matching {pattern!r} within {timeout} s; last lines:\n" + "\n".join(self.lines[-30:]))


def _script(tmp: Path, roles: dict[str, list[str]], prelude: str = "") -> list[str]:
    specs = ", ".join(
        f"ChildSpec({role!r}, 'tests.test_run_fakechild', ({role!r}, {str(tmp / (role + '.events'))!r}, *{opts!r}), 10.0)"
        for role, opts in roles.items()
    )
    code = (
        "import sys\n"
        + prelude
        + "from pipeline.common.logs import setup_logging\n"
        "from pipeline.supervisor import ChildSpec, supervise\n"
        f"sys.exit(supervise([{specs}], setup_logging('supervisor'), 'status page on http://127.0.0.1:1/'))\n"
    )
    return ["-c", code]


def _events(tmp: Path, role: str) -> list[tuple[str, int, float]]:
    path = tmp / f"{role}.events"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        what, pid, t = line.split()
        out.append((what, int(pid), float(t)))
    return out


def _pid_of(lines: Lines, role: str, n: int = 1) -> int:
    hit = lines.wait_for(rf"fake {role} started pid=\d+", n=n)[n - 1]
    return int(re.search(r"pid=(\d+)", hit).group(1))


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.fixture
def supervisor_run(tmp_path):
    procs = []

    def start(roles: dict[str, list[str]], prelude: str = ""):
        proc = spawn(_script(tmp_path, roles, prelude), cwd=tmp_path)
        procs.append(proc)
        return proc, Lines(proc.stderr)

    yield start
    for p in procs:
        stop(p, timeout=30)


ROLES = {"poller": ["stopdelay=0.5"], "writer": ["stopdelay=0.5"], "web": []}


def test_run_stops_children_in_order_poller_writer_web(supervisor_run, tmp_path):
    proc, lines = supervisor_run(ROLES)
    for role in ROLES:
        _pid_of(lines, role)
    lines.wait_for("status page on", timeout=10)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0, "\n".join(lines.lines[-30:])
    ev = {role: {what: t for what, _, t in _events(tmp_path, role)} for role in ROLES}
    # Each child was asked to stop only after the previous one had finished stopping.
    assert ev["poller"]["stopped"] <= ev["writer"]["stopping"]
    assert ev["writer"]["stopped"] <= ev["web"]["stopping"]
    time.sleep(0.3)
    assert all(LINE_RE.match(line) for line in lines.lines), [x for x in lines.lines if not LINE_RE.match(x)][:5]


def test_run_restarts_a_sigkilled_child_while_the_others_keep_logging(supervisor_run, tmp_path):
    proc, lines = supervisor_run(ROLES)
    pids = {role: _pid_of(lines, role) for role in ROLES}
    for kill in range(1, 4):
        victim = _pid_of(lines, "writer", n=kill)
        before = {r: lines.count(rf"fake {r} line") for r in ("poller", "web")}
        os.kill(victim, signal.SIGKILL)
        lines.wait_for(r"writer killed by SIGKILL.*restarting it", n=kill)
        new_pid = _pid_of(lines, "writer", n=kill + 1)
        assert new_pid != victim
        # The others' lines kept flowing through the kill and the restart.
        for r in ("poller", "web"):
            lines.wait_for(rf"fake {r} line", n=before[r] + 10, timeout=20)
    assert _pid_of(lines, "poller") == pids["poller"] and not _gone(pids["poller"])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    time.sleep(0.3)
    bad = [x for x in lines.lines if not LINE_RE.match(x)]
    assert not bad, bad[:5]
    # Every line names its process.
    assert {LINE_RE.match(x).group(2) for x in lines.lines} == {"supervisor", "poller", "writer", "web"}


def test_run_child_exiting_2_stops_the_whole_run_with_2(supervisor_run, tmp_path):
    roles = {"poller": [], "writer": ["exit=2@1.0"], "web": []}
    proc, lines = supervisor_run(roles)
    assert proc.wait(60) == 2
    lines.wait_for(r"writer exited 2 \(bad configuration\): not restarting")
    # Not restarted, and the others were stopped in order.
    assert [w for w, _, _ in _events(tmp_path, "writer")] == ["start"]
    assert [w for w, _, _ in _events(tmp_path, "poller")] == ["start", "stopping", "stopped"]
    assert [w for w, _, _ in _events(tmp_path, "web")] == ["start", "stopping", "stopped"]


def test_run_second_signal_kills_everything_and_exits_5(supervisor_run, tmp_path):
    roles = {"poller": ["stopdelay=30"], "writer": [], "web": []}
    proc, lines = supervisor_run(roles)
    pids = [_pid_of(lines, r) for r in roles]
    proc.send_signal(signal.SIGINT)
    lines.wait_for("stopping poller")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 5
    assert time.monotonic() - t0 < 20
    deadline = time.monotonic() + 10
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(p) for p in pids)


@pytest.mark.parametrize("threads", [0, 4])
def test_run_children_stop_when_the_supervisor_is_killed(supervisor_run, tmp_path, threads):
    # The kernel sends the parent-death signal once per exiting thread of the parent: with
    # threads in the supervisor (its web probe) a child must still see a single SIGTERM.
    prelude = f"import threading\nfor _ in range({threads}): threading.Thread(target=threading.Event().wait, daemon=True).start()\n"
    proc, lines = supervisor_run({"poller": [], "writer": [], "web": []}, prelude)
    pids = [_pid_of(lines, r) for r in ("poller", "writer", "web")]
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 20
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(p) for p in pids)
    # They stopped in their orderly way (SIGTERM from the parent-death signal).
    for r in ("poller", "writer", "web"):
        assert [w for w, _, _ in _events(tmp_path, r)] == ["start", "stopping", "stopped"]


def test_run_ctrl_c_in_the_terminal_reaches_only_the_supervisor(supervisor_run, tmp_path):
    proc, lines = supervisor_run({"poller": ["stopdelay=0.5"], "writer": [], "web": []})
    pids = [_pid_of(lines, r) for r in ("poller", "writer", "web")]
    # A terminal's Ctrl-C goes to the foreground process group: the supervisor's only.
    assert all(os.getpgid(p) == p for p in pids)
    assert os.getpgid(proc.pid) not in pids
