"""A test-only MELSEC MC protocol server (3E binary) on 127.0.0.1, in a background thread.

It answers from a device memory, written here from the MC protocol reference manual and
checked in tests/test_mc_server.py with pymcprotocol (an independent client), so the
poller's codec (pipeline/poller/melsec.py) and this server do not share one reading of it:

* batch read 0401: subcommands 0000 (words) / 0001 (bits) with 3-byte device numbers and
  1-byte device codes (Q/L, iQ-F), 0002 / 0003 with 4-byte numbers and 2-byte codes (iQ-R);
* random read 0403: subcommands 0000 / 0002 (word points, then double-word points);
* end codes: 0xC05B unknown device, 0xC056 past the device's allotted points, 0xC051 /
  0xC052 / 0xC054 too many points, 0xC05C bit units on a word device, 0xC059 any other command;
* ``requests`` counts requests per (command, subcommand); ``connections`` accepted;
* fault modes: ``close_after_each`` (answer then close the socket), ``freeze()`` (accept,
  never answer) until ``thaw()``, ``delay_s`` (a slow PLC), ``stop()`` / ``start()`` (the
  port refuses, then listens again on the same port).
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections import Counter

from tests.conftest import free_port
from tests.poller_helpers.loop_thread import start_loop_thread

# name -> (binary device code, bit device)
DEVICE_CODES = {"D": (0xA8, False), "W": (0xB4, False), "R": (0xAF, False), "ZR": (0xB0, False),
                "SD": (0xA9, False), "TN": (0xC2, False), "CN": (0xC5, False), "M": (0x90, True),
                "X": (0x9C, True), "Y": (0x9D, True), "B": (0xA0, True), "L": (0x92, True), "SM": (0x91, True)}
_BY_CODE = {code: (name, bit) for name, (code, bit) in DEVICE_CODES.items()}


class McTestServer:
    def __init__(self, points: int = 16384, sizes: dict[str, int] | None = None, delay_s: float = 0.0,
                 close_after_each: bool = False) -> None:
        self.sizes = {name: points for name in DEVICE_CODES}
        self.sizes.update(sizes or {})
        self.memory: dict[str, dict[int, int]] = {name: {} for name in DEVICE_CODES}
        self.delay_s = delay_s
        self.close_after_each = close_after_each
        self.requests: Counter = Counter()  # (command, subcommand) -> requests received
        self.connections = 0
        self.frozen = threading.Event()
        self._lock = threading.Lock()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    # --- device memory ---
    def set_words(self, device: str, number: int, words: list[int]) -> None:
        with self._lock:
            for i, w in enumerate(words):
                self.memory[device][number + i] = w & 0xFFFF

    def set_bits(self, device: str, number: int, bits: list[int]) -> None:
        with self._lock:
            for i, b in enumerate(bits):
                self.memory[device][number + i] = 1 if b else 0

    def _word(self, name: str, bit: bool, n: int) -> int:
        mem = self.memory[name]
        if not bit:
            return mem.get(n, 0)
        return sum(mem.get(n + k, 0) << k for k in range(16))  # a bit device read in word units

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    # --- protocol ---
    def answer(self, head: bytes, data: bytes) -> bytes:
        """The response frame to one request (``head``: its 9 bytes; ``data``: the rest)."""
        route = head[2:7]
        cmd, sub = struct.unpack_from("<HH", data, 2)
        self.requests[(cmd, sub)] += 1
        body = data[6:]
        try:
            with self._lock:
                payload = self._serve(cmd, sub, body)
            end = 0
        except _EndCode as e:
            end, payload = e.code, route + struct.pack("<HH", cmd, sub)  # error information
        rest = struct.pack("<H", end) + payload
        return b"\xd0\x00" + route + struct.pack("<H", len(rest)) + rest

    def _device(self, body: bytes, at: int, iqr: bool) -> tuple[str, bool, int, int]:
        if iqr:
            number, code = struct.unpack_from("<IH", body, at)
            size = 6
        else:
            number = int.from_bytes(body[at: at + 3], "little")
            code, size = body[at + 3], 4
        if code not in _BY_CODE:
            raise _EndCode(0xC05B)
        name, bit = _BY_CODE[code]
        return name, bit, number, at + size

    def _serve(self, cmd: int, sub: int, body: bytes) -> bytes:
        if cmd == 0x0401 and sub in (0x0000, 0x0001, 0x0002, 0x0003):
            name, bit, start, at = self._device(body, 0, sub >= 2)
            (count,) = struct.unpack_from("<H", body, at)
            bit_units = sub in (0x0001, 0x0003)
            if bit_units and not bit:
                raise _EndCode(0xC05C)
            if count < 1 or count > (7168 if bit_units else 960):
                raise _EndCode(0xC052 if bit_units else 0xC051)
            span = count if (bit_units or not bit) else 16 * count
            if start + span > self.sizes[name]:
                raise _EndCode(0xC056)
            if bit_units:
                bits = [self.memory[name].get(start + k, 0) for k in range(count)] + [0]
                return bytes((bits[i] << 4) | bits[i + 1] for i in range(0, count, 2))
            step = 16 if bit else 1
            return b"".join(struct.pack("<H", self._word(name, bit, start + step * k)) for k in range(count))
        if cmd == 0x0403 and sub in (0x0000, 0x0002):
            nw, nd = body[0], body[1]
            if nw + nd < 1 or nw + nd > (96 if sub == 0x0002 else 192):
                raise _EndCode(0xC054)
            at, out = 2, b""
            for k in range(nw + nd):
                name, bit, n, at = self._device(body, at, sub == 0x0002)
                width = 2 if k >= nw else 1
                step = 16 if bit else 1
                if n + step * width > self.sizes[name]:
                    raise _EndCode(0xC056)
                out += b"".join(struct.pack("<H", self._word(name, bit, n + step * j)) for j in range(width))
            return out
        raise _EndCode(0xC059)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._conns.add(writer)
        try:
            while True:
                head = await reader.readexactly(9)
                if head[:2] != b"\x50\x00":
                    break
                (length,) = struct.unpack_from("<H", head, 7)
                data = await reader.readexactly(length)
                while self.frozen.is_set():
                    await asyncio.sleep(0.02)
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(self.answer(head, data))
                await writer.drain()
                if self.close_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._conns.discard(writer)
            writer.close()

    # --- lifecycle ---
    def start(self) -> "McTestServer":
        """Listen (on a free port the first time, on the same port afterwards)."""
        if not self.port:
            self.port = free_port()

        async def listen() -> None:
            self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

        self._loop, self._thread = start_loop_thread("mc-test-server", listen)
        return self

    def stop(self) -> None:
        """Close the listener and every connection; the port refuses until ``start()``."""
        self.frozen.clear()
        if self._loop is None or self._thread is None:
            return
        loop, server = self._loop, self._server

        async def shutdown() -> None:
            if server is not None:
                server.close()
            for w in list(self._conns):
                w.close()
            await asyncio.sleep(0.05)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        self._thread.join(10)
        self._loop = self._thread = self._server = None

    def freeze(self) -> None:
        self.frozen.set()

    def thaw(self) -> None:
        self.frozen.clear()

    def __enter__(self) -> "McTestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _EndCode(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"end code 0x{code:04X}")
        self.code = code


def _animate(server: McTestServer, t: float) -> None:
    """Plausible moving values for the devices of deploy/tags.melsec.example.toml."""
    import math

    server.set_words("D", 100, [int(200 + 30 * math.sin(t / 10)) & 0xFFFF, int(150 + 20 * math.sin(t / 7)) & 0xFFFF])
    server.set_words("D", 102, list(struct.unpack("<2H", struct.pack("<f", 4.2 + math.sin(t / 5)))))
    server.set_words("D", 104, list(struct.unpack("<2H", struct.pack("<i", int(t)))))
    server.set_words("D", 10, list(struct.unpack("<2H", struct.pack("<f", 60 + 5 * math.sin(t / 20)))))
    server.set_words("TN", 5, [int(t * 10) % 600])
    server.set_bits("M", 0, [int(t) % 10 < 5, int(t) % 10 >= 5])
    server.set_bits("X", 0x1F, [int(t / 3) % 2])
    server.set_bits("X", 0o17, [int(t / 4) % 2])
    server.set_bits("SM", 400, [1])


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.poller_helpers.mc_server --port 5000``: serve on 127.0.0.1 with
    moving values until Ctrl-C (or ``--seconds``), to try a MELSEC tag file by hand."""
    import argparse
    import time

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: until Ctrl-C)")
    args = ap.parse_args(argv)
    server = McTestServer(points=65536)
    server.port = args.port
    server.start()
    print(f"MC test server (3E binary) on 127.0.0.1:{server.port}", flush=True)
    t0 = time.monotonic()
    try:
        while not args.seconds or time.monotonic() - t0 < args.seconds:
            _animate(server, time.monotonic() - t0)
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
