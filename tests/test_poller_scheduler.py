"""Report by exception, schedules without drift, overruns counted not queued (in-process, real ring)."""

from __future__ import annotations

import asyncio

import numpy as np

from pipeline.poller.config import GroupConfig, PlantConfig, PlcConfig, SimSpec, TagConfig
from pipeline.poller.deadband import Deadband
from pipeline.poller.scheduler import GroupPoller, Poller
from pipeline.poller.sources.base import Reading, SourceUnavailable
from pipeline.poller.sources.simulator import SimulatedPlc
from pipeline.common.telemetry import SCHEMA, open_consumer, open_producer, plc_rows
from shm import Observer
from shm.layout import QUALITY_BAD, QUALITY_GOOD

G, B = QUALITY_GOOD, QUALITY_BAD


def test_deadband_publishes_moves_beyond_the_band_and_after_max_silence():
    db = Deadband([0.5, None], [10.0, 10.0])
    q = np.array([G, G], dtype=np.uint8)
    assert db.select(np.array([1.0, 1.0]), q, 0.0).tolist() == [True, True]  # first value always
    assert db.select(np.array([1.4, 1.0]), q, 1.0).tolist() == [False, True]  # within band; no band: always
    assert db.select(np.array([0.6, 1.0]), q, 2.0).tolist() == [False, True]  # |0.6 - 1.0| = 0.4 <= 0.5
    assert db.select(np.array([1.6, 1.0]), q, 3.0).tolist() == [True, True]  # 0.6 from the last *published* 1.0
    assert db.select(np.array([1.6, 1.0]), q, 12.9).tolist() == [False, True]
    assert db.select(np.array([1.6, 1.0]), q, 13.0).tolist() == [True, True]  # flat for max_silence_s


def test_bad_is_published_once_per_episode_and_good_always_ends_it():
    db = Deadband([100.0], [1000.0])
    v = np.array([5.0])
    seq = [(G, True), (G, False), (B, True), (B, False), (B, False), (G, True), (G, False), (B, True), (G, True)]
    for t, (qual, expect) in enumerate(seq):
        assert db.select(v, np.array([qual], dtype=np.uint8), float(t)).tolist() == [expect], (t, qual)


class SlowSource:
    """A source whose reads take ``delay_s`` (a slow PLC); fails while ``failing``."""

    code = "SLOW"
    connected = True

    def __init__(self, n: int, delay_s: float) -> None:
        self.n, self.delay_s, self.reads, self.failing = n, delay_s, 0, False

    async def read(self, group_index: int) -> Reading:
        self.reads += 1
        await asyncio.sleep(self.delay_s)
        if self.failing:
            raise SourceUnavailable("test: not answering")
        return Reading(np.full(self.n, float(self.reads)), np.full(self.n, G, dtype=np.uint8))

    async def close(self) -> None:
        pass


def plc_config(code: str, interval: float, n: int = 3, protocol: str = "simulator") -> PlcConfig:
    tags = tuple(TagConfig(f"T{i}", "float32", None, sim=SimSpec()) for i in range(n))
    return PlcConfig(code, protocol, (GroupConfig("g", interval, tags),))


def test_overrun_is_counted_and_skipped_not_queued(ring_name):
    producer = open_producer(ring_name, 10_000)
    try:
        src = SlowSource(3, 0.25)
        gp = GroupPoller(producer, src, plc_config("SLOW", 0.1), 0, 0)

        async def go():
            stop = asyncio.Event()
            task = asyncio.create_task(gp.run(stop))
            await asyncio.sleep(1.3)
            stop.set()
            await task

        asyncio.run(go())
        # 0.25 s reads on a 0.1 s schedule: ~5 polls in 1.3 s, each an overrun; a queue
        # would have tried to catch up on the ~13 slots.
        assert 3 <= gp.polls <= 7
        assert gp.overruns >= gp.polls - 1
        assert producer.get("poller.overruns") == gp.overruns
        assert producer.get("poller.values") == 3 * gp.polls
    finally:
        producer.close()


def test_schedule_does_not_drift(ring_name):
    producer = open_producer(ring_name, 10_000)
    try:
        # Reads take 20 ms of a 50 ms interval: polls must still start every 50 ms (a
        # scheduler that sleeps "interval" after each poll would start one every 70 ms).
        src = SlowSource(1, 0.02)
        gp = GroupPoller(producer, src, plc_config("FAST", 0.05, 1), 0, 0)
        stamps: list[float] = []
        orig = gp.step

        async def step():
            stamps.append(asyncio.get_running_loop().time())
            return await orig()

        gp.step = step

        async def go():
            stop = asyncio.Event()
            task = asyncio.create_task(gp.run(stop))
            await asyncio.sleep(2.0)
            stop.set()
            await task

        asyncio.run(go())
        assert len(stamps) >= 15
        period = float(np.median(np.diff(stamps)))
        assert 0.045 <= period <= 0.06, f"polls every {period * 1e3:.1f} ms, scheduled every 50 ms"
    finally:
        producer.close()


