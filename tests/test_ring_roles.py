"""Role locks that cannot be bypassed (issue 12 item 2): with the lock files deleted, a
second poller or writer on the same ring is still refused (exit 4, one line naming the
ring and the holder), so seqs are never reused and nothing is delivered twice."""

from __future__ import annotations

import os
import signal

import pytest

from shm import Consumer, Producer, RingError, RoleTaken, delete_ring
from shm import segment as S
from tests.conftest import run, spawn, stop
from tests.ring_helpers.proc import Role
from tests.writer_helpers.util import finish, ring_fields, ring_value, start_writer, wait_until, writer_env


def _first_line(err: str) -> str:
    return err.strip().splitlines()[-1] if err.strip() else ""


def test_second_poller_and_writer_refused_after_their_lock_files_are_deleted(ring_name, tmp_path):
    poller = spawn(["-m", "pipeline.poller", "--rate", "2000", "--duration", "60"], tmp_path, RING_NAME=ring_name)
    writer = None
    try:
        wait_until(lambda: ring_value(ring_name, "producer.pid") == poller.pid, 30, "poller attached")
        writer = start_writer(ring_name, tmp_path)
        wait_until(lambda: ring_value(ring_name, "consumer.pid") == writer.pid, 30, "writer attached")
        for role in ("producer", "consumer"):
            os.unlink(S.lock_path(ring_name, role))

        second = run(["-m", "pipeline.poller", "--rate", "2000", "--duration", "5"], tmp_path, timeout=60, RING_NAME=ring_name)
        assert second.returncode == 4, second.stderr
        line = _first_line(second.stderr)
        assert f"ring {ring_name!r} already has a producer (pid {poller.pid})" in line, second.stderr
        assert "Traceback" not in second.stderr

        second_writer = run(["-m", "pipeline.writer"], tmp_path, timeout=60, **writer_env(ring_name, tmp_path))
        assert second_writer.returncode == 4, second_writer.stderr
        assert f"ring {ring_name!r} already has a consumer (pid {writer.pid})" in _first_line(second_writer.stderr)
        assert "Traceback" not in second_writer.stderr

        # The liveness probe (web, delete-ring) still sees both roles held, so delete-ring
        # without --force still refuses to pull the ring from under them.
        assert S.role_alive(ring_name, "producer") is True and S.role_alive(ring_name, "consumer") is True
        with pytest.raises(RingError, match="still has a running producer"):
            delete_ring(ring_name)
        # The first pair never stopped: still the roles' owners, still moving, and nothing
        # was delivered twice or published at a reused seq.
        f = ring_fields(ring_name)
        assert f["producer.pid"] == poller.pid and f["consumer.pid"] == writer.pid
        assert f["producer.starts"] == 1 and f["consumer.starts"] == 1
        assert f["producer.padding"] == 0
        before = f["producer.published"]
        wait_until(lambda: ring_fields(ring_name)["producer.published"] > before, 20, "poller still publishing")
        f = ring_fields(ring_name)
        assert f["consumer.delivered"] + f["consumer.lost"] <= f["producer.published"]
        assert f["consumer.delivered"] <= f["producer.published"]
    finally:
        stop(poller)
        rc, err = finish(writer) if writer is not None else (None, "")
    assert poller.returncode == 0, poller.stderr.read() if poller.stderr else ""
    assert rc == 0, err  # the first writer stopped in order: it never lost its role


@pytest.mark.parametrize("role", ["producer", "consumer"])
def test_role_is_held_on_the_segment_not_the_lock_file(ring_name, role):
    """In one process too: deleting the lock file does not free the role, closing does."""
    p = Producer.open(ring_name, 100)
    holder = p if role == "producer" else Consumer.open(ring_name, lock_retry_s=0.3)
    try:
        os.unlink(S.lock_path(ring_name, role))
        with pytest.raises(RoleTaken, match=rf"already has a {role} \(pid {os.getpid()}\)"):
            if role == "producer":
                Producer.open(ring_name, 100, lock_retry_s=0.3)
            else:
                Consumer.open(ring_name, lock_retry_s=0.3)
        assert S.segment_role_held(ring_name, role) is True
    finally:
        if holder is not p:
            holder.close()
    if role == "consumer":
        assert S.segment_role_held(ring_name, "consumer") is False
        Consumer.open(ring_name, lock_retry_s=0.3).close()
    p.close()
    assert S.segment_role_held(ring_name, "producer") is False
    assert S.role_alive(ring_name, "producer") is False
    Producer.open(ring_name, 100, lock_retry_s=0.3).close()


def test_segment_role_lock_dies_with_a_killed_holder(ring_name):
    holder = Role("hold", ring_name, "--role", "producer", "--then", "hold")
    try:
        holder.event("holding")
        os.unlink(S.lock_path(ring_name, "producer"))
        assert S.role_alive(ring_name, "producer") is True
        holder.kill(signal.SIGKILL)
        assert S.role_alive(ring_name, "producer") is False
        Producer.open(ring_name, 100, lock_retry_s=0.3).close()
    finally:
        holder.stop()
