"""The ring between real, separate interpreters: attach by name, overflow, survival of
every role exiting or SIGKILLed (the Python 3.11 resource-tracker trap), killed consumers
and producers, role refusal, layout changes, the read-only observer and the doorbell."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import numpy as np
import posix_ipc
import pytest

from conftest import REPO, child_env
from ring_helpers import content
from ring_helpers.proc import Role, run
from shm import Consumer, LayoutMismatch, Observer, Producer, RingError, RingMissing, RingNotDrained, RoleTaken, delete_ring
from shm import layout as L
from shm import segment as S


@pytest.fixture
def roles():
    started: list[Role] = []
    yield started
    for r in started:
        r.stop()


def start(roles, *args, **kw) -> Role:
    r = Role(*args, **kw)
    roles.append(r)
    return r


def header(ring: str) -> dict:
    with Observer(ring) as o:
        return o.snapshot().fields


def assert_balanced(ring: str) -> dict:
    f = header(ring)
    assert f["producer.published"] == f["consumer.committed"]
    assert f["producer.published"] == f["consumer.delivered"] + f["consumer.lost"] + f["consumer.padding"]
    return f


def stays_present(ring: str, seconds: float = 1.5) -> bool:
    """The resource tracker of a dead process unlinks asynchronously: watch for a while."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not os.path.exists(S.segment_path(ring)):
            return False
        time.sleep(0.1)
    return True


def test_records_cross_from_one_interpreter_to_another(ring_name):
    ev = run("produce", ring_name, "--capacity", 1000, "--count", 700, "--batch", 64)
    assert ev["published"]["published"] == 700
    got = run("consume", ring_name, "--max-n", 128)["consumed"]
    assert (got["delivered"], got["lost"], got["torn"], got["first"], got["last"]) == (700, 0, 0, 0, 699)
    seen = run("observe", ring_name)["observed"]
    with Observer(ring_name) as o:
        assert seen["epoch"] == o.epoch and seen["capacity"] == 1000
    assert_balanced(ring_name)


def test_wrap_around_while_both_sides_run(ring_name, roles):
    c = start(roles, "consume", ring_name, "--count", 6000, "--max-n", 50, "--wait-s", 0.05)
    p = start(roles, "produce", ring_name, "--capacity", 64, "--count", 6000, "--batch", 37)
    pub = p.event("published")
    c.event("ready")
    # The consumer may fall behind the 64-record ring: whatever it misses is counted lost.
    deadline = time.monotonic() + 60
    while header(ring_name)["consumer.committed"] < 6000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pub["published"] == 6000
    f = assert_balanced(ring_name)
    assert f["consumer.padding"] == 0
    c.stop()
    # producer.overwritten is the producer's estimate only: it misses records the consumer
    # already found lost and committed past, and counts records the consumer had copied.


@pytest.mark.parametrize("mode", ["publish", "put"])
def test_full_ring_drops_the_oldest_and_counts_them_exactly(ring_name, tmp_path, mode):
    ev = run("produce", ring_name, "--capacity", 1000, "--count", 2500, "--batch", 70, "--mode", mode)
    assert ev["published"]["overwritten"] == 1500
    assert ev["published"]["alerts"] == 1
    got = run("consume", ring_name, "--max-n", 300)["consumed"]
    assert (got["delivered"], got["lost"], got["torn"], got["first"], got["last"]) == (1000, 1500, 0, 1500, 2499)
    f = assert_balanced(ring_name)
    assert (f["producer.overwritten"], f["consumer.lost"]) == (1500, 1500)


def test_alert_is_logged_once_per_crossing(ring_name, tmp_path):
    err = tmp_path / "producer.err"
    r = Role("produce", ring_name, "--capacity", 100, "--count", 500, "--batch", 10, "--alert", 50, stderr_path=err)
    try:
        r.event("closed")
    finally:
        r.stop()
    lines = [ln for ln in err.read_text().splitlines() if "BUFFER_ALERT_THRESHOLD" in ln]
    assert len(lines) == 1, lines
    assert header(ring_name)["producer.alerts"] == 1


