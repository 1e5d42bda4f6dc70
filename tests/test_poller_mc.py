"""The MELSEC MC source (3E binary) against the test MC server on loopback: devices and
notations, every type bit-exactly, coalescing, end codes, and PLCs that misbehave."""

from __future__ import annotations

import asyncio
import math
import struct

import numpy as np
import pytest

from pipeline.poller import melsec as M
from pipeline.poller.config import TagsFileError, load_plant
from pipeline.poller.sources.base import SourceUnavailable
from pipeline.poller.sources.mc import McPlc
from shm.layout import QUALITY_BAD, QUALITY_GOOD
from tests.poller_helpers.mc_server import McTestServer
from tests.poller_helpers.modbus_server import Blackhole, refused_port


def _toml(tmp_path, port, tag_lines, series="Q", extra_plc="", interval=1.0, name="t.toml", timeout=1.0):
    body = f"""
[[plcs]]
code = "KRCWO12ELOA101"
protocol = "mc"
host = "127.0.0.1"
port = {port}
series = "{series}"
timeout_s = {timeout}
backoff_max_s = 1.0
{extra_plc}
  [[plcs.groups]]
  interval_s = {interval}
  tags = [
{tag_lines}
  ]
"""
    p = tmp_path / name
    p.write_text(body)
    return load_plant(p)


def _lines(tags) -> str:
    return ",\n".join(f'    {{ address = "{a}", type = "{t}" }}' for a, t in tags)


def _read(plc_cfg, group=0, polls=1):
    plc_cfg = getattr(plc_cfg, "plcs", [plc_cfg])[0]  # a PlantConfig or one of its PLCs

    async def go():
        src = McPlc(plc_cfg)
        try:
            out = [await src.read(group) for _ in range(polls)]
            return (out[0] if polls == 1 else out), src.requests
        finally:
            await src.close()

    return asyncio.run(go())


# (value, type): negative values, extremes, NaN and infinities, float64.
CASES = [
    (-12345, "int16"), (-1, "int16"), (32767, "int16"), (65535, "uint16"), (40000, "uint16"),
    (-2_000_000_001, "int32"), (2_147_483_647, "int32"), (-2_147_483_648, "int32"), (4_000_000_123, "uint32"),
    (float(np.float32(3.1415927)), "float32"), (float(np.float32(-1.0e-7)), "float32"), (math.inf, "float32"),
    (math.nan, "float32"), (-math.pi, "float64"), (1e300, "float64"), (-0.0, "float64"), (math.nan, "float64"),
    (1, "bool"),
]


@pytest.mark.parametrize("series", ["Q", "iQ-R", "iQ-F"])
def test_every_type_round_trips_bit_exactly_low_word_first(tmp_path, series):
    with McTestServer() as srv:
        tags, d = [], 10
        for value, type_ in CASES:
            words = M.encode_words(value, type_)
            srv.set_words("D", d, words)
            tags.append((f"D{d}", type_))
            d += len(words)
        reading, _ = _read(_toml(tmp_path, srv.port, _lines(tags), series))
    assert list(reading.quality) == [QUALITY_GOOD] * len(CASES)
    for (value, type_), got in zip(CASES, reading.values):
        fmt = {"float32": "<f", "float64": "<d"}.get(type_)
        if fmt:  # the bit pattern, so NaN, infinities and -0.0 are compared exactly
            assert struct.pack(fmt, got) == struct.pack(fmt, value), f"{type_} {value!r} read {got!r}"
        else:
            assert got == value, f"{type_}: read {got!r}, wrote {value!r}"


def test_word_order_is_low_word_first():
    # D10 = 0x5678, D11 = 0x1234 is the int32 0x12345678 on a MELSEC PLC (DMOV).
    assert M.encode_words(0x12345678, "int32") == [0x5678, 0x1234]
    plan = M.McReadPlan([M.McTagSpec(M.parse_device("D10", "Q"), "int32")], "Q")
    assert plan.decode([np.array([0x5678, 0x1234], dtype=np.uint16)])[0] == 0x12345678


