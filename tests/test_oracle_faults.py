"""Network faults between the real python-oracledb client and the server (fault proxy):
server down at start, connections cut, a lost COMMIT reply, a black hole. The rule in
every case: nothing lost, nothing twice, no hang."""

from __future__ import annotations

import time

import pytest

from pipeline.writer.sinks.base import TransientSinkError
from tests.oracle_emulator.fixtures import *  # noqa: F401,F403  (fixtures)
from tests.oracle_emulator.fixtures import make_records, make_sink


def write_until_ok(sink, epoch, recs, deadline_s=60.0):
    """Retry a batch the way the writer does; returns (result, transient errors seen)."""
    errors = []
    end = time.monotonic() + deadline_s
    while True:
        try:
            return sink.write(epoch, recs), errors
        except TransientSinkError as exc:
            errors.append(exc)
            assert time.monotonic() < end, f"still failing: {errors[-3:]}"
            time.sleep(0.2)


def assert_exactly_once(target, table, epoch, seqs):
    stored = sorted(r["SEQ"] for r in target.rows(table) if r["RING_EPOCH"] == epoch)
    assert stored == sorted(seqs)


def test_oracle_pool_starts_with_the_server_down_and_recovers(target, tables, proxy):
    table, cursor_table = tables
    proxy.refuse()
    sink = make_sink(target, table, cursor_table, proxy.port)
    try:
        sink.open()  # never fails just because the database is down
        with pytest.raises(TransientSinkError) as err:
            sink.write(1, make_records(range(10)))
        assert err.value.code == "DPY-6005"
        assert sink.probe() is False
        proxy.allow()
        deadline = time.monotonic() + 30
        while not sink.probe():
            assert time.monotonic() < deadline, "probe never succeeded after the listener came back"
            time.sleep(0.2)
        res, _ = write_until_ok(sink, 1, make_records(range(10)))
        assert res.written == 10
    finally:
        sink.close()
    assert_exactly_once(target, table, 1, range(10))


def test_oracle_cut_connections_are_replaced_without_loss(target, tables, proxy):
    table, cursor_table = tables
    sink = make_sink(target, table, cursor_table, proxy.port)
    try:
        sink.write(2, make_records(range(0, 100)))
        proxy.cut()  # every pooled connection is now dead
        res, errors = write_until_ok(sink, 2, make_records(range(100, 200)))
        assert all(e.code in ("DPY-4011", "DPY-1001") for e in errors), errors
        assert res.written == 100
        assert proxy.connections >= 2
    finally:
        sink.close()
    assert_exactly_once(target, table, 2, range(200))


def test_oracle_lost_commit_reply_is_resolved_from_the_cursor(target, tables, proxy):
    table, cursor_table = tables
    sink = make_sink(target, table, cursor_table, proxy.port)
    recs = make_records(range(0, 300))
    try:
        proxy.drop_next_commit_reply()
        res = sink.write(4, recs)  # the commit happened; its answer never came back
        assert proxy.commit_replies_dropped == 1
        assert res.written == 300
        again = sink.write(4, recs)  # a writer that retried anyway gets duplicates, not rows
        assert (again.written, again.duplicates) == (0, 300)
    finally:
        sink.close()
    assert_exactly_once(target, table, 4, range(300))


def test_oracle_connection_lost_before_commit_is_retried_without_loss(target, tables, proxy):
    table, cursor_table = tables
    sink = make_sink(target, table, cursor_table, proxy.port)
    recs = make_records(range(0, 50))
    recs["value"][7] = float("nan")  # one locally rejected row: on_rejected runs before the commit
    calls = []

    def cut_during_transaction(rows, errors):
        calls.append(rows["seq"].tolist())
        if len(calls) == 1:
            proxy.cut()  # the rows are inserted, not committed; the commit will fail

    try:
        with pytest.raises(TransientSinkError) as err:
            sink.write(5, recs, cut_during_transaction)
        assert "nothing committed" in str(err.value) or err.value.code in ("DPY-4011", "DPY-1001")
        assert target.rows(table) == []
        res, _ = write_until_ok(sink, 5, recs, )
        assert (res.written, [r.index for r in res.rejected]) == (49, [7])
    finally:
        sink.close()
    assert calls[-1] == [7]
    assert_exactly_once(target, table, 5, [s for s in range(50) if s != 7])


def test_oracle_black_hole_times_out_instead_of_hanging(target, tables, proxy):
    table, cursor_table = tables
    sink = make_sink(target, table, cursor_table, proxy.port, ORACLE_CALL_TIMEOUT_MS="1500", ORACLE_POOL_WAIT_MS="1500")
    try:
        sink.write(6, make_records(range(0, 10)))
        proxy.blackhole(True)
        started = time.monotonic()
        with pytest.raises(TransientSinkError) as err:
            sink.write(6, make_records(range(10, 20)))
        took = time.monotonic() - started
        assert err.value.code in ("DPY-4024", "DPY-4011", "DPY-4005"), err.value
        assert took < 60, f"write blocked {took:.0f} s under a black hole"
        started = time.monotonic()
        assert sink.probe() is False  # bounded too (pool wait / call timeout)
        assert time.monotonic() - started < 60
        proxy.blackhole(False)
        proxy.cut()  # the network comes back; stuck sessions are torn down
        res, _ = write_until_ok(sink, 6, make_records(range(10, 20)))
        assert res.written == 10
    finally:
        sink.close()
    assert_exactly_once(target, table, 6, range(20))