@pytest.mark.parametrize("how", ["exit", "kill"])
@pytest.mark.parametrize("role", ["producer", "consumer", "observer"])
def test_segment_survives_each_role_exiting_or_killed(ring_name, role, how):
    """Python 3.11 registers attached segments with a resource tracker that unlinks them
    when the process ends, even by SIGKILL; the ring must outlive every role."""
    rc = -9 if how == "kill" else 0
    if role == "producer":
        run("produce", ring_name, "--capacity", 500, "--count", 300, "--then", how, rc=rc)
    else:
        run("produce", ring_name, "--capacity", 500, "--count", 300)
        if role == "consumer":  # reads half without committing, then ends
            run("consume", ring_name, "--count", 150, "--max-n", 50, "--commit", 0, "--then", how, rc=rc)
        else:
            assert run("observe", ring_name, "--then", how, rc=rc)["observed"]["published"] == 300
    assert stays_present(ring_name), f"segment deleted after the {role} ended ({how})"
    got = run("consume", ring_name, "--max-n", 100)["consumed"]
    assert (got["delivered"], got["lost"], got["torn"], got["first"], got["last"]) == (300, 0, 0, 0, 299)
    assert stays_present(ring_name, 0.5)


def test_consumer_killed_mid_batch_loses_nothing(ring_name, roles):
    run("produce", ring_name, "--capacity", 2000, "--count", 1000)
    c = start(roles, "consume", ring_name, "--count", 300, "--max-n", 100, "--then", "hold")
    c.event("holding")
    assert header(ring_name)["consumer.committed"] == 300
    c.stop()
    mid = start(roles, "consume", ring_name, "--count", 250, "--max-n", 250, "--commit", 0, "--then", "hold")
    ev = mid.event("consumed")
    assert (ev["first"], ev["last"]) == (300, 549)
    mid.event("holding")
    mid.kill()
    got = run("consume", ring_name, "--max-n", 100)["consumed"]
    assert (got["first"], got["last"], got["delivered"], got["lost"], got["torn"]) == (300, 999, 700, 0, 0)
    f = assert_balanced(ring_name)
    assert f["consumer.delivered"] == 1000 and f["consumer.starts"] == 3


@pytest.mark.parametrize("wrapped", [False, True])
def test_producer_killed_between_claim_and_publish_leaves_no_torn_record(ring_name, wrapped):
    count = 1500 if wrapped else 200
    ev = run("tear", ring_name, "--capacity", 1000, "--count", count, "--hole", 10, rc=-9)["torn"]
    assert (ev["published"], ev["claim"]) == (count, count + 10)
    assert stays_present(ring_name, 0.5)
    got = run("consume", ring_name, "--max-n", 128)["consumed"]
    # Nothing at or past `published` is visible; with a wrapped ring the claimed slots
    # overwrote the oldest records, which are counted lost, never read torn.
    lost = count + 10 - 1000 if wrapped else 0
    assert (got["torn"], got["lost"], got["delivered"], got["last"]) == (0, lost, count - lost, count - 1)
    nxt = run("produce", ring_name, "--capacity", 1000, "--count", 50)
    assert any("hole of 10" in n for n in nxt["ready"]["notes"])
    got = run("consume", ring_name, "--max-n", 128)["consumed"]
    assert (got["torn"], got["padding"], got["delivered"], got["first"]) == (0, 10, 50, count + 10)
    f = assert_balanced(ring_name)
    assert f["producer.padding"] == 10 and f["consumer.padding"] == 10


@pytest.mark.parametrize("role", ["producer", "consumer"])
def test_second_producer_or_consumer_is_refused_naming_ring_and_pid(ring_name, roles, role):
    run("produce", ring_name, "--capacity", 100)
    holder = start(roles, "hold", ring_name, "--role", role, "--then", "hold")
    holder.event("holding")
    with pytest.raises(RoleTaken) as e:
        if role == "producer":
            Producer.open(ring_name, 100, lock_retry_s=0.3)
        else:
            Consumer.open(ring_name, lock_retry_s=0.3)
    assert ring_name in str(e.value) and f"pid {holder.pid}" in str(e.value)
    # The lock dies with its holder, even by SIGKILL: the role is free at once.
    holder.kill()
    cls = Producer.open(ring_name, 100, lock_retry_s=3) if role == "producer" else Consumer.open(ring_name, lock_retry_s=3)
    cls.close()


