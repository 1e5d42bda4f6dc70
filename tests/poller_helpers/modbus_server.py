"""pymodbus's own Modbus TCP server on 127.0.0.1, in a background thread, for the tests.

* known register contents (holding, input, coils, discrete inputs; 0-based addresses as
  on the wire), changeable while it runs (``set_holding``);
* ``requests`` counts read requests per function code (coalescing is checked with it);
* ``freeze()`` makes it accept requests and never answer (a hung PLC) until ``thaw()``;
* ``stop()`` closes the listener and every connection (the port then refuses), and
  ``start()`` listens again on the same port (the PLC comes back).

``Blackhole`` accepts TCP connections and never answers; ``refused_port()`` is a port
on which nothing listens.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections import Counter

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from tests.conftest import free_port, wait_until
from tests.poller_helpers.loop_thread import start_loop_thread

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

_KIND_OF_FC = {3: "hr", 4: "ir", 1: "co", 2: "di"}


class ModbusTestServer:
    def __init__(self, holding: list[int] | None = None, inputs: list[int] | None = None,
                 coils: list[bool] | None = None, discrete: list[bool] | None = None, unit_id: int = 1) -> None:
        self.holding = list(holding or [0] * 16)
        self.inputs = list(inputs or [0] * 16)
        self.coils = list(coils or [False] * 16)
        self.discrete = list(discrete or [False] * 16)
        self.unit_id = unit_id
        self.requests: Counter = Counter()  # function code -> read requests received
        self.frozen = threading.Event()
        self._pending: dict[str, dict[int, int]] = {"hr": {}, "ir": {}}
        self._lock = threading.Lock()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: ModbusTcpServer | None = None

    # --- register contents ---
    def set_holding(self, address: int, words: list[int]) -> None:
        """Change holding registers from ``address`` (seen by the next request)."""
        with self._lock:
            for i, w in enumerate(words):
                self._pending["hr"][address + i] = w

    def _device(self) -> SimDevice:
        def bits(values: list[bool]) -> list[bool]:
            pad = (-len(values)) % 16
            return list(values) + [False] * pad

        return SimDevice(
            self.unit_id,
            simdata=(
                [SimData(0, values=bits(self.coils), datatype=DataType.BITS)],
                [SimData(0, values=bits(self.discrete), datatype=DataType.BITS)],
                [SimData(0, values=self.holding, datatype=DataType.REGISTERS)],
                [SimData(0, values=self.inputs, datatype=DataType.REGISTERS)],
            ),
            action=self._action,
        )

    async def _action(self, fc, start_address, address, count, registers, set_values):
        kind = _KIND_OF_FC.get(fc)
        if kind:
            self.requests[fc] += 1
        while self.frozen.is_set():
            await asyncio.sleep(0.02)
        if kind in ("hr", "ir"):
            with self._lock:
                pend, self._pending[kind] = self._pending[kind], {}
            for a, w in pend.items():
                registers[a - start_address] = w
                (self.holding if kind == "hr" else self.inputs)[a] = w
        return None

    # --- lifecycle ---
    def start(self) -> "ModbusTestServer":
        """Listen (on a free port the first time, on the same port afterwards)."""

        async def listen() -> None:
            self._server = ModbusTcpServer(self._device(), address=("127.0.0.1", self.port))
            await self._server.serve_forever(background=True)
            self.port = self._server.transport.sockets[0].getsockname()[1]

        self._loop, self._thread = start_loop_thread("modbus-test-server", listen)
        return self

    def stop(self) -> None:
        """Close the listener and all connections; the port refuses until ``start()``."""
        self.frozen.clear()
        if self._loop is None or self._thread is None:
            return
        loop, server = self._loop, self._server

        async def shutdown() -> None:
            if server is not None:
                await server.shutdown()
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        self._thread.join(10)
        self._loop = self._thread = self._server = None

    def freeze(self) -> None:
        self.frozen.set()

    def thaw(self) -> None:
        self.frozen.clear()

    def __enter__(self) -> "ModbusTestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Blackhole:
    """Accepts TCP connections on 127.0.0.1 and never answers (a black-holed PLC)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.accepted.append(conn)
            except (socket.timeout, OSError):
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for c in self.accepted:
            c.close()
        self.sock.close()


# A port on 127.0.0.1 where nothing listens (connections are refused).
refused_port = free_port


def wait_for(cond, timeout: float = 20.0, step: float = 0.05):
    """``wait_until`` with the poller tests' defaults (20 s, 50 ms steps)."""
    return wait_until(cond, timeout, "condition", step)
