"""Modbus addressing, read planning and decoding: pure code, no I/O, no pymodbus.

Addresses (documented in docs/poller.md):

* ``hr:N`` holding register, ``ir:N`` input register, ``co:N`` coil, ``di:N`` discrete
  input, where N is the **0-based protocol address** (what goes on the wire). The classic
  1-based spelling ``40101`` is *refused* with a hint (``hr:100``), because the two
  conventions are off by one and mixing them silently reads the wrong register.
* ``D<n>`` (Mitsubishi MELSEC data register): holding register ``d_base + n``; the MELSEC
  Ethernet modules' default Modbus allocation maps D0 to holding register 400001, which
  is protocol address 0, so ``d_base`` defaults to 0.

A group's tags are planned once into as few read requests as the protocol allows
(contiguous addresses of one kind, at most 125 registers or 2000 bits per request); each
poll then decodes every tag at once with numpy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

HOLDING, INPUT, COIL, DISCRETE = "hr", "ir", "co", "di"
KINDS = (HOLDING, INPUT, COIL, DISCRETE)
BIT_KINDS = (COIL, DISCRETE)
MAX_REGISTERS_PER_READ = 125  # Modbus application protocol, function codes 3 and 4
MAX_BITS_PER_READ = 2000  # function codes 1 and 2
MAX_ADDRESS = 65535

# data type -> registers it occupies
TYPE_WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "bool": 1}
DATA_TYPES = tuple(TYPE_WIDTH)
WORD_ORDERS = ("big", "little")

_LOC_RE = re.compile(r"^(hr|ir|co|di):(\d{1,5})$", re.IGNORECASE)
_MELSEC_D_RE = re.compile(r"^D(\d{1,5})$")
_CLASSIC_RE = re.compile(r"^([0134])(\d{4,5})$")
_CLASSIC_KIND = {"0": COIL, "1": DISCRETE, "3": INPUT, "4": HOLDING}


@dataclass(frozen=True)
class Location:
    kind: str  # one of KINDS
    index: int  # 0-based protocol address


def parse_location(text: str, d_base: int = 0) -> Location:
    """Parse ``hr:100`` / ``ir:7`` / ``co:3`` / ``di:0`` / ``D100``. Raises ValueError."""
    m = _LOC_RE.match(text)
    if m:
        loc = Location(m.group(1).lower(), int(m.group(2)))
    else:
        m = _MELSEC_D_RE.match(text)
        if m:
            loc = Location(HOLDING, d_base + int(m.group(1)))
        else:
            m = _CLASSIC_RE.match(text)
            if m and int(m.group(2)) > 0:
                kind, n = _CLASSIC_KIND[m.group(1)], int(m.group(2)) - 1
                raise ValueError(
                    f"is the classic 1-based notation, which tagpipe does not guess at;"
                    f" write '{kind}:{n}' (0-based protocol address) for {text}"
                )
            raise ValueError("is not a register: use hr:N, ir:N, co:N, di:N (0-based) or D<n> (MELSEC)")
    if loc.index > MAX_ADDRESS:
        raise ValueError(f"is beyond the last Modbus address ({MAX_ADDRESS})")
    return loc


@dataclass(frozen=True)
class TagSpec:
    """What decoding needs of one tag (built from the config's tag definition)."""

    location: Location
    type: str
    word_order: str = "big"
    bit: int | None = None
    scale: float = 1.0
    offset: float = 0.0

    @property
    def width(self) -> int:
        return 1 if self.location.kind in BIT_KINDS else TYPE_WIDTH[self.type]


@dataclass(frozen=True)
class Read:
    """One read request: ``count`` registers (or bits) of ``kind`` from ``start``."""

    kind: str
    start: int
    count: int


class ReadPlan:
    """The requests for one group of tags and how to decode their answers, vectorised.

    ``reads`` are issued in order; ``decode(answers)`` takes one uint16 (registers) or
    bool (bits) sequence per read, in the same order, and returns float64 values.
    """

    def __init__(self, tags: list[TagSpec], max_gap: int = 0) -> None:
        self.tags = tags
        n = len(tags)
        order = sorted(range(n), key=lambda i: (tags[i].location.kind, tags[i].location.index))
        reads: list[Read] = []
        tag_read = np.zeros(n, dtype=np.intp)
        pos = np.zeros(n, dtype=np.intp)  # position of the tag's first word in the flat buffer
        flat_base: list[int] = []  # flat offset of each read's first word, per source
        reg_total = bit_total = 0
        for i in order:
            loc, w = tags[i].location, tags[i].width
            limit = MAX_BITS_PER_READ if loc.kind in BIT_KINDS else MAX_REGISTERS_PER_READ
            cur = reads[-1] if reads else None
            if (
                cur is not None
                and cur.kind == loc.kind
                and loc.index <= cur.start + cur.count + max_gap
                and max(cur.start + cur.count, loc.index + w) - cur.start <= limit
            ):
                new_count = max(cur.start + cur.count, loc.index + w) - cur.start
                grow = new_count - cur.count
                reads[-1] = Read(cur.kind, cur.start, new_count)
                if loc.kind in BIT_KINDS:
                    bit_total += grow
                else:
                    reg_total += grow
            else:
                flat_base.append(bit_total if loc.kind in BIT_KINDS else reg_total)
                reads.append(Read(loc.kind, loc.index, w))
                if loc.kind in BIT_KINDS:
                    bit_total += w
                else:
                    reg_total += w
            r = len(reads) - 1
            tag_read[i] = r
            pos[i] = flat_base[r] + (loc.index - reads[r].start)
        self.reads = reads
        self.tag_read = tag_read
        self._flat_base = flat_base
        self._reg_total, self._bit_total = reg_total, bit_total
        self._is_bit = np.array([t.location.kind in BIT_KINDS for t in tags], dtype=bool)
        self._pos = pos
        self._scale = np.array([t.scale for t in tags], dtype=np.float64)
        self._offset = np.array([t.offset for t in tags], dtype=np.float64)
        self._identity = bool(np.all(self._scale == 1.0) and np.all(self._offset == 0.0))
        regs = ~self._is_bit
        types = np.array([t.type for t in tags])
        little = np.array([t.word_order == "little" for t in tags], dtype=bool)
        self._sel = {name: np.flatnonzero(regs & (types == name)) for name in DATA_TYPES}
        self._little = little
        self._bits_idx = np.flatnonzero(self._is_bit)
        bits = np.array([-1 if t.bit is None else t.bit for t in tags], dtype=np.int64)
        self._bit_of = bits

    def decode(self, answers: list) -> np.ndarray:
        """Values (float64, scale and offset applied) from one answer per read, in order."""
        regs = np.zeros(self._reg_total + 1, dtype=np.uint16)
        bits = np.zeros(self._bit_total + 1, dtype=np.uint8)
        for r, ans in enumerate(answers):
            rd = self.reads[r]
            base = self._flat_base[r]
            if rd.kind in BIT_KINDS:
                bits[base : base + rd.count] = np.asarray(ans[: rd.count], dtype=np.uint8)
            else:
                regs[base : base + rd.count] = np.asarray(ans[: rd.count], dtype=np.uint16)
        out = np.zeros(len(self.tags), dtype=np.float64)
        pos = self._pos
        if len(self._bits_idx):
            out[self._bits_idx] = bits[pos[self._bits_idx]]
        for name in ("int16", "uint16"):
            idx = self._sel[name]
            if len(idx):
                w = regs[pos[idx]]
                out[idx] = w.view(np.int16) if name == "int16" else w
        idx = self._sel["bool"]
        if len(idx):
            out[idx] = word_bits(regs[pos[idx]], self._bit_of[idx])
        for name in ("int32", "uint32", "float32"):
            idx = self._sel[name]
            if not len(idx):
                continue
            first = regs[pos[idx]].astype(np.uint32)
            second = regs[pos[idx] + 1].astype(np.uint32)
            little = self._little[idx]
            hi = np.where(little, second, first)
            lo = np.where(little, first, second)
            u32 = (hi << np.uint32(16)) | lo
            if name == "uint32":
                out[idx] = u32
            elif name == "int32":
                out[idx] = u32.view(np.int32)
            else:
                out[idx] = u32.view(np.float32)
        if not self._identity:
            out = out * self._scale + self._offset
        return out


def word_bits(words: np.ndarray, bit: np.ndarray) -> np.ndarray:
    """A bool tag held in a 16-bit word (Modbus register, MELSEC word device): per tag 1 or
    0, bit ``bit`` (0-15) of its word, or the whole word non-zero where ``bit`` is -1."""
    w = words.astype(np.int64)
    return np.where(bit < 0, w != 0, (w >> np.maximum(bit, 0)) & 1)


def encode_registers(value: float, type_: str, word_order: str = "big") -> list[int]:
    """Raw register words for ``value`` (the inverse of decoding; used by tests and tools)."""
    if type_ in ("int16", "uint16", "bool"):
        return [int(np.array(value).astype(np.int16 if type_ == "int16" else np.uint16).view(np.uint16))]
    if type_ == "float32":
        u = int(np.array(value, dtype=np.float32).view(np.uint32))
    elif type_ == "int32":
        u = int(np.array(value, dtype=np.int32).view(np.uint32))
    else:
        u = int(np.uint32(value))
    hi, lo = u >> 16, u & 0xFFFF
    return [hi, lo] if word_order == "big" else [lo, hi]