@pytest.mark.parametrize("series", ["Q", "iQ-R"])
def test_every_device_letter_and_notation(tmp_path, series):
    with McTestServer() as srv:
        srv.set_words("D", 7, [1007])
        srv.set_words("W", 0x1A, [26])
        srv.set_words("R", 12, [12])
        srv.set_words("ZR", 100, [100])  # ZR is decimal in GX Works
        srv.set_words("SD", 210, [2026])
        srv.set_words("TN", 5, [55])
        srv.set_words("CN", 6, [66])
        srv.set_words("D", 20, [0b1000_0000_0000_1001, 0, 0x8000])  # D22: a whole word as bool
        srv.set_bits("M", 8, [1])
        srv.set_bits("X", 0x1F, [1])
        srv.set_bits("Y", 0x20, [1])
        srv.set_bits("B", 0xAB, [1])
        srv.set_bits("L", 3, [1])
        srv.set_bits("SM", 400, [1])
        tags = [("D7", "int16"), ("W1A", "int16"), ("R12", "int16"), ("ZR100", "int16"), ("SD210", "int16"),
                ("TN5", "int16"), ("CN6", "int16"), ("D20.0", "bool"), ("D20.3", "bool"), ("D20.F", "bool"),
                ("D20.1", "bool"), ("D22", "bool"), ("M8", "bool"), ("M9", "bool"), ("X1F", "bool"), ("X1E", "bool"),
                ("Y20", "bool"), ("BAB", "bool"), ("L3", "bool"), ("SM400", "bool")]
        reading, _ = _read(_toml(tmp_path, srv.port, _lines(tags), series))
        sub = 2 if series == "iQ-R" else 0
        assert srv.requests[(0x0401, sub + 1)] >= 1  # bits read in bit units
    assert list(reading.quality) == [QUALITY_GOOD] * len(tags)
    assert list(reading.values) == [1007, 26, 12, 100, 2026, 55, 66, 1, 1, 1, 0, 1, 1, 0, 1, 0, 1, 1, 1, 1]


def test_iqf_x_and_y_are_octal(tmp_path):
    with McTestServer() as srv:
        srv.set_bits("X", 0o17, [1])  # X17 on iQ-F is the 16th input (number 15)
        srv.set_bits("Y", 0o20, [1])
        srv.set_words("D", 7999, [5])
        tags = [("X17", "bool"), ("X16", "bool"), ("Y20", "bool"), ("D7999", "uint16")]
        reading, _ = _read(_toml(tmp_path, srv.port, _lines(tags), "iQ-F"))
    assert list(reading.values) == [1, 0, 1, 5]


def test_scale_offset_and_device_key(tmp_path):
    with McTestServer() as srv:
        srv.set_words("D", 100, [253, (-40) & 0xFFFF])
        lines = ('    { address = "TEMP1", device = "D100", type = "int16", scale = 0.1, unit = "degC" },\n'
                 '    { address = "D101", type = "int16", scale = 0.5, offset = 100 }')
        plant = _toml(tmp_path, srv.port, lines)
        reading, _ = _read(plant.plcs[0])
    assert plant.plcs[0].groups[0].tags[0].address == "TEMP1"
    assert reading.values[0] == pytest.approx(25.3, abs=1e-12) and reading.values[1] == 80.0


def test_contiguous_words_are_batch_read_within_the_960_word_limit(tmp_path):
    with McTestServer() as srv:
        srv.set_words("D", 0, list(range(1000, 2000)))
        tags = [(f"D{i}", "uint16") for i in range(1000)] + [(f"M{i}", "bool") for i in range(100)]
        srv.set_bits("M", 0, [i % 3 == 0 for i in range(100)])
        reading, sent = _read(_toml(tmp_path, srv.port, _lines(tags)).plcs[0])
        served = dict(srv.requests)
    assert sent == 3 and served == {(0x0401, 0): 2, (0x0401, 1): 1}  # 960 + 40 words, 100 bits
    assert list(reading.values[:1000]) == list(range(1000, 2000))
    assert list(reading.values[1000:]) == [float(i % 3 == 0) for i in range(100)]


