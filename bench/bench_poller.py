"""Poller benchmark: load mode into the ring, and Modbus TCP polls of 1,000 tags on loopback.

    make bench BENCH_ARGS=poller          (or: .venv/bin/python -m bench poller)

1. Load mode (``LoadGenerator``, what ``python -m pipeline.poller --rate N`` runs) into a
   real ring with no consumer: as fast as possible on one core, then paced at
   1,000,000 values/s with the CPU time it costs (goal: >= 1,000,000 values/s).
2. Modbus: one pymodbus TCP server on 127.0.0.1 in its own process, 1,000 tags
   (600 int16 + 200 float32 holding registers, 200 coils). Poll duration and values/s for
   a full poll into the ring (read + decode + deadband + publish), contiguous tags
   (coalesced into 10 requests: a 32-bit tag never straddles two) side by side with the same 1,000 tags scattered one
   register apart (1,000 requests: what a poller without coalescing would send).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

COMMAND = "make bench BENCH_ARGS=poller"


def _ring() -> str:
    return f"bench{uuid.uuid4().hex[:10]}"


def bench_load(seconds: float) -> dict:
    from pipeline.poller.loadgen import LoadGenerator
    from shm import Producer, delete_ring

    out = {}
    for label, rate in (("max", 0.0), ("paced_1M", 1_000_000.0)):
        name = _ring()
        p = Producer.open(name, 1_000_000)
        try:
            gen = LoadGenerator(p, rate, seconds)
            cpu0 = time.process_time()
            res = gen.run()
            cpu = time.process_time() - cpu0
        finally:
            p.close()
            delete_ring(name, force=True)
        out[label] = (res.rate, cpu / res.elapsed_s, res.published)
        print(f"  load {label:9s}: {res.published:>11,} values in {res.elapsed_s:.2f} s = {res.rate:>12,.0f} values/s"
              f"  (CPU {100 * cpu / res.elapsed_s:.0f} % of one core)", flush=True)
    return out


def _serve(port_file: str) -> int:
    """Child process: a pymodbus server with 1,000+ holding registers and 200 coils."""
    import logging

    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    async def main() -> None:
        dev = SimDevice(1, simdata=(
            [SimData(0, values=[bool(i % 2) for i in range(208)], datatype=DataType.BITS)],
            [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
            [SimData(0, values=[i % 30000 for i in range(2100)], datatype=DataType.REGISTERS)],
            [SimData(0, values=[0] * 16, datatype=DataType.REGISTERS)],
        ))
        srv = ModbusTcpServer(dev, address=("127.0.0.1", 0))
        await srv.serve_forever(background=True)
        Path(port_file).write_text(str(srv.transport.sockets[0].getsockname()[1]))
        await asyncio.Event().wait()

    asyncio.run(main())
    return 0


def _tags_toml(port: int, scattered: bool) -> str:
    step = 2 if scattered else 1
    tags = [f'{{ address = "hr:{i * step}", type = "int16" }}' for i in range(600)]
    base = 600 * step
    tags += [f'{{ address = "hr:{base + i * (2 + step - 1)}", type = "float32" }}' for i in range(200)]
    tags += [f'{{ address = "co:{i * step}", type = "bool" }}' for i in range(100 if scattered else 200)]
    if scattered:  # keep 1,000 tags: coils only go to 207 on the server
        tags += [f'{{ address = "hr:{base + 600 + 2 * i}", type = "uint16" }}' for i in range(100)]
    return (f'[[plcs]]\ncode = "BENCH"\nhost = "127.0.0.1"\nport = {port}\ntimeout_s = 5\n'
            f'[[plcs.groups]]\ninterval_s = 1\ntags = [\n' + ",\n".join(tags) + "\n]\n")


def bench_modbus(polls: int) -> dict:
    from pipeline.poller.config import load_plant
    from pipeline.poller.scheduler import GroupPoller
    from pipeline.poller.sources.modbus import ModbusPlc, quiet_pymodbus
    from shm import Producer, delete_ring

    quiet_pymodbus()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        port_file = os.path.join(tmp, "port")
        server = subprocess.Popen([sys.executable, "-m", "bench.bench_poller", "--serve", port_file])
        try:
            deadline = time.monotonic() + 20
            while not os.path.exists(port_file) or not Path(port_file).read_text():
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("benchmark Modbus server did not start")
                time.sleep(0.05)
            port = int(Path(port_file).read_text())
            for label, scattered, n in (("contiguous", False, polls), ("scattered", True, max(3, polls // 10))):
                path = os.path.join(tmp, f"{label}.toml")
                Path(path).write_text(_tags_toml(port, scattered))
                plant = load_plant(path)
                assert plant.tag_count == 1000, plant.tag_count
                name = _ring()
                p = Producer.open(name, 1_000_000)
                try:
                    src = ModbusPlc(plant.plcs[0])
                    gp = GroupPoller(p, src, plant.plcs[0], 0, 0)

                    async def run() -> list[float]:
                        await gp.step()  # connect
                        times = []
                        for _ in range(n):
                            t0 = time.perf_counter()
                            await gp.step()
                            times.append(time.perf_counter() - t0)
                        await src.close()
                        return times

                    req0 = src.requests
                    times = asyncio.run(run())
                    per_poll = (src.requests - req0) // (n + 1)
                    assert p.get("poller.bad_values") == 0
                    del gp, src  # their views of the header must go before the mapping closes
                finally:
                    p.close()
                    delete_ring(name, force=True)
                med = statistics.median(times)
                p95 = sorted(times)[max(0, int(0.95 * len(times)) - 1)]
                out[label] = (med, p95, 1000 / med, per_poll)
                print(f"  modbus {label:10s}: 1,000 tags, {per_poll:>4} requests/poll: poll median {med * 1e3:7.1f} ms,"
                      f" p95 {p95 * 1e3:7.1f} ms = {1000 / med:>9,.0f} values/s  ({n} polls)", flush=True)
        finally:
            server.terminate()
            server.wait(10)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench poller", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (1 s of load, 10 Modbus polls)")
    ap.add_argument("--serve", metavar="PORT_FILE", help=argparse.SUPPRESS)  # the Modbus server child
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.serve:
        return _serve(args.serve)
    quick = args.quick
    print(f"poller benchmark ({os.cpu_count()} cores; other work on the machine shows in the figures)")
    print(f"command: {COMMAND}")
    load = bench_load(1.0 if quick else 5.0)
    mb = bench_modbus(10 if quick else 50)
    print("summary:")
    print(f"  load mode, one core, as fast as possible: {load['max'][0]:,.0f} values/s"
          f" ({load['max'][0] / 1e6:.1f}x the 1,000,000 goal)")
    print(f"  load mode paced at 1,000,000 values/s: {load['paced_1M'][0]:,.0f} values/s using"
          f" {100 * load['paced_1M'][1]:.0f} % of one core")
    c, s = mb["contiguous"], mb["scattered"]
    print(f"  modbus 1,000 tags: contiguous {c[0] * 1e3:.1f} ms/poll ({c[2]:,.0f} values/s) vs scattered"
          f" {s[0] * 1e3:.1f} ms/poll ({s[2]:,.0f} values/s): coalescing is {s[0] / c[0]:.0f}x faster")
    return 0 if load["max"][0] >= 1_000_000 else 1


if __name__ == "__main__":
    sys.exit(main())
