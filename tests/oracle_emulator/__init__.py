"""Test-only Oracle emulator: seerdb's wire-protocol server over SQLite, and a fault proxy."""

from .backend import Catalog, Col, SqliteBackend
from .proxy import FaultProxy
from .server import SERVICE, EmulatorServer, cursor_schema, tagpipe_schema

__all__ = ["Catalog", "Col", "SqliteBackend", "FaultProxy", "EmulatorServer", "SERVICE", "tagpipe_schema", "cursor_schema"]
