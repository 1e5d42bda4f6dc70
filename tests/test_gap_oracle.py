"""The gap ledger on the Oracle path, through the emulator: the shipped DDL
(sql/04_gap_table.sql), gap rows written with their batch, again (a retry), and replayed
from a backup file: one row each."""

from __future__ import annotations

import numpy as np

from pipeline.common import gaps as G
from pipeline.common.settings import load_settings
from pipeline.writer import backup as B
from pipeline.writer.sinks.oracle import OracleSink
from tests.conftest import REPO
from tests.oracle_emulator.fixtures import *  # noqa: F401,F403  (fixtures)
from tests.oracle_emulator.fixtures import make_records, make_sink
from tests.test_oracle_config import sql_statements

T0 = 1_736_937_045_000_000


def test_oracle_gap_rows_from_shipped_ddl_written_retried_and_replayed_once(tmp_path):
    import oracledb

    from tests.oracle_emulator import Catalog, EmulatorServer

    catalog = Catalog(str(tmp_path / "e.db"))
    server = EmulatorServer(catalog).start()
    try:
        env = {"ORACLE_DSN": server.dsn(), "ORACLE_USERNAME": "TAGPIPE", "ORACLE_PASSWORD": "tagpipe-secret"}
        with oracledb.connect(user=env["ORACLE_USERNAME"], password=env["ORACLE_PASSWORD"], dsn=env["ORACLE_DSN"]) as conn:
            with conn.cursor() as cur:
                for stmt in sql_statements(REPO / "sql" / "01_tables.sql") + sql_statements(REPO / "sql" / "04_gap_table.sql"):
                    cur.execute(stmt)
        from pipeline.writer.checkdb import check_oracle

        out: list[str] = []
        check_oracle(load_settings(env, env_file=None), out=out.append)
        assert "gap table TAG_DATA_GAP: present" in out, out
        sink = OracleSink.from_settings(load_settings(env, env_file=None))
        assert sink.gap_table == "TAG_DATA_GAP"
        lost = G.make_record(G.OVERWRITTEN, 100, T0, T0 + 5_000_000, G.ALL_PLCS, "199")
        down = G.make_record(G.PLC_UNREACHABLE, 250, T0 + 1_000_000, T0 + 3_000_000, "KRCWO12ELOA101", "Connection_refused")
        batch = np.concatenate([lost, make_records(range(200, 300)), down])
        try:
            res = sink.write(9, batch)
            assert (res.written, sorted(res.gaps)) == (100, ["overwritten", "plc_unreachable"])
            again = sink.write(9, batch)  # a retry after an unknown outcome
            assert (again.written, again.duplicates, again.gaps) == (0, 100, [])
            # Spilled during an outage, then replayed: the same rows, nothing new.
            path = tmp_path / "backup_20250115_103045.csv"
            path.write_bytes((B.HEADER + "\n").encode() + B.format_rows(9, batch))
            [(epoch, recs)] = B.read_chunk(str(path)).groups
            replayed = sink.write(epoch, recs)
            assert (replayed.written, replayed.gaps) == (0, [])
            # A batch of lost records only (no data): the gap row still commits.
            only = sink.write(9, G.make_record(G.OVERWRITTEN, 300, T0 + 6_000_000, T0 + 7_000_000, G.ALL_PLCS, "349"))
            assert only.gaps == ["overwritten"]
        finally:
            sink.close()
        rows = catalog.rows("TAG_DATA_GAP", order_by="FIRST_SEQ")
        assert [(r["KIND"], r["FIRST_SEQ"], r["LAST_SEQ"], r["ROW_COUNT"], r["PLC_CODE"]) for r in rows] == [
            ("overwritten", 100, 199, 100, "*"), ("plc_unreachable", 250, 250, 0, "KRCWO12ELOA101"), ("overwritten", 300, 349, 50, "*")]
        assert rows[1]["DETAIL"] == "Connection_refus"  # 16 bytes travel in a record and rows[0]["DETAIL"] is None
        assert int(rows[0]["END_TS"].timestamp() * 1e6) - int(rows[0]["START_TS"].timestamp() * 1e6) == 5_000_000
        assert len(catalog.rows("TAG_DATA")) == 100
    finally:
        server.stop()


