"""The ring protocol's arithmetic, exercised in one interpreter (cross-process behaviour is
in test_ring_processes.py): wrap-around, overflow counts, the read ledger, the commit
journal at every crash point, size, and the header's hour window."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from ring_helpers import content
from shm import Consumer, Observer, Producer
from shm import layout as L
from shm import segment as S


@pytest.fixture
def pc(ring_name):
    p = Producer.open(ring_name, 100)
    c = Consumer.open(ring_name, wait=False)
    yield p, c
    c.close()
    p.close()


def counts(c: Consumer) -> tuple[int, int, int, int]:
    return tuple(int(c.get(f"consumer.{k}")) for k in ("delivered", "lost", "padding", "batches"))


def test_wrap_around_delivers_every_record_in_order(ring_name):
    rnd = random.Random(7)
    with Producer.open(ring_name, 64) as p, Consumer.open(ring_name, wait=False) as c:
        seen = []
        for _ in range(60):
            k = rnd.randint(1, 64)
            p.publish(content.make_records(p.published, k))
            while c.backlog():
                b = c.read(rnd.randint(1, 64))
                assert content.count_bad(b.records) == 0 and b.lost == 0
                seen.extend(b.records["seq"].tolist())
                c.commit(b)
        assert seen == list(range(p.published))
        assert p.published > 10 * 64  # wrapped many times
        assert counts(c)[:3] == (p.published, 0, 0)


def test_publishing_more_than_capacity_at_once_keeps_the_newest(pc):
    p, c = pc
    p.publish(content.make_records(0, 350))
    assert p.get("producer.overwritten") == 250
    b = c.read(1000)
    assert b.lost == 250 and b.records["seq"].tolist() == list(range(250, 350))
    assert content.count_bad(b.records) == 0


def test_overflow_counts_stay_exact_across_publish_put_and_commits(pc):
    p, c = pc
    seen: list[tuple[int, int]] = []
    p.on_account = lambda n, overwritten, t_us: seen.append((n, overwritten))
    p.publish(content.make_records(0, 250))
    assert p.get("producer.overwritten") == 150
    b = c.read(1000)
    assert (b.lost, len(b.records), int(b.records["seq"][0])) == (150, 100, 150)
    c.commit(b)
    p.publish(content.make_records(250, 120))  # 20 more overwritten before any read
    assert p.get("producer.overwritten") == 170
    b = c.read(1000)
    assert (b.lost, len(b.records)) == (20, 100)
    c.commit(b)
    for seq in range(370, 520):  # the one-record path, accounted at flush
        p.put(*content.put_args(seq))
    p.flush()
    assert p.get("producer.overwritten") == 220
    b = c.read(1000)
    assert (b.lost, len(b.records), content.count_bad(b.records)) == (50, 100, 0)
    c.commit(b)
    assert counts(c)[:3] == (300, 220, 0)
    assert p.published == sum(counts(c)[:3])
    # The on_account hook (the telemetry's minute buckets) was told the same totals.
    assert (sum(x[0] for x in seen), sum(x[1] for x in seen)) == (520, 220)


def test_overwritten_does_not_count_records_already_committed(pc):
    p, c = pc
    p.publish(content.make_records(0, 100))
    c.commit(c.read(100))
    p.publish(content.make_records(100, 100))  # reuses only committed slots
    assert p.get("producer.overwritten") == 0
    assert p.used() == 100


def test_commit_counts_every_read_up_to_the_batch_even_uncommitted_ones(pc):
    p, c = pc
    p.publish(content.make_records(0, 100))
    a = c.read(30)
    p.publish(content.make_records(100, 100))  # 0..99 overwritten; 30 of them were read into a
    b = c.read(10)  # starts at 30: 70 lost, then 100..109
    assert (b.lost, b.records["seq"][0]) == (70, 100)
    d = c.read(20)
    c.commit(d)  # a writer that wrote a, b and d in one transaction commits only the last
    assert counts(c) == (60, 70, 0, 1)
    c.commit(a)  # already covered: no-op
    c.commit(b)
    assert counts(c) == (60, 70, 0, 1)
    assert c.committed == 130


def test_lost_only_read_is_counted_by_the_next_commit(ring_name):
    with Producer.open(ring_name, 16) as p, Consumer.open(ring_name, wait=False) as c:
        p.publish(content.make_records(0, 40))
        empty = c.read(0)  # nothing copied, but 24 records found lost
        assert (len(empty), empty.lost) == (0, 24)
        b = c.read(100)
        assert b.lost == 0 and len(b) == 16
        c.commit(b)  # the caller never committed the empty batch
        assert counts(c)[:3] == (16, 24, 0)


def test_commit_out_of_order_after_rewind_is_refused(pc):
    p, c = pc
    p.publish(content.make_records(0, 50))
    old = c.read(30)
    c.rewind()
    new = c.read(10)
    with pytest.raises(ValueError, match="order"):
        c.commit(old)
    c.commit(new)
    assert counts(c)[:3] == (10, 0, 0)


def test_commit_of_a_batch_read_before_rewind_still_counts_once(pc):
    p, c = pc
    p.publish(content.make_records(0, 50))
    old = c.read(30)
    c.rewind()
    c.commit(old)
    assert counts(c)[:3] == (30, 0, 0)
    rest = c.read(100)
    assert rest.records["seq"][0] == 30
    c.commit(rest)
    assert counts(c)[:3] == (50, 0, 0)


class _Recording:
    """Stands in for the header's word view and records every write, in order."""

    def __init__(self, real) -> None:
        self.real = real
        self.writes: list[tuple[int, int]] = []

    def __getitem__(self, i):
        return self.real[i]

    def __setitem__(self, i, v) -> None:
        self.writes.append((i, int(v)))
        self.real[i] = v


