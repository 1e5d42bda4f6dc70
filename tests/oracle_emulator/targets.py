"""Where the Oracle tests run: the emulator (always) or a real Oracle (ORACLE_TEST_DSN).

A ``Target`` creates the test's tables (the tests may run DDL; the writer never does),
reads rows back for assertions and drops what it created. Table names are unique per
test, so a real database can be shared.
"""

from __future__ import annotations

import os
import re
import uuid
from typing import Any

from .backend import Catalog, Col
from .server import SERVICE, EmulatorServer

REAL_ENV = ("ORACLE_TEST_DSN", "ORACLE_TEST_USER", "ORACLE_TEST_PASSWORD")


def tag_data_cols(address_size: int = 64, value_precision: int = 0, value_scale: int = 0) -> list[Col]:
    """TAG_DATA as shipped in sql/01_tables.sql (sizes can be narrowed to provoke errors)."""
    return [
        Col("TS", "TIMESTAMP", nullable=False),
        Col("PLC_CODE", "VARCHAR2", 64, nullable=False),
        Col("TAG_ADDRESS", "VARCHAR2", address_size, nullable=False),
        Col("TAG_VALUE", "NUMBER", value_precision, value_scale),
        Col("QUALITY", "VARCHAR2", 9, nullable=False),
        Col("RING_EPOCH", "NUMBER", 20, nullable=False),
        Col("SEQ", "NUMBER", 20, nullable=False),
    ]


CURSOR_COLS = [Col("RING_EPOCH", "NUMBER", 20, nullable=False), Col("NEXT_SEQ", "NUMBER", 20, nullable=False), Col("UPDATED_AT", "TIMESTAMP")]


class Target:
    """Common interface; ``kind`` is 'emulator' or 'oracle'."""

    kind = ""
    host = "127.0.0.1"
    port = 0
    service = SERVICE
    user = ""
    password = ""

    def dsn(self, port: int | None = None) -> str:
        return f"{self.host}:{port or self.port}/{self.service}"

    def env(self, port: int | None = None, **extra: str) -> dict[str, str]:
        """Settings for the writer / check-db pointing at this target (or a proxy port)."""
        env = {"ORACLE_DSN": self.dsn(port), "ORACLE_USERNAME": self.user, "ORACLE_PASSWORD": self.password,
               "ORACLE_POOL_MIN": "1", "ORACLE_POOL_MAX": "3", "ORACLE_CALL_TIMEOUT_MS": "10000",
               "ORACLE_POOL_WAIT_MS": "3000", "ORACLE_CONNECT_TIMEOUT_S": "3"}
        env.update(extra)
        return env

    def unique(self, stem: str) -> str:
        return f"{stem}_{uuid.uuid4().hex[:8]}".upper()

    def create_table(self, name: str, cols: list[Col], primary_key: tuple[str, ...] = ()) -> None:
        raise NotImplementedError

    def rows(self, table: str, order_by: str = "") -> list[dict[str, Any]]:
        raise NotImplementedError

    def make_read_only(self, table: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class EmulatorTarget(Target):
    kind = "emulator"

    def __init__(self, tmp_path) -> None:
        self.user, self.password = "TAGPIPE", "tagpipe-secret"
        self.catalog = Catalog(str(tmp_path / "emulator.db"), users={self.user: self.password})
        self.server = EmulatorServer(self.catalog).start()
        self.port = self.server.port

    def create_table(self, name: str, cols: list[Col], primary_key: tuple[str, ...] = ()) -> None:
        self.catalog.create_table(name, cols, primary_key)

    def rows(self, table: str, order_by: str = "") -> list[dict[str, Any]]:
        return self.catalog.rows(table, order_by)

    def make_read_only(self, table: str) -> None:
        self.catalog.read_only.add(table.upper())

    def close(self) -> None:
        self.server.stop()


class OracleTarget(Target):
    """A real Oracle given by ORACLE_TEST_DSN (host:port/service), ORACLE_TEST_USER and
    ORACLE_TEST_PASSWORD; the user needs CREATE TABLE for the test's scratch tables."""

    kind = "oracle"

    def __init__(self) -> None:
        import oracledb

        dsn = os.environ["ORACLE_TEST_DSN"]
        m = re.fullmatch(r"(?:tcp://)?([^:/\s]+):(\d+)/(\S+)", dsn)
        if not m:
            raise ValueError("ORACLE_TEST_DSN must be host:port/service for these tests (the fault proxy needs host and port)")
        self.host, self.port, self.service = m.group(1), int(m.group(2)), m.group(3)
        self.user, self.password = os.environ["ORACLE_TEST_USER"], os.environ["ORACLE_TEST_PASSWORD"]
        self.conn = oracledb.connect(user=self.user, password=self.password, dsn=dsn)
        self.created: list[str] = []

    def create_table(self, name: str, cols: list[Col], primary_key: tuple[str, ...] = ()) -> None:
        def ddl(c: Col) -> str:
            t = {"TIMESTAMP": "TIMESTAMP(6)", "BINARY_DOUBLE": "BINARY_DOUBLE"}.get(c.kind)
            if c.kind == "VARCHAR2":
                t = f"VARCHAR2({c.size} BYTE)"
            elif c.kind == "NUMBER":
                t = f"NUMBER({c.size},{c.scale})" if c.size else "NUMBER"
            return f"{c.name} {t}" + ("" if c.nullable else " NOT NULL")

        parts = [ddl(c) for c in cols] + ([f"PRIMARY KEY ({', '.join(primary_key)})"] if primary_key else [])
        with self.conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {name} ({', '.join(parts)})")
        self.created.append(name)

    def rows(self, table: str, order_by: str = "") -> list[dict[str, Any]]:
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {table}" + (f" ORDER BY {order_by}" if order_by else ""))
            names = [d[0] for d in cur.description]
            out = []
            for r in cur.fetchall():
                row = dict(zip(names, r))
                for k, v in row.items():  # NUMBER comes back int or float; compare as Python numbers
                    if hasattr(v, "is_integer") and k in ("RING_EPOCH", "SEQ", "NEXT_SEQ"):
                        row[k] = int(v)
                out.append(row)
            return out

    def make_read_only(self, table: str) -> None:
        with self.conn.cursor() as cur:
            cur.execute(f"ALTER TABLE {table} READ ONLY")  # ORA-12081, not ORA-01031: see test

    def close(self) -> None:
        with self.conn.cursor() as cur:
            for name in reversed(self.created):
                try:
                    cur.execute(f"DROP TABLE {name} PURGE")
                except Exception:
                    pass
        self.conn.close()


def real_oracle_reason() -> str | None:
    """Why the real-Oracle tier is skipped, or None when it can run."""
    missing = [k for k in REAL_ENV if not os.environ.get(k)]
    return f"no real Oracle: set {', '.join(missing)}" if missing else None
