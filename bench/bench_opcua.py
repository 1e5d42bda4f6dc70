"""OPC UA benchmark: polled Read vs subscription on 1,000 nodes, and poller CPU per 10,000 values/s.

    make bench BENCH_ARGS=opcua          (or: .venv/bin/python -m bench opcua [--quick])

An asyncua server runs in its own process on 127.0.0.1 with 1,000 Double nodes; it
changes every value every ``CHANGE_S`` seconds (so a subscription has something to
report at each interval: the worst case for subscriptions, the usual case for analog
tags). This process is the poller side; its CPU (``time.process_time``: every thread of
this process, none of the server's) is what is compared.

1. Polled, side by side with subscribed, one group of 1,000 nodes at a 1 s interval:
   - polled: ``OpcUaPlc`` + ``GroupPoller`` into a real ring: one Read call per interval
     (split at MaxNodesPerRead); poll time median / p95, CPU per interval;
   - subscribed: one asyncua subscription, 1,000 monitored items (sampling = publishing
     = 1 s, queue 1); each interval the group publishes the latest notified values into
     the ring from a cache (what a subscription-based source would do); time from the
     interval tick to the values being in the ring, CPU per interval, notifications.
2. CPU of the polled poller at 10,000 values/s: 1,000 nodes every 0.1 s for ``D``
   seconds (every value changes, so every value is published): % of one core.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

COMMAND = "make bench BENCH_ARGS=opcua"
NODES = 1000
CHANGE_S = 0.1


def _serve(port_file: str) -> int:
    """Child process: asyncua server, 1,000 Double nodes ns=2;s=B.<i>, all changing every CHANGE_S."""
    import logging

    from asyncua import Server, ua

    logging.getLogger("asyncua").setLevel(logging.CRITICAL)

    async def main() -> None:
        srv = Server()
        await srv.init()
        with socket.socket() as probe:  # a free port on loopback for the endpoint URL
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        srv.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench")
        ns = await srv.register_namespace("urn:tagpipe:bench")
        ids = []
        for i in range(NODES):
            nid = ua.NodeId(f"B.{i}", ns)
            await srv.nodes.objects.add_variable(nid, f"B{i}", ua.Variant(float(i), ua.VariantType.Double))
            ids.append(nid)
        await srv.start()
        Path(port_file).write_text(f"{port} {ns}")
        k = 0
        while True:
            await asyncio.sleep(CHANGE_S)
            k += 1
            for i, nid in enumerate(ids):
                await srv.write_attribute_value(nid, ua.DataValue(ua.Variant(float(i + k), ua.VariantType.Double)))

    asyncio.run(main())
    return 0


def _plant(tmp: str, port: int, ns: int, interval: float):
    from pipeline.poller.config import load_plant

    tags = ",\n".join(f'{{ address = "B{i}", node = "ns={ns};s=B.{i}" }}' for i in range(NODES))
    path = os.path.join(tmp, f"bench{interval}.toml")
    Path(path).write_text(f'[[plcs]]\ncode = "BENCH"\nprotocol = "opcua"\nendpoint = "opc.tcp://127.0.0.1:{port}/bench"\n'
                          f'timeout_s = 5\n[[plcs.groups]]\ninterval_s = {interval}\ntags = [\n{tags}\n]\n')
    return load_plant(path)


class _CachedSource:
    """What a subscription-based source would hand the scheduler: the last notified values."""

    def __init__(self, n: int) -> None:
        self.code = "BENCH"
        self.values = np.full(n, np.nan)
        self.quality = np.full(n, 2, dtype=np.uint8)
        self.notifications = 0
        self.connected = True

    def datachange_notification(self, node, val, data) -> None:
        i = self.index[node.nodeid.Identifier]
        self.values[i] = val
        self.quality[i] = 1
        self.notifications += 1

    async def read(self, group_index: int):
        from pipeline.poller.sources.base import Reading

        return Reading(self.values.copy(), self.quality.copy())

    async def close(self) -> None:
        pass


def _summary(times: list[float]) -> tuple[float, float]:
    s = sorted(times)
    return statistics.median(s), s[max(0, int(0.95 * len(s)) - 1)]


async def _polled(plant, producer, polls: int) -> dict:
    from pipeline.poller.scheduler import GroupPoller
    from pipeline.poller.sources.opcua import OpcUaPlc

    plc = plant.plcs[0]
    src = OpcUaPlc(plc)
    gp = GroupPoller(producer, src, plc, 0, 0)
    await gp.step()  # connect and check the nodes
    times = []
    r0 = src.requests
    # CPU over the whole window (the client's keep-alive probe included), as for subscriptions.
    c_start = time.process_time()
    next_t = time.monotonic()
    for _ in range(polls):
        next_t += plc.groups[0].interval_s
        await asyncio.sleep(max(0.0, next_t - time.monotonic()))
        t0 = time.perf_counter()
        await gp.step()
        times.append(time.perf_counter() - t0)
    cpu_total = time.process_time() - c_start
    reads = (src.requests - r0) / polls
    await src.close()
    med, p95 = _summary(times)
    return {"median": med, "p95": p95, "cpu": cpu_total / polls, "reads": reads}


async def _subscribed(plant, producer, polls: int) -> dict:
    from asyncua import Client, ua

    from pipeline.poller.scheduler import GroupPoller

    plc = plant.plcs[0]
    interval = plc.groups[0].interval_s
    cache = _CachedSource(NODES)
    nodes = [ua.NodeId.from_string(t.opcua.node) for t in plc.groups[0].tags]
    cache.index = {n.Identifier: i for i, n in enumerate(nodes)}
    client = Client(plc.opcua.endpoint, timeout=plc.timeout_s)
    await client.connect()
    sub = await client.create_subscription(interval * 1000, cache)
    await sub.subscribe_data_change([client.get_node(n) for n in nodes], queuesize=1,
                                    sampling_interval=interval * 1000)
    gp = GroupPoller(producer, cache, plc, 0, 0)
    await asyncio.sleep(2 * interval)  # initial values
    n0, c_start, w_start = cache.notifications, time.process_time(), time.perf_counter()
    times = []
    next_t = time.monotonic()
    for _ in range(polls):
        next_t += interval
        await asyncio.sleep(max(0.0, next_t - time.monotonic()))
        t0 = time.perf_counter()
        await gp.step()
        times.append(time.perf_counter() - t0)
    cpu_total = time.process_time() - c_start
    wall = time.perf_counter() - w_start
    notes = cache.notifications - n0
    await sub.delete()
    await client.disconnect()
    med, p95 = _summary(times)
    return {"median": med, "p95": p95, "cpu": cpu_total / polls, "notifications": notes / polls, "wall": wall}


async def _rate(plant, producer, seconds: float) -> dict:
    from pipeline.poller.scheduler import GroupPoller
    from pipeline.poller.sources.opcua import OpcUaPlc

    plc = plant.plcs[0]
    src = OpcUaPlc(plc)
    gp = GroupPoller(producer, src, plc, 0, 0)
    await gp.step()
    v0 = producer.get("poller.values")
    stop = asyncio.Event()
    c0, t0 = time.process_time(), time.perf_counter()
    task = asyncio.create_task(gp.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    values = producer.get("poller.values") - v0
    await src.close()
    return {"rate": values / wall, "cpu_share": cpu / wall, "overruns": gp.overruns}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve"]:
        return _serve(argv[1])
    quick = "--quick" in argv
    polls, seconds = (5, 5.0) if quick else (20, 20.0)
    from pipeline.poller.sources.opcua import quiet_asyncua
    from shm import Producer, delete_ring

    quiet_asyncua()
    print(f"OPC UA benchmark ({os.cpu_count()} cores; other work on the machine shows in the figures)")
    print(f"command: {COMMAND}{' --quick' if quick else ''}")
    with tempfile.TemporaryDirectory() as tmp:
        port_file = os.path.join(tmp, "port")
        repo = str(Path(__file__).resolve().parent.parent)
        server = subprocess.Popen([sys.executable, "-m", "bench.bench_opcua", "--serve", port_file], cwd=repo)
        try:
            deadline = time.monotonic() + 60
            while not os.path.exists(port_file) or not Path(port_file).read_text():
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("benchmark OPC UA server did not start")
                time.sleep(0.1)
            port, ns = map(int, Path(port_file).read_text().split())
            name = f"bench{uuid.uuid4().hex[:10]}"
            producer = Producer.open(name, 1_000_000)
            try:
                plant1 = _plant(tmp, port, ns, 1.0)
                pol = asyncio.run(_polled(plant1, producer, polls))
                sub = asyncio.run(_subscribed(plant1, producer, polls))
                print(f"  1,000 nodes, 1 s interval, {polls} intervals each, every value changing every {CHANGE_S:g} s:")
                print(f"    polled    : poll median {pol['median'] * 1e3:7.1f} ms, p95 {pol['p95'] * 1e3:7.1f} ms,"
                      f" {pol['reads']:.0f} Read call(s)/poll, poller CPU {pol['cpu'] * 1e3:6.1f} ms per interval")
                print(f"    subscribed: publish median {sub['median'] * 1e3:7.1f} ms, p95 {sub['p95'] * 1e3:7.1f} ms,"
                      f" {sub['notifications']:,.0f} notifications/interval, poller CPU {sub['cpu'] * 1e3:6.1f} ms"
                      f" per interval")
                plant10 = _plant(tmp, port, ns, 0.1)
                rate = asyncio.run(_rate(plant10, producer, seconds))
                print(f"  polled 1,000 nodes every 0.1 s for {seconds:g} s: {rate['rate']:,.0f} values/s using"
                      f" {100 * rate['cpu_share']:.0f} % of one core ({rate['overruns']} overruns)"
                      f" = {100 * rate['cpu_share'] * 10_000 / max(rate['rate'], 1):.0f} % of one core per 10,000 values/s")
            finally:
                producer.close()
                delete_ring(name, force=True)
        finally:
            server.terminate()
            server.wait(10)
    print("summary:")
    print(f"  polled Read {pol['cpu'] * 1e3:.1f} ms CPU/interval vs subscription {sub['cpu'] * 1e3:.1f} ms CPU/interval"
          f" ({sub['cpu'] / pol['cpu']:.1f}x) for 1,000 changing nodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
