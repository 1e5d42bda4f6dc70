"""Live tag values: the poller's CPU per value with and without the latest-values table, and /api/tags' read cost.

    make bench BENCH_ARGS=latest          (or: .venv/bin/python -m bench latest [--tags N] [--rounds R])

100,000 tags (10 PLCs x 10 groups x 1,000 tags, the issue's "100,000 tags at 1 s") polled
by the real ``GroupPoller.step`` (deadband, ring publish, counters) from an in-process
source that returns new values every poll (no protocol cost, so the table's share is not
hidden behind network time). Rounds alternate between the two variants, side by side in one
run: without the table (``latest=None``, the poller before issue 15) and with it (one
seqlocked block write per group poll). Two plants: every value changes (every value goes
into the ring) and a steady plant (the deadband suppresses every value, so the table write
is the largest share of the poll). Load mode paced at 300,000 values/s, the same two
variants alternating (the generator keeps each of its 1,000 tags' last value and writes its
10 blocks after every 10 ms batch). Then the reader side: one ``LatestReader.query`` (what
``/api/tags`` does) on the 100,000-row table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid

import numpy as np

COMMAND = "make bench BENCH_ARGS=latest"


class _FastSource:
    """In-process PLC: every group reads in no time, values move by ``step`` every poll."""

    def __init__(self, code: str, sizes: list[int], step: float) -> None:
        from pipeline.poller.sources.base import Reading
        from shm.layout import QUALITY_GOOD

        self.code = code
        self.connected = True
        self._reading = Reading
        self._base = [np.arange(n, dtype=np.float64) for n in sizes]
        self._q = [np.full(n, QUALITY_GOOD, dtype=np.uint8) for n in sizes]
        self._k = 0
        self.step = step

    async def read(self, group: int):
        self._k += 1
        return self._reading(self._base[group] + self._k * self.step, self._q[group])

    async def close(self) -> None:
        pass


def _plant(plcs: int, groups: int, per_group: int, deadband: float | None):
    from pipeline.poller.config import GroupConfig, PlantConfig, PlcConfig, TagConfig

    return PlantConfig("bench", tuple(
        PlcConfig(f"BENCHPLC{p:02d}", "simulator", tuple(
            GroupConfig(f"g{g}", 1.0, tuple(TagConfig(f"D{g * per_group + t}", "float32", None, deadband=deadband,
                                                      max_silence_s=86_400.0, unit="bar", description=f"tag {t}")
                                            for t in range(per_group)))
            for g in range(groups)))
        for p in range(plcs)))


def bench_poll(tags: int, rounds: int, steady: bool) -> dict:
    from pipeline.common.latest import LatestTable, remove
    from pipeline.common.telemetry import open_producer
    from pipeline.poller.scheduler import GroupPoller, latest_groups
    from shm import delete_ring

    plcs, groups = 10, 10
    per_group = tags // (plcs * groups)
    plant = _plant(plcs, groups, per_group, 1e9 if steady else None)
    name = f"bench{uuid.uuid4().hex[:10]}"
    p = open_producer(name, 1_000_000)
    table = LatestTable.create(name, latest_groups(plant))
    try:
        sources = [_FastSource(plc.code, [len(g.tags) for g in plc.groups], 0.0 if steady else 1.0) for plc in plant.plcs]
        gps = [GroupPoller(p, src, plc, i, g) for i, (plc, src) in enumerate(zip(plant.plcs, sources))
               for g in range(len(plc.groups))]
        blocks = [table.block(k) for k in range(len(gps))]

        async def one_round(with_table: bool) -> float:
            for gp, blk in zip(gps, blocks):
                gp.latest = blk if with_table else None
            c0 = time.process_time()
            for gp in gps:
                await gp.step()
            return time.process_time() - c0

        async def run() -> dict:
            await one_round(True)  # warm up: first deadband pass, page faults of the table
            await one_round(False)
            cpu: dict[bool, list[float]] = {False: [], True: []}
            for r in range(rounds):
                for with_table in ((False, True) if r % 2 == 0 else (True, False)):
                    cpu[with_table].append(await one_round(with_table))
            return cpu

        cpu = asyncio.run(run())
        del gps, blocks, sources
    finally:
        table.close()
        remove(name)
        p.close()
        delete_ring(name, force=True)
    n = per_group * plcs * groups
    without = statistics.median(cpu[False]) / n * 1e6
    with_t = statistics.median(cpu[True]) / n * 1e6
    label = "steady (all suppressed)" if steady else "changing (all published)"
    print(f"  {label:25s} {n:,} tags, {rounds} rounds each: without table {without:.3f} us/value,"
          f" with table {with_t:.3f} us/value: +{with_t - without:.3f} us/value ({100 * (with_t / without - 1):+.0f} %)",
          flush=True)
    return {"without": without, "with": with_t, "tags": n}


def bench_load(rate: float, seconds: float, rounds: int) -> dict:
    """Load mode paced at ``rate`` values/s, alternating without and with the table."""
    from pipeline.common.latest import LatestTable, remove
    from pipeline.common.telemetry import open_producer
    from pipeline.poller.loadgen import LoadGenerator, load_groups
    from shm import delete_ring

    cpu: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for with_table in ((False, True) if r % 2 == 0 else (True, False)):
            name = f"bench{uuid.uuid4().hex[:10]}"
            p = open_producer(name, 1_000_000)
            table = LatestTable.create(name, load_groups(rate)) if with_table else None
            try:
                gen = LoadGenerator(p, rate, seconds, latest=table)
                c0 = time.process_time()
                res = gen.run()
                cpu[with_table].append((time.process_time() - c0) / res.published)
                del gen
            finally:
                if table is not None:
                    table.close()
                    remove(name)
                p.close()
                delete_ring(name, force=True)
    without = statistics.median(cpu[False]) * 1e6
    with_t = statistics.median(cpu[True]) * 1e6
    print(f"  load mode {rate:,.0f} values/s, {seconds:g} s x {rounds} each: without table {without:.3f} us/value,"
          f" with table {with_t:.3f} us/value: +{with_t - without:.3f} us/value ({100 * (with_t / without - 1):+.0f} %)",
          flush=True)
    return {"without": without, "with": with_t}


def bench_read(tags: int, reads: int) -> dict:
    from pipeline.common.latest import GroupSpec, LatestReader, LatestTable, remove

    name = f"bench{uuid.uuid4().hex[:10]}"
    per = tags // 100
    specs = [GroupSpec(f"BENCHPLC{g // 10:02d}", f"g{g}", 1.0, tuple((f"D{g * per + t}", "bar", f"tag {t}") for t in range(per)))
             for g in range(100)]
    table = LatestTable.create(name, specs)
    for k in range(100):
        table.block(k).write(np.arange(per, dtype=np.float64), np.ones(per, dtype=np.uint8), time.time_ns() // 1000)
    reader = LatestReader(name)
    try:
        reader.query(limit=100)  # maps the table and parses its metadata once
        out = {}
        for label, kw in (("page of 100", {"limit": 100}), ("text search", {"q": "tag 99", "limit": 100}),
                          ("PLC filter", {"plc": "BENCHPLC03", "limit": 100})):
            times = []
            for _ in range(reads):
                t0 = time.perf_counter()
                reader.query(**kw)
                times.append(time.perf_counter() - t0)
            out[label] = statistics.median(times)
            print(f"  read {label:12s}: {out[label] * 1e3:6.1f} ms per /api/tags query over {tags:,} tags (median of {reads})",
                  flush=True)
    finally:
        reader.close()
        table.close()
        remove(name)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench latest", description=__doc__.split("\n")[0])
    ap.add_argument("--tags", type=int, default=100_000, help="tags (default 100,000: 10 PLCs x 10 groups)")
    ap.add_argument("--rounds", type=int, default=20, help="polls of every group per variant (default 20)")
    ap.add_argument("--quick", action="store_true", help="5 rounds")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.tags < 100:
        ap.error("--tags must be at least 100")
    rounds = 5 if args.quick else args.rounds
    print(f"live tag values benchmark ({os.cpu_count()} cores; other work on the machine shows in the figures)")
    print(f"command: {COMMAND}")
    changing = bench_poll(args.tags, rounds, steady=False)
    steady = bench_poll(args.tags, rounds, steady=True)
    load = bench_load(300_000.0, 1.0 if args.quick else 3.0, 1 if args.quick else 3)
    reads = bench_read(args.tags, 5 if args.quick else 20)
    print("summary:")
    for label, r, rate in (("changing", changing, 1e5), ("steady", steady, 1e5), ("load mode", load, 3e5)):
        print(f"  {label}: +{r['with'] - r['without']:.3f} us of poller CPU per value for the table"
              f" ({r['without']:.3f} -> {r['with']:.3f} us/value); at {rate:,.0f} values/s that is"
              f" {100 * (r['with'] - r['without']) * rate / 1e6:.1f} % of one core")
    print(f"  /api/tags over {args.tags:,} tags: {reads['page of 100'] * 1e3:.1f} ms per page of 100")
    return 0


if __name__ == "__main__":
    sys.exit(main())