def test_missing_oracle_gap_table_never_holds_the_data_back(target, tables, caplog):
    """sql/04_gap_table.sql not run: the data commits, the gap is logged as not recorded."""
    table, cursor_table = tables
    sink = make_sink(target, table, cursor_table)
    gap = G.make_record(G.OVERWRITTEN, 0, T0, T0 + 1_000_000, G.ALL_PLCS, "9")
    try:
        with caplog.at_level("ERROR", logger="tagpipe.oracle"):
            res = sink.write(3, np.concatenate([gap, make_records(range(10, 20))]))
        assert (res.written, res.gaps, sink.gaps_dropped) == (10, [], 1)
        assert "NOT recorded" in caplog.text and "04_gap_table.sql" in caplog.text
    finally:
        sink.close()
    assert len(target.rows(table)) == 10


def test_real_writer_with_the_oracle_sink_lists_its_gap_in_api_gaps_from_the_ring(ring_name, tmp_path):
    """A writer process on the Oracle sink (the emulator) records a PLC-unreachable gap
    published through the ring; the web process, with the Oracle setting and no database
    login, lists it from the ring (source=ring), as the Oracle table holds it."""
    import oracledb

    from pipeline.common.telemetry import open_producer
    from tests.oracle_emulator import Catalog, EmulatorServer
    from tests.test_web_api import make_app
    from tests.writer_helpers.util import halt, ring_value, start_writer, wait_until
    from web import runtime

    catalog = Catalog(str(tmp_path / "e.db"))
    server = EmulatorServer(catalog).start()
    producer = writer = app = None
    try:
        env = {"ORACLE_DSN": server.dsn(), "ORACLE_USERNAME": "TAGPIPE", "ORACLE_PASSWORD": "tagpipe-secret"}
        with oracledb.connect(user=env["ORACLE_USERNAME"], password=env["ORACLE_PASSWORD"], dsn=env["ORACLE_DSN"]) as conn:
            with conn.cursor() as cur:
                for stmt in sql_statements(REPO / "sql" / "01_tables.sql") + sql_statements(REPO / "sql" / "04_gap_table.sql"):
                    cur.execute(stmt)
        producer = open_producer(ring_name, 1000, 80.0)
        producer.publish(make_records(range(0, 10)))
        producer.publish(G.make_record(G.PLC_UNREACHABLE, 0, T0, T0 + 3_000_000, "KRCWO12ELOA101", "Connection_refused"))
        writer = start_writer(ring_name, tmp_path, BUFFER_WRITE_INTERVAL="0.1", **env)
        wait_until(lambda: ring_value(ring_name, "writer.gaps_written", 0) == 1, 30, "the gap row made durable")
        [row] = catalog.rows("TAG_DATA_GAP")
        assert (row["KIND"], row["PLC_CODE"]) == ("plc_unreachable", "KRCWO12ELOA101")

        app = make_app(ring_name, **{k: v for k, v in env.items() if k != "ORACLE_PASSWORD"})
        r = app.test_client().get(f"/api/gaps?from={T0 - 1}&to={T0 + 10_000_000}&plc=KRCWO12ELOA101")
        assert r.status_code == 200
        body = r.get_json()
        assert body["source"] == "ring" and "TAG_DATA_GAP" in body["history"] and f"last {G.RING_ROWS}" in body["history"]
        assert body["total"] == 1
        [g] = body["gaps"]
        epoch = int(ring_value(ring_name, "epoch"))
        assert g == {"ring_epoch": epoch, "kind": "plc_unreachable", "first_seq": row["FIRST_SEQ"], "last_seq": row["FIRST_SEQ"],
                     "count": 0, "start_us": T0, "end_us": T0 + 3_000_000, "plc_code": "KRCWO12ELOA101", "detail": "Connection_refus"}
        assert row["FIRST_SEQ"] == 10  # the gap record's own ring seq
        # Filters apply to the ring's rows like to the table: another kind, another time.
        assert app.test_client().get(f"/api/gaps?from={T0 - 1}&to={T0 + 10_000_000}&kind=overwritten").get_json()["total"] == 0
        assert app.test_client().get("/api/gaps").get_json()["total"] == 0  # the last 24 hours: T0 is 2025
    finally:
        if app is not None:
            runtime(app).close()
        halt(writer)
        if producer is not None:
            producer.close()
        server.stop()
