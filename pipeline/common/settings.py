"""Every setting, declared once: name, type, default, validation and meaning.

``Settings`` is a frozen dataclass written out below: one typed field per setting, its
default, doc, bounds and validator in the field's metadata (``_setting(...)``). The
environment name is the field name in capitals; a few settings also answer to an older
name (``aliases``: the original feature's names, e.g. ``SHUTDOWN_TIMEOUT`` for
``SHUTDOWN_TIMEOUT_S``). ``SETTINGS`` (the table the docs, ``.env.example`` and
``python -m pipeline settings`` are generated from) is derived from the fields.

Loading order: defaults, then a ``.env`` file in the working directory (read by the rules
of systemd's ``EnvironmentFile=``: ``parse_dotenv``), then the process environment (which
wins). Within one of those sources, a setting given under both its
name and an alias must agree, else it is a bad setting. Everything is validated before
any process opens anything (constructing ``Settings`` validates every field, so a
``dataclasses.replace`` is checked too); a bad value raises ``ConfigError`` whose one-line
message names the setting and the value (secrets are never shown, and a password inside a
connect string is masked: ``Setting.show``, ``mask_credentials``). Path settings are checked
for their kind and ``WEB_HOST`` / ``ORACLE_HOST`` for being an address or host name. ``python -m pipeline
settings`` prints the table.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import stat
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

from shm.layout import segment_bytes
from shm.segment import check_ring_name

from .errors import ConfigError, EnvFileError

SECRET_MASK = "********"
_SPEC = "tagpipe.setting"  # the key of a field's metadata holding its Setting


@dataclass(frozen=True)
class Setting:
    """One setting as the loader, the docs and ``python -m pipeline settings`` see it."""

    name: str  # environment name (the field name in capitals)
    kind: str  # int, float, str, choice, secret
    default: Any
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None  # returns a reason when bad
    aliases: tuple[str, ...] = ()  # older environment names still read
    mask: Callable[[str], str] | None = None  # hides secrets inside a non-secret value (a DSN's password)

    @property
    def attr(self) -> str:
        return self.name.lower()

    @property
    def secret(self) -> bool:
        return self.kind == "secret"

    @property
    def names(self) -> tuple[str, ...]:
        """Every environment name it is read from, its own first."""
        return (self.name, *self.aliases)

    def show(self, value: Any) -> Any:
        """``value`` as logs, errors, reprs and ``python -m pipeline settings`` may show it:
        a set secret is ``SECRET_MASK``; a value with a ``mask`` has the secrets inside it
        masked (``mask_credentials``); anything else is itself."""
        if self.secret:
            return SECRET_MASK if value else value
        if self.mask is not None and isinstance(value, str):
            return self.mask(value)
        return value


def _ident(v: str) -> str | None:
    if v and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_$#]{0,127}(\.[A-Za-z][A-Za-z0-9_$#]{0,127})?", v):
        return "must be an SQL identifier (letters, digits, _ $ #; optionally SCHEMA.NAME)"
    return None


def _fits_shared_memory(v: int) -> str | None:
    # Compared with the size of /dev/shm, not its free space: the ring this poller
    # already owns may be what fills it. The segment's size is the ring layout's own.
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    need, total = segment_bytes(v), st.f_blocks * st.f_frsize
    if need > total:
        return f"needs {need // 1_000_000} MB of shared memory; /dev/shm holds only {total // 1_000_000} MB"
    return None


def _ring(v: str) -> str | None:
    try:
        check_ring_name(v)  # the ring's own rule, so a name passing here is one shm accepts
    except ValueError as exc:
        return str(exc)
    return None


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _host(v: str) -> str | None:
    """A listen address: an IPv4/IPv6 address, or a host name by RFC 1123 (letters, digits,
    hyphens; labels of at most 63, at most 253 in all). Dotted numbers that are not an IPv4
    address (``999.1.1.1``) are refused: they can only be a mistyped address. Whether a
    name resolves is checked where it is used (the web process, at start)."""
    reason = "must be an IP address or a host name (letters, digits, hyphens and dots)"
    try:
        ipaddress.ip_address(v)
        return None
    except ValueError:
        pass
    labels = v[:-1].split(".") if v.endswith(".") else v.split(".")
    if not v or len(v) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return reason
    if labels[-1].isdigit():  # an all-numeric last label: a mistyped IPv4 address
        return "is not a valid IP address (each of the 4 numbers is 0..255)" if v.count(".") == 3 else reason
    return None


def _path_kind(v: str, want: str) -> str | None:
    """Why ``v`` cannot be used as a ``want`` ("folder" or "file") path, or None.

    Only what holds for every process and user is checked (the path's kind, and that its
    nearest existing ancestor is a folder), not permissions: the web process and
    ``pipeline status`` load the same settings under other users. A missing path is fine
    (the writer creates it). A path that cannot even be looked at (a name too long, a
    NUL byte) is refused with the system's reason.
    """
    if not v.strip():
        return "must not be empty"
    try:
        st = os.stat(v)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        st = None  # an ancestor is a file: found below
    except (OSError, ValueError) as e:
        return f"cannot be used: {getattr(e, 'strerror', None) or e}"
    if st is not None:
        if want == "folder" and not stat.S_ISDIR(st.st_mode):
            return "is an existing file, not a folder" if stat.S_ISREG(st.st_mode) else "exists and is not a folder"
        if want == "file" and not stat.S_ISREG(st.st_mode):
            return "is a folder, not a file" if stat.S_ISDIR(st.st_mode) else "exists and is not a regular file"
        return None
    parent = os.path.dirname(os.path.abspath(v))
    while parent and not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        return f"cannot be created: {parent} is a file, not a folder"
    return None


def _folder(v: str) -> str | None:
    return _path_kind(v, "folder")


def _file(v: str) -> str | None:
    return _path_kind(v, "file")


def _optional(check: Callable[[str], str | None]) -> Callable[[str], str | None]:
    """``check`` for a path setting that may be left empty (empty = not used)."""
    return lambda v: None if v == "" else check(v)


# Credentials inside connect strings: user/password@..., scheme://user:password@...,
# and KEY=VALUE parameters naming a password (EZConnect Plus ?wallet_password=..., or a
# descriptor's (PASSWORD=...)). Quoted passwords ("pa@ss") are masked whole.
_CRED_SLASH = re.compile(r'^(\s*(?:"[^"]*"|[^/@\s"(:]+))/("[^"]*"|.*)@(?=[^@]*$)', re.S)
_CRED_URL = re.compile(r"(://[^/:@\s]*):([^@\s]*)@")
_CRED_PARAM = re.compile(r"(?i)(\b[a-z_]*(?:password|passwd|pwd)\s*=\s*)(\"[^\"]*\"|'[^']*'|[^&;)\s]*)")


def mask_credentials(text: str) -> str:
    """``text`` with every password inside it replaced by ``SECRET_MASK``: the forms a
    connect string carries credentials in (``user/password@host/svc``,
    ``user/"p@ss"@alias``, ``oracle://user:password@host/svc``, ``...?wallet_password=x``,
    ``(PASSWORD=x)``). Text without credentials comes back unchanged (``/@alias``, external
    authentication, has none)."""
    out = _CRED_SLASH.sub(lambda m: f"{m.group(1)}/{SECRET_MASK}@" if m.group(2) else m.group(0), text)
    out = _CRED_URL.sub(lambda m: f"{m.group(1)}:{SECRET_MASK}@", out)
    return _CRED_PARAM.sub(lambda m: m.group(1) + SECRET_MASK, out)


def credentials_in(text: str) -> tuple[str, ...]:
    """The passwords ``mask_credentials`` hides in ``text`` (to scrub them from driver
    errors too), quotes removed; empty when there are none."""
    found: list[str] = []
    m = _CRED_SLASH.match(text)
    if m and m.group(2):
        found.append(m.group(2))
    found += [m.group(2) for m in _CRED_URL.finditer(text) if m.group(2)]
    found += [m.group(2) for m in _CRED_PARAM.finditer(text) if m.group(2)]
    out = []
    for f in found:
        out.append(f)
        if len(f) >= 2 and f[0] == f[-1] and f[0] in "'\"":
            out.append(f[1:-1])
    return tuple(x for x in out if x)


# ORACLE_COLUMNS: the writer's logical columns and which of them a table may lack.
ORACLE_LOGICAL_COLUMNS = ("TS", "PLC_CODE", "TAG_ADDRESS", "TAG_VALUE", "QUALITY", "RING_EPOCH", "SEQ")
ORACLE_OPTIONAL_COLUMNS = ("QUALITY", "RING_EPOCH", "SEQ")


def parse_oracle_columns(text: str) -> dict[str, str | None]:
    """ORACLE_COLUMNS text -> {logical column: table column, or None when absent}.

    Unnamed logical columns keep their own name. Raises ValueError with the reason.
    """
    out: dict[str, str | None] = {c: c for c in ORACLE_LOGICAL_COLUMNS}
    seen: set[str] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = (x.strip().upper() for x in part.partition("="))
        if not sep or key not in out:
            raise ValueError(f"{part!r} is not LOGICAL=COLUMN with LOGICAL one of " + ", ".join(ORACLE_LOGICAL_COLUMNS))
        if key in seen:
            raise ValueError(f"{key} is mapped twice")
        seen.add(key)
        if value in ("-", ""):
            if key not in ORACLE_OPTIONAL_COLUMNS:
                raise ValueError(f"{key} cannot be left out (only " + ", ".join(ORACLE_OPTIONAL_COLUMNS) + " can)")
            out[key] = None
        elif not re.fullmatch(r"[A-Z][A-Z0-9_$#]{0,127}", value):
            raise ValueError(f"{value!r} is not a column name")
        else:
            out[key] = value
    if (out["RING_EPOCH"] is None) != (out["SEQ"] is None):
        raise ValueError("RING_EPOCH and SEQ are kept or left out together")
    targets = [v for v in out.values() if v]
    if len(set(targets)) != len(targets):
        raise ValueError("two logical columns map to the same table column")
    return out


def _oracle_columns_reason(v: str) -> str | None:
    try:
        parse_oracle_columns(v)
    except ValueError as exc:
        return str(exc)
    return None


def _setting(default: Any, doc: str, minimum: float | None = None, maximum: float | None = None, *,
             choices: tuple[str, ...] = (), check: Callable[[Any], str | None] | None = None,
             secret: bool = False, aliases: tuple[str, ...] = (), mask: Callable[[str], str] | None = None) -> Any:
    """A ``Settings`` field: its default, plus what the loader and the docs need."""
    meta = {"doc": doc, "minimum": minimum, "maximum": maximum, "choices": choices, "check": check,
            "secret": secret, "aliases": aliases, "mask": mask}
    return field(default=default, metadata={_SPEC: meta})


@dataclass(frozen=True)
class Settings:
    """The effective settings of a process (``load_settings()``), validated when built.

    Units are in the names where a name alone would not say (``_s``, ``_ms``, ``_mb``).
    Raises ConfigError (one line naming the setting) for a value of the wrong type, out
    of bounds or refused by its validator.
    """

    # --- ring ---
    ring_name: str = _setting("tagpipe", "Which shared-memory ring to create or attach (/dev/shm/NAME.ring).", check=_ring)
    buffer_max_size: int = _setting(100_000, "Ring capacity in records (64 bytes each).", 16, 50_000_000, check=_fits_shared_memory)
    buffer_alert_threshold: float = _setting(80.0, "Ring fill (%) above which a warning is logged and health degrades.", 1.0, 100.0)
    # --- writer ---
    buffer_batch_size: int = _setting(500, "Records per batch normally; a batch goes when this many wait.", 1, 100_000)
    buffer_batch_max: int = _setting(20_000, "Largest batch the writer grows to under a backlog (capped at half the ring; 20,000 measured: see BENCHMARKS.md).", 1, 1_000_000)
    buffer_write_interval_s: float = _setting(0.5, "Seconds after which a partial batch is written anyway.", 0.001, 60.0, aliases=("BUFFER_WRITE_INTERVAL",))
    db_retry_max: int = _setting(3, "Attempts per batch before it goes to a backup file (waits 1 s, 2 s, 4 s, ...), for Oracle and SQLite alike.", 1, 10, aliases=("ORACLE_RETRY_MAX",))
    backup_file_path: str = _setting("./backup", "Folder of CSV backup files written while the database is down.", check=_folder)
    sqlite_path: str = _setting("./data/tagpipe.db", "SQLite database used when no Oracle is configured.", check=_file)
    backup_min_free_mb: int = _setting(512, "Free space (MB) under BACKUP_FILE_PATH below which the writer warns (disk state low).", 0, 10_000_000)
    backup_retention_days: float = _setting(7.0, "Days replayed backup files are kept in BACKUP_FILE_PATH/replayed/ before removal.", 0.0, 3650.0)
    backup_file_max_rows: int = _setting(100_000, "Rows after which the writer starts a new backup file while spilling.", 100, 10_000_000)
    db_probe_min_interval_s: float = _setting(1.0, "Seconds before the first database probe once the circuit opens (then doubling, with jitter).", 0.05, 3600.0, aliases=("DB_PROBE_MIN_INTERVAL",))
    db_probe_max_interval_s: float = _setting(10.0, "Longest wait (s) between database probes while the database is down.", 0.05, 3600.0, aliases=("DB_PROBE_MAX_INTERVAL",))
    sqlite_busy_timeout_s: float = _setting(1.0, "Seconds a SQLite write waits for a lock held by another connection before the attempt fails.", 0.0, 60.0, aliases=("SQLITE_BUSY_TIMEOUT",))
    # --- oracle ---
    oracle_host: str = _setting("", "Oracle host; setting it (or ORACLE_DSN) selects the Oracle sink.", check=_optional(_host), mask=mask_credentials)
    oracle_port: int = _setting(1521, "Oracle listener port.", 1, 65535)
    oracle_service_name: str = _setting("", "Oracle service name.")
    oracle_username: str = _setting("", "Oracle user the writer connects as.")
    oracle_password: str = _setting("", "Oracle password (never logged or shown).", secret=True)
    oracle_dsn: str = _setting("", "Full connect string (overrides host/port/service), e.g. a RAC or failover address list (a password inside it is masked wherever it is shown).", mask=mask_credentials)
    oracle_pool_min: int = _setting(2, "Connections the pool keeps open.", 1, 64)
    oracle_pool_max: int = _setting(5, "Most connections the pool opens.", 1, 64)
    oracle_table: str = _setting("TAG_DATA", "Table the writer inserts into.", check=_ident)
    oracle_cursor_table: str = _setting("TAGPIPE_CURSOR", "Table holding the writer's position per ring epoch, updated in the same transaction as the rows (exactly once).", check=_ident)
    oracle_gap_table: str = _setting("", "Gap ledger table (sql/04_gap_table.sql); empty: ORACLE_TABLE + _GAP, e.g. TAG_DATA_GAP.", check=_ident)
    oracle_columns: str = _setting("", "Column names of an existing table, e.g. TS=MEAS_TIME,PLC_CODE=PLC_ID,RING_EPOCH=-,SEQ=- (- = the table has no such column).", check=_oracle_columns_reason)
    oracle_call_timeout_ms: int = _setting(30_000, "Longest a single database call may take (a black-holed network cannot hang the writer).", 500, 600_000)
    oracle_connect_timeout_s: float = _setting(10.0, "TCP connect timeout for each new connection.", 0.5, 120.0)
    oracle_pool_wait_ms: int = _setting(5_000, "Longest wait for a pooled connection (then the database counts as down).", 100, 600_000)
    oracle_expire_time_min: int = _setting(2, "Minutes between keep-alive probes on idle connections (0 = off), so firewalls keep them.", 0, 1440)
    oracle_wallet_location: str = _setting("", "Folder of the wallet (ewallet.pem) for TCPS connections.", check=_optional(_folder))
    oracle_wallet_password: str = _setting("", "Password of the wallet's private key (never logged or shown).", secret=True)
    oracle_config_dir: str = _setting("", "Folder of tnsnames.ora, so ORACLE_DSN may be a net service name.", check=_optional(_folder))
    oracle_insert_chunk_rows: int = _setting(5_000, "Rows per executemany round trip (a larger batch is sent in several, in one transaction).", 100, 100_000)
    # --- poller ---
    tags_file: str = _setting("", "TOML file of PLCs and tags; without it the built-in simulator runs.", check=_optional(_file))
    # --- web ---
    web_host: str = _setting("127.0.0.1", "Address the status page and API listen on.", check=_host)
    web_port: int = _setting(8080, "Port of the status page and API.", 1, 65535)
    web_lang: str = _setting("auto", "Status page language: ko, en, or auto (the browser's Accept-Language).", choices=("auto", "ko", "en"))
    web_connection_limit: int = _setting(500, "Most connections the web process keeps open at once; beyond it new ones wait in the listen queue (a few stuck clients cannot fill it).", 10, 10_000)
    web_client_timeout_s: float = _setting(10.0, "Seconds a web connection may stay idle (a request half sent, or nothing after an answer) before it is closed.", 1.0, 600.0)
    web_history_s: int = _setting(600, "Seconds of throughput/lag history the web process keeps for the chart (sampled once a second).", 60, 3600)
    health_max_lag_s: float = _setting(30.0, "Oldest unwritten value older than this (s) makes health degraded (clears below half).", 1.0, 86400.0)
    health_heartbeat_s: float = _setting(10.0, "A poller/writer heartbeat older than this (s) counts as that process down.", 1.0, 3600.0)
    # --- all processes ---
    shutdown_timeout_s: float = _setting(10.0, "Seconds an orderly stop may take (the writer's final flush).", 0.1, 600.0, aliases=("SHUTDOWN_TIMEOUT",))
    supervisor_hang_timeout_s: float = _setting(60.0, "python -m pipeline: a child whose heartbeat is older than this (s) is killed and restarted.", 2.0, 3600.0)
    log_level: str = _setting("INFO", "Logging level.", choices=("DEBUG", "INFO", "WARNING", "ERROR"))

    def __post_init__(self) -> None:
        for s in SETTINGS:
            value = getattr(self, s.attr)
            checked = _check_value(s, value, str(value))
            if checked is not value:  # an int given for a float field becomes a float
                object.__setattr__(self, s.attr, checked)
        _cross_check(self)

    @property
    def oracle_configured(self) -> bool:
        """True when ORACLE_HOST or ORACLE_DSN selects the Oracle sink."""
        return bool(self.oracle_host or self.oracle_dsn)

    def masked(self) -> dict[str, Any]:
        """{SETTING_NAME: value} as it may be shown: a set secret as ``SECRET_MASK``, a
        password inside a connect string masked (``Setting.show``)."""
        return {s.name: s.show(getattr(self, s.attr)) for s in SETTINGS}

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in self.masked().items()) + ")"


def _spec_of(f: Any) -> Setting:
    m = f.metadata[_SPEC]
    kind = "secret" if m["secret"] else "choice" if m["choices"] else str(f.type)
    return Setting(f.name.upper(), kind, f.default, m["doc"], m["minimum"], m["maximum"], m["choices"], m["check"], m["aliases"], m["mask"])


SETTINGS: list[Setting] = [_spec_of(f) for f in fields(Settings)]
_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "choice": str, "secret": str}


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NEWLINES = "\n\r"
_BLANKS = " \t\n\r"
_DQ_ESCAPES = '"\\`$'  # what a backslash escapes inside double quotes (as in a shell)


def parse_dotenv(path: str) -> dict[str, str]:
    """Read a ``.env`` file by the rules of systemd's ``EnvironmentFile=`` (systemd.exec(5)),
    so the same file means the same to ``python -m pipeline`` and to a systemd unit:

    * UTF-8 only (no byte-order mark, no NUL byte); ``KEY=VALUE`` assignments, one a line;
      blanks around the key and around an unquoted value are dropped.
    * A comment is a line whose first non-blank character is ``#`` or ``;``. There are no
      inline comments: ``A=x # y`` is ``x # y``, as systemd reads it.
    * ``'...'`` takes everything verbatim up to the next ``'`` (newlines too); ``"..."``
      likewise, with ``\\"`` ``\\\\`` ``\\``` ``\\$`` unescaped and backslash-newline
      dropped; after a closing quote more (quoted or not) text may follow and is appended
      (``A='a' "b"`` is ``ab``). Quotes inside an unquoted value are kept.
    * Unquoted, a backslash keeps the next character (``\\#`` is ``#``, ``\\\\`` is ``\\``) and a
      backslash at the end of the line continues the value on the next line.
    * A later assignment of the same key wins. ``$VAR`` is not expanded.

    Where systemd silently ignores a line (no ``=``, a name that is not a shell variable
    name such as ``export KEY``) or its versions disagree (a comment ending in a backslash
    continues onto the next line before systemd 254), this reader refuses the file instead,
    so it never takes a value systemd would not. An unterminated quote is refused too.

    Raises EnvFileError (one line naming the file, the line and the byte offset, never the
    content: it may be a password) for any of those, and for a file that cannot be read.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise EnvFileError(path, "", f"cannot be read: {e.strerror or e}") from None
    return parse_env_bytes(data, path)


def _where(data: bytes, offset: int) -> str:
    line = data.count(b"\n", 0, offset) + 1
    return f"{line} (byte offset {offset})"


def parse_env_bytes(data: bytes, path: str = "<env>") -> dict[str, str]:
    """``parse_dotenv`` on the file's bytes (``path`` only names it in errors)."""
    if data.startswith(b"\xef\xbb\xbf"):
        raise EnvFileError(path, _where(data, 0), "starts with a UTF-8 byte-order mark, which systemd's"
                           " EnvironmentFile= reads as part of the first name: save it as UTF-8 without BOM")
    if b"\0" in data:
        raise EnvFileError(path, _where(data, data.index(b"\0")), "contains a NUL byte (systemd stops reading there)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EnvFileError(path, _where(data, e.start), f"is not UTF-8 (byte 0x{data[e.start]:02x}):"
                           " save it as UTF-8, as systemd's EnvironmentFile= requires") from None
    offsets = _byte_offsets(text)
    out: dict[str, str] = {}
    pos, n = 0, len(text)

    def fail(at: int, reason: str) -> EnvFileError:
        return EnvFileError(path, _where(data, offsets(at)), reason)

    while pos < n:
        c = text[pos]
        if c in _BLANKS:
            pos += 1
            continue
        if c in "#;":  # a comment runs to the end of its line
            end = _line_end(text, pos)
            if text[pos:end].endswith("\\"):
                raise fail(pos, "a comment ends with a backslash (systemd before 254 also comments out the"
                                " next line, 254 and later do not): remove the backslash")
            pos = end
            continue
        start = pos
        while pos < n and text[pos] not in _NEWLINES and text[pos] != "=":
            pos += 1
        key = text[start:pos].rstrip(" \t")
        if pos >= n or text[pos] != "=":
            # Not echoed: the line may be a password that lost its "KEY=".
            raise fail(start, "is not a KEY=VALUE line (systemd would ignore it)")
        if key.startswith("export ") or key.startswith("export\t"):
            raise fail(start, "starts with 'export', which systemd's EnvironmentFile= does not understand"
                              " (it ignores the line): remove 'export '")
        if not _ENV_NAME.fullmatch(key):
            raise fail(start, "the name before '=' is not a variable name (letters, digits, _; systemd would ignore it)")
        pos += 1
        value: list[str] = []
        quoting = True  # right after '=' or a closing quote: blanks skipped, quotes open
        blank_from: int | None = None  # where trailing blanks of an unquoted part begin
        while pos < n:
            c = text[pos]
            if c in _NEWLINES:
                break
            if quoting and c in " \t":
                pos += 1
                continue
            if quoting and c in "'\"":
                pos = _quoted(text, pos, value, lambda at: fail(at, "has a quote that is never closed"))
                continue
            quoting = False
            if c == "\\":  # keeps the next character; at the end of a line: continues the value
                blank_from = None
                if pos + 1 < n and text[pos + 1] not in _NEWLINES:
                    value.append(text[pos + 1])
                pos += 2  # an escaped newline is dropped (with CRLF only the \r is: the \n ends the value, as in systemd)
                continue
            if c in " \t":
                blank_from = len(value) if blank_from is None else blank_from
            else:
                blank_from = None
            value.append(c)
            pos += 1
        if not quoting and blank_from is not None:
            del value[blank_from:]
        out[key] = "".join(value)
    return out


def _line_end(text: str, pos: int) -> int:
    ends = [i for i in (text.find("\n", pos), text.find("\r", pos)) if i >= 0]
    return min(ends) if ends else len(text)


def _quoted(text: str, pos: int, value: list[str], unterminated: Callable[[int], Exception]) -> int:
    """Append the quoted part starting at ``text[pos]`` (a quote) to ``value``; returns the
    position after its closing quote. Raises ``unterminated(pos)`` without one."""
    q, i, n = text[pos], pos + 1, len(text)
    while i < n:
        c = text[i]
        if c == q:
            return i + 1
        if q == '"' and c == "\\" and i + 1 < n:
            e = text[i + 1]
            if e in _DQ_ESCAPES:
                value.append(e)
            elif e != "\n":  # backslash-newline is a continuation; anything else stays as written
                value += ["\\", e]
            i += 2
            continue
        value.append(c)
        i += 1
    raise unterminated(pos)


def _byte_offsets(text: str) -> Callable[[int], int]:
    """Character index -> byte offset in the UTF-8 encoding of ``text``."""
    if text.isascii():
        return lambda i: i
    return lambda i: len(text[:i].encode("utf-8"))


def _convert(s: Setting, raw: str, name: str | None = None) -> Any:
    """``raw`` text -> the setting's typed, validated value. ``name``: the environment name
    it came under (an alias), for the error. Raises ConfigError."""
    name = name or s.name
    text = raw.strip()
    if s.kind == "int":
        try:
            value: Any = int(text.replace("_", ""))
        except ValueError:
            raise _bad(s, name, raw, "must be a whole number") from None
    elif s.kind == "float":
        try:
            value = float(text)
        except ValueError:
            raise _bad(s, name, raw, "must be a number") from None
        if not math.isfinite(value):
            raise _bad(s, name, raw, "must be a finite number")
    elif s.kind == "choice":
        value = text.upper() if s.choices and s.choices[0].isupper() else text.lower()
    elif s.kind == "secret":
        value = raw
    else:
        value = text
    return _check_value(s, value, raw, name)


def _bad(s: Setting, name: str, raw: str, reason: str) -> ConfigError:
    """The one-line error for ``raw`` given as ``name``, showing it as ``s.show`` does."""
    return ConfigError(name, raw if s.secret else str(s.show(raw)), reason, secret=s.secret)


def _check_value(s: Setting, value: Any, raw: str, name: str | None = None) -> Any:
    """``value`` if it has the setting's type and passes its bounds, choices and validator
    (an int for a float setting comes back as a float). Raises ConfigError naming ``name``."""
    name = name or s.name
    want = _TYPES[s.kind]
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not want:
        raise _bad(s, name, raw, f"must be of type {want.__name__}, not {type(value).__name__}")
    if want is float and not math.isfinite(value):
        raise _bad(s, name, raw, "must be a finite number")
    if s.choices and value not in s.choices:
        raise _bad(s, name, raw, "must be one of " + ", ".join(s.choices))
    if s.minimum is not None and value < s.minimum or s.maximum is not None and value > s.maximum:
        raise _bad(s, name, raw, f"must be between {_fmt(s.minimum)} and {_fmt(s.maximum)}")
    if s.check is not None:
        reason = s.check(value)
        if reason:
            raise _bad(s, name, raw, reason)
    return value


def _fmt(x: float | None) -> str:
    return "-inf" if x is None else (str(int(x)) if float(x).is_integer() else str(x))


def load_settings(env: Mapping[str, str] | None = None, env_file: str | None = ".env") -> Settings:
    """Build the frozen Settings from defaults, ``env_file`` (if it exists) and ``env``.

    ``env`` defaults to ``os.environ`` and wins over the file, whichever name (own or
    alias) each uses. Raises ConfigError naming the first bad setting, or a setting given
    twice in one source (own name and alias) with values that differ.
    """
    env = os.environ if env is None else env
    file_values: dict[str, str] = {}
    if env_file and os.path.lexists(env_file):  # a folder or an unreadable file is an error, not "no file"
        file_values = parse_dotenv(env_file)
    values: dict[str, Any] = {}
    for s in SETTINGS:
        for source in (env, file_values):
            given = [(n, source[n]) for n in s.names if n in source]
            if given:
                values[s.attr] = _one_value(s, given)
                break
    return Settings(**values)


def _one_value(s: Setting, given: list[tuple[str, str]]) -> Any:
    """The value of ``s`` from one source, where it may be named more than once."""
    (name, raw), *others = given
    value = _convert(s, raw, name)
    for other, other_raw in others:
        if _convert(s, other_raw, other) != value:
            raise _bad(s, name, raw, f"disagrees with {other}={s.show(other_raw)!r}"
                              f" ({other} is the older name of {s.name}: set one of them)")
    return value


def read_secret(name: str, env: Mapping[str, str] | None = None, env_file: str | None = ".env") -> str | None:
    """A secret named elsewhere (e.g. a tag file's ``password_env``): the process environment
    first, then ``env_file`` (the same .env the settings come from). None when neither has it.

    The value is returned only to its user; callers never log or show it.
    Raises ConfigError for a malformed .env file (like ``load_settings``).
    """
    env = os.environ if env is None else env
    if name in env:
        return env[name]
    if env_file and os.path.lexists(env_file):
        return parse_dotenv(env_file).get(name)
    return None


def _cross_check(v: Settings) -> None:
    if v.oracle_pool_min > v.oracle_pool_max:
        raise ConfigError("ORACLE_POOL_MIN", str(v.oracle_pool_min), f"must not exceed ORACLE_POOL_MAX ({v.oracle_pool_max})")
    if v.db_probe_min_interval_s > v.db_probe_max_interval_s:
        raise ConfigError("DB_PROBE_MIN_INTERVAL_S", str(v.db_probe_min_interval_s), f"must not exceed DB_PROBE_MAX_INTERVAL_S ({v.db_probe_max_interval_s})")
    if v.buffer_batch_size > v.buffer_batch_max:
        raise ConfigError("BUFFER_BATCH_SIZE", str(v.buffer_batch_size), f"must not exceed BUFFER_BATCH_MAX ({v.buffer_batch_max})")
    if v.oracle_host and not v.oracle_dsn and not v.oracle_service_name:
        raise ConfigError("ORACLE_SERVICE_NAME", "", "must be set when ORACLE_HOST is set (or give ORACLE_DSN)")


def settings_table_markdown() -> str:
    """The docs' settings table (docs/settings.md), generated from SETTINGS."""
    rows = ["| setting | default | meaning |", "| --- | --- | --- |"]
    for s in SETTINGS:
        default = "(empty)" if s.default in ("", None) else f"`{s.default}`"
        also = "".join(f" (also read as `{a}`, its older name)" for a in s.aliases)
        rows.append(f"| `{s.name}` | {default} | {s.doc}{also} |")
    return "\n".join(rows)


def settings_names() -> list[str]:
    """Every environment name a setting is read from, aliases included."""
    return [n for s in SETTINGS for n in s.names]


def as_dict(settings: Settings) -> dict[str, Any]:
    return {f.name: getattr(settings, f.name) for f in fields(settings)}
