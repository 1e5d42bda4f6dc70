"""Run seerdb's Oracle wire-protocol server (the "Mirror") over the SQLite backend.

In a test: ``EmulatorServer(catalog).start()`` serves on 127.0.0.1, a free port, on a
daemon thread; ``stop()`` closes the listener. As a process (benchmarks, manual runs):
``python -m tests.oracle_emulator --db PATH [--port N]`` prints ``PORT <n>`` when ready.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time

from seerdb.server import Server

from .backend import Catalog, Col

SERVICE = "FREEPDB1"


def tagpipe_schema(catalog: Catalog, table: str = "TAG_DATA", cursor_table: str = "TAGPIPE_CURSOR") -> None:
    """The tables of ``sql/01_tables.sql`` (column types and sizes as shipped)."""
    catalog.create_table(
        table,
        [
            Col("TS", "TIMESTAMP", nullable=False),
            Col("PLC_CODE", "VARCHAR2", 64, nullable=False),
            Col("TAG_ADDRESS", "VARCHAR2", 64, nullable=False),
            Col("TAG_VALUE", "NUMBER"),
            Col("QUALITY", "VARCHAR2", 9, nullable=False),
            Col("RING_EPOCH", "NUMBER", 20, nullable=False),
            Col("SEQ", "NUMBER", 20, nullable=False),
        ],
        primary_key=("RING_EPOCH", "SEQ"),
    )
    cursor_schema(catalog, cursor_table)


def cursor_schema(catalog: Catalog, cursor_table: str = "TAGPIPE_CURSOR") -> None:
    catalog.create_table(
        cursor_table,
        [Col("RING_EPOCH", "NUMBER", 20, nullable=False), Col("NEXT_SEQ", "NUMBER", 20, nullable=False), Col("UPDATED_AT", "TIMESTAMP")],
        primary_key=("RING_EPOCH",),
    )


class EmulatorServer:
    """A Mirror on 127.0.0.1 serving ``catalog``; one backend session per connection."""

    def __init__(self, catalog: Catalog, port: int = 0, ssl_context=None) -> None:
        """``ssl_context`` (server side) makes it a TCPS listener: TLS from the first byte."""
        self.catalog = catalog
        self._server = Server("127.0.0.1", port, backend_factory=catalog.backend, field_version=catalog.field_version,
                              ssl_context=ssl_context)
        self.port: int = self._server.port
        self._thread: threading.Thread | None = None

    def start(self) -> "EmulatorServer":
        self._thread = threading.Thread(target=self._server.serve_forever, name="oracle-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting; sessions in progress end when their clients go."""
        self._server.close()
        if self._thread is not None:
            self._thread.join(5)

    def dsn(self, port: int | None = None) -> str:
        return f"127.0.0.1:{port or self.port}/{SERVICE}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.oracle_emulator")
    ap.add_argument("--db", required=True, help="SQLite file behind the emulator")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--user", default="TAGPIPE")
    ap.add_argument("--password", default="tagpipe-secret")
    ap.add_argument("--no-schema", action="store_true", help="do not create TAG_DATA / TAGPIPE_CURSOR")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    catalog = Catalog(args.db, users={args.user: args.password})
    if not args.no_schema:
        tagpipe_schema(catalog)
    server = EmulatorServer(catalog, args.port).start()
    print(f"PORT {server.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
