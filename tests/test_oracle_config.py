"""Oracle settings and the shipped DDL: column mapping validation, and sql/ matching what
the sink writes (and what the emulator models)."""

from __future__ import annotations

import re

import pytest

from pipeline.common.errors import ConfigError
from pipeline.common.settings import load_settings, parse_oracle_columns
from pipeline.writer.sinks.oracle import OracleSink
from tests.conftest import REPO
from tests.oracle_emulator.targets import CURSOR_COLS, tag_data_cols


def test_oracle_columns_mapping_keeps_unnamed_columns_and_drops_dashes():
    m = parse_oracle_columns("ts=Meas_Time, PLC_CODE=PLC_ID,RING_EPOCH=-,SEQ=-")
    assert m == {"TS": "MEAS_TIME", "PLC_CODE": "PLC_ID", "TAG_ADDRESS": "TAG_ADDRESS", "TAG_VALUE": "TAG_VALUE",
                 "QUALITY": "QUALITY", "RING_EPOCH": None, "SEQ": None}


@pytest.mark.parametrize("text, reason", [
    ("TS", "is not LOGICAL=COLUMN"),
    ("WHEN=TS", "is not LOGICAL=COLUMN"),
    ("TS=A,TS=B", "mapped twice"),
    ("TS=-", "cannot be left out"),
    ("SEQ=-", "kept or left out together"),
    ("TS=X,PLC_CODE=X", "same table column"),
    ("TS=1BAD", "is not a column name"),
    ("TS=MEAS TIME", "is not a column name"),
])
def test_oracle_columns_mapping_refuses_bad_text(text, reason):
    with pytest.raises(ConfigError) as err:
        load_settings({"ORACLE_COLUMNS": text}, env_file=None)
    assert "ORACLE_COLUMNS" in str(err.value) and reason in str(err.value)


def test_oracle_password_is_masked_in_settings_repr():
    s = load_settings({"ORACLE_DSN": "h:1/s", "ORACLE_PASSWORD": "pw-9f8e7d", "ORACLE_WALLET_PASSWORD": "wl-1a2b3c"}, env_file=None)
    assert "pw-9f8e7d" not in repr(s) and "wl-1a2b3c" not in repr(s)
    sink = OracleSink.from_settings(s)
    assert "pw-9f8e7d" not in repr(sink.cfg) + sink.describe()


def _ddl_columns(sql: str, table: str) -> dict[str, str]:
    body = re.search(rf"CREATE TABLE {table} \((.*?)\n\)", sql, re.S).group(1)
    cols = {}
    for line in body.splitlines():
        m = re.match(r"\s+([A-Z_]+)\s+([A-Z0-9_(), ]+?)\s*(NOT NULL)?,?$", line)
        if m and m.group(1) != "CONSTRAINT":
            cols[m.group(1)] = m.group(2).strip() + (" NOT NULL" if m.group(3) else "")
    return cols


def test_oracle_shipped_ddl_has_the_columns_the_sink_writes_and_the_emulator_models():
    sql = (REPO / "sql" / "01_tables.sql").read_text()
    data = _ddl_columns(sql, "TAG_DATA")
    cursor = _ddl_columns(sql, "TAGPIPE_CURSOR")
    sink = OracleSink.from_settings(load_settings({"ORACLE_DSN": "h:1/s"}, env_file=None))
    assert [c for _, c in sink.targets] == list(data)
    kinds = {"TIMESTAMP": "TIMESTAMP(6)", "NUMBER": "NUMBER"}
    for col in tag_data_cols():
        want = f"VARCHAR2({col.size} BYTE)" if col.kind == "VARCHAR2" else (f"NUMBER({col.size})" if col.size else kinds[col.kind])
        assert data[col.name] == want + ("" if col.nullable else " NOT NULL"), col.name
    assert list(cursor) == [c.name for c in CURSOR_COLS]
    for stmt in (sink.read_cursor_sql, sink.update_cursor_sql, sink.insert_cursor_sql):
        assert set(re.findall(r"\b(RING_EPOCH|NEXT_SEQ|UPDATED_AT)\b", stmt)) <= set(cursor)
    assert "PRIMARY KEY (RING_EPOCH, SEQ)" in sql and "PRIMARY KEY (RING_EPOCH)" in sql
    assert "PARTITION BY RANGE (TS) INTERVAL" in sql


def test_oracle_grants_cover_what_the_sink_does():
    grants = (REPO / "sql" / "03_grants.sql").read_text()
    assert re.search(r"^GRANT SELECT, INSERT ON TAGPIPE\.TAG_DATA TO TAGPIPE_WRITER;", grants, re.M)
    assert re.search(r"^GRANT SELECT, INSERT, UPDATE ON TAGPIPE\.TAGPIPE_CURSOR TO TAGPIPE_WRITER;", grants, re.M)
    assert re.search(r"^GRANT CREATE SESSION TO TAGPIPE_WRITER;", grants, re.M)
    assert not re.search(r"^GRANT .*(DELETE|ALTER|DROP|CREATE TABLE)", grants, re.M)


