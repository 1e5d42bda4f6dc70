"""Every setting, declared once: name, type, default, validation and meaning.

``Settings`` is a frozen dataclass written out below: one typed field per setting, its
default, doc, bounds and validator in the field's metadata (``_setting(...)``). The
environment name is the field name in capitals; a few settings also answer to an older
name (``aliases``: the original feature's names, e.g. ``SHUTDOWN_TIMEOUT`` for
``SHUTDOWN_TIMEOUT_S``). ``SETTINGS`` (the table the docs, ``.env.example`` and
``python -m pipeline settings`` are generated from) is derived from the fields.

Loading order: defaults, then a ``.env`` file in the working directory, then the process
environment (which wins). Within one of those sources, a setting given under both its
name and an alias must agree, else it is a bad setting. Everything is validated before
any process opens anything (constructing ``Settings`` validates every field, so a
``dataclasses.replace`` is checked too); a bad value raises ``ConfigError`` whose one-line
message names the setting and the value (secrets are never shown). ``python -m pipeline
settings`` prints the table.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

from shm.layout import segment_bytes
from shm.segment import check_ring_name

from .errors import ConfigError

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


def _setting(default: Any, doc: str, minimum: float | None = None, maximum: float | None = None, *,
             choices: tuple[str, ...] = (), check: Callable[[Any], str | None] | None = None,
             secret: bool = False, aliases: tuple[str, ...] = ()) -> Any:
    """A ``Settings`` field: its default, plus what the loader and the docs need."""
    meta = {"doc": doc, "minimum": minimum, "maximum": maximum, "choices": choices, "check": check,
            "secret": secret, "aliases": aliases}
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
    backup_file_path: str = _setting("./backup", "Folder of CSV backup files written while the database is down.", check=_nonempty)
    sqlite_path: str = _setting("./data/tagpipe.db", "SQLite database used when no Oracle is configured.", check=_nonempty)
    backup_min_free_mb: int = _setting(512, "Free space (MB) under BACKUP_FILE_PATH below which the writer warns (disk state low).", 0, 10_000_000)
    backup_retention_days: float = _setting(7.0, "Days replayed backup files are kept in BACKUP_FILE_PATH/replayed/ before removal.", 0.0, 3650.0)
    backup_file_max_rows: int = _setting(100_000, "Rows after which the writer starts a new backup file while spilling.", 100, 10_000_000)
    db_probe_min_interval_s: float = _setting(1.0, "Seconds before the first database probe once the circuit opens (then doubling, with jitter).", 0.05, 3600.0, aliases=("DB_PROBE_MIN_INTERVAL",))
    db_probe_max_interval_s: float = _setting(10.0, "Longest wait (s) between database probes while the database is down.", 0.05, 3600.0, aliases=("DB_PROBE_MAX_INTERVAL",))
    sqlite_busy_timeout_s: float = _setting(1.0, "Seconds a SQLite write waits for a lock held by another connection before the attempt fails.", 0.0, 60.0, aliases=("SQLITE_BUSY_TIMEOUT",))
    # --- oracle ---
    oracle_host: str = _setting("", "Oracle host; setting it (or ORACLE_DSN) selects the Oracle sink.")
    oracle_port: int = _setting(1521, "Oracle listener port.", 1, 65535)
    oracle_service_name: str = _setting("", "Oracle service name.")
    oracle_username: str = _setting("", "Oracle user the writer connects as.")
    oracle_password: str = _setting("", "Oracle password (never logged or shown).", secret=True)
    oracle_dsn: str = _setting("", "Full connect string (overrides host/port/service), e.g. a RAC or failover address list.")
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
    oracle_wallet_location: str = _setting("", "Folder of the wallet (ewallet.pem) for TCPS connections.")
    oracle_wallet_password: str = _setting("", "Password of the wallet's private key (never logged or shown).", secret=True)
    oracle_config_dir: str = _setting("", "Folder of tnsnames.ora, so ORACLE_DSN may be a net service name.")
    oracle_insert_chunk_rows: int = _setting(5_000, "Rows per executemany round trip (a larger batch is sent in several, in one transaction).", 100, 100_000)
    # --- poller ---
    tags_file: str = _setting("", "TOML file of PLCs and tags; without it the built-in simulator runs.")
    # --- web ---
    web_host: str = _setting("127.0.0.1", "Address the status page and API listen on.", check=_host)
    web_port: int = _setting(8080, "Port of the status page and API.", 1, 65535)
    web_lang: str = _setting("auto", "Status page language: ko, en, or auto (the browser's Accept-Language).", choices=("auto", "ko", "en"))
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
            checked = _check_value(s, value, SECRET_MASK if s.secret else str(value))
            if checked is not value:  # an int given for a float field becomes a float
                object.__setattr__(self, s.attr, checked)
        _cross_check(self)

    @property
    def oracle_configured(self) -> bool:
        """True when ORACLE_HOST or ORACLE_DSN selects the Oracle sink."""
        return bool(self.oracle_host or self.oracle_dsn)

    def masked(self) -> dict[str, Any]:
        """{SETTING_NAME: value}, a set secret shown as ``SECRET_MASK``."""
        return {s.name: (SECRET_MASK if s.secret and getattr(self, s.attr) else getattr(self, s.attr)) for s in SETTINGS}

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in self.masked().items()) + ")"


def _spec_of(f: Any) -> Setting:
    m = f.metadata[_SPEC]
    kind = "secret" if m["secret"] else "choice" if m["choices"] else str(f.type)
    return Setting(f.name.upper(), kind, f.default, m["doc"], m["minimum"], m["maximum"], m["choices"], m["check"], m["aliases"])


SETTINGS: list[Setting] = [_spec_of(f) for f in fields(Settings)]
_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "choice": str, "secret": str}


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


def _convert(s: Setting, raw: str, name: str | None = None) -> Any:
    """``raw`` text -> the setting's typed, validated value. ``name``: the environment name
    it came under (an alias), for the error. Raises ConfigError."""
    name = name or s.name
    text = raw.strip()
    if s.kind == "int":
        try:
            value: Any = int(text.replace("_", ""))
        except ValueError:
            raise ConfigError(name, raw, "must be a whole number") from None
    elif s.kind == "float":
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(name, raw, "must be a number") from None
        if not math.isfinite(value):
            raise ConfigError(name, raw, "must be a finite number")
    elif s.kind == "choice":
        value = text.upper() if s.choices and s.choices[0].isupper() else text.lower()
    elif s.kind == "secret":
        value = raw
    else:
        value = text
    return _check_value(s, value, raw, name)


def _check_value(s: Setting, value: Any, raw: str, name: str | None = None) -> Any:
    """``value`` if it has the setting's type and passes its bounds, choices and validator
    (an int for a float setting comes back as a float). Raises ConfigError naming ``name``."""
    name = name or s.name
    want = _TYPES[s.kind]
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not want:
        raise ConfigError(name, raw, f"must be of type {want.__name__}, not {type(value).__name__}", secret=s.secret)
    if want is float and not math.isfinite(value):
        raise ConfigError(name, raw, "must be a finite number")
    if s.choices and value not in s.choices:
        raise ConfigError(name, raw, "must be one of " + ", ".join(s.choices))
    if s.minimum is not None and value < s.minimum or s.maximum is not None and value > s.maximum:
        raise ConfigError(name, raw, f"must be between {_fmt(s.minimum)} and {_fmt(s.maximum)}", secret=s.secret)
    if s.check is not None:
        reason = s.check(value)
        if reason:
            raise ConfigError(name, raw, reason, secret=s.secret)
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
    if env_file and os.path.isfile(env_file):
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
            raise ConfigError(name, raw, f"disagrees with {other}={SECRET_MASK if s.secret else other_raw!r}"
                              f" ({other} is the older name of {s.name}: set one of them)", secret=s.secret)
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
    if env_file and os.path.isfile(env_file):
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