@pytest.mark.parametrize("series,per_request", [("Q", 192), ("iQ-R", 96)])
def test_scattered_words_are_random_read_within_the_series_limit(tmp_path, series, per_request):
    with McTestServer(points=20000) as srv:
        tags = []
        for i in range(300):
            d = 10 * i
            if i % 3 == 2:
                srv.set_words("D", d, M.encode_words(-i * 1000.5, "float32"))
                tags.append((f"D{d}", "float32"))
            else:
                srv.set_words("D", d, [(-i) & 0xFFFF])
                tags.append((f"D{d}", "int16"))
        plant = _toml(tmp_path, srv.port, _lines(tags), series)
        reading, sent = _read(plant.plcs[0])
        sub = 2 if series == "iQ-R" else 0
        assert srv.requests == {(0x0403, sub): math.ceil(300 / per_request)} and sent == math.ceil(300 / per_request)
        # Without random read, each scattered tag costs one batch read.
        plant = _toml(tmp_path, srv.port, _lines(tags), series, "random_read = false", name="b.toml")
        again, sent = _read(plant.plcs[0])
    assert sent == 300
    expected = [(-i * 1000.5 if i % 3 == 2 else -i) for i in range(300)]
    assert list(reading.values) == expected and list(again.values) == expected


def test_max_gap_bridges_close_words_into_one_batch(tmp_path):
    with McTestServer() as srv:
        tags = [(f"D{4 * i}", "uint16") for i in range(50)]
        for i in range(50):
            srv.set_words("D", 4 * i, [i])
        reading, sent = _read(_toml(tmp_path, srv.port, _lines(tags), extra_plc="max_gap = 3").plcs[0])
    assert sent == 1 and list(reading.values) == list(range(50))


def test_end_code_makes_only_that_request_bad_and_names_the_code(tmp_path):
    with McTestServer(sizes={"D": 1000}) as srv:
        srv.set_words("D", 1, [5])
        srv.set_bits("M", 2, [1])
        lines = _lines([("D1", "uint16"), ("D1500", "uint16"), ("M2", "bool")])
        reading, _ = _read(_toml(tmp_path, srv.port, lines, extra_plc="random_read = false").plcs[0], polls=2)
    for r in reading:  # two polls: the connection survives the end code
        assert list(r.quality) == [QUALITY_GOOD, QUALITY_BAD, QUALITY_GOOD]
        assert r.values[0] == 5 and r.values[2] == 1
        assert "0xC056" in r.error and "device out of range" in r.error and "D1500+1" in r.error


def test_plc_that_closes_the_socket_after_each_request_still_reads(tmp_path):
    with McTestServer(close_after_each=True) as srv:
        srv.set_words("D", 0, [42])

        async def go():
            src = McPlc(_toml(tmp_path, srv.port, _lines([("D0", "uint16")])).plcs[0])
            out = []
            for _ in range(5):
                out.append(await src.read(0))
                await asyncio.sleep(0.05)
            await src.close()
            return out, src.connects

        readings, connects = asyncio.run(go())
    assert [r.values[0] for r in readings] == [42] * 5
    assert connects == 5 and srv.connections == 5


@pytest.mark.parametrize("kind", ["refused", "blackhole", "stalled"])
def test_dead_plc_raises_within_its_timeout_then_backs_off(tmp_path, kind):
    hole = Blackhole() if kind == "blackhole" else None
    srv = McTestServer().start() if kind == "stalled" else None
    port = hole.port if hole else srv.port if srv else refused_port()
    if srv:
        srv.freeze()  # accepts the connection and the request, never answers
    try:
        plant = _toml(tmp_path, port, _lines([("D0", "uint16")]), timeout=0.5)

        async def go():
            src = McPlc(plant.plcs[0])
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with pytest.raises(SourceUnavailable) as e:
                await src.read(0)
            first = loop.time() - t0
            t1 = loop.time()
            with pytest.raises(SourceUnavailable, match="next connection attempt"):
                await src.read(0)
            await src.close()
            return first, loop.time() - t1, str(e.value)

        first, second, err = asyncio.run(go())
    finally:
        if hole:
            hole.close()
        if srv:
            srv.stop()
    assert first < 0.5 * 2 + 0.5  # connect and request each bounded by timeout_s
    assert second < 0.2
    assert ("no answer" in err) if kind != "refused" else ("connect" in err)