def sql_statements(path) -> list[str]:
    """The statements of a SQL*Plus script: comments dropped, split at ';'."""
    text = "\n".join(line for line in path.read_text().splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


def test_oracle_dba_path_shipped_ddl_then_check_db_then_writes(tmp_path):
    """What the DBA runs (sql/01_tables.sql, through the real client) leaves tables that
    check-db accepts and the sink writes to. Against the emulator, which accepts the
    statements' shape (partitioning clause and index options ignored); Oracle itself
    would validate the rest."""
    import oracledb

    from tests.oracle_emulator import Catalog, EmulatorServer
    from tests.oracle_emulator.fixtures import make_records
    from pipeline.writer.checkdb import check_oracle

    catalog = Catalog(str(tmp_path / "e.db"))
    server = EmulatorServer(catalog).start()
    try:
        env = {"ORACLE_DSN": server.dsn(), "ORACLE_USERNAME": "TAGPIPE", "ORACLE_PASSWORD": "tagpipe-secret"}
        with oracledb.connect(user=env["ORACLE_USERNAME"], password=env["ORACLE_PASSWORD"], dsn=env["ORACLE_DSN"]) as conn:
            with conn.cursor() as cur:
                statements = sql_statements(REPO / "sql" / "01_tables.sql")
                assert len(statements) == 4
                for stmt in statements:
                    cur.execute(stmt)
        settings = load_settings(env, env_file=None)
        out: list[str] = []
        check_oracle(settings, out=out.append)
        assert any(line.startswith("writable:") for line in out), out
        sink = OracleSink.from_settings(settings)
        try:
            assert sink.write(5, make_records(range(100))).written == 100
            assert sink.write(5, make_records(range(100))).duplicates == 100
        finally:
            sink.close()
        assert len(catalog.rows("TAG_DATA")) == 100
    finally:
        server.stop()


def test_oracle_config_is_the_settings_plus_what_the_sink_derives():
    import dataclasses

    from pipeline.common.settings import Settings
    from pipeline.writer.sinks.oracle import OracleConfig

    s = load_settings({"ORACLE_HOST": "db1", "ORACLE_PORT": "1522", "ORACLE_SERVICE_NAME": "XE", "ORACLE_PASSWORD": "pw-77",
                       "ORACLE_CALL_TIMEOUT_MS": "9000"}, env_file=None)
    cfg = OracleConfig.from_settings(s)
    assert isinstance(cfg, Settings) and [f.name for f in dataclasses.fields(cfg)] == [f.name for f in dataclasses.fields(Settings)]
    assert (cfg.dsn, cfg.lock_wait_s, cfg.secrets) == ("db1:1522/XE", 3, ("pw-77",))  # empty ones are not scrubbed
    assert "pw-77" not in repr(cfg)
    one = dataclasses.replace(cfg, oracle_pool_min=1, oracle_pool_max=1)  # what check-db does
    assert type(one) is OracleConfig and (one.oracle_pool_min, one.oracle_pool_max) == (1, 1)
    with pytest.raises(ConfigError, match="ORACLE_POOL_MAX"):
        dataclasses.replace(cfg, oracle_pool_min=9)
    assert OracleConfig.from_settings(load_settings({"ORACLE_DSN": "tns_alias"}, env_file=None)).dsn == "tns_alias"


def test_a_password_inside_oracle_dsn_is_masked_in_the_sinks_repr_describe_and_errors():
    """Issue 12 item 15: ORACLE_DSN=user/password@host/svc. The sink still connects with
    the whole string; what it shows (repr, describe, a connect error) has it masked."""
    s = load_settings({"ORACLE_DSN": "scott/pw-9f8e7d@127.0.0.1:1/XE", "ORACLE_POOL_WAIT_MS": "500",
                       "ORACLE_CONNECT_TIMEOUT_S": "0.5"}, env_file=None)
    sink = OracleSink.from_settings(s)
    assert sink.cfg.dsn == "scott/pw-9f8e7d@127.0.0.1:1/XE" and "pw-9f8e7d" in sink.cfg.secrets
    assert "scott/********@127.0.0.1:1/XE" in repr(sink.cfg) and "scott/********@" in sink.describe()
    with pytest.raises(Exception) as e:  # nothing listens on port 1
        sink.open()
        with sink.pools.connection():
            pass
    assert "scott/********@127.0.0.1:1/XE" in str(e.value)
    assert "pw-9f8e7d" not in str(e.value) + repr(sink.cfg) + sink.describe()
    sink.close()
