"""Readiness and watchdog notifications from each process, on a real NOTIFY_SOCKET.

Each process runs as systemd would run it (``python -m ...``, separate interpreter) with
NOTIFY_SOCKET pointing at a datagram socket this test holds, and WATCHDOG_USEC set.
"""

from __future__ import annotations

import signal
import socket
import struct
import time
import uuid

import pytest

from conftest import spawn, stop
from test_run_e2e import free_port

pytestmark = pytest.mark.slow


class NotifySocket:
    """An abstract-namespace datagram socket, as systemd's notify socket is."""

    def __init__(self) -> None:
        self.name = f"@tagpipe-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # sender pid, as systemd checks
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self.senders: list[int] = []

    def wait_for(self, pred, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        for m in self.messages:
            if pred(m):
                return m
        while time.monotonic() < deadline:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
            except TimeoutError:
                continue
            m = data.decode()
            pid = 0
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[: struct.calcsize("3i")])[0]
            self.messages.append(m)
            self.senders.append(pid)
            if pred(m):
                return m
        raise AssertionError(f"no {what} within {timeout} s; got {self.messages}")

    def count(self, text: str) -> int:
        return sum(1 for m in self.messages if text in m.split("\n"))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify():
    socks = []

    def make() -> NotifySocket:
        s = NotifySocket()
        socks.append(s)
        return s

    yield make
    for s in socks:
        s.close()


def _ready(m: str) -> bool:
    return "READY=1" in m.split("\n")


def _watchdog_pings(sock: NotifySocket, n: int, timeout: float) -> None:
    start = sock.count("WATCHDOG=1")
    sock.wait_for(lambda m: sock.count("WATCHDOG=1") >= start + n, timeout, f"{n} WATCHDOG=1 pings")


def test_systemd_notify_writer_ready_while_waiting_then_all_ready_and_pinging(notify, tmp_path, ring_name):
    procs = []
    env = dict(RING_NAME=ring_name, WEB_PORT=str(free_port()), WATCHDOG_USEC="1000000")  # ping every 0.5 s
    socks = {role: notify() for role in ("writer", "poller", "web")}
    try:
        # The writer first, with no ring: it must report ready (and say it waits), so its
        # unit does not fail while the poller is down.
        procs.append(spawn(["-m", "pipeline.writer"], cwd=tmp_path, NOTIFY_SOCKET=socks["writer"].name, **env))
        m = socks["writer"].wait_for(_ready, 60, "READY=1 from the waiting writer")
        assert "waiting" in m.lower(), m
        procs.append(spawn(["-m", "pipeline.poller"], cwd=tmp_path, NOTIFY_SOCKET=socks["poller"].name, **env))
        procs.append(spawn(["-m", "web"], cwd=tmp_path, NOTIFY_SOCKET=socks["web"].name, **env))
        socks["poller"].wait_for(_ready, 60, "READY=1 from the poller")
        socks["web"].wait_for(_ready, 60, "READY=1 from the web process")
        socks["writer"].wait_for(lambda m: _ready(m) and "writing" in m, 60, "READY=1 once the writer writes")
        for role, sock in socks.items():
            _watchdog_pings(sock, 3, 30)
        # Orderly stop: each says STOPPING=1 and exits 0.
        for role, proc in zip(("writer", "poller", "web"), procs):
            proc.send_signal(signal.SIGTERM)
        for role, proc in zip(("writer", "poller", "web"), procs):
            assert proc.wait(60) == 0, (role, proc.stderr.read()[-2000:])
            socks[role].wait_for(lambda m: "STOPPING=1" in m.split("\n"), 10, f"STOPPING=1 from {role}")
    finally:
        for p in procs:
            stop(p, timeout=30)


def test_systemd_notify_supervisor_reports_ready_and_children_stay_quiet(notify, tmp_path, ring_name):
    sock = notify()
    proc = spawn(["-m", "pipeline"], cwd=tmp_path, RING_NAME=ring_name, WEB_PORT=str(free_port()),
                 NOTIFY_SOCKET=sock.name, WATCHDOG_USEC="1000000")
    try:
        m = sock.wait_for(_ready, 60, "READY=1 from the supervisor")
        assert "status page" in m
        _watchdog_pings(sock, 3, 30)
        # Only the supervisor (the unit's main pid) talks to the socket: systemd would
        # reject the children's messages (NotifyAccess=main), so they stay quiet.
        assert set(sock.senders) == {proc.pid}, (sock.senders, proc.pid)
        assert sock.count("READY=1") == 1, sock.messages
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.stderr.read()[-3000:]
    finally:
        stop(proc, timeout=30)


def test_systemd_notify_writer_waiting_for_the_ring_keeps_pinging_the_watchdog(notify, tmp_path, ring_name):
    # A poller unit down for longer than WatchdogSec must not get the waiting writer killed.
    sock = notify()
    proc = spawn(["-m", "pipeline.writer"], cwd=tmp_path, RING_NAME=ring_name, NOTIFY_SOCKET=sock.name, WATCHDOG_USEC="1000000")
    try:
        sock.wait_for(_ready, 60, "READY=1 from the waiting writer")
        _watchdog_pings(sock, 3, 20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        stop(proc, timeout=30)