def test_refused_then_reconnects_when_the_plc_comes_back(tmp_path):
    srv = McTestServer().start()
    srv.set_words("D", 0, [7])
    try:
        plant = _toml(tmp_path, srv.port, _lines([("D0", "uint16")]))

        async def go():
            src = McPlc(plant.plcs[0])
            first = await src.read(0)
            srv.stop()
            with pytest.raises(SourceUnavailable):
                await src.read(0)
            srv.start()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while True:
                try:
                    back = await src.read(0)
                    break
                except SourceUnavailable:
                    assert loop.time() < deadline
                    await asyncio.sleep(0.1)
            await src.close()
            return first, back

        first, back = asyncio.run(go())
    finally:
        srv.stop()
    assert first.values[0] == back.values[0] == 7 and srv.connections == 2


def test_groups_share_one_connection(tmp_path):
    with McTestServer() as srv:
        srv.set_words("D", 0, [1, 2])
        p = tmp_path / "g.toml"
        p.write_text(f"""
[[plcs]]
code = "P1"
protocol = "mc"
host = "127.0.0.1"
port = {srv.port}
series = "iQ-R"
  [[plcs.groups]]
  interval_s = 0.1
  tags = [ {{ address = "D0", type = "uint16" }} ]
  [[plcs.groups]]
  interval_s = 0.1
  tags = [ {{ address = "D1", type = "uint16" }} ]
""")

        async def go():
            src = McPlc(load_plant(p).plcs[0])
            out = await asyncio.gather(*(src.read(i % 2) for i in range(20)))
            await src.close()
            return out

        readings = asyncio.run(go())
    assert [r.values[0] for r in readings] == [1, 2] * 10
    assert srv.connections == 1


# --- the tag file ---
def _plc(tags: str, series: str = "Q", extra: str = "") -> str:
    return f"""
[[plcs]]
code = "KRCWO12ELOA101"
protocol = "mc"
host = "192.0.2.1"
port = 5000
series = "{series}"
{extra}
  [[plcs.groups]]
  interval_s = 1
  tags = [ {tags} ]
"""


T = "plcs[0].groups[0].tags[0]"
BAD = [
    (_plc('{ address = "Q100", type = "int16" }'), f"{T}.address", "'Q100'"),
    (_plc('{ address = "X1F", type = "bool" }', "iQ-F"), f"{T}.address", "octal"),
    (_plc('{ address = "D1A", type = "int16" }'), f"{T}.address", "decimal"),
    (_plc('{ address = "D8000", type = "int16" }', "iQ-F"), f"{T}.address", "past the last D"),
    (_plc('{ address = "D7999", type = "float32" }', "iQ-F"), f"{T}.address", "runs past"),
    (_plc('{ address = "ZR1", type = "int16" }', "iQ-F"), f"{T}.address", "not a device of the iQ-F series"),
    (_plc('{ address = "M5", type = "int16" }'), f"{T}.type", "bit device"),
    (_plc('{ address = "M5.1", type = "bool" }'), f"{T}.address", "bit device"),
    (_plc('{ address = "D5.3", type = "int16" }'), f"{T}.type", "bit of a word"),
    (_plc('{ address = "D5", type = "bool", bit = 3 }'), f"{T}.bit", "D100.3"),
    (_plc('{ address = "D5", type = "float16" }'), f"{T}.type", "'float16'"),
    (_plc('{ address = "D5", type = "int32", word_order = "big" }'), f"{T}.word_order", "low word first"),
    (_plc('{ address = "D5", type = "int16" }', "Q/L"), "plcs[0].series", "'Q/L'"),
    (_plc('{ address = "D5", type = "int16" }').replace("port = 5000\n", ""), "plcs[0].port", "required"),
    (_plc('{ address = "D5", type = "int16" }', extra="station = 256"), "plcs[0].station", "256"),
    (_plc('{ address = "D5", type = "int16" }', extra="unit_id = 1"), "plcs[0].unit_id", "Modbus setting"),
    (_plc('{ address = "D5", type = "int16" }', extra='frame = "1E"'), "plcs[0].frame", "'1E'"),
    (_plc('{ address = "D5", type = "int16" }', extra="random_read = 1"), "plcs[0].random_read", "true or false"),
    (_plc('{ address = "D5", type = "int16" }').replace('protocol = "mc"', 'protocol = "modbus"'),
     "plcs[0].series", "only an mc PLC"),
]


