"""Two ``python -m pipeline`` supervisors started at the same instant on one ring (issue 12
item 13): one wins whole, the other exits 4 at once with one line and starts nothing."""

from __future__ import annotations

import socket
import time

import pytest

from pipeline.instance import InstanceLock, InstanceTaken, holder_pid
from tests.conftest import free_port, stop, wait_until
from tests.writer_helpers.util import ring_value

pytestmark = pytest.mark.slow


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0


def _start(tmp_path, ring: str, key: str):
    import subprocess
    import sys

    from tests.conftest import child_env

    home = tmp_path / key
    home.mkdir(exist_ok=True)
    env = child_env(RING_NAME=ring, WEB_PORT=str(free_port()), SQLITE_PATH=str(home / "db" / "tagpipe.db"),
                    BACKUP_FILE_PATH=str(home / "backup"), SHUTDOWN_TIMEOUT="5")
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--rate", "1000"], cwd=str(home), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("attempt", range(3))
def test_two_supervisors_started_together_one_wins_whole(tmp_path, ring_name, attempt):
    a = _start(tmp_path, ring_name, "a")
    b = _start(tmp_path, ring_name, "b")
    procs = [a, b]
    try:
        # The loser gives up before starting any child, well inside the time a child
        # would need to even import.
        loser = wait_until(lambda: next((p for p in procs if p.poll() is not None), None), 30, "one supervisor exits")
        winner = b if loser is a else a
        err = loser.stderr.read()
        assert loser.returncode == 4, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, err
        assert f"ring {ring_name!r} already has a supervisor (pid {winner.pid})" in lines[0]
        assert "started" not in err and "Traceback" not in err
        # The winner runs whole: its own poller and writer hold both roles, and it stays up.
        wait_until(lambda: _ppid(ring_value(ring_name, "producer.pid", 0)) == winner.pid, 60, "winner's poller attached")
        wait_until(lambda: _ppid(ring_value(ring_name, "consumer.pid", 0)) == winner.pid, 60, "winner's writer attached")
        time.sleep(1.0)
        assert winner.poll() is None
        winner.terminate()
        assert winner.wait(30) == 0, winner.stderr.read()
    finally:
        for p in procs:
            stop(p, timeout=30)
            if p.stderr is not None:
                p.stderr.close()


def test_lock_is_freed_by_release_and_names_its_holder(ring_name):
    lock = InstanceLock(ring_name).acquire()
    try:
        assert holder_pid(ring_name) == __import__("os").getpid()
        with pytest.raises(InstanceTaken, match=rf"ring '{ring_name}' already has a supervisor \(pid \d+\)"):
            InstanceLock(ring_name).acquire()
        # Not a file: nothing to unlink from under the holder.
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with pytest.raises(OSError):
            probe.bind(b"\0tagpipe-supervisor-" + ring_name.encode())
        probe.close()
    finally:
        lock.release()
    assert holder_pid(ring_name) == 0
    InstanceLock(ring_name).acquire().release()


def _lines_without_info(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip() and " INFO [" not in line]


def test_supervisor_starts_nothing_while_a_foreign_poller_holds_the_ring(tmp_path, ring_name):
    """A poller outside this supervisor (its own unit) keeps the producer role: the
    supervisor waits SHUTDOWN_TIMEOUT + 5 s, then exits 4 with one line, no child started."""
    from tests.ring_helpers.proc import Role

    holder = Role("hold", ring_name, "--role", "producer", "--then", "hold")
    try:
        holder.event("holding")
        sup = _start(tmp_path, ring_name, "a")
        try:
            err = sup.communicate(timeout=60)[1]
        finally:
            stop(sup)
        assert sup.returncode == 4, err
        lines = _lines_without_info(err)
        assert len(lines) == 1, err
        assert f"ring {ring_name!r} is still used by a poller (pid {holder.pid}) not started by this supervisor" in lines[0]
        assert "started poller" not in err and "started writer" not in err
    finally:
        holder.stop()


def test_supervisor_waits_for_the_children_of_a_killed_one_then_runs_whole(tmp_path, ring_name):
    """The roles are freed while it waits (like the children of a SIGKILLed supervisor
    finishing their orderly stop): it then starts its own children, which take both roles."""
    from tests.ring_helpers.proc import Role

    holder = Role("hold", ring_name, "--role", "producer", "--then", "hold")
    sup = None
    try:
        holder.event("holding")
        sup = _start(tmp_path, ring_name, "a")
        time.sleep(1.5)
        assert sup.poll() is None
        holder.kill()
        wait_until(lambda: _ppid(ring_value(ring_name, "producer.pid", 0)) == sup.pid, 60, "its own poller attached")
        wait_until(lambda: _ppid(ring_value(ring_name, "consumer.pid", 0)) == sup.pid, 60, "its own writer attached")
        sup.terminate()
        assert sup.wait(30) == 0
    finally:
        holder.stop()
        if sup is not None:
            stop(sup)
            sup.stderr.close()
