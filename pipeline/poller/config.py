"""Tag definitions: the TOML file named by TAGS_FILE, loaded and validated in one go.

Every mistake raises ``TagsFileError`` whose one-line message names the file, the key path
(``plcs[1].groups[0].tags[3].type``) and the bad value; nothing is truncated or guessed.
The format is documented in docs/poller.md; ``demo_plant.toml`` (the
simulator's plant) and ``deploy/tags.example.toml`` are complete examples.
"""

from __future__ import annotations

import errno
import math
import os
import reprlib
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.common.errors import PipelineError
from pipeline.common.telemetry import MAX_PLCS
from shm.layout import check_field_text

from . import melsec, opcua_config
from . import registers

PROTOCOLS = ("modbus", "simulator", melsec.PROTOCOL, "opcua")  # mc: validation in melsec.py; opcua: in opcua_config.py
WAVES = ("sine", "ramp", "counter", "square", "walk", "constant")
DEFAULT_MAX_SILENCE_S = 60.0
MIN_INTERVAL_S = 0.01  # below this the scheduler's own jitter dominates
MAX_INTERVAL_S = 86_400.0
DEMO_PLANT = Path(__file__).with_name("demo_plant.toml")
_REASON_MAX = 500  # room for the list of known keys
_KEY_MAX = 160
_FLOAT_MAX = int(1.7976931348623157e308)


class _ShortRepr(reprlib.Repr):
    """``repr`` that stays one short line whatever the file holds: nested values are cut
    at a few levels (a value nested thousands deep would exhaust the stack), strings at 60
    characters, and an integer too long to print (Python refuses over 4,300 digits) is
    described by its size."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother = 3, 60, 60
        self.maxlist = self.maxdict = self.maxtuple = 4

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 200:
            return f"<an integer of about {int(x.bit_length() * 0.30103) + 1} digits>"
        return repr(x)


show_value = _ShortRepr().repr


class TagsFileError(PipelineError):
    """A tag definition file is unreadable or wrong. ``str()`` is the one line to print
    (the value is shortened by ``show_value``: never a huge line, never a traceback)."""

    def __init__(self, path: str, key: str, value: Any, reason: str) -> None:
        self.path, self.key, self.value, self.reason = path, key, value, reason
        where = f"{path}: {_clip(key, _KEY_MAX)} = {show_value(value)}" if key else f"{path}"
        # A reason may quote the value itself (e.g. a 1 MB plc code): keep the line short.
        super().__init__(f"{where}: {_clip(' '.join(str(reason).split()), _REASON_MAX)}")


def _clip(text: str, most: int) -> str:
    """``text`` on one line (control characters escaped: a quoted TOML key may hold a
    newline) and at most about ``most`` characters."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(text) > most:
        text = text[: most - 30] + f"... ({len(text)} characters)"
    return text


@dataclass(frozen=True)
class SimSpec:
    """How the simulator animates one tag (units: the tag's engineering units, seconds)."""

    wave: str = "sine"
    min: float = 0.0
    max: float = 100.0
    period_s: float = 60.0
    noise: float = 0.0
    step: float = 1.0
    bad_rate: float = 0.0  # probability per poll that the tag reads BAD


@dataclass(frozen=True)
class TagConfig:
    address: str  # what the record carries as tag_address (ASCII, <= 16 bytes)
    type: str
    spec: registers.TagSpec | melsec.McTagSpec | None  # where and how to read it (Modbus, MC); None for simulated tags
    deadband: float | None = None  # absolute, engineering units; None: every poll is published
    max_silence_s: float = DEFAULT_MAX_SILENCE_S
    unit: str = ""
    description: str = ""
    sim: SimSpec | None = None
    opcua: opcua_config.OpcUaTag | None = None  # node id, scale, offset (OPC UA tags only)


@dataclass(frozen=True)
class GroupConfig:
    name: str
    interval_s: float
    tags: tuple[TagConfig, ...]