@pytest.mark.parametrize("text,key,value", BAD, ids=[f"{i}:{b[1].split('.')[-1]}" for i, b in enumerate(BAD)])
def test_each_mc_mistake_is_refused_with_file_key_and_value(tmp_path, text, key, value):
    path = tmp_path / "tags.toml"
    path.write_text(text)
    with pytest.raises(TagsFileError) as ei:
        load_plant(path)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(str(path)) and key in msg and value in msg, msg


def test_routing_defaults_and_the_shipped_example(tmp_path):
    path = tmp_path / "tags.toml"
    path.write_text(_plc('{ address = "D5", type = "int16" }'))
    mc = load_plant(path).plcs[0].mc
    assert mc == M.McSettings(series="Q", frame="3E", network=0, station=0xFF, module_io=0x03FF, module_station=0)
    frame = M.batch_read_request(mc, 4, M.DEVICES["D"], 5, 1)
    assert frame.hex() == "5000" "00ff" "ff03" "00" "0c00" "0400" "0104" "0000" "050000" "a8" "0100"
    from pathlib import Path

    example = load_plant(Path(__file__).parents[1] / "deploy" / "tags.melsec.example.toml")
    assert {p.protocol for p in example.plcs} == {"mc"} and example.tag_count > 10


def test_end_code_on_a_random_read_falls_back_to_batch_reads_for_that_group(tmp_path):
    with McTestServer(sizes={"D": 1000}) as srv:
        for i in range(5):
            srv.set_words("D", 100 * i, [i + 1])
        tags = [(f"D{100 * i}", "uint16") for i in range(5)] + [("D5000", "uint16")]
        reading, sent = _read(_toml(tmp_path, srv.port, _lines(tags)), polls=2)
        served = dict(srv.requests)
    for r in reading:
        assert list(r.quality) == [QUALITY_GOOD] * 5 + [QUALITY_BAD] and list(r.values[:5]) == [1, 2, 3, 4, 5]
        assert "0xC056" in r.error and "D5000+1" in r.error
    assert served == {(0x0403, 0): 1, (0x0401, 0): 12} and sent == 13  # refused once, then 6 batch reads a poll


def test_q_and_iqr_ranges_fixed_devices_exactly_parameter_sized_by_the_frame(tmp_path):
    path = tmp_path / "tags.toml"

    def tag(dev: str) -> str:
        return f'{{ address = "{dev}", type = "{"bool" if dev[:2] in ("X1", "X2", "X3", "SM") else "int16"}" }}'

    for series, ok, bad in (("Q", ["X1FFF", "SD2047", "D16777215"], ["X2000", "SD2048", "D16777216"]),
                            ("iQ-R", ["X2FFF", "SM4095", "D4294967295"], ["X3000", "SM4096", "D4294967296"])):
        for dev in ok:
            path.write_text(_plc(tag(dev), series))
            load_plant(path)
        for dev in bad:
            path.write_text(_plc(tag(dev), series))
            with pytest.raises(TagsFileError, match="past the last"):
                load_plant(path)


class _OddByteServer(McTestServer):
    """Answers every word read one byte short of whole words (a broken gateway)."""

    def _serve(self, cmd: int, sub: int, body: bytes) -> bytes:
        return super()._serve(cmd, sub, body)[:-1]


def test_an_answer_of_an_odd_byte_count_is_a_short_answer_not_a_crash(tmp_path):
    with _OddByteServer() as srv:
        srv.set_words("D", 1, [5, 6])
        plc = _toml(tmp_path, srv.port, _lines([("D1", "uint16"), ("D2", "uint16")])).plcs[0]
        with pytest.raises(SourceUnavailable, match="short answer"):
            _read(plc)
