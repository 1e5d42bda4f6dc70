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
