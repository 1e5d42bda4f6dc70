"""MELSEC MC protocol (SLMP), 3E binary frames: addressing, read planning, frame codec.

Pure code, no I/O (``sources/mc.py`` does the sockets). tagpipe writes this codec itself
rather than use a client library; the reasons are in docs/poller.md ("MELSEC PLCs").

Addresses are MELSEC device names exactly as GX Works shows them:

* word devices ``D``, ``W`` (hexadecimal), ``R``, ``ZR``, ``SD``, ``TN``, ``CN``
  (timer/counter current values);
* bit devices ``M``, ``X``/``Y`` (hexadecimal on Q/L/iQ-R, **octal on iQ-F**), ``B``
  (hexadecimal), ``L``, ``SM``;
* a bit of a word device ``D100.3`` (bit number 0-F, hexadecimal as in GX Works).

Multi-word values are low word first (the MELSEC convention: ``DMOV`` and ``EMOV`` store
the least significant word at the lower device number).

Requests used: batch read 0401 (subcommand 0000 words / 0001 bits on Q/L and iQ-F, 0002 /
0003 with 2-byte device codes and 4-byte device numbers on iQ-R) and random read 0403
(subcommand 0000, or 0002 on iQ-R) for scattered words. Every request is answered by a
response whose end code is 0 or an error code (``END_CODES`` names the common ones).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from .registers import word_bits

PROTOCOL = "mc"
SERIES = ("Q", "L", "iQ-R", "iQ-F")
FRAMES = ("3E",)  # binary; 3E ASCII and 4E are not implemented (see docs/poller.md)

# data type -> words it occupies in a word device
TYPE_WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4, "bool": 1}
DATA_TYPES = tuple(TYPE_WIDTH)

# Per-request limits (MC protocol reference manual, 3E frame, binary).
MAX_WORDS_PER_READ = 960  # batch read in word units
MAX_BITS_PER_READ = 7168  # batch read in bit units
MAX_RANDOM_POINTS = {"Q": 192, "L": 192, "iQ-F": 192, "iQ-R": 96}  # word + double-word points

CMD_BATCH_READ = 0x0401
CMD_RANDOM_READ = 0x0403
SUBHEADER_REQUEST = b"\x50\x00"
SUBHEADER_RESPONSE = b"\xd0\x00"
RESPONSE_HEAD = 9  # subheader 2, network 1, station 1, module I/O 2, module station 1, length 2


@dataclass(frozen=True)
class DeviceKind:
    name: str
    code: int  # binary device code (1 byte on Q/L/iQ-F, 2 bytes on iQ-R: same value)
    bit: bool  # a bit device (M, X...) rather than a word device (D, W...)
    base: int  # notation of the device number in GX Works: 10 or 16 (X/Y: 8 on iQ-F)


DEVICES: dict[str, DeviceKind] = {d.name: d for d in (
    DeviceKind("D", 0xA8, False, 10),
    DeviceKind("W", 0xB4, False, 16),
    DeviceKind("R", 0xAF, False, 10),
    DeviceKind("ZR", 0xB0, False, 10),
    DeviceKind("SD", 0xA9, False, 10),
    DeviceKind("TN", 0xC2, False, 10),
    DeviceKind("CN", 0xC5, False, 10),
    DeviceKind("M", 0x90, True, 10),
    DeviceKind("X", 0x9C, True, 16),
    DeviceKind("Y", 0x9D, True, 16),
    DeviceKind("B", 0xA0, True, 16),
    DeviceKind("L", 0x92, True, 10),
    DeviceKind("SM", 0x91, True, 10),
)}

# Largest device number tagpipe accepts per series (inclusive), checked when the tag file
# is loaded. Fixed ranges are exact: X/Y, SM/SD and R of every series, every iQ-F device
# (as on the FX5U). Devices whose size the PLC's parameters set (D, W, M, B, L, ZR, TN, CN
# on Q/L and iQ-R) are bounded only by what the frame's device number field carries
# (3 bytes on Q/L, 4 on iQ-R): the PLC itself refuses a device past its actual allotment
# with end code 0xC056 at run time, and a bound tighter than some CPU allows would refuse
# a valid tag file.
_Q_FIELD, _IQR_FIELD = 0xFFFFFF, 0xFFFFFFFF
DEVICE_MAX: dict[str, dict[str, int]] = {
    "Q": {**{d: _Q_FIELD for d in ("D", "W", "ZR", "TN", "CN", "M", "B", "L")},
          "R": 32_767, "SD": 2047, "SM": 2047, "X": 0x1FFF, "Y": 0x1FFF},
    "iQ-R": {**{d: _IQR_FIELD for d in ("D", "W", "ZR", "TN", "CN", "M", "B", "L")},
             "R": 32_767, "SD": 4095, "SM": 4095, "X": 0x2FFF, "Y": 0x2FFF},
    "iQ-F": {"D": 7999, "W": 0x7FFF, "R": 32_767, "SD": 11_999, "TN": 1023, "CN": 1023,
             "M": 32_767, "X": 0o1777, "Y": 0o1777, "B": 0x7FFF, "L": 32_767, "SM": 9999},
}
DEVICE_MAX["L"] = DEVICE_MAX["Q"]

END_CODES = {
    0xC050: "ASCII data that cannot be converted to binary",
    0xC051: "number of points out of range (word batch)",
    0xC052: "number of points out of range (bit batch)",
    0xC053: "number of points out of range (random, word)",
    0xC054: "number of points out of range (random)",
    0xC056: "device out of range (read past the last allotted device)",
    0xC058: "request data length does not match the data",
    0xC059: "command or subcommand not supported",
    0xC05B: "the CPU cannot read the specified device",
    0xC05C: "request content error (e.g. bit units on a word device)",
    0xC061: "request data length does not match the number of points",
    0xC0D8: "too many blocks",
    0x4031: "device out of the CPU's range",
    0x4080: "request data error",
}

_ADDR_RE = re.compile(r"^(ZR|SD|SM|TN|CN|[DWRMXYBL])([0-9A-Fa-f]+)(?:\.([0-9A-Fa-f]))?$")


def end_code_text(code: int) -> str:
    """``0xC056 (device out of range ...)``: the code and, when known, its meaning."""
    meaning = END_CODES.get(code, "see the MELSEC error code list")
    return f"end code 0x{code:04X} ({meaning})"


@dataclass(frozen=True)
class Device:
    """One MELSEC device: kind (D, M...), number, and for ``D100.3`` the bit (else None)."""

    kind: DeviceKind
    number: int
    bit: int | None = None


def parse_device(text: str, series: str) -> Device:
    """Parse ``D100``, ``W1A``, ``X17``, ``D100.3``... in the notation of ``series``.

    Raises ValueError naming what is wrong (unknown device, digits not valid in the
    device's base, past the series' range, ``.bit`` on a bit device)."""
    m = _ADDR_RE.match(text.strip())
    if not m:
        raise ValueError("is not a MELSEC device: use D, W, R, ZR, SD, TN, CN (words) or M, X, Y, B, L, SM (bits)"
                         " followed by its number, e.g. D100, W1A, X1F, M8, D100.3")
    name, digits, bit = m.group(1), m.group(2), m.group(3)
    kind = DEVICES[name]
    if name not in DEVICE_MAX[series]:
        raise ValueError(f"{name} is not a device of the {series} series")
    base = 8 if (series == "iQ-F" and name in ("X", "Y")) else kind.base
    try:
        number = int(digits, base)
    except ValueError:
        notation = {8: "octal", 10: "decimal", 16: "hexadecimal"}[base]
        article = "an" if notation == "octal" else "a"
        raise ValueError(f"{digits!r} is not {article} {notation} number ({name} numbers are {notation}"
                         f"{' on iQ-F' if base == 8 else ''})") from None
    if bit is not None and kind.bit:
        raise ValueError(f"{name} is a bit device: '.{bit}' (a bit of a word) only applies to word devices")
    limit = DEVICE_MAX[series][name]
    if number > limit:
        shown = {8: oct, 10: str, 16: lambda v: f"{v:X}"}[base](limit).replace("0o", "")
        raise ValueError(f"is past the last {name} device of the {series} series ({name}{shown})")
    return Device(kind, number, None if bit is None else int(bit, 16))


@dataclass(frozen=True)
class McSettings:
    """The MC-specific part of a PLC entry (routing fields with the usual defaults)."""

    series: str = "Q"
    frame: str = "3E"
    network: int = 0
    station: int = 0xFF  # PC number
    module_io: int = 0x03FF  # request destination module I/O number (0x03FF: own station CPU)
    module_station: int = 0
    random_read: bool = True  # scattered words by random read (0403) rather than one batch read each


@dataclass(frozen=True)
class McTagSpec:
    """What reading and decoding one tag needs (built from the config's tag definition)."""

    device: Device
    type: str
    scale: float = 1.0
    offset: float = 0.0

    @property
    def width(self) -> int:
        """Words read (1 for a bit device: one bit)."""
        return 1 if self.device.kind.bit else TYPE_WIDTH[self.type]


# --- the tag file: called by config._Loader for ``protocol = "mc"`` PLCs ---
PLC_KEYS = ("series", "frame", "network", "station", "module_io", "module_station", "random_read")


def load_plc_settings(loader: Any, t: dict, where: str, protocol: str) -> McSettings | None:
    """The MC keys of one ``[[plcs]]`` table (``loader`` is config's _Loader: its ``fail``
    raises TagsFileError). None for a PLC of another protocol, which must not use them."""
    if protocol != PROTOCOL:
        for k in PLC_KEYS:
            if k in t:
                loader.fail(f"{where}.{k}", t[k], f"only an {PROTOCOL} PLC has {k}")
        return None
    for k in ("unit_id", "word_order", "d_base"):
        if k in t:
            loader.fail(f"{where}.{k}", t[k], f"is a Modbus setting; an {PROTOCOL} PLC does not use it")
    rr = t.get("random_read", True)
    if not isinstance(rr, bool):
        loader.fail(f"{where}.random_read", rr, "must be true or false")
    return McSettings(
        series=loader.text(t, "series", where, None, SERIES),
        frame=loader.text(t, "frame", where, "3E", FRAMES),
        network=loader.number(t, "network", where, 0, 0, 0xEF, integer=True),
        station=loader.number(t, "station", where, 0xFF, 0, 0xFF, integer=True),
        module_io=loader.number(t, "module_io", where, 0x03FF, 0, 0xFFFF, integer=True),
        module_station=loader.number(t, "module_station", where, 0, 0, 0xFF, integer=True),
        random_read=rr,
    )


def load_tag_spec(loader: Any, t: dict, where: str, type_: str, mc: McSettings, scale: float,
                  offset: float) -> McTagSpec:
    """The device of one tag of an MC PLC (key ``device``, else ``address``), checked
    against its type and the series' range. Raises TagsFileError through ``loader``."""
    for k, why in (("register", "use device (or address) with a MELSEC device such as D100"),
                   ("bit", "write the bit in the device, e.g. D100.3"),
                   ("word_order", "MC values are low word first (the MELSEC convention)"),
                   ("sim", "only a simulator PLC animates tags")):
        if k in t:
            loader.fail(f"{where}.{k}", t[k], f"not used by an {PROTOCOL} PLC: {why}")
    key = "device" if "device" in t else "address"
    text = loader.text(t, key, where)
    try:
        dev = parse_device(text, mc.series)
    except ValueError as e:
        loader.fail(f"{where}.{key}", text, str(e))
    if dev.kind.bit and type_ != "bool":
        loader.fail(f"{where}.type", type_, f"{dev.kind.name} is a bit device: the type must be bool")
    if dev.bit is not None and type_ != "bool":
        loader.fail(f"{where}.type", type_, "a bit of a word reads one bit: the type must be bool")
    spec = McTagSpec(dev, type_, scale, offset)
    if dev.number + spec.width - 1 > DEVICE_MAX[mc.series][dev.kind.name]:
        loader.fail(f"{where}.{key}", text, f"a {type_} there runs past the last {dev.kind.name} device of the"
                                            f" {mc.series} series")
    return spec


# --- frames ---
def _route(mc: McSettings) -> bytes:
    return struct.pack("<BBHB", mc.network, mc.station, mc.module_io, mc.module_station)


def monitoring_timer(timeout_s: float) -> int:
    """The request's monitoring timer, in units of 250 ms (1..65535): how long the
    Ethernet module waits for the CPU before answering with an error."""
    return max(1, min(0xFFFF, int(timeout_s * 4)))


def _device_bytes(series: str, code: int, number: int) -> bytes:
    if series == "iQ-R":
        return struct.pack("<IH", number, code)
    return struct.pack("<I", number)[:3] + bytes((code,))


def _frame(mc: McSettings, timer: int, command: int, subcommand: int, body: bytes) -> bytes:
    data = struct.pack("<HHH", timer, command, subcommand) + body
    return SUBHEADER_REQUEST + _route(mc) + struct.pack("<H", len(data)) + data


def batch_read_request(mc: McSettings, timer: int, kind: DeviceKind, start: int, count: int) -> bytes:
    """Batch read (0401) of ``count`` words (word device) or bits (bit device) from ``start``."""
    sub = (0x0003 if kind.bit else 0x0002) if mc.series == "iQ-R" else (0x0001 if kind.bit else 0x0000)
    body = _device_bytes(mc.series, kind.code, start) + struct.pack("<H", count)
    return _frame(mc, timer, CMD_BATCH_READ, sub, body)


def random_read_request(mc: McSettings, timer: int, words: list[tuple[int, int]],
                        dwords: list[tuple[int, int]]) -> bytes:
    """Random read (0403) of word points then double-word points, each (device code, number)."""
    sub = 0x0002 if mc.series == "iQ-R" else 0x0000
    body = bytes((len(words), len(dwords)))
    body += b"".join(_device_bytes(mc.series, c, n) for c, n in words + dwords)
    return _frame(mc, timer, CMD_RANDOM_READ, sub, body)


def response_length(head: bytes) -> int:
    """Bytes that follow the 9-byte response head (end code + data). Raises ValueError
    when ``head`` is not the head of a 3E binary response."""
    if len(head) != RESPONSE_HEAD or head[:2] != SUBHEADER_RESPONSE:
        raise ValueError(f"not a 3E binary response: {head.hex(' ')}")
    return struct.unpack_from("<H", head, 7)[0]


def split_response(rest: bytes) -> tuple[int, bytes]:
    """(end code, data) from what follows the response head."""
    if len(rest) < 2:
        raise ValueError("response shorter than its end code")
    return struct.unpack_from("<H", rest)[0], rest[2:]


def unpack_bits(data: bytes, count: int) -> np.ndarray:
    """Bits of a bit-unit batch read: one per 4-bit nibble, high nibble first."""
    b = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(2 * len(b), dtype=np.uint8)
    out[0::2] = (b >> 4) & 1
    out[1::2] = b & 1
    return out[:count]


# --- planning and decoding ---
@dataclass(frozen=True)
class BatchRead:
    """Batch read of ``count`` words (or bits, for a bit device) of ``kind`` from ``start``."""

    kind: DeviceKind
    start: int
    count: int

    @property
    def words(self) -> int:
        return 0 if self.kind.bit else self.count

    def label(self, series: str) -> str:
        base = 8 if (series == "iQ-F" and self.kind.name in ("X", "Y")) else self.kind.base
        num = {8: lambda v: f"{v:o}", 10: str, 16: lambda v: f"{v:X}"}[base](self.start)
        return f"{self.kind.name}{num}+{self.count}"


@dataclass(frozen=True)
class RandomRead:
    """Random read of word points and double-word points, each (kind, number)."""

    words_at: tuple[tuple[DeviceKind, int], ...]
    dwords_at: tuple[tuple[DeviceKind, int], ...]

    @property
    def words(self) -> int:
        return len(self.words_at) + 2 * len(self.dwords_at)

    def label(self, series: str) -> str:
        return f"random read of {len(self.words_at)} words + {len(self.dwords_at)} double words"


class McReadPlan:
    """The requests for one group of tags and how to decode their answers, vectorised.

    Word devices: tags of one device closer than ``max_gap`` words are read by one batch
    read (at most 960 words); with ``random_read``, runs of one or two words left alone
    are gathered into random reads (at most 192 points, 96 on iQ-R). Bit devices: batch
    reads in bit units (at most 7168 bits). ``decode`` takes one answer per read, in
    order: uint16 words for word reads (a random read's double words as low, high), 0/1
    bits for bit reads; ``None`` for a read the PLC refused (its tags are then BAD).
    """

    def __init__(self, tags: list[McTagSpec], series: str, max_gap: int = 0, random_read: bool = True) -> None:
        self.tags = tags
        self.series = series
        n = len(tags)
        runs: list[list] = []  # [kind, start, end(excl), [tag indices]]
        for i in sorted(range(n), key=lambda i: (tags[i].device.kind.bit, tags[i].device.kind.name,
                                                 tags[i].device.number)):
            d, w = tags[i].device, tags[i].width
            limit = MAX_BITS_PER_READ if d.kind.bit else MAX_WORDS_PER_READ
            cur = runs[-1] if runs else None
            if (cur is not None and cur[0] is d.kind and d.number <= cur[2] + max_gap
                    and max(cur[2], d.number + w) - cur[1] <= limit):
                cur[2] = max(cur[2], d.number + w)
                cur[3].append(i)
            else:
                runs.append([d.kind, d.number, d.number + w, [i]])
        reads: list[BatchRead | RandomRead] = []
        members: list[list[tuple[int, int]]] = []  # per read: (tag index, offset of its first word/bit)
        loose = [r for r in runs if not r[0].bit and r[2] - r[1] <= 2]
        if random_read and len(loose) > 1:
            limit = MAX_RANDOM_POINTS[series]
            runs = [r for r in runs if not (not r[0].bit and r[2] - r[1] <= 2)]
            for k in range(0, len(loose), limit):
                chunk = loose[k: k + limit]
                ws = [r for r in chunk if r[2] - r[1] == 1]
                ds = [r for r in chunk if r[2] - r[1] == 2]
                reads.append(RandomRead(tuple((r[0], r[1]) for r in ws), tuple((r[0], r[1]) for r in ds)))
                mem: list[tuple[int, int]] = []
                for j, r in enumerate(ws):
                    mem += [(i, j) for i in r[3]]
                for j, r in enumerate(ds):
                    mem += [(i, len(ws) + 2 * j + tags[i].device.number - r[1]) for i in r[3]]
                members.append(mem)
        for kind, start, end, idx in runs:
            reads.append(BatchRead(kind, start, end - start))
            members.append([(i, tags[i].device.number - start) for i in idx])
        self.reads = reads
        # Flat buffers: every word read's words back to back, every bit read's bits back to back.
        tag_read = np.zeros(n, dtype=np.intp)
        pos = np.zeros(n, dtype=np.intp)
        self._word_base: list[int] = []
        self._bit_base: list[int] = []
        words = bits = 0
        for r, (rd, mem) in enumerate(zip(reads, members)):
            is_bit = isinstance(rd, BatchRead) and rd.kind.bit
            base = bits if is_bit else words
            self._word_base.append(words)
            self._bit_base.append(bits)
            for i, off in mem:
                tag_read[i] = r
                pos[i] = base + off
            if is_bit:
                bits += rd.count  # type: ignore[union-attr]
            else:
                words += rd.words
        self._words, self._bits = words, bits
        self.tag_read = tag_read
        self._pos = pos
        is_bit = np.array([t.device.kind.bit for t in tags], dtype=bool)
        types = np.array([t.type for t in tags])
        self._bit_dev = np.flatnonzero(is_bit)
        self._sel = {name: np.flatnonzero(~is_bit & (types == name)) for name in DATA_TYPES}
        self._bit_of = np.array([-1 if t.device.bit is None else t.device.bit for t in tags], dtype=np.int64)
        self._scale = np.array([t.scale for t in tags], dtype=np.float64)
        self._offset = np.array([t.offset for t in tags], dtype=np.float64)
        self._identity = bool(np.all(self._scale == 1.0) and np.all(self._offset == 0.0))

    def decode(self, answers: list) -> np.ndarray:
        """Values (float64, scale and offset applied) from one answer per read, in order."""
        regs = np.zeros(self._words + 4, dtype=np.uint16)
        bits = np.zeros(self._bits + 1, dtype=np.uint8)
        for r, ans in enumerate(answers):
            if ans is None:
                continue
            rd = self.reads[r]
            if isinstance(rd, BatchRead) and rd.kind.bit:
                b = self._bit_base[r]
                bits[b: b + rd.count] = ans[: rd.count]
            else:
                b = self._word_base[r]
                regs[b: b + rd.words] = ans[: rd.words]
        out = np.zeros(len(self.tags), dtype=np.float64)
        pos = self._pos
        if len(self._bit_dev):
            out[self._bit_dev] = bits[pos[self._bit_dev]]
        idx = self._sel["int16"]
        out[idx] = regs[pos[idx]].view(np.int16)
        idx = self._sel["uint16"]
        out[idx] = regs[pos[idx]]
        idx = self._sel["bool"]
        if len(idx):
            out[idx] = word_bits(regs[pos[idx]], self._bit_of[idx])
        for name in ("int32", "uint32", "float32"):
            idx = self._sel[name]
            if len(idx):
                u32 = regs[pos[idx]].astype(np.uint32) | (regs[pos[idx] + 1].astype(np.uint32) << np.uint32(16))
                out[idx] = u32 if name == "uint32" else u32.view(np.int32 if name == "int32" else np.float32)
        idx = self._sel["float64"]
        if len(idx):
            u64 = np.zeros(len(idx), dtype=np.uint64)
            for k in range(4):
                u64 |= regs[pos[idx] + k].astype(np.uint64) << np.uint64(16 * k)
            out[idx] = u64.view(np.float64)
        if not self._identity:
            out = out * self._scale + self._offset
        return out


def encode_words(value: float, type_: str) -> list[int]:
    """Device words for ``value``, low word first (the inverse of decoding; tests and tools)."""
    fmt = {"int16": "<h", "uint16": "<H", "bool": "<H", "int32": "<i", "uint32": "<I", "float32": "<f",
           "float64": "<d"}[type_]
    raw = struct.pack(fmt, int(value) if type_ not in ("float32", "float64") else value)
    return list(struct.unpack(f"<{len(raw) // 2}H", raw))
