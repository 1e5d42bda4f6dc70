"""The Modbus TCP source against pymodbus's own server on loopback: decoding and coalescing."""

from __future__ import annotations

import asyncio
import struct

import numpy as np
import pytest

from pipeline.poller import registers
from pipeline.poller.config import load_plant
from pipeline.poller.sources.base import SourceUnavailable
from pipeline.poller.sources.modbus import ModbusPlc, quiet_pymodbus
from pipeline.common.telemetry import open_consumer, open_producer
from shm.layout import QUALITY_BAD, QUALITY_GOOD
from tests.poller_helpers.modbus_server import Blackhole, ModbusTestServer, refused_port

quiet_pymodbus()

# Known contents: every type in both word orders, at known 0-based addresses.
CASES = [
    # (value, type, word order)
    (-12345, "int16", "big"),
    (-1, "int16", "big"),
    (65535, "uint16", "big"),
    (40000, "uint16", "big"),
    (-2_000_000_001, "int32", "big"),
    (-2_000_000_001, "int32", "little"),
    (2_147_483_647, "int32", "little"),
    (4_000_000_123, "uint32", "big"),
    (4_000_000_123, "uint32", "little"),
    (float(np.float32(3.1415927)), "float32", "big"),
    (float(np.float32(-1.0e-7)), "float32", "little"),
    (float(np.float32(123456.78)), "float32", "little"),
    (1, "bool", "big"),
]


def _layout(cases):
    """Holding register words and the tag table for CASES, packed back to back from hr:10."""
    words, tags, addr = [0] * 10, [], 10
    for value, type_, order in cases:
        regs = registers.encode_registers(value, type_, order)
        words += regs
        tags.append((f"hr:{addr}", type_, order, value))
        addr += len(regs)
    return words + [0] * 10, tags