def test_commit_journal_keeps_counts_exact_at_every_crash_point(pc):
    """Replay every prefix of a commit's header writes (a consumer SIGKILLed after that
    write), then let a successor recover: counts always match ``committed``."""
    p, c = pc
    p.publish(content.make_records(0, 100))
    c.commit(c.read(40))
    p.publish(content.make_records(100, 60))  # 60 overwritten before the read below
    batch = c.read(1000)
    assert (batch.lost, len(batch)) == (20, 100)
    before = np.array(c.h.u[: L.HEADER_WORDS], dtype=np.uint64)
    old = counts(c)
    rec = _Recording(c.h.u)
    real, c.h.u = c.h.u, rec
    try:
        c.commit(batch)
    finally:
        c.h.u = real
    new = counts(c)
    assert old == (40, 0, 0, 1) and new == (140, 20, 0, 2)
    assert len(rec.writes) >= 10
    for k in range(len(rec.writes) + 1):
        c.h.u[: L.HEADER_WORDS] = memoryview(before.tobytes()).cast("Q")
        for i, v in rec.writes[:k]:
            c.h.u[i] = v
        c._recover_journal()  # what the next consumer does when it attaches
        if c.committed == 160:
            assert counts(c) == new, f"crash after write {k}"
        else:
            assert c.committed == 40 and counts(c) == old, f"crash after write {k}"


def test_journal_recovery_from_crafted_words(pc):
    """Words left by a consumer killed between the commit point and the copy of totals."""
    p, c = pc
    W = L.FIELD_BY_NAME
    p.publish(content.make_records(0, 10))
    c.commit(c.read(10))
    u = c.h.u
    # Killed after committed moved to 25, before the totals were copied.
    for name, v in (("j_lost", 3), ("j_padding", 2), ("j_delivered", 20), ("j_batches", 2), ("j_end", 25)):
        u[W[f"consumer.{name}"].word] = v
    u[W["consumer.committed"].word] = 25
    c._recover_journal()
    assert counts(c) == (20, 3, 2, 2)
    # Killed after writing new totals to the journal, before its end (j_end invalidated).
    u[W["consumer.j_end"].word] = 0
    u[W["consumer.j_delivered"].word] = 999
    c._recover_journal()
    assert counts(c) == (20, 3, 2, 2)


def test_peek_ts_us_only_answers_for_records_still_in_the_ring(pc):
    p, c = pc
    p.publish(content.make_records(0, 150))
    assert c.peek_ts_us(149) == content.TS0 + 149
    assert c.peek_ts_us(60) == content.TS0 + 60
    assert c.peek_ts_us(49) is None  # overwritten
    assert c.peek_ts_us(150) is None  # not yet published


def test_hundred_thousand_records_fit_in_six_and_a_half_megabytes(ring_name):
    assert L.segment_bytes(100_000) <= 6_500_000
    with Producer.open(ring_name, 100_000):
        assert os.stat(S.segment_path(ring_name)).st_size == L.segment_bytes(100_000)
    assert L.RECORD_DTYPE.itemsize == 64


def test_layout_table_has_one_owner_per_word_and_fits_the_header():
    words = [f.word for f in L.FIELDS]
    assert len(words) == len(set(words)) and max(words) < L.HEADER_WORDS
    assert {f.owner for f in L.FIELDS} == {"creator", "producer", "consumer"}
    text = L.describe_layout()
    assert "producer.claim" in text and "consumer.committed" in text


def test_owner_rule_is_enforced_on_header_writes(pc):
    p, c = pc
    with pytest.raises(PermissionError):
        p.set("consumer.committed", 0)
    with pytest.raises(PermissionError):
        c.set("producer.published", 0)
    with pytest.raises(PermissionError):
        c.add("capacity", 1)
    with pytest.raises(KeyError):  # no telemetry schema given: no telemetry words
        p.add("poller.polls", 2)