def _fake_ring(ring: str, version: int, published: int, committed: int, capacity: int = 100, magic: int = L.MAGIC) -> None:
    """Write a segment by hand, as another version of tagpipe would have left it."""
    words = np.zeros(L.HEADER_WORDS, dtype="<u8")
    words[[0, 1, 2, 3, 4, 5]] = [magic, version, 64, capacity, L.HEADER_BYTES, 12345]
    words[16], words[17], words[48] = published, published, committed
    fd = os.open(S.segment_path(ring), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o660)
    try:
        os.write(fd, words.tobytes())
        os.ftruncate(fd, L.segment_bytes(capacity))
    finally:
        os.close(fd)


def test_other_layout_drained_is_replaced_and_a_waiting_writer_then_attaches(ring_name, roles):
    _fake_ring(ring_name, version=99, published=40, committed=40)
    with pytest.raises(LayoutMismatch, match="layout version 99"):
        Observer(ring_name)
    with pytest.raises(LayoutMismatch, match="layout version 99"):
        Consumer.open(ring_name, wait=False)
    c = start(roles, "consume", ring_name, "--count", 20, "--max-n", 10, "--wait-s", 0.1)
    assert "layout version 99" in c.event("waiting")["reason"]
    with Producer.open(ring_name, 100) as p:
        assert any("replaced drained ring" in n and "version 99" in n for n in p.notes)
        assert p.get("layout_version") == L.LAYOUT_VERSION and p.published == 0
        p.publish(content.make_records(0, 20))
        got = c.event("consumed")
    assert (got["delivered"], got["torn"]) == (20, 0)


def test_other_layout_not_drained_is_kept_and_refused(ring_name):
    _fake_ring(ring_name, version=99, published=40, committed=10)
    for _ in range(3):  # every restart gives the same answer, never a half-done change
        with pytest.raises(RingNotDrained, match="30 unwritten records") as e:
            Producer.open(ring_name, 100)
        assert "delete-ring" in str(e.value)
    with open(S.segment_path(ring_name), "rb") as fh:
        assert int.from_bytes(fh.read(16)[8:], "little") == 99
    assert not S.role_alive(ring_name, "producer")  # the refused producer let the lock go


def test_foreign_file_is_never_read_or_replaced(ring_name):
    _fake_ring(ring_name, version=1, published=0, committed=0, magic=0x1234)
    with pytest.raises(LayoutMismatch, match="not a tagpipe ring"):
        Producer.open(ring_name, 100)
    with pytest.raises(LayoutMismatch):
        Observer(ring_name)
    assert os.path.exists(S.segment_path(ring_name))


def test_half_created_segment_is_replaced_by_the_producer(ring_name):
    os.close(os.open(S.segment_path(ring_name), os.O_CREAT | os.O_RDWR, 0o660))  # died before ftruncate
    with pytest.raises(RingMissing):
        Consumer.open(ring_name, wait=False)
    said = []
    assert Consumer.open(ring_name, wait=True, on_wait=said.append, stop=lambda: bool(said)) is None
    assert "being created" in said[0]
    with Producer.open(ring_name, 100) as p:
        assert any("half-created" in n for n in p.notes)


def test_changed_capacity_replaces_a_drained_ring_and_keeps_a_full_one(ring_name):
    run("produce", ring_name, "--capacity", 1000, "--count", 100)
    for _ in range(3):  # never an exception, never a restart loop
        with Producer.open(ring_name, 2000) as p:
            assert p.capacity == 1000
            assert any("kept ring" in n and "100 records are not yet written" in n for n in p.notes)
    c = Consumer.open(ring_name, wait=False)
    try:
        c.commit(c.read(1000))
        with Producer.open(ring_name, 2000) as p:
            assert p.capacity == 2000 and any("capacity 1000 -> 2000" in n for n in p.notes)
        assert c.replaced()  # the writer sees it must re-attach
    finally:
        c.close()
    got = run("observe", ring_name)["observed"]
    assert got["capacity"] == 2000


