"""systemd notifications (sd_notify) in plain socket code; no-ops outside systemd."""

from __future__ import annotations

import os
import socket


def _address() -> str | None:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return None
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    return addr


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``READY=1``) to systemd. False when not under systemd or on error."""
    addr = _address()
    if addr is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(addr)
            sock.sendall(message.encode())
        return True
    except OSError:
        return False


def ready(status: str | None = None) -> bool:
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def status(text: str) -> bool:
    return notify(f"STATUS={text}")


def stopping(text: str | None = None) -> bool:
    return notify("STOPPING=1" + (f"\nSTATUS={text}" if text else ""))


def watchdog() -> bool:
    return notify("WATCHDOG=1")


def watchdog_interval_s() -> float | None:
    """Half of systemd's WatchdogSec for this process (how often to ping), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None


class Watchdog:
    """Pings the watchdog at most every half WatchdogSec; ``tick()`` is cheap to call often."""

    def __init__(self, clock=None) -> None:
        import time

        self._clock = clock or time.monotonic
        self.interval = watchdog_interval_s()
        self._next = 0.0

    def tick(self) -> None:
        if self.interval is None:
            return
        now = self._clock()
        if now >= self._next:
            watchdog()
            self._next = now + self.interval