def test_poller_publishes_one_batch_per_poll_and_fills_the_plc_table(ring_name):
    producer = open_producer(ring_name, 10_000)
    stop_flag = {"stop": False}
    plant = PlantConfig("test", (plc_config("SIMA", 0.1, 5), plc_config("SIMB", 0.2, 2)))
    try:
        sources = [SimulatedPlc(plant.plcs[0], seed=1), SimulatedPlc(plant.plcs[1], seed=2)]
        poller = Poller(producer, plant, sources, lambda: stop_flag["stop"])

        async def go():
            asyncio.get_running_loop().call_later(1.0, lambda: stop_flag.update(stop=True))
            return await poller.run(5.0)

        assert asyncio.run(go()) is True
        batches = producer.get("producer.batches")
        polls = producer.get("poller.polls")
        assert batches == polls  # one publish per poll
        with Observer(ring_name, telemetry=SCHEMA) as obs:
            snap = obs.snapshot()
        assert snap.fields["poller.plc_count"] == 2
        assert [r.plc_code for r in plc_rows(snap)] == ["SIMA", "SIMB"]
        assert [r.tags for r in plc_rows(snap)] == [5, 2]
        assert sum(r.values for r in plc_rows(snap)) == snap.fields["poller.values"] == producer.published
    finally:
        producer.close()
    consumer = open_consumer(ring_name, wait=False)
    try:
        recs = consumer.read(10_000).records
    finally:
        consumer.close()
    a = recs[recs["plc_code"] == b"SIMA"]
    # every poll of SIMA's group: 5 records sharing one timestamp
    _, counts = np.unique(a["ts_us"], return_counts=True)
    assert set(counts.tolist()) == {5}


def test_wall_clock_step_neither_bunches_nor_skips_polls(ring_name):
    # Timestamps come from the wall clock, the schedule from the monotonic one: an NTP step
    # of an hour backwards shows in the records and nowhere else.
    producer = open_producer(ring_name, 10_000)
    try:
        loop_t0 = {"t": None}
        import time as _time

        def wall() -> int:
            base = _time.time_ns() // 1000
            if loop_t0["t"] is not None and _time.monotonic() - loop_t0["t"] > 0.5:
                return base - 3_600_000_000
            return base

        gp = GroupPoller(producer, SlowSource(1, 0.0), plc_config("NTP", 0.1, 1), 0, 0, wall=wall)

        async def go():
            loop_t0["t"] = _time.monotonic()
            stop = asyncio.Event()
            task = asyncio.create_task(gp.run(stop))
            await asyncio.sleep(1.05)
            stop.set()
            await task

        asyncio.run(go())
        assert 8 <= gp.polls <= 12 and gp.overruns <= 2
    finally:
        producer.close()
    consumer = open_consumer(ring_name, wait=False)
    try:
        ts = consumer.read(1000).records["ts_us"]
    finally:
        consumer.close()
    steps = np.diff(ts)
    assert (steps < -3_000_000_000).sum() == 1  # the step backwards, once
    assert abs(np.median(steps[steps > -3_000_000_000]) - 100_000) < 20_000  # otherwise every 0.1 s


def test_simulator_waves_stay_in_range_and_counters_count():
    specs = [
        SimSpec("sine", 10, 20, 5.0, 0.0),
        SimSpec("ramp", 0, 100, 2.0),
        SimSpec("counter", 0, 1000, step=3),
        SimSpec("square", 0, 1, 1.0),
        SimSpec("walk", -5, 5, step=0.5),
        SimSpec("constant", 7, 7),
        SimSpec("sine", 0, 1, 10.0, bad_rate=0.5),
    ]
    types = ["float32", "float32", "uint32", "bool", "float32", "int16", "float32"]
    tags = tuple(TagConfig(f"T{i}", t, None, sim=s) for i, (s, t) in enumerate(zip(specs, types)))
    clock = {"t": 0.0}
    plc = SimulatedPlc(PlcConfig("SIM", "simulator", (GroupConfig("g", 1.0, tags),)), seed=7, clock=lambda: clock["t"])

    async def poll(n):
        out = []
        for _ in range(n):
            clock["t"] += 0.25
            out.append(await plc.read(0))
        return out

    readings = asyncio.run(poll(200))
    v = np.array([r.values for r in readings])
    q = np.array([r.quality for r in readings])
    assert v[:, 0].min() >= 10 and v[:, 0].max() <= 20 and v[:, 0].max() - v[:, 0].min() > 8
    assert v[:, 1].min() >= 0 and v[:, 1].max() <= 100
    assert list(np.diff(v[:20, 2])) == [3.0] * 19
    assert set(v[:, 3].tolist()) == {0.0, 1.0}
    assert v[:, 4].min() >= -5 and v[:, 4].max() <= 5 and len(np.unique(v[:, 4])) > 50
    assert set(v[:, 5].tolist()) == {7.0}
    assert set(q[:, :6].ravel().tolist()) == {G}
    assert 50 < (q[:, 6] == B).sum() < 150  # bad_rate 0.5 of 200 polls


class FixedSource:
    """A source that answers one fixed reading (values and qualities)."""

    code = "NAN"
    connected = True

    def __init__(self, values: list[float], quality: list[int]) -> None:
        self.values, self.quality = np.array(values), np.array(quality, dtype=np.uint8)

    async def read(self, group_index: int) -> Reading:
        return Reading(self.values.copy(), self.quality.copy())

    async def close(self) -> None:
        pass


def test_nan_or_infinite_register_is_published_bad_with_null_value(ring_name):
    from shm.layout import FLAG_NULL

    producer = open_producer(ring_name, 1_000)
    consumer = open_consumer(ring_name, wait=False)
    try:
        src = FixedSource([1.5, float("nan"), float("inf")], [G, G, G])
        gp = GroupPoller(producer, src, plc_config("NAN", 1.0, 3), 0, 0)
        asyncio.run(gp.step())
        recs = consumer.read(10).records
        assert recs["quality"].tolist() == [G, B, B]
        assert [bool(f & FLAG_NULL) for f in recs["flags"]] == [False, True, True]
        assert recs["value"][0] == 1.5
        assert producer.get("poller.bad_values") == 2
    finally:
        consumer.close()
        producer.close()
