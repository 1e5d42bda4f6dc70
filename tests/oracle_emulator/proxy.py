"""A TCP fault proxy for the Oracle tests: sits between client and server on 127.0.0.1.

Faults, switched on and off from the test while traffic flows:

- ``cut()``: close every open connection (the client sees DPY-4011 on its next call);
- ``refuse()`` / ``allow()``: stop listening, so new connections are refused
  (DPY-6005), and listen again on the same port;
- ``blackhole(True)``: forward nothing either way, for open and new connections alike
  (only a call timeout gets the client out); ``hold_open_connections()``: the same for
  the connections open now only, for good;
- ``drop_next_commit_reply()``: let the next COMMIT reach the server, swallow the
  server's answer and cut the connection: the client cannot know whether it committed;
- ``drop_next_commit()``: cut the connection instead of forwarding the next COMMIT: the
  client cannot know either, but this time nothing was committed;
- ``blackhole_at_next("insert" | "commit")``: forward the next multi-row INSERT (a client
  DATA packet of at least ``BIG_PACKET`` bytes: only a batch's bind data is that big) or
  COMMIT to the server, then black-hole everything (as ``blackhole(True)``, no reset):
  the hole starts mid-INSERT or mid-COMMIT, the server has the statement, its answer is
  held. ``blackhole(False)`` ends it.

A COMMIT is recognised in the client's stream as a TNS DATA packet (type 6) whose TTI
message is a function call (3) with function code COMMIT (14).
"""

from __future__ import annotations

import select
import socket
import threading
import time

TNS_DATA = 6
TTI_FUNCTION = 3
FUNC_COMMIT = 14


BIG_PACKET = 4096


def is_big_call(chunk: bytes) -> bool:
    """True if ``chunk`` starts a TNS DATA function call of at least BIG_PACKET bytes (an
    executemany's bind data; statement cache hits send no SQL text to match on)."""
    return len(chunk) >= BIG_PACKET and chunk[4] == TNS_DATA and chunk[10] == TTI_FUNCTION


def is_commit(chunk: bytes) -> bool:
    """True if ``chunk`` starts with a TNS DATA packet carrying a COMMIT function call."""
    return len(chunk) >= 12 and chunk[4] == TNS_DATA and chunk[10] == TTI_FUNCTION and chunk[11] == FUNC_COMMIT


class _Pair:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self.closed = threading.Event()
        self.held = False  # black-holed for good (hold_open_connections)

    def close(self) -> None:
        self.closed.set()
        for s in (self.client, self.server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class FaultProxy:
    """Listens on 127.0.0.1 (free port) and forwards to ``upstream_port``."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._blackhole = threading.Event()
        self._drop_commit = threading.Event()
        self._lose_commit = threading.Event()
        self._hole_at: str | None = None  # "insert" / "commit": black-hole after the next one
        self.holes_started = 0
        self.commits_dropped = 0
        self.commit_replies_dropped = 0
        self.connections = 0
        self._running = True
        self._listener = self._listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        self._accept_thread.start()

    # --- faults ---
    def cut(self) -> None:
        """Close every open connection now."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for p in pairs:
            p.close()

    def refuse(self) -> None:
        """Close the listener: new connections are refused until ``allow()``."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def allow(self) -> None:
        """Listen again on the same port."""
        with self._lock:
            if self._listener is None:
                self._listener = self._listen(self.port)

    def blackhole(self, on: bool = True) -> None:
        """Forward nothing (on) or resume forwarding (off). Bytes sent meanwhile are held."""
        if on:
            self._blackhole.set()
        else:
            self._blackhole.clear()

    def blackhole_at_next(self, kind: str) -> None:
        """Arm: forward the next ``"insert"`` (big DATA call) or ``"commit"``, then
        black-hole everything until ``blackhole(False)``."""
        assert kind in ("insert", "commit"), kind
        self._hole_at = kind

    def drop_next_commit_reply(self) -> None:
        """Arm: the next COMMIT goes through, its reply is swallowed, the connection is cut."""
        self._drop_commit.set()

    def hold_open_connections(self) -> None:
        """Black-hole the connections open now for good (until ``cut()``), while new ones
        are served normally: a server that accepted a connection and then died behind a
        load balancer that keeps the TCP session up."""
        with self._lock:
            for p in self._pairs:
                p.held = True

    def drop_next_commit(self) -> None:
        """Arm: the next COMMIT never reaches the server; the connection is cut."""
        self._lose_commit.set()

    def close(self) -> None:
        self._running = False
        self.refuse()
        self.cut()
        self._accept_thread.join(5)

    # --- plumbing ---
    def _listen(self, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(32)
        s.settimeout(0.1)
        return s

    def _accept_loop(self) -> None:
        while self._running:
            listener = self._listener
            if listener is None:
                time.sleep(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                time.sleep(0.05)  # listener closed by refuse()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            pair = _Pair(client, server)
            with self._lock:
                self._pairs.append(pair)
                self.connections += 1
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair: _Pair) -> None:
        """Forward both directions of one connection until it closes."""
        socks = [pair.client, pair.server]
        try:
            while not pair.closed.is_set():
                if self._blackhole.is_set() or pair.held:
                    time.sleep(0.02)
                    continue
                readable, _, _ = select.select(socks, [], [], 0.1)
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        pair.close()
                        return
                    if s is pair.client:
                        if self._lose_commit.is_set() and is_commit(data):
                            self._lose_commit.clear()
                            self.commits_dropped += 1
                            pair.close()
                            return
                        hole = self._hole_at
                        if hole and (is_commit(data) if hole == "commit" else is_big_call(data)):
                            self._hole_at = None
                            pair.server.sendall(data)  # the server gets it; its answer is held
                            self.holes_started += 1
                            self._blackhole.set()
                            continue
                        if self._drop_commit.is_set() and is_commit(data):
                            self._drop_commit.clear()
                            pair.server.sendall(data)
                            self._swallow_reply(pair)
                            return
                        pair.server.sendall(data)
                    else:
                        pair.client.sendall(data)
        except OSError:
            pair.close()

    def _swallow_reply(self, pair: _Pair) -> None:
        # Wait for the server's answer (so the commit really happened), discard it and
        # cut the connection: the client is left not knowing the outcome.
        pair.server.settimeout(10)
        try:
            pair.server.recv(65536)
        except OSError:
            pass
        self.commit_replies_dropped += 1
        pair.close()