def _toml(tmp_path, port, tag_lines, extra_plc="", interval=1.0, name="t.toml"):
    body = f"""
[[plcs]]
code = "KRCWO12ELOA101"
host = "127.0.0.1"
port = {port}
timeout_s = 1.0
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


def _read(plc_cfg, group=0):
    async def go():
        src = ModbusPlc(plc_cfg)
        try:
            return await src.read(group), src.requests
        finally:
            await src.close()

    return asyncio.run(go())


def test_every_type_and_word_order_round_trips_exactly(tmp_path):
    words, tags = _layout(CASES)
    with ModbusTestServer(holding=words) as srv:
        lines = ",\n".join(f'    {{ address = "{a}", type = "{t}", word_order = "{o}" }}' for a, t, o, _ in tags)
        plant = _toml(tmp_path, srv.port, lines)
        reading, _ = _read(plant.plcs[0])
    assert list(reading.quality) == [QUALITY_GOOD] * len(tags)
    for (addr, type_, order, value), got in zip(tags, reading.values):
        assert got == value, f"{addr} {type_} {order}: read {got!r}, wrote {value!r}"
    # float32 decoded bit-exactly: compare the raw 32-bit patterns too.
    for (addr, type_, order, value), got in zip(tags, reading.values):
        if type_ == "float32":
            assert struct.pack(">f", got) == struct.pack(">f", value)


def test_input_registers_coils_discrete_inputs_and_bits(tmp_path):
    holding = [0] * 16
    holding[3] = 0b1000_0000_0000_0101
    coils = [False] * 32
    coils[0] = coils[17] = True
    discrete = [False] * 16
    discrete[5] = True
    inputs = [0] * 16
    inputs[2] = 1234
    with ModbusTestServer(holding=holding, inputs=inputs, coils=coils, discrete=discrete) as srv:
        lines = ",\n".join([
            '    { address = "ir:2", type = "uint16" }',
            '    { address = "co:0", type = "bool" }',
            '    { address = "co:1", type = "bool" }',
            '    { address = "co:17", type = "bool" }',
            '    { address = "di:5", type = "bool" }',
            '    { address = "di:6", type = "bool" }',
            '    { address = "B0", register = "hr:3", type = "bool", bit = 0 }',
            '    { address = "B1", register = "hr:3", type = "bool", bit = 1 }',
            '    { address = "B15", register = "hr:3", type = "bool", bit = 15 }',
            '    { address = "W", register = "hr:3", type = "bool" }',
        ])
        reading, _ = _read(_toml(tmp_path, srv.port, lines).plcs[0])
    assert list(reading.values) == [1234, 1, 0, 1, 1, 0, 1, 0, 1, 1]


def test_scale_offset_and_melsec_d_addresses(tmp_path):
    holding = [0] * 300
    holding[100] = 253  # D100 -> hr:100 with d_base 0
    holding[101] = (-40) & 0xFFFF
    holding[200 + 7] = 999  # D7 with d_base = 200
    with ModbusTestServer(holding=holding) as srv:
        lines = ",\n".join([
            '    { address = "D100", type = "int16", scale = 0.1 }',
            '    { address = "D101", type = "int16", scale = 0.5, offset = 100 }',
        ])
        r1, _ = _read(_toml(tmp_path, srv.port, lines).plcs[0])
        r2, _ = _read(_toml(tmp_path, srv.port, '    { address = "D7", type = "uint16" }', "d_base = 200", name="b.toml").plcs[0])
    assert r1.values[0] == pytest.approx(25.3, abs=1e-12)
    assert r1.values[1] == 80.0
    assert r2.values[0] == 999


def test_contiguous_tags_are_coalesced_into_few_requests(tmp_path):
    # 300 int16 tags at hr:0..299 (3 requests of at most 125), 20 float32 at ir:0..39
    # (1 request), 2 isolated tags (2 requests), 40 coils (1 request): 7 in all.
    holding = list(range(1000, 1300)) + [0] * 2000 + [77] + [0] * 10
    inputs = [0] * 40
    for i in range(20):
        inputs[2 * i : 2 * i + 2] = registers.encode_registers(float(i) + 0.5, "float32")
    coils = [bool(i % 3 == 0) for i in range(48)]
    lines = [f'    {{ address = "hr:{i}", type = "int16" }}' for i in range(300)]
    lines += [f'    {{ address = "ir:{2 * i}", type = "float32" }}' for i in range(20)]
    lines += ['    { address = "hr:2300", type = "uint16" }', '    { address = "hr:2305", type = "uint16" }']
    lines += [f'    {{ address = "co:{i}", type = "bool" }}' for i in range(40)]
    with ModbusTestServer(holding=holding, inputs=inputs, coils=coils) as srv:
        plant = _toml(tmp_path, srv.port, ",\n".join(lines))
        reading, sent = _read(plant.plcs[0])
        served = dict(srv.requests)
    assert sent == 7
    assert served == {3: 5, 4: 1, 1: 1}  # counted by the server itself
    v = reading.values
    assert list(v[:300]) == list(range(1000, 1300))
    assert list(v[300:320]) == [i + 0.5 for i in range(20)]
    assert list(v[320:322]) == [77, 0]
    assert list(v[322:]) == [float(i % 3 == 0) for i in range(40)]


def test_illegal_address_makes_only_that_block_bad(tmp_path):
    with ModbusTestServer(holding=[5] * 20) as srv:
        lines = '    { address = "hr:1", type = "uint16" },\n    { address = "hr:500", type = "uint16" }'
        reading, _ = _read(_toml(tmp_path, srv.port, lines).plcs[0])
    assert list(reading.quality) == [QUALITY_GOOD, QUALITY_BAD]
    assert reading.values[0] == 5
    assert "exception" in reading.error


@pytest.mark.parametrize("kind", ["refused", "blackhole"])
def test_dead_plc_raises_within_its_timeout(tmp_path, kind):
    hole = Blackhole() if kind == "blackhole" else None
    port = hole.port if hole else refused_port()
    try:
        plant = _toml(tmp_path, port, '    { address = "hr:0", type = "uint16" }')

        async def go():
            src = ModbusPlc(plant.plcs[0])
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with pytest.raises(SourceUnavailable):
                await src.read(0)
            first = loop.time() - t0
            # While backing off, a read fails at once without touching the network.
            t1 = loop.time()
            with pytest.raises(SourceUnavailable, match="next connection attempt"):
                await src.read(0)
            await src.close()
            return first, loop.time() - t1

        first, second = asyncio.run(go())
    finally:
        if hole:
            hole.close()
    assert first < 1.0 * 2 + 1.5  # timeout_s bounds the connect and the request
    assert second < 0.5


def test_deadband_against_a_real_plc_publishes_moves_and_max_silence(tmp_path, ring_name):
    from pipeline.poller.scheduler import GroupPoller

    with ModbusTestServer(holding=[100, 100, 100]) as srv:
        lines = ('    { address = "D0", type = "uint16", deadband = 5, max_silence_s = 60 },\n'
                 '    { address = "D1", type = "uint16" },\n'
                 '    { address = "D2", type = "uint16", deadband = 5, max_silence_s = 0.45 }')
        plant = _toml(tmp_path, srv.port, lines, interval=0.1)
        producer = open_producer(ring_name, 10_000)
        try:
            async def go():
                src = ModbusPlc(plant.plcs[0])
                gp = GroupPoller(producer, src, plant.plcs[0], 0, 0)
                stop = asyncio.Event()
                task = asyncio.create_task(gp.run(stop))
                await asyncio.sleep(1.0)
                srv.set_holding(0, [103])  # within the band: suppressed
                await asyncio.sleep(0.3)
                srv.set_holding(0, [110])  # beyond it: published at once
                await asyncio.sleep(0.3)
                stop.set()
                await task
                await src.close()
                return gp.polls

            polls = asyncio.run(go())
            suppressed = producer.get("poller.suppressed")
        finally:
            producer.close()
    consumer = open_consumer(ring_name, wait=False)
    try:
        recs = consumer.read(10_000).records
    finally:
        consumer.close()
    d0, d1, d2 = (recs[recs["tag_address"] == a] for a in (b"D0", b"D1", b"D2"))
    assert len(d1) == polls  # no deadband: every poll
    assert d0["value"].tolist() == [100, 110]  # the first value, then only the move beyond the band
    # A flat value still shows every max_silence_s (1.6 s of polling, 0.45 s silence).
    assert set(d2["value"].tolist()) == {100} and 3 <= len(d2) <= 5
    assert suppressed == 2 * polls - len(d0) - len(d2)