@dataclass(frozen=True)
class PlcConfig:
    code: str
    protocol: str
    groups: tuple[GroupConfig, ...]
    host: str = ""
    port: int = 502
    unit_id: int = 1
    timeout_s: float = 1.0
    backoff_max_s: float = 30.0
    max_gap: int = 0
    description: str = ""
    mc: melsec.McSettings | None = None  # set for protocol = "mc" (series, routing)
    opcua: opcua_config.OpcUaOptions | None = None  # endpoint and security (OPC UA PLCs only)

    @property
    def tag_count(self) -> int:
        return sum(len(g.tags) for g in self.groups)


@dataclass(frozen=True)
class PlantConfig:
    path: str
    plcs: tuple[PlcConfig, ...] = field(default_factory=tuple)

    @property
    def tag_count(self) -> int:
        return sum(p.tag_count for p in self.plcs)

    @property
    def protocols(self) -> set[str]:
        return {p.protocol for p in self.plcs}


def load_plant(path: str | Path) -> PlantConfig:
    """Read and validate a tag definition file. Raises TagsFileError (never anything else)."""
    p = str(path)
    try:
        with open(p, "rb", opener=_open_regular) as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise TagsFileError(p, "", None, "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TagsFileError(p, "", None, f"cannot be read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise TagsFileError(p, "", None, f"is not valid TOML: {e}") from None
    except RecursionError:
        # tomllib parses nested arrays, inline tables and dotted keys recursively.
        raise TagsFileError(p, "", None, "is not usable TOML: values or keys nested too deeply"
                            " (a tag file needs at most 4 levels)") from None
    except ValueError as e:  # an integer longer than Python reads (4,300 digits)
        raise TagsFileError(p, "", None, f"is not usable TOML: {e}") from None
    return _Loader(p).plant(doc)


def _open_regular(path: str, flags: int) -> int:
    """``open`` opener that refuses anything but a regular file: a FIFO or a device such as
    /dev/zero would block or never end, before any message could be printed."""
    fd = os.open(path, flags | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Loader:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, value: Any, reason: str) -> None:
        raise TagsFileError(self.path, key, value, reason)

    # --- typed getters: each names the key path and the value in its error ---
    def keys(self, table: dict, where: str, allowed: tuple[str, ...]) -> None:
        for k in table:
            if k not in allowed:
                self.fail(f"{where}.{k}" if where else k, table[k], "unknown key; known keys: " + ", ".join(allowed))

    def number(self, t: dict, key: str, where: str, default: Any, lo: float | None = None, hi: float | None = None,
               lo_open: bool = False, integer: bool = False, required: bool = False) -> Any:
        path = f"{where}.{key}"
        if key not in t:
            if required:
                self.fail(path, None, "is required")
            return default
        v = t[key]
        ok_types = (int,) if integer else (int, float)
        if isinstance(v, bool) or not isinstance(v, ok_types):
            self.fail(path, v, "must be a whole number" if integer else "must be a number")
        if isinstance(v, float) and not math.isfinite(v):
            self.fail(path, v, "must be a finite number")
        if not integer and isinstance(v, int) and abs(v) > _FLOAT_MAX:  # float(v) would raise OverflowError
            self.fail(path, v, "must be a finite number")
        if lo is not None and (v <= lo if lo_open else v < lo):
            self.fail(path, v, f"must be {'greater than' if lo_open else 'at least'} {lo:g}")
        if hi is not None and v > hi:
            self.fail(path, v, f"must be at most {hi:g}")
        return int(v) if integer else float(v)

    def text(self, t: dict, key: str, where: str, default: str | None = None, choices: tuple[str, ...] = ()) -> str:
        path = f"{where}.{key}"
        if key not in t:
            if default is None:
                self.fail(path, None, "is required")
            return default  # type: ignore[return-value]
        v = t[key]
        if not isinstance(v, str):
            self.fail(path, v, "must be a string")
        if choices and v not in choices:
            self.fail(path, v, "must be one of " + ", ".join(choices))
        return v

    def array(self, t: dict, key: str, where: str) -> list:
        path = f"{where}.{key}" if where else key
        v = t.get(key)
        if v is None:
            self.fail(path, None, "is required (at least one entry)")
        if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
            self.fail(path, v, "must be an array of tables")
        if not v:
            self.fail(path, v, "must have at least one entry")
        return v

    # --- the document ---
    def plant(self, doc: dict) -> PlantConfig:
        self.keys(doc, "", ("plcs",))
        plcs_raw = self.array(doc, "plcs", "")
        if len(plcs_raw) > MAX_PLCS:
            self.fail("plcs", f"{len(plcs_raw)} PLCs", f"at most {MAX_PLCS} PLCs per poller (the ring's PLC table)")
        plcs: list[PlcConfig] = []
        seen: dict[str, int] = {}
        for i, raw in enumerate(plcs_raw):
            plc = self.plc(raw, f"plcs[{i}]")
            if plc.code in seen:
                self.fail(f"plcs[{i}].code", plc.code, f"is already used by plcs[{seen[plc.code]}]")
            seen[plc.code] = i
            plcs.append(plc)
        return PlantConfig(self.path, tuple(plcs))

    def plc(self, t: dict, where: str) -> PlcConfig:
        self.keys(t, where, ("code", "protocol", "host", "port", "unit_id", "timeout_s", "backoff_max_s",
                             "word_order", "d_base", "max_gap", "max_silence_s", "description", "groups",
                             *melsec.PLC_KEYS, *opcua_config.PLC_KEYS, "password"))
        code = self.text(t, "code", where)
        try:
            check_field_text("plc code", code)
        except ValueError as e:
            self.fail(f"{where}.code", code, str(e))
        protocol = self.text(t, "protocol", where, "modbus", PROTOCOLS)
        host = ""
        if protocol in ("modbus", melsec.PROTOCOL):
            host = self.text(t, "host", where)
            if not host.strip() or any(c.isspace() for c in host):
                self.fail(f"{where}.host", host, "must be a host name or IP address")
        elif "host" in t:
            self.fail(f"{where}.host", t["host"], "only a modbus or mc PLC has a host")
        mc = melsec.load_plc_settings(self, t, where, protocol)
        # --- OPC UA (issue 14): endpoint and security, validated in opcua_config ---
        opcua = None
        if protocol == "opcua":
            opcua = opcua_config.plc_options(self, t, where)
        else:
            opcua_config.refuse_plc_keys(self, t, where, protocol)
            if "password" in t:
                self.fail(f"{where}.password", "********", "unknown key (passwords are never read from the tag file)")
        # --- end OPC UA ---
        ctx = {
            "word_order": self.text(t, "word_order", where, "big", registers.WORD_ORDERS),
            "d_base": self.number(t, "d_base", where, 0, 0, registers.MAX_ADDRESS, integer=True),
            "max_silence_s": self.number(t, "max_silence_s", where, DEFAULT_MAX_SILENCE_S, 0, 86_400, lo_open=True),
            "protocol": protocol,
            "mc": mc,
        }
        groups: list[GroupConfig] = []
        seen: dict[str, str] = {}
        for gi, g in enumerate(self.array(t, "groups", where)):
            gw = f"{where}.groups[{gi}]"
            group = self.group(g, gw, gi, ctx)
            for ti, tag in enumerate(group.tags):
                if tag.address in seen:
                    self.fail(f"{gw}.tags[{ti}].address", tag.address, f"is already defined at {seen[tag.address]}")
                seen[tag.address] = f"{gw}.tags[{ti}]"
            groups.append(group)
        return PlcConfig(
            code=code,
            protocol=protocol,
            groups=tuple(groups),
            host=host,
            # An MC port is whatever the PLC's Ethernet settings open: no default to guess.
            port=self.number(t, "port", where, 502, 1, 65535, integer=True, required=mc is not None),
            unit_id=self.number(t, "unit_id", where, 1, 0, 255, integer=True),
            timeout_s=self.number(t, "timeout_s", where, 1.0, 0, 60, lo_open=True),
            backoff_max_s=self.number(t, "backoff_max_s", where, 30.0, 0.1, 3600),
            max_gap=self.number(t, "max_gap", where, 0, 0, 124, integer=True),
            description=self.text(t, "description", where, ""),
            mc=mc,
            opcua=opcua,
        )

    def group(self, t: dict, where: str, index: int, ctx: dict) -> GroupConfig:
        self.keys(t, where, ("name", "interval_s", "tags"))
        interval = self.number(t, "interval_s", where, None, MIN_INTERVAL_S, MAX_INTERVAL_S, required=True)
        tags = tuple(self.tag(raw, f"{where}.tags[{i}]", ctx) for i, raw in enumerate(self.array(t, "tags", where)))
        return GroupConfig(self.text(t, "name", where, f"group{index}"), interval, tags)

    def tag(self, t: dict, where: str, ctx: dict) -> TagConfig:
        self.keys(t, where, ("address", "register", "type", "word_order", "bit", "scale", "offset", "deadband",
                             "max_silence_s", "unit", "description", "sim", *opcua_config.TAG_KEYS)
                  + (("device",) if ctx["protocol"] == melsec.PROTOCOL else ()))
        if ctx["protocol"] == "opcua":
            return self.opcua_tag(t, where, ctx)
        opcua_config.refuse_tag_keys(self, t, where, ctx["protocol"])
        address = self.text(t, "address", where)
        try:
            check_field_text("tag address", address)
        except ValueError as e:
            self.fail(f"{where}.address", address, str(e))
        types = melsec.DATA_TYPES if ctx["protocol"] == melsec.PROTOCOL else registers.DATA_TYPES
        type_ = self.text(t, "type", where, "float32" if ctx["protocol"] == "simulator" else None, types)
        word_order = self.text(t, "word_order", where, ctx["word_order"], registers.WORD_ORDERS)
        scale = self.number(t, "scale", where, 1.0)
        if scale == 0:
            self.fail(f"{where}.scale", t["scale"], "must not be 0 (every value would read 0)")
        offset = self.number(t, "offset", where, 0.0)
        deadband = self.number(t, "deadband", where, None, 0)
        silence = self.number(t, "max_silence_s", where, ctx["max_silence_s"], 0, 86_400, lo_open=True)
        bit = self.number(t, "bit", where, None, 0, 15, integer=True)
        if bit is not None and type_ != "bool":
            self.fail(f"{where}.bit", bit, f"only a bool tag reads a single bit (type is {type_})")
        spec = sim = None
        if ctx["protocol"] == melsec.PROTOCOL:
            spec = melsec.load_tag_spec(self, t, where, type_, ctx["mc"], scale, offset)
        elif ctx["protocol"] == "modbus":
            if "sim" in t:
                self.fail(f"{where}.sim", t["sim"], "only a simulator PLC animates tags")
            key = "register" if "register" in t else "address"
            reg_text = self.text(t, key, where)
            try:
                loc = registers.parse_location(reg_text, ctx["d_base"])
            except ValueError as e:
                self.fail(f"{where}.{key}", reg_text, str(e))
            if loc.kind in registers.BIT_KINDS:
                if type_ != "bool":
                    self.fail(f"{where}.type", type_, f"a {loc.kind} address holds one bit: the type must be bool")
                if bit is not None:
                    self.fail(f"{where}.bit", bit, "a coil or discrete input is already a single bit")
            if loc.index + registers.TYPE_WIDTH[type_] - 1 > registers.MAX_ADDRESS:
                self.fail(f"{where}.{key}", reg_text, f"a {type_} there runs past the last Modbus address")
            spec = registers.TagSpec(loc, type_, word_order, bit, scale, offset)
        else:
            if "register" in t:
                self.fail(f"{where}.register", t["register"], "a simulator PLC has no registers")
            sim = self.sim(t.get("sim", {}), f"{where}.sim", type_)
        return TagConfig(address, type_, spec, deadband, silence, self.text(t, "unit", where, ""),
                         self.text(t, "description", where, ""), sim)

    # --- OPC UA (issue 14) ---
    def opcua_tag(self, t: dict, where: str, ctx: dict) -> TagConfig:
        """An OPC UA tag: ``node`` is read; ``address`` (default: the node id) is what records carry."""
        key = "address" if "address" in t else "node"
        address = self.text(t, key, where)
        try:
            check_field_text("tag address", address)
        except ValueError as e:
            reason = str(e) + ("; give the plant's name in address = \"...\" and the node id in node = \"...\""
                               if key == "node" else "")
            self.fail(f"{where}.{key}", address, reason)
        scale = self.number(t, "scale", where, 1.0)
        if scale == 0:
            self.fail(f"{where}.scale", t["scale"], "must not be 0 (every value would read 0)")
        offset = self.number(t, "offset", where, 0.0)
        node = opcua_config.tag_options(self, t, where, scale, offset)
        return TagConfig(address, opcua_config.TAG_TYPE, None, self.number(t, "deadband", where, None, 0),
                         self.number(t, "max_silence_s", where, ctx["max_silence_s"], 0, 86_400, lo_open=True),
                         self.text(t, "unit", where, ""), self.text(t, "description", where, ""), None, node)
    # --- end OPC UA ---

    def sim(self, t: Any, where: str, type_: str) -> SimSpec:
        if not isinstance(t, dict):
            self.fail(where, t, "must be a table such as { wave = \"sine\", min = 0, max = 100 }")
        self.keys(t, where, ("wave", "min", "max", "period_s", "noise", "step", "bad_rate"))
        default_wave = "square" if type_ == "bool" else "sine"
        lo = self.number(t, "min", where, 0.0)
        hi = self.number(t, "max", where, 1.0 if type_ == "bool" else 100.0)
        if hi < lo:
            self.fail(f"{where}.max", hi, f"must not be below min ({lo:g})")
        return SimSpec(
            wave=self.text(t, "wave", where, default_wave, WAVES),
            min=lo,
            max=hi,
            period_s=self.number(t, "period_s", where, 60.0, 0, 86_400 * 365, lo_open=True),
            noise=self.number(t, "noise", where, 0.0, 0),
            step=self.number(t, "step", where, 1.0),
            bad_rate=self.number(t, "bad_rate", where, 0.0, 0, 1),
        )


def load_tags(settings) -> PlantConfig:
    """The plant to poll: TAGS_FILE, or the shipped demo plant (simulated), checked against
    the ring size BUFFER_MAX_SIZE (``check_fits_ring``). Raises TagsFileError."""
    plant = load_plant(settings.tags_file or DEMO_PLANT)
    check_fits_ring(plant, settings.buffer_max_size, "BUFFER_MAX_SIZE")
    return plant


def check_fits_ring(plant: PlantConfig, capacity: int, what: str) -> None:
    """Refuse a poll group with more tags than the ring holds (``capacity`` records;
    ``what`` names where that size comes from, for the message).

    One poll of a group is published as one batch: a group larger than the ring
    overwrites its own oldest values before any writer can read them, so most of every
    poll would be lost by construction. Raises TagsFileError naming the group and the size.
    """
    for i, plc in enumerate(plant.plcs):
        for gi, group in enumerate(plc.groups):
            if len(group.tags) > capacity:
                raise TagsFileError(
                    plant.path, f"plcs[{i}].groups[{gi}]", f"{plc.code}/{group.name}: {len(group.tags)} tags",
                    f"more tags than the ring holds ({what} {capacity} records): every poll would overwrite"
                    f" itself; split the group or raise BUFFER_MAX_SIZE",
                )