def test_oracle_exhausted_pool_times_out_instead_of_waiting_forever(target, tables):
    table, cursor_table = tables
    sink = make_sink(target, table, cursor_table, ORACLE_POOL_MIN="1", ORACLE_POOL_MAX="1", ORACLE_POOL_WAIT_MS="800")
    try:
        with sink.connection():  # the only connection is busy (e.g. a stuck call)
            started = time.monotonic()
            with pytest.raises(TransientSinkError) as err:
                sink.write(1, make_records(range(5)))
            assert err.value.code == "DPY-4005"
            assert time.monotonic() - started < 30
        assert sink.write(1, make_records(range(5))).written == 5
    finally:
        sink.close()


def test_oracle_address_list_fails_over_to_the_next_listener(target, tables):
    """ORACLE_DSN with an ADDRESS_LIST (RAC / Data Guard style): when the first listener
    goes away the pool's new connections go to the second, and no record is lost."""
    from tests.oracle_emulator.proxy import FaultProxy

    table, cursor_table = tables
    a, b = FaultProxy(target.port, target.host), FaultProxy(target.port, target.host)
    dsn = ("(DESCRIPTION=(TRANSPORT_CONNECT_TIMEOUT=3)(ADDRESS_LIST=(LOAD_BALANCE=OFF)(FAILOVER=ON)"
           f"(ADDRESS=(PROTOCOL=TCP)(HOST=127.0.0.1)(PORT={a.port}))(ADDRESS=(PROTOCOL=TCP)(HOST=127.0.0.1)(PORT={b.port})))"
           f"(CONNECT_DATA=(SERVICE_NAME={target.service})))")
    sink = make_sink(target, table, cursor_table, ORACLE_DSN=dsn)
    try:
        assert sink.write(12, make_records(range(0, 100))).written == 100
        assert a.connections >= 1 and b.connections == 0  # the first address is preferred
        a.refuse()
        a.cut()  # "node A" is gone: its sessions die, its listener refuses
        res, errors = write_until_ok(sink, 12, make_records(range(100, 200)))
        assert res.written == 100 and b.connections >= 1
    finally:
        sink.close()
        a.close()
        b.close()
    assert_exactly_once(target, table, 12, range(200))


def test_oracle_commit_that_never_arrived_is_found_uncommitted_and_resent(target, tables, proxy):
    table, cursor_table = tables
    sink = make_sink(target, table, cursor_table, proxy.port)
    recs = make_records(range(0, 120))
    try:
        proxy.drop_next_commit()
        with pytest.raises(TransientSinkError) as err:
            sink.write(13, recs)  # outcome unknown to the client; the cursor says: not committed
        assert proxy.commits_dropped == 1
        assert "nothing committed" in str(err.value) and err.value.code == "DPY-4011"
        assert target.rows(table) == []
        res, _ = write_until_ok(sink, 13, recs)
        assert (res.written, res.duplicates) == (120, 0)
    finally:
        sink.close()
    assert_exactly_once(target, table, 13, range(120))


def test_oracle_connect_stuck_in_handshake_is_abandoned_and_the_pool_recovers(target, tables, proxy):
    """A listener that accepts and never answers (a hung server behind a load balancer):
    python-oracledb has no handshake timeout, so the pool's connect thread would wait for
    ever and the pool would never connect again. The sink replaces the pool, and close()
    returns (the process can exit)."""
    table, cursor_table = tables
    sink = make_sink(target, table, cursor_table, proxy.port, ORACLE_POOL_WAIT_MS="1000", ORACLE_CONNECT_TIMEOUT_S="1")
    try:
        proxy.blackhole(True)
        with pytest.raises(TransientSinkError) as err:
            sink.write(14, make_records(range(10)))
        assert err.value.code == "DPY-4005"
        proxy.hold_open_connections()  # that connection attempt never gets an answer
        proxy.blackhole(False)  # ... while the database itself is back
        res, errors = write_until_ok(sink, 14, make_records(range(10)), deadline_s=60)
        assert res.written == 10 and errors and all(e.code == "DPY-4005" for e in errors)
        proxy.blackhole(True)  # and once more, so that close() meets a stuck connect
        with pytest.raises(TransientSinkError):
            sink.write(14, make_records(range(10, 20)))
        proxy.hold_open_connections()
    finally:
        started = time.monotonic()
        sink.close()
        closing = time.monotonic() - started
    assert closing < 30, f"close() took {closing:.0f} s"
    import threading

    def stuck() -> list[str]:  # python-oracledb's own closer thread waits for the main thread: it ends at exit
        return [t.name for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()
                and t.is_alive() and "close_pools_gracefully" not in t.name]

    deadline = time.monotonic() + 10
    while stuck() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not stuck(), f"threads that would keep the process from exiting: {stuck()}"
    assert_exactly_once(target, table, 14, range(10))