def test_field_text_is_refused_never_truncated():
    assert L.check_field_text("plc_code", "KRCWO12ELOA101") == b"KRCWO12ELOA101"
    with pytest.raises(ValueError, match="17 bytes"):
        L.check_field_text("plc_code", "X" * 17)
    with pytest.raises(ValueError, match="ASCII"):
        L.check_field_text("tag_address", "D1\u00e9")
    with pytest.raises(ValueError):
        L.check_field_text("tag_address", "")


def test_padding_records_are_skipped_and_counted(ring_name):
    p = Producer.open(ring_name, 100)
    p.publish(content.make_records(0, 5))
    p.h.u[L.FIELD_BY_NAME["producer.claim"].word] = 12  # a producer died after claiming 7 more
    p.close()
    with Producer.open(ring_name, 100) as p2, Consumer.open(ring_name, wait=False) as c:
        assert any("hole of 7" in n for n in p2.notes)
        p2.publish(content.make_records(12, 3))
        b = c.read(100)
        assert (len(b), b.padding, b.lost) == (8, 7, 0)
        assert b.records["seq"].tolist() == [0, 1, 2, 3, 4, 12, 13, 14]
        c.commit(b)
        assert counts(c)[:3] == (8, 0, 7)
        assert p2.get("producer.padding") == 7


def test_alert_rearms_after_each_crossing_even_with_a_low_threshold(ring_name):
    with Producer.open(ring_name, 100, alert_threshold_pct=2.0) as p, Consumer.open(ring_name, wait=False) as c:
        for round_ in range(1, 4):
            p.publish(content.make_records(p.published, 3))  # 3 % full: above 2 %
            assert p.get("producer.alerts") == round_ and p.get("producer.alert_active") == 1
            c.commit(c.read(100))
            p.publish(content.make_records(p.published, 0))
            p.flush()
            p._account(0)  # empty again: below the threshold, the alert re-arms
            assert p.get("producer.alert_active") == 0


def test_publish_refuses_an_array_of_another_dtype(pc):
    p, c = pc
    other = np.zeros(3, dtype=[("seq", "<u8"), ("value", "<f8")])
    with pytest.raises(TypeError, match="RECORD_DTYPE"):
        p.publish(other)
    assert p.published == 0


def test_capacity_out_of_bounds_is_refused_before_anything_is_created(ring_name):
    from shm import CapacityError

    for bad_capacity in (0, -1, L.MIN_CAPACITY - 1, L.MAX_CAPACITY + 1):
        with pytest.raises(CapacityError, match="capacity"):
            Producer.open(ring_name, bad_capacity)
    assert not os.path.exists(S.segment_path(ring_name))


def test_roles_show_pid_state_and_starts_then_clear_them_on_close(ring_name):
    p = Producer.open(ring_name, 100)
    c = Consumer.open(ring_name, wait=False)
    with Observer(ring_name) as o:
        f = o.snapshot().fields
        assert (f["producer.pid"], f["consumer.pid"]) == (os.getpid(), os.getpid())
        assert (f["producer.state"], f["consumer.state"], f["producer.starts"], f["consumer.starts"]) == (1, 1, 1, 1)
        assert f["producer.heartbeat_us"] > 0 and f["consumer.heartbeat_us"] > 0
        p.close()
        c.close()
        f = o.snapshot().fields
        assert (f["producer.pid"], f["consumer.pid"], f["producer.state"], f["consumer.state"]) == (0, 0, 0, 0)
    with Producer.open(ring_name, 100) as p2:
        assert p2.get("producer.starts") == 2


@pytest.mark.parametrize("role", ["producer", "consumer"])
def test_a_role_that_fails_to_open_does_not_keep_its_lock(ring_name, monkeypatch, role):
    Producer.open(ring_name, 100).close()

    def broken(self, ring):  # e.g. a doorbell semaphore left by another user: EACCES
        raise PermissionError("semaphore not accessible")

    def open_role():
        return Producer.open(ring_name, 100, lock_retry_s=0.2) if role == "producer" else Consumer.open(ring_name, lock_retry_s=0.2)

    with monkeypatch.context() as m:
        m.setattr(S.Doorbell, "__init__", broken)
        with pytest.raises(PermissionError):
            open_role()
        assert S.role_alive(ring_name, role) is False
    open_role().close()  # not "already has a producer (pid <this process>)"


def test_doorbell_wait_interrupted_by_a_signal_returns_early_instead_of_raising(ring_name):
    # The writer waits on the doorbell in its main thread; SIGTERM arriving then must end
    # the wait (the loop sees its stop flag), not raise posix_ipc.SignalError.
    import signal
    import threading
    import time

    old = signal.signal(signal.SIGUSR1, lambda *a: None)
    bell = S.Doorbell(ring_name)
    try:
        threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGUSR1)).start()
        t0 = time.monotonic()
        assert bell.wait(5.0) is False
        assert time.monotonic() - t0 < 4.0
    finally:
        bell.close()
        signal.signal(signal.SIGUSR1, old)
