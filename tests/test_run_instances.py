"""Two pipelines side by side on one machine, as two template-unit instances run them: two
real ``python -m pipeline`` supervisors with their own ring, web port, SQLite file and backup
folder. SIGKILLing one's writer leaves the other's processes, counters and rows untouched,
and the killed one recovers with every value once."""

from __future__ import annotations

import os
import signal
import sqlite3
import uuid

import pytest

from conftest import free_port, spawn, stop, wait_until
from test_run_e2e import _pid, check_every_value_once, delivered, get_json, ring_counts
from test_run_supervisor import Lines

pytestmark = pytest.mark.slow


@pytest.fixture
def two_rings():
    from pipeline.common import latest
    from shm import delete_ring

    names = [f"t{uuid.uuid4().hex[:12]}" for _ in range(2)]
    yield names
    for n in names:
        delete_ring(n, force=True)
        latest.remove(n)  # the poller's live-values table (issue 15)


def _starts(ring: str) -> tuple[int, int]:
    from shm import Observer

    with Observer(ring) as obs:
        f = obs.snapshot().fields
    return int(f["producer.starts"]), int(f["consumer.starts"])


def _epochs(db) -> set[int]:
    with sqlite3.connect(db) as conn:
        return {e for (e,) in conn.execute("SELECT DISTINCT RING_EPOCH FROM TAG_DATA")}


def test_two_instances_a_sigkill_in_one_leaves_the_other_untouched(tmp_path, two_rings):
    procs = []
    inst = {}
    try:
        for key, ring in zip("ab", two_rings):
            home = tmp_path / key
            home.mkdir()
            port = free_port()
            proc = spawn(["-m", "pipeline", "--rate", "2000"], cwd=home, RING_NAME=ring, WEB_PORT=str(port),
                         SQLITE_PATH=str(home / "db" / "tagpipe.db"), BACKUP_FILE_PATH=str(home / "backup"))
            procs.append(proc)
            inst[key] = {"ring": ring, "port": port, "proc": proc, "lines": Lines(proc.stderr), "db": home / "db" / "tagpipe.db",
                         "backup": home / "backup"}
        for i in inst.values():
            wait_until(lambda i=i: delivered(i["ring"]) > 1000, 60, f"values committed on {i['ring']}")
            i["lines"].wait_for(r"\[web/web\] status page on http", timeout=60)
        a, b = inst["a"], inst["b"]
        b_pids = {r: _pid(b["lines"], r) for r in ("poller", "writer", "web")}
        b_starts = _starts(b["ring"])
        assert b_starts == (1, 1)

        # SIGKILL a's writer in the middle of its work: a's supervisor restarts it.
        writer = _pid(a["lines"], "writer")
        b_before = ring_counts(b["ring"])
        os.kill(writer, signal.SIGKILL)
        a["lines"].wait_for(r"writer killed by SIGKILL.*restarting it", timeout=20)
        assert _pid(a["lines"], "writer", n=2) != writer
        a["lines"].wait_for(r"\[writer/writer\] writing ring", n=2, timeout=60)
        a_after_restart = delivered(a["ring"])
        wait_until(lambda: delivered(a["ring"]) > a_after_restart + 2000, 60, "a's values flowing after the restart")

        # b never noticed: same processes, no new attach, no loss, still committing; its
        # web process answers for b's ring only, healthy.
        b_now = ring_counts(b["ring"])
        assert _starts(b["ring"]) == b_starts
        assert b_now["epoch"] == b_before["epoch"] and b_now["consumer.lost"] == 0 and b_now["producer.overwritten"] == 0
        assert b_now["consumer.delivered"] > b_before["consumer.delivered"]
        assert {r: _pid(b["lines"], r) for r in ("poller", "writer", "web")} == b_pids
        assert b["lines"].count(r"restarting it|killed by|exited \d") == 0, b["lines"].lines[-20:]
        status, body = get_json(b["port"], "/api/buffer/health")
        assert status == 200 and body["status"] == "healthy", body
        a_status = get_json(a["port"], "/api/buffer/status")[1]
        assert a_status["max_size"] == 100_000
        assert a["proc"].poll() is None and b["proc"].poll() is None

        for i in inst.values():
            i["proc"].send_signal(signal.SIGINT)
        for i in inst.values():
            assert i["proc"].wait(60) == 0, "\n".join(i["lines"].lines[-30:])
        # Every value of each pipeline in its own database exactly once (a: across the kill);
        # nothing of one pipeline in the other's database, no backup file left behind.
        ca = check_every_value_once(a["db"], a["ring"])
        cb = check_every_value_once(b["db"], b["ring"])
        assert _epochs(a["db"]) == {ca["epoch"]} and _epochs(b["db"]) == {cb["epoch"]} and ca["epoch"] != cb["epoch"]
        assert _starts(a["ring"]) == (1, 2) and _starts(b["ring"]) == (1, 1)
        for i in inst.values():
            assert not list(i["backup"].glob("backup_*.csv")), list(i["backup"].iterdir())
    finally:
        for p in procs:
            stop(p, timeout=40)
