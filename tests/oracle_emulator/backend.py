"""A small SQLite-backed backend for seerdb's Oracle wire-protocol server (tests only).

It understands just the SQL tagpipe sends (INSERT ... VALUES, SELECT, UPDATE, with
``:name`` / ``:1`` binds and ``FOR UPDATE [WAIT n | NOWAIT]``), plus the CREATE / DROP
TABLE subset the real-Oracle test harness emits (so that harness can be tried here
too), and enforces what Oracle would on insert, so the real python-oracledb client sees
real per-row errors:
ORA-12899 (string too long for its VARCHAR2), ORA-01438 (number too large for its
NUMBER(p,s)), ORA-01400 (NULL into a NOT NULL column), ORA-00942 / ORA-00904 (missing
table / column), ORA-01031 (table declared read-only for the user).

Transactions: each client session has its own SQLite connection on one shared file.
The first write of a transaction (or a ``SELECT ... FOR UPDATE``) takes SQLite's write
lock (``BEGIN IMMEDIATE``), held until commit/rollback; that is coarser than Oracle's row
locks but gives the property tagpipe relies on: a second session's ``FOR UPDATE`` waits
for the first session's transaction to end, at most ``WAIT n`` seconds (then ORA-30006).
A session that ends (client gone) rolls back, as Oracle does.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Sequence

from seerdb.server import BackendError, Capability, ColumnMeta, Result, credential_lookup
from seerdb.server.backend import BindVar

TNS_VARCHAR, TNS_NUMBER, TNS_BDOUBLE, TNS_TIMESTAMP = 1, 2, 101, 180


@dataclass(frozen=True)
class Col:
    """One column: kind is VARCHAR2, NUMBER, BINARY_DOUBLE or TIMESTAMP."""

    name: str
    kind: str
    size: int = 0  # VARCHAR2 bytes, NUMBER precision (0 = unconstrained)
    scale: int = 0
    nullable: bool = True


@dataclass
class Catalog:
    """What the emulated database holds; shared by every session (thread-safe SQLite)."""

    path: str
    users: dict[str, str] = field(default_factory=lambda: {"TAGPIPE": "tagpipe-secret"})
    tables: dict[str, list[Col]] = field(default_factory=dict)
    read_only: set[str] = field(default_factory=set)  # tables the user may not modify
    field_version: int = 24
    logins: int = 0  # login attempts, right or wrong (the account-lockout tests count them)
    _logins_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def create_table(self, name: str, cols: list[Col], primary_key: tuple[str, ...] = ()) -> None:
        """Create (or replace) a table; NUMBER columns have no SQLite affinity so 20-digit
        integers survive (stored as text when they exceed int64). A duplicate primary key
        is ORA-00001."""
        name = name.upper()
        self.tables[name] = cols
        parts = [f'"{c.name.upper()}"' for c in cols]
        if primary_key:
            parts.append("PRIMARY KEY (" + ", ".join(f'"{k.upper()}"' for k in primary_key) + ")")
        con = self.connect()
        try:
            con.execute(f'DROP TABLE IF EXISTS "{name}"')
            con.execute(f'CREATE TABLE "{name}" (' + ", ".join(parts) + ")")
        finally:
            con.close()

    def drop_table(self, name: str) -> None:
        self.tables.pop(name.upper(), None)
        con = self.connect()
        try:
            con.execute(f'DROP TABLE IF EXISTS "{name.upper()}"')
        finally:
            con.close()

    def connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        con.execute("PRAGMA journal_mode=WAL")
        return con

    def rows(self, table: str, order_by: str = "") -> list[dict[str, Any]]:
        """Every row of ``table`` as dicts with Python values (timestamps as datetime)."""
        cols = self.tables[table.upper()]
        con = self.connect()
        try:
            sql = f'SELECT * FROM "{table.upper()}"' + (f" ORDER BY {order_by}" if order_by else "")
            return [{c.name.upper(): _from_sqlite(c, v) for c, v in zip(cols, raw)} for raw in con.execute(sql)]
        finally:
            con.close()

    def backend(self) -> "SqliteBackend":
        return SqliteBackend(self)


def _to_sqlite(v: Any) -> Any:
    if isinstance(v, BindVar):
        v = v.value
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, Decimal):
        v = int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, int):
        return v if -(2**63) <= v < 2**63 else str(v)
    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S.%f")
    return v if v is None or isinstance(v, (float, str, bytes)) else str(v)


def _from_sqlite(col: Col | None, v: Any) -> Any:
    if v is None or col is None:
        return v
    if col.kind == "TIMESTAMP":
        return dt.datetime.strptime(v, "%Y-%m-%d %H:%M:%S.%f")
    if col.kind == "NUMBER" and isinstance(v, str):
        return int(v)
    return v


_BIND = re.compile(r"'(?:[^']|'')*'|:(\w+)")
_FOR_UPDATE = re.compile(r"\s+FOR\s+UPDATE(?:\s+(NOWAIT|WAIT\s+(\d+)))?\s*$", re.I)
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+([\w$#.\"]+)\s*\(([^)]*)\)\s*VALUES\s*\((.*)\)\s*$", re.I | re.S)
_TABLE_IN = re.compile(r"\b(?:FROM|UPDATE|INTO)\s+([\w$#.\"]+)", re.I)


def _bare(name: str) -> str:
    return name.strip().strip('"').split(".")[-1].upper()


class SqliteBackend:
    """One client session (seerdb creates one per connection)."""

    capabilities = frozenset({Capability.TRANSACTIONS})

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.field_version = catalog.field_version
        self.con = catalog.connect()
        self.in_txn = False
        self.lock = threading.Lock()

    # --- seerdb Backend protocol ---
    def authenticate(self, username: str) -> str | None:
        with self.catalog._logins_lock:
            self.catalog.logins += 1
        return credential_lookup(self.catalog.users, username)

    def execute(self, sql: str, binds: Sequence = ()) -> Result:
        sql = sql.strip().rstrip(";")
        word = sql.split(None, 1)[0].upper() if sql else ""
        try:
            if word == "INSERT":
                return self._insert(sql, binds)
            if word == "SELECT":
                return self._select(sql, binds)
            if word == "CREATE":
                return self._create(sql)
            if word == "ALTER":
                return self._alter(sql)
            if word == "DROP":
                m = re.match(r"DROP\s+TABLE\s+([\w$#.\"]+)(\s+PURGE)?$", sql, re.I)
                if not m:
                    raise BackendError("emulator supports DROP TABLE t [PURGE] only", ora_code=3001)
                self._table(m.group(1))
                self.catalog.drop_table(_bare(m.group(1)))
                return Result()
            if word in ("UPDATE", "DELETE"):
                self._check_writable(sql)
                self._begin(30.0)
                cur = self._run(sql, binds)
                return Result(rowcount=cur.rowcount)
        except sqlite3.Error as exc:
            raise _ora(exc) from None
        raise BackendError(f"statement not supported by the emulator: {sql[:40]}", ora_code=3001)

    def commit(self) -> None:
        if self.in_txn:
            self.con.execute("COMMIT")
            self.in_txn = False

    def rollback(self) -> None:
        if self.in_txn:
            self.con.execute("ROLLBACK")
            self.in_txn = False

    def close(self) -> None:
        try:
            self.rollback()
        finally:
            self.con.close()

    # --- statements ---
    def _begin(self, wait_s: float) -> None:
        if self.in_txn:
            return
        self.con.execute(f"PRAGMA busy_timeout={int(wait_s * 1000)}")
        try:
            self.con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise BackendError("resource busy and acquire with WAIT timeout expired", ora_code=30006) from None
            raise
        self.in_txn = True

    def _run(self, sql: str, binds: Sequence) -> sqlite3.Cursor:
        names: list[str] = []

        def repl(m: re.Match) -> str:
            if m.group(1) is None:
                return m.group(0)
            key = m.group(1).upper()
            if key not in names:
                names.append(key)
            return f"?{names.index(key) + 1}"

        text = _BIND.sub(repl, sql)
        if len(binds) != len(names):
            raise BackendError("not all variables bound", ora_code=1008)
        return self.con.execute(text, [_to_sqlite(b) for b in binds])

    def _table(self, name: str) -> list[Col]:
        cols = self.catalog.tables.get(_bare(name))
        if cols is None:
            raise BackendError("table or view does not exist", ora_code=942)
        return cols

    def _check_writable(self, sql: str) -> None:
        m = _TABLE_IN.search(sql)
        if m:
            self._table(m.group(1))
            if _bare(m.group(1)) in self.catalog.read_only:
                raise BackendError("insufficient privileges", ora_code=1031)

    def _insert(self, sql: str, binds: Sequence) -> Result:
        m = _INSERT.match(sql)
        if not m:
            raise BackendError("emulator supports INSERT INTO t (cols) VALUES (...) only", ora_code=3001)
        table = _bare(m.group(1))
        cols = {c.name.upper(): c for c in self._table(table)}
        self._check_writable(sql)
        targets = [_bare(c) for c in m.group(2).split(",")]
        for t in targets:
            if t not in cols:
                raise BackendError(f'"{t}": invalid identifier', ora_code=904)
        values = [b.value if isinstance(b, BindVar) else b for b in binds]
        if len(values) != len(targets):
            raise BackendError("not enough values", ora_code=947)
        for t, v in zip(targets, values):
            _check_value(table, cols[t], v)
        for name, c in cols.items():
            if name not in targets and not c.nullable:
                raise BackendError(f'cannot insert NULL into ("TAGPIPE"."{table}"."{name}")', ora_code=1400)
        self._begin(30.0)
        cur = self.con.execute(
            f'INSERT INTO "{table}" (' + ",".join(f'"{t}"' for t in targets) + ") VALUES (" + ",".join("?" * len(targets)) + ")",
            [_to_sqlite(v) for v in values],
        )
        return Result(rowcount=cur.rowcount)

    def _create(self, sql: str) -> Result:
        """CREATE TABLE t (col TYPE [NOT NULL], ..., [CONSTRAINT c] PRIMARY KEY (...)) -- the
        subset the real-Oracle test harness (targets.OracleTarget) emits; CHECK constraints
        and a PARTITION clause are accepted and ignored. Like Oracle, DDL commits."""
        m = re.match(r"CREATE\s+(UNIQUE\s+)?INDEX\s+([\w$#.\"]+)\s+ON\s+([\w$#.\"]+)\s*\(([^)]*)\)(\s+LOCAL)?$", sql, re.I)
        if m:
            return self._index(m.group(2), m.group(3), m.group(4), bool(m.group(1)))
        m = re.match(r"CREATE\s+TABLE\s+([\w$#.\"]+)\s*\(", sql, re.I)
        body, rest = _parenthesized(sql[m.end() - 1:]) if m else ("", "x")
        if not m or rest.strip() and not re.match(r"PARTITION\s+BY\s", rest.strip(), re.I):
            raise BackendError("emulator supports CREATE TABLE t (...) [PARTITION BY ...] only", ora_code=3001)
        name = _bare(m.group(1))
        if name in self.catalog.tables:
            raise BackendError("name is already used by an existing object", ora_code=955)
        cols: list[Col] = []
        pk: tuple[str, ...] = ()
        for part in _top_level_split(body):
            words = part.split()
            head = words[0].upper()
            if head == "CONSTRAINT":
                words = words[2:]
                head = words[0].upper() if words else ""
            if head == "PRIMARY":
                pk = tuple(_bare(c) for c in re.search(r"\((.*)\)", part).group(1).split(","))
            elif head in ("CHECK", "UNIQUE", "FOREIGN"):
                continue
            else:
                cols.append(_column(part))
        self.commit()
        self.catalog.create_table(name, cols, pk)
        return Result()

    def _alter(self, sql: str) -> Result:
        """ALTER TABLE t ADD CONSTRAINT c PRIMARY KEY (cols) [USING INDEX (...)]."""
        m = re.match(r"ALTER\s+TABLE\s+([\w$#.\"]+)\s+ADD\s+CONSTRAINT\s+([\w$#\"]+)\s+PRIMARY\s+KEY\s*\(([^)]*)\)", sql, re.I)
        if not m:
            raise BackendError("emulator supports ALTER TABLE t ADD CONSTRAINT c PRIMARY KEY (...) only", ora_code=3001)
        return self._index(m.group(2), m.group(1), m.group(3), unique=True)

    def _index(self, name: str, table: str, cols: str, unique: bool) -> Result:
        self._table(table)
        self.commit()
        con = self.catalog.connect()
        try:
            con.execute(f'CREATE {"UNIQUE " if unique else ""}INDEX "{_bare(name)}" ON "{_bare(table)}" ('
                        + ", ".join(f'"{_bare(c)}"' for c in cols.split(",")) + ")")
        except sqlite3.Error as exc:
            raise _ora(exc) from None
        finally:
            con.close()
        return Result()

    def _select(self, sql: str, binds: Sequence) -> Result:
        m = _FOR_UPDATE.search(sql)
        if m:
            sql = sql[: m.start()]
            wait = 0.0 if (m.group(1) or "").upper() == "NOWAIT" else float(m.group(2) or 30)
            self._check_writable(sql)
            if wait == 0 and not self.in_txn:
                wait = 0.001
            self._begin(wait)
        sql = re.sub(r"\bFROM\s+DUAL\b", "", sql, flags=re.I)
        t = _TABLE_IN.search(sql)
        cols = {c.name.upper(): c for c in self._table(t.group(1))} if t else {}
        cur = self._run(sql, binds)
        names = [d[0].upper() for d in cur.description]
        rows = [tuple(_from_sqlite(cols.get(n), v) for n, v in zip(names, r)) for r in cur.fetchall()]
        return Result(columns=[_meta(n, cols.get(n), [r[i] for r in rows]) for i, n in enumerate(names)], rows=rows)


def _parenthesized(text: str) -> tuple[str, str]:
    """``(inside) rest`` -> (inside, rest), honouring nested parentheses and quotes."""
    depth, quoted = 0, False
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
            if depth == 0:
                return text[1:i], text[i + 1:]
    raise BackendError("missing right parenthesis", ora_code=907)


def _top_level_split(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")")
        cur += ch
    return [p for p in parts + [cur.strip()] if p]


def _column(text: str) -> Col:
    m = re.match(r"\s*([\w$#\"]+)\s+(TIMESTAMP|DATE|VARCHAR2|NUMBER|BINARY_DOUBLE)\s*(?:\(\s*(\d+)\s*(?:,\s*(-?\d+))?\s*(?:BYTE|CHAR)?\s*\))?(.*)$", text, re.I | re.S)
    if not m:
        raise BackendError(f"emulator cannot create column {text[:40]!r}", ora_code=902)
    kind = m.group(2).upper()
    size = int(m.group(3) or 0) if kind in ("VARCHAR2", "NUMBER") else 0
    return Col(_bare(m.group(1)), "TIMESTAMP" if kind == "DATE" else kind, size, int(m.group(4) or 0),
               nullable="NOT NULL" not in m.group(5).upper())


def _check_value(table: str, col: Col, v: Any) -> None:
    where = f'"TAGPIPE"."{table}"."{col.name.upper()}"'
    if v is None:
        if not col.nullable:
            raise BackendError(f"cannot insert NULL into ({where})", ora_code=1400)
        return
    if col.kind == "VARCHAR2" and col.size:
        n = len(str(v).encode("utf-8"))
        if n > col.size:
            raise BackendError(f"value too large for column {where} (actual: {n}, maximum: {col.size})", ora_code=12899)
    elif col.kind == "NUMBER":
        if isinstance(v, float) and v != v or v in (float("inf"), float("-inf")):
            raise BackendError("numeric overflow", ora_code=1426)
        if col.size:
            d = Decimal(str(v)).quantize(Decimal(1).scaleb(-col.scale)) if col.scale else Decimal(str(v)).to_integral_value()
            if abs(d) >= Decimal(10) ** (col.size - col.scale):
                raise BackendError("value larger than specified precision allowed for this column", ora_code=1438)
    elif col.kind == "TIMESTAMP" and not isinstance(v, dt.datetime):
        raise BackendError("inconsistent datatypes: expected TIMESTAMP", ora_code=932)


def _meta(name: str, col: Col | None, values: list) -> ColumnMeta:
    ident = name.encode()
    kind = col.kind if col else None
    sample = next((v for v in values if v is not None), None)
    if kind == "TIMESTAMP" or isinstance(sample, dt.datetime):
        return ColumnMeta(name=ident, data_type=TNS_TIMESTAMP, data_length=11, max_size=11, scale=6)
    if kind == "BINARY_DOUBLE":
        return ColumnMeta(name=ident, data_type=TNS_BDOUBLE, data_length=8, max_size=8)
    if kind == "NUMBER" or isinstance(sample, (int, float)):
        return ColumnMeta(name=ident, data_type=TNS_NUMBER, data_length=22, max_size=22,
                          precision=col.size if col else 0, scale=col.scale if col else 0)
    width = (col.size if col and col.size else 0) or max((len(str(v)) for v in values if v is not None), default=1)
    return ColumnMeta(name=ident, data_type=TNS_VARCHAR, data_length=width, max_size=width)


def _ora(exc: sqlite3.Error) -> BackendError:
    text = str(exc)
    if "no such table" in text:
        return BackendError("table or view does not exist", ora_code=942)
    if "no such column" in text:
        return BackendError(f'"{text.rsplit(":", 1)[-1].strip().upper()}": invalid identifier', ora_code=904)
    if "UNIQUE" in text:
        return BackendError("unique constraint violated", ora_code=1)
    if "locked" in text or "busy" in text:
        return BackendError("resource busy and acquire with WAIT timeout expired", ora_code=30006)
    return BackendError(f"emulator: {text}", ora_code=900)
