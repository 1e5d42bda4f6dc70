"""Every setting, declared once: name, type, default, validation and meaning.

Loading order: defaults, then a ``.env`` file in the working directory, then the process
environment (which wins). Everything is validated before any process opens anything; a
bad value raises ``ConfigError`` whose one-line message names the setting and the value
(secrets are never shown). ``python -m pipeline settings`` prints the table.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, fields, make_dataclass
from typing import Any, Callable, Mapping

from .errors import ConfigError

SECRET_MASK = "********"


@dataclass(frozen=True)
class Setting:
    name: str
    kind: str  # int, float, str, bool, choice, secret
    default: Any
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None  # returns a reason when bad

    @property
    def attr(self) -> str:
        return self.name.lower()

    @property
    def secret(self) -> bool:
        return self.kind == "secret"


def _ident(v: str) -> str | None:
    if v and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_$#]{0,127}(\.[A-Za-z][A-Za-z0-9_$#]{0,127})?", v):
        return "must be an SQL identifier (letters, digits, _ $ #; optionally SCHEMA.NAME)"
    return None


def _fits_shared_memory(v: int) -> str | None:
    # Compared with the size of /dev/shm, not its free space: the ring this poller
    # already owns may be what fills it. 16384 header bytes + 64 per record (shm.layout).
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    need, total = 16384 + 64 * v, st.f_blocks * st.f_frsize
    if need > total:
        return f"needs {need // 1_000_000} MB of shared memory; /dev/shm holds only {total // 1_000_000} MB"
    return None


def _ring(v: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", v):
        return "must be 1-64 characters of A-Z a-z 0-9 _ -"
    return None


def _host(v: str) -> str | None:
    if not v or any(c.isspace() for c in v):
        return "must be a host name or IP address"
    return None


def _nonempty(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


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


SETTINGS: list[Setting] = [
    # --- ring ---
    Setting("RING_NAME", "str", "tagpipe", "Which shared-memory ring to create or attach (/dev/shm/NAME.ring).", check=_ring),
    Setting("BUFFER_MAX_SIZE", "int", 100_000, "Ring capacity in records (64 bytes each).", 16, 50_000_000, check=_fits_shared_memory),
    Setting("BUFFER_ALERT_THRESHOLD", "float", 80.0, "Ring fill (%) above which a warning is logged and health degrades.", 1.0, 100.0),
    # --- writer ---
    Setting("BUFFER_BATCH_SIZE", "int", 500, "Records per batch normally; a batch goes when this many wait.", 1, 100_000),
    Setting("BUFFER_BATCH_MAX", "int", 20_000, "Largest batch the writer grows to under a backlog (capped at half the ring; 20,000 measured: see BENCHMARKS.md).", 1, 1_000_000),
    Setting("BUFFER_WRITE_INTERVAL", "float", 0.5, "Seconds after which a partial batch is written anyway.", 0.001, 60.0),
    Setting("ORACLE_RETRY_MAX", "int", 3, "Attempts per batch before it goes to a backup file (waits 1 s, 2 s, 4 s, ...).", 1, 10),
    Setting("BACKUP_FILE_PATH", "str", "./backup", "Folder of CSV backup files written while the database is down.", check=_nonempty),
    Setting("SQLITE_PATH", "str", "./data/tagpipe.db", "SQLite database used when no Oracle is configured.", check=_nonempty),
    Setting("BACKUP_MIN_FREE_MB", "int", 512, "Free space (MB) under BACKUP_FILE_PATH below which the writer warns (disk state low).", 0, 10_000_000),
    Setting("BACKUP_RETENTION_DAYS", "float", 7.0, "Days replayed backup files are kept in BACKUP_FILE_PATH/replayed/ before removal.", 0.0, 3650.0),
    Setting("BACKUP_FILE_MAX_ROWS", "int", 100_000, "Rows after which the writer starts a new backup file while spilling.", 100, 10_000_000),
    Setting("DB_PROBE_MIN_INTERVAL", "float", 1.0, "Seconds before the first database probe once the circuit opens (then doubling, with jitter).", 0.05, 3600.0),
    Setting("DB_PROBE_MAX_INTERVAL", "float", 10.0, "Longest wait (s) between database probes while the database is down.", 0.05, 3600.0),
    Setting("SQLITE_BUSY_TIMEOUT", "float", 1.0, "Seconds a SQLite write waits for a lock held by another connection before the attempt fails.", 0.0, 60.0),
    # --- oracle ---
    Setting("ORACLE_HOST", "str", "", "Oracle host; setting it (or ORACLE_DSN) selects the Oracle sink."),
    Setting("ORACLE_PORT", "int", 1521, "Oracle listener port.", 1, 65535),
    Setting("ORACLE_SERVICE_NAME", "str", "", "Oracle service name."),
    Setting("ORACLE_USERNAME", "str", "", "Oracle user the writer connects as."),
    Setting("ORACLE_PASSWORD", "secret", "", "Oracle password (never logged or shown)."),
    Setting("ORACLE_DSN", "str", "", "Full connect string (overrides host/port/service), e.g. a RAC or failover address list."),
    Setting("ORACLE_POOL_MIN", "int", 2, "Connections the pool keeps open.", 1, 64),
    Setting("ORACLE_POOL_MAX", "int", 5, "Most connections the pool opens.", 1, 64),
    Setting("ORACLE_TABLE", "str", "TAG_DATA", "Table the writer inserts into.", check=_ident),
    Setting("ORACLE_CURSOR_TABLE", "str", "TAGPIPE_CURSOR", "Table holding the writer's position per ring epoch, updated in the same transaction as the rows (exactly once).", check=_ident),
    Setting("ORACLE_COLUMNS", "str", "", "Column names of an existing table, e.g. TS=MEAS_TIME,PLC_CODE=PLC_ID,RING_EPOCH=-,SEQ=- (- = the table has no such column).", check=lambda v: _oracle_columns_reason(v)),
    Setting("ORACLE_CALL_TIMEOUT_MS", "int", 30_000, "Longest a single database call may take (a black-holed network cannot hang the writer).", 500, 600_000),
    Setting("ORACLE_CONNECT_TIMEOUT_S", "float", 10.0, "TCP connect timeout for each new connection.", 0.5, 120.0),
    Setting("ORACLE_POOL_WAIT_MS", "int", 5_000, "Longest wait for a pooled connection (then the database counts as down).", 100, 600_000),
    Setting("ORACLE_EXPIRE_TIME_MIN", "int", 2, "Minutes between keep-alive probes on idle connections (0 = off), so firewalls keep them.", 0, 1440),
    Setting("ORACLE_WALLET_LOCATION", "str", "", "Folder of the wallet (ewallet.pem) for TCPS connections."),
    Setting("ORACLE_WALLET_PASSWORD", "secret", "", "Password of the wallet's private key (never logged or shown)."),
    Setting("ORACLE_CONFIG_DIR", "str", "", "Folder of tnsnames.ora, so ORACLE_DSN may be a net service name."),
    Setting("ORACLE_INSERT_CHUNK_ROWS", "int", 5_000, "Rows per executemany round trip (a larger batch is sent in several, in one transaction).", 100, 100_000),
    # --- poller ---
    Setting("TAGS_FILE", "str", "", "TOML file of PLCs and tags; without it the built-in simulator runs."),
    # --- web ---
    Setting("WEB_HOST", "str", "127.0.0.1", "Address the status page and API listen on.", check=_host),
    Setting("WEB_PORT", "int", 8080, "Port of the status page and API.", 1, 65535),
    Setting("WEB_LANG", "choice", "auto", "Status page language: ko, en, or auto (the browser's Accept-Language).", choices=("auto", "ko", "en")),
    Setting("WEB_HISTORY_S", "int", 600, "Seconds of throughput/lag history the web process keeps for the chart (sampled once a second).", 60, 3600),
    Setting("HEALTH_MAX_LAG_S", "float", 30.0, "Oldest unwritten value older than this (s) makes health degraded (clears below half).", 1.0, 86400.0),
    Setting("HEALTH_HEARTBEAT_S", "float", 10.0, "A poller/writer heartbeat older than this (s) counts as that process down.", 1.0, 3600.0),
    # --- all processes ---
    Setting("SHUTDOWN_TIMEOUT", "float", 10.0, "Seconds an orderly stop may take (the writer's final flush).", 0.1, 600.0),
    Setting("SUPERVISOR_HANG_TIMEOUT_S", "float", 60.0, "python -m pipeline: a child whose heartbeat is older than this (s) is killed and restarted.", 2.0, 3600.0),
    Setting("LOG_LEVEL", "choice", "INFO", "Logging level.", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
]


def register(*new: Setting) -> None:
    """Add settings (used only by this module's own table; kept for clarity of ownership)."""
    known = {s.name for s in SETTINGS}
    for s in new:
        if s.name in known:
            raise ValueError(f"setting {s.name} declared twice")
        SETTINGS.append(s)
        known.add(s.name)


def _build_class():
    return make_dataclass(
        "Settings",
        [(s.attr, Any) for s in SETTINGS],
        frozen=True,
        namespace={
            "masked": lambda self: {s.name: (SECRET_MASK if s.secret and getattr(self, s.attr) else getattr(self, s.attr)) for s in SETTINGS},
            "oracle_configured": property(lambda self: bool(self.oracle_host or self.oracle_dsn)),
            "__repr__": lambda self: "Settings(" + ", ".join(f"{k}={v!r}" for k, v in self.masked().items()) + ")",
        },
    )


def parse_dotenv(path: str) -> dict[str, str]:
    """Parse a .env file: KEY=VALUE lines, '#' comments, optional 'export ', quotes.

    Raises ConfigError for a line that is not KEY=VALUE.
    """
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[7:].lstrip()
            key, sep, value = line.partition("=")
            key = key.strip()
            if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                # Not echoed: the line may be a password that lost its "KEY=".
                raise ConfigError(f"{path}:{lineno}", "", "is not a KEY=VALUE line", secret=True)
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            elif " #" in value:
                value = value.split(" #", 1)[0].rstrip()
            out[key] = value
    return out


def _convert(s: Setting, raw: str) -> Any:
    text = raw.strip()
    if s.kind == "int":
        try:
            value: Any = int(text.replace("_", ""))
        except ValueError:
            raise ConfigError(s.name, raw, "must be a whole number") from None
    elif s.kind == "float":
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(s.name, raw, "must be a number") from None
        if not math.isfinite(value):
            raise ConfigError(s.name, raw, "must be a finite number")
    elif s.kind == "bool":
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            value = True
        elif low in ("0", "false", "no", "off", ""):
            value = False
        else:
            raise ConfigError(s.name, raw, "must be true or false")
    elif s.kind == "choice":
        value = text.upper() if s.choices and s.choices[0].isupper() else text.lower()
        if value not in s.choices:
            raise ConfigError(s.name, raw, "must be one of " + ", ".join(s.choices))
    elif s.kind == "secret":
        value = raw
    else:
        value = text
    if s.minimum is not None and value < s.minimum or s.maximum is not None and value > s.maximum:
        raise ConfigError(s.name, raw, f"must be between {_fmt(s.minimum)} and {_fmt(s.maximum)}", secret=s.secret)
    if s.check is not None:
        reason = s.check(value)
        if reason:
            raise ConfigError(s.name, raw, reason, secret=s.secret)
    return value


def _fmt(x: float | None) -> str:
    return "-inf" if x is None else (str(int(x)) if float(x).is_integer() else str(x))


def load_settings(env: Mapping[str, str] | None = None, env_file: str | None = ".env") -> Any:
    """Build the frozen Settings from defaults, ``env_file`` (if it exists) and ``env``.

    ``env`` defaults to ``os.environ``. Raises ConfigError naming the first bad setting.
    """
    env = os.environ if env is None else env
    file_values: dict[str, str] = {}
    if env_file and os.path.isfile(env_file):
        file_values = parse_dotenv(env_file)
    values: dict[str, Any] = {}
    for s in SETTINGS:
        if s.name in env:
            values[s.attr] = _convert(s, env[s.name])
        elif s.name in file_values:
            values[s.attr] = _convert(s, file_values[s.name])
        else:
            values[s.attr] = s.default
    _cross_check(values)
    return _build_class()(**values)


def _cross_check(v: dict[str, Any]) -> None:
    if v["oracle_pool_min"] > v["oracle_pool_max"]:
        raise ConfigError("ORACLE_POOL_MIN", str(v["oracle_pool_min"]), f"must not exceed ORACLE_POOL_MAX ({v['oracle_pool_max']})")
    if v["db_probe_min_interval"] > v["db_probe_max_interval"]:
        raise ConfigError("DB_PROBE_MIN_INTERVAL", str(v["db_probe_min_interval"]), f"must not exceed DB_PROBE_MAX_INTERVAL ({v['db_probe_max_interval']})")
    if v["buffer_batch_size"] > v["buffer_batch_max"]:
        raise ConfigError("BUFFER_BATCH_SIZE", str(v["buffer_batch_size"]), f"must not exceed BUFFER_BATCH_MAX ({v['buffer_batch_max']})")
    if v["oracle_host"] and not v["oracle_dsn"] and not v["oracle_service_name"]:
        raise ConfigError("ORACLE_SERVICE_NAME", "", "must be set when ORACLE_HOST is set (or give ORACLE_DSN)")


def settings_table_markdown() -> str:
    """The README's settings table, generated from SETTINGS."""
    rows = ["| setting | default | meaning |", "| --- | --- | --- |"]
    for s in SETTINGS:
        default = "(empty)" if s.default in ("", None) else f"`{s.default}`"
        rows.append(f"| `{s.name}` | {default} | {s.doc} |")
    return "\n".join(rows)


def settings_names() -> list[str]:
    return [s.name for s in SETTINGS]


def as_dict(settings: Any) -> dict[str, Any]:
    return {f.name: getattr(settings, f.name) for f in fields(settings)}