def test_observer_maps_read_only(ring_name):
    run("produce", ring_name, "--capacity", 100, "--count", 5)
    errors = run("observe", ring_name)["observed"]["errors"]
    assert errors == {"data": "ValueError", "header_set": "PermissionError", "header_word": "TypeError"}
    with Observer(ring_name) as o:
        assert not o.data.flags.writeable
        with pytest.raises(ValueError):
            o.data["value"][0] = 1.0
        with pytest.raises(PermissionError):
            o.h.set("consumer.committed", 0)
    assert run("consume", ring_name)["consumed"]["torn"] == 0


def test_consumer_progresses_when_the_doorbell_is_deleted_or_never_rung(ring_name, roles):
    p = Producer.open(ring_name, 1000)
    try:
        c = start(roles, "consume", ring_name, "--count", 300, "--max-n", 500, "--wait-s", 0.2)
        c.event("ready")
        assert S.unlink_doorbell(ring_name)  # the consumer now waits on a semaphore nobody posts
        p.close()
        p = Producer.open(ring_name, 1000)  # rings a new semaphore of the same name
        p.publish(content.make_records(0, 200))
        for seq in range(200, 300):  # put() never rings: flush() does, and we do not call it
            p.put(*content.put_args(seq))
        got = c.event("consumed", timeout=30)
        assert (got["delivered"], got["torn"]) == (300, 0)
    finally:
        p.close()


def test_producer_killed_at_random_instants_never_blocks_the_consumer(ring_name, roles):
    rnd = random.Random(11)
    run("produce", ring_name, "--capacity", 500)
    c = Consumer.open(ring_name, wait=False)
    try:
        for _ in range(5):
            p = start(roles, "chaos-produce", ring_name, "--capacity", 500, "--batch", 50)
            p.event("ready")
            t_end = time.monotonic() + rnd.uniform(0.05, 0.4)
            while time.monotonic() < t_end:
                t0 = time.monotonic()
                c.wait(0.1)
                assert time.monotonic() - t0 < 5.0  # bounded, whatever the producer does
                c.commit(c.read(200))
            p.kill()
        run("produce", ring_name, "--capacity", 500)  # fills a hole the last kill may have left
        while c.backlog():
            b = c.read(200)
            assert content.count_bad(b.records) == 0
            c.commit(b)
        t0 = time.monotonic()
        assert not c.wait(0.3)
        assert time.monotonic() - t0 < 5.0
        assert posix_ipc.Semaphore(S.doorbell_name(ring_name)).value <= 1
    finally:
        c.close()
    assert_balanced(ring_name)


def test_delete_ring_refuses_while_roles_live_unless_forced(ring_name, roles):
    holder = start(roles, "hold", ring_name, "--role", "producer", "--then", "hold")
    holder.event("holding")
    with pytest.raises(RingError, match="running producer"):
        delete_ring(ring_name)
    cli = [sys.executable, "-m", "pipeline", "delete-ring", "--name", ring_name]
    r = subprocess.run(cli, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 4 and ring_name in r.stderr and "producer" in r.stderr
    assert os.path.exists(S.segment_path(ring_name))
    r = subprocess.run(cli + ["--force"], cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and S.segment_path(ring_name) in r.stdout
    assert not os.path.exists(S.segment_path(ring_name))
    holder.kill()
    r = subprocess.run(cli[:-1] + ["a/b"], cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "'a/b'" in r.stderr


def test_delete_ring_works_once_the_holder_is_dead(ring_name, roles):
    holder = start(roles, "hold", ring_name, "--role", "producer", "--then", "hold")
    holder.event("holding")
    holder.kill()
    removed = delete_ring(ring_name)
    assert S.segment_path(ring_name) in removed
    assert not os.path.exists(S.lock_path(ring_name, "producer"))
    assert delete_ring(ring_name) == []
