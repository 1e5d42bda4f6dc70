"""MELSEC MC benchmark: 1,000 D words per poll over loopback, side by side with Modbus TCP.

    make bench BENCH_ARGS=mc          (or: .venv/bin/python -m bench mc [--quick])

1. Poll time of one group of 1,000 int16 tags into a real ring (read + decode + publish),
   MC 3E binary against the test MC server (tests/poller_helpers/mc_server.py) and Modbus
   TCP against pymodbus's server, each server in its own process, with the same tags:
   contiguous (D0..D999 = hr:0..hr:999) and scattered ten words apart (D0, D10 ... D9990 =
   hr:0, hr:10 ...). MC scattered is measured with random read (the default) and with
   batch reads only, to show whether random read pays. The modes take turns, round after
   round, so the machine's noise falls on all of them alike; figures are medians.
2. Values/s one poller reaches with 10 MELSEC PLCs (10 test servers in two processes),
   1,000 contiguous tags each, every group asked for every 10 ms (the shortest interval,
   more than the servers can give) by the real scheduler's GroupPoller tasks, for a fixed
   time, with the poller's CPU use: the figure is what the poller reaches, not what it asks.

Both servers are Python emulators: on a real network the PLC's scan time and the wire add
to every request, which makes the request count (shown) matter more, not less.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

COMMAND = "make bench BENCH_ARGS=mc"
WORDS = 10_000


def _ring() -> str:
    return f"benchmc{uuid.uuid4().hex[:8]}"


def _serve_mc(port_file: str, count: int) -> int:
    """Child process: ``count`` MC test servers, D0..D9999 = i % 30000."""
    from tests.poller_helpers.mc_server import McTestServer

    servers = []
    for _ in range(count):
        s = McTestServer(points=WORDS + 16).start()
        s.set_words("D", 0, [i % 30000 for i in range(WORDS)])
        servers.append(s)
    Path(port_file + ".tmp").write_text(" ".join(str(s.port) for s in servers))
    os.replace(port_file + ".tmp", port_file)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


def _serve_modbus(port_file: str) -> int:
    """Child process: pymodbus's server, holding registers 0..9999 = i % 30000."""
    import logging

    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    async def main() -> None:
        dev = SimDevice(1, simdata=(
            [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
            [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
            [SimData(0, values=[i % 30000 for i in range(WORDS)], datatype=DataType.REGISTERS)],
            [SimData(0, values=[0] * 16, datatype=DataType.REGISTERS)],
        ))
        srv = ModbusTcpServer(dev, address=("127.0.0.1", 0))
        await srv.serve_forever(background=True)
        Path(port_file + ".tmp").write_text(str(srv.transport.sockets[0].getsockname()[1]))
        os.replace(port_file + ".tmp", port_file)
        await asyncio.Event().wait()

    asyncio.run(main())
    return 0


def _start(args: list[str], port_file: str) -> tuple[subprocess.Popen, list[int]]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.bench_mc", *args, port_file])
    deadline = time.monotonic() + 30
    while not os.path.exists(port_file):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"benchmark server {args} did not start")
        time.sleep(0.05)
    return proc, [int(p) for p in Path(port_file).read_text().split()]


def _toml(code: str, protocol: str, port: int, step: int, extra: str = "", interval: float = 1.0) -> str:
    if protocol == "mc":
        head = f'protocol = "mc"\nseries = "Q"\n{extra}\n'
        tags = [f'{{ address = "D{i * step}", type = "int16" }}' for i in range(1000)]
    else:
        head = f"{extra}\n"
        tags = [f'{{ address = "hr:{i * step}", type = "int16" }}' for i in range(1000)]
    return (f'[[plcs]]\ncode = "{code}"\nhost = "127.0.0.1"\nport = {port}\ntimeout_s = 5\n{head}'
            f'[[plcs.groups]]\ninterval_s = {interval}\ntags = [\n' + ",\n".join(tags) + "\n]\n")


def bench_side_by_side(polls: int, rounds: int, mc_port: int, mb_port: int, tmp: str) -> dict:
    from pipeline.poller.config import load_plant
    from pipeline.poller.scheduler import GroupPoller
    from pipeline.poller.sources.mc import McPlc
    from pipeline.poller.sources.modbus import ModbusPlc, quiet_pymodbus
    from shm import Producer, delete_ring

    quiet_pymodbus()
    modes = [  # label, protocol, port, step, extra, polls per round (1,000-request modes poll less)
        ("mc contiguous", "mc", mc_port, 1, "", polls),
        ("modbus contiguous", "modbus", mb_port, 1, "", polls),
        ("mc scattered, random read", "mc", mc_port, 10, "", polls),
        ("mc scattered, batch only", "mc", mc_port, 10, "random_read = false", max(2, polls // 10)),
        ("modbus scattered", "modbus", mb_port, 10, "", max(2, polls // 10)),
    ]
    name = _ring()
    p = Producer.open(name, 2_000_000)
    times: dict[str, list[float]] = {m[0]: [] for m in modes}
    per_poll: dict[str, int] = {}
    try:
        for _ in range(rounds):
            for label, protocol, port, step, extra, n in modes:
                path = os.path.join(tmp, "side.toml")
                Path(path).write_text(_toml("BENCH", protocol, port, step, extra))
                plc = load_plant(path).plcs[0]
                src = McPlc(plc) if protocol == "mc" else ModbusPlc(plc)
                gp = GroupPoller(p, src, plc, 0, 0)

                async def run() -> list[float]:
                    await gp.step()  # connect (and, for MC, nothing else to warm)
                    out = []
                    for _ in range(n):
                        t0 = time.perf_counter()
                        await gp.step()
                        out.append(time.perf_counter() - t0)
                    await src.close()
                    return out

                req0 = src.requests
                times[label] += asyncio.run(run())
                per_poll[label] = (src.requests - req0) // (n + 1)
                del gp, src
        assert p.get("poller.bad_values") == 0, "a benchmark poll read BAD values"
    finally:
        p.close()
        delete_ring(name, force=True)
    out = {}
    for label, *_ in modes:
        med = statistics.median(times[label])
        out[label] = (med, per_poll[label])
        print(f"  {label:27s}: {per_poll[label]:>5} requests/poll, poll median {med * 1e3:8.2f} ms"
              f" = {1000 / med:>10,.0f} values/s  ({len(times[label])} polls)", flush=True)
    return out


def bench_ten_plcs(seconds: float, ports: list[int], tmp: str) -> tuple[float, float, int]:
    from pipeline.poller.config import load_plant
    from pipeline.poller.scheduler import GroupPoller
    from pipeline.poller.sources.mc import McPlc
    from shm import Producer, delete_ring

    path = os.path.join(tmp, "ten.toml")
    Path(path).write_text("".join(_toml(f"PLC{i}", "mc", port, 1, interval=0.01) for i, port in enumerate(ports)))
    plant = load_plant(path)
    name = _ring()
    p = Producer.open(name, 2_000_000)
    try:
        sources = [McPlc(plc) for plc in plant.plcs]
        pollers = [GroupPoller(p, s, plc, i, 0) for i, (s, plc) in enumerate(zip(sources, plant.plcs))]

        async def run() -> tuple[float, float]:
            stop = asyncio.Event()
            for gp in pollers:
                await gp.step()  # connect every PLC first
            v0 = p.get("poller.values")
            cpu0, t0 = time.process_time(), time.monotonic()
            tasks = [asyncio.create_task(gp.run(stop)) for gp in pollers]
            await asyncio.sleep(seconds)
            stop.set()
            await asyncio.gather(*tasks)
            elapsed = time.monotonic() - t0
            for s in sources:
                await s.close()
            return (p.get("poller.values") - v0) / elapsed, (time.process_time() - cpu0) / elapsed

        rate, cpu = asyncio.run(run())
        bad = p.get("poller.bad_values")
        overruns = sum(gp.overruns for gp in pollers)
        del pollers, sources
    finally:
        p.close()
        delete_ring(name, force=True)
    print(f"  10 MELSEC PLCs x 1,000 tags every 10 ms (1,000,000 values/s asked): {rate:,.0f} values/s published,"
          f" poller CPU {100 * cpu:.0f} % of one core, {bad} BAD values, {overruns} overruns ({seconds:.0f} s)",
          flush=True)
    return rate, cpu, bad


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve-mc"]:
        return _serve_mc(argv[2], int(argv[1]))
    if argv[:1] == ["--serve-modbus"]:
        return _serve_modbus(argv[1])
    quick = "--quick" in argv
    print(f"MELSEC MC benchmark ({os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f};"
          f" other work on the machine shows in the figures)")
    print(f"command: {COMMAND}")
    procs: list[subprocess.Popen] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            mc, mc_ports = _start(["--serve-mc", "1"], os.path.join(tmp, "mc"))
            mb, mb_ports = _start(["--serve-modbus"], os.path.join(tmp, "mb"))
            procs += [mc, mb]
            side = bench_side_by_side(10 if quick else 30, 3 if quick else 5, mc_ports[0], mb_ports[0], tmp)
            for proc in procs:
                proc.terminate()
                proc.wait(10)
            procs.clear()
            ports: list[int] = []
            for k in range(2):  # 10 servers in two processes: the servers get both cores
                proc, more = _start(["--serve-mc", "5"], os.path.join(tmp, f"ten{k}"))
                procs.append(proc)
                ports += more
            rate, cpu, bad = bench_ten_plcs(5.0 if quick else 20.0, ports, tmp)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    print("summary:")
    c_mc, c_mb = side["mc contiguous"][0], side["modbus contiguous"][0]
    s_rr, s_bo, s_mb = (side[k][0] for k in ("mc scattered, random read", "mc scattered, batch only",
                                             "modbus scattered"))
    print(f"  contiguous: MC {c_mc * 1e3:.2f} ms vs Modbus {c_mb * 1e3:.2f} ms per poll (Modbus/MC = {c_mb / c_mc:.1f}x)")
    print(f"  scattered:  MC random read {s_rr * 1e3:.2f} ms, MC batch only {s_bo * 1e3:.2f} ms, Modbus"
          f" {s_mb * 1e3:.2f} ms (random read pays {s_bo / s_rr:.0f}x; Modbus/MC = {s_mb / s_rr:.0f}x)")
    print(f"  10 MELSEC PLCs: {rate:,.0f} values/s at {100 * cpu:.0f} % of one core")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
