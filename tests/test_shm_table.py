"""``shm.table``: a seqlocked shared table, its read-only readers, atomic replacement, and
survival of its writer process (no resource tracker), with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest

from shm.table import TableMismatch, TableMissing, TableReader, TableWriter, table_path, unlink_table
from tests.conftest import REPO, child_env, wait_until

DT = np.dtype([("a", "<f8"), ("b", "<i8")])


@pytest.fixture
def name():
    n = f"t{uuid.uuid4().hex[:12]}.tbl"
    yield n
    unlink_table(n)


def test_blocks_meta_and_a_read_only_reader(name):
    w = TableWriter.create(name, DT, [3, 0, 2], meta=b'{"x": 1}')
    w.block(0).write(a=[1.0, 2.0, 3.0], b=7)
    w.block(2).write(a=9.5, b=[10, 11])
    r = TableReader(name, DT)
    assert r.meta == b'{"x": 1}' and len(r) == 5 and r.writer_pid == os.getpid()
    rows, torn = r.snapshot()
    assert rows["a"].tolist() == [1.0, 2.0, 3.0, 9.5, 9.5]
    assert rows["b"].tolist() == [7, 7, 7, 10, 11]
    assert not torn.any()
    with pytest.raises(ValueError):  # PROT_READ: the reader's view cannot be written
        r._rows["a"][0] = 5.0
    with pytest.raises(KeyError):
        w.block(0).write(nope=1)
    with pytest.raises(IndexError):
        w.block(3)
    r.close()
    w.close()


def test_missing_wrong_layout_and_bad_names(name):
    with pytest.raises(TableMissing):
        TableReader(name, DT)
    TableWriter.create(name, DT, [1]).close()
    with pytest.raises(TableMismatch):
        TableReader(name, np.dtype([("a", "<f8"), ("c", "<i8")]))
    with open(table_path(name), "r+b") as f:  # cut short (a foreign or damaged file)
        f.truncate(4096 + 32)
    with pytest.raises(TableMissing):
        TableReader(name, DT)
    for bad in ("", "../x", "a/b", ".hidden", "x" * 101):
        with pytest.raises(ValueError):
            table_path(bad)


def test_a_replaced_table_is_seen_as_changed_and_the_old_mapping_still_reads(name):
    w1 = TableWriter.create(name, DT, [2], meta=b"one")
    w1.block(0).write(a=1.0, b=1)
    r = TableReader(name, DT)
    assert not r.changed()
    w2 = TableWriter.create(name, DT, [4], meta=b"two")
    assert r.changed()
    assert r.snapshot()[0]["a"].tolist() == [1.0, 1.0]  # the old table, until reopened
    r2 = TableReader(name, DT)
    assert r2.meta == b"two" and len(r2) == 4
    assert not [f for f in os.listdir("/dev/shm") if f.startswith(name + ".new")]  # no temp file left
    for x in (r, r2, w1, w2):
        x.close()


def test_a_block_left_in_mid_write_is_reported_torn_not_waited_for(name):
    w = TableWriter.create(name, DT, [2, 2])
    w.block(0).write(a=1.0, b=1)
    w.block(1).write(a=2.0, b=2)
    w.gens[1] += 1  # as if the writer died between the two generation steps
    r = TableReader(name, DT)
    t0 = time.monotonic()
    rows, torn = r.snapshot(settle_s=0.05)
    assert time.monotonic() - t0 >= 0.05
    assert torn.tolist() == [False, False, True, True]
    assert rows["a"][:2].tolist() == [1.0, 1.0]
    t0 = time.monotonic()
    assert r.snapshot(settle_s=5)[1].tolist() == [False, False, True, True]
    assert time.monotonic() - t0 < 1  # stuck at the same odd generation: no second wait
    w.gens[1] += 1  # a writer finishing the block (a new poller would replace the table)
    assert not r.snapshot()[1].any()
    r.close()
    w.close()


WRITER = textwrap.dedent("""
    import sys, time, numpy as np
    from shm.table import TableWriter
    DT = np.dtype([("a", "<f8"), ("b", "<i8")])
    w = TableWriter.create(sys.argv[1], DT, [200_000, 50_000])
    b0, b1 = w.block(0), w.block(1)
    print("ready", flush=True)
    k = 1
    while True:
        b0.write(a=float(k), b=k)
        b1.write(a=float(-k), b=-k)
        k += 1
        time.sleep(0.005)  # a poll group is rewritten once per interval (>= 10 ms), not non-stop
""")


def test_a_reader_never_sees_a_torn_block_while_another_process_writes(name):
    # Each write sets a whole block to one k in both columns: a copy mixing two writes
    # (the race the seqlock closes) shows up as two different values in one block.
    proc = subprocess.Popen([sys.executable, "-c", WRITER, name], env=child_env(), cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        r = TableReader(name, DT)
        changes = set()
        for _ in range(150):
            rows, torn = r.snapshot()
            assert not torn.any()
            for lo, hi in ((0, 200_000), (200_000, 250_000)):
                a, b = rows["a"][lo:hi], rows["b"][lo:hi]
                assert a.min() == a.max() and b.min() == b.max() and a[0] == b[0], "torn block"
            changes.add(int(rows["b"][0]))
        assert len(changes) > 10  # the writer really was writing while we read
        r.close()
    finally:
        proc.kill()
        proc.wait(10)


def test_the_table_outlives_its_writer_even_a_sigkilled_one(name):
    # multiprocessing's resource tracker would unlink a SharedMemory segment when its
    # process exits; the table is no SharedMemory, so it stays for the readers.
    code = ("import sys, time, numpy as np; from shm.table import TableWriter;"
            "w = TableWriter.create(sys.argv[1], np.dtype([('a','<f8'),('b','<i8')]), [3]);"
            "w.block(0).write(a=4.5, b=3); print('ok', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, name], env=child_env(), cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ok"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    wait_until(lambda: True, 0.5)
    r = TableReader(name, DT)
    assert r.snapshot()[0]["a"].tolist() == [4.5, 4.5, 4.5]
    r.close()
    done = subprocess.run([sys.executable, "-c", code.replace("time.sleep(60)", "pass"), name], env=child_env(), cwd=REPO,
                          capture_output=True, timeout=30)
    assert done.returncode == 0
    assert os.path.exists(table_path(name))  # a normal exit leaves it too
