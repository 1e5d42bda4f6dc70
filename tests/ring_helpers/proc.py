"""Run ``role.py`` as a separate interpreter and follow its JSON lines (for the tests)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ROLE = HERE / "role.py"


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("RING_", "BUFFER_", "NOTIFY_SOCKET"))}
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e["PYTHONUNBUFFERED"] = "1"
    return e


class Role:
    """One ``role.py`` process. ``event(name)`` waits for its JSON line of that event."""

    def __init__(self, command: str, ring: str, *args: str, stderr_path: Path | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.argv = [sys.executable, str(ROLE), command, "--ring", ring, *map(str, args)]
        self._err = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=self._err, env={**env(), **(extra_env or {})},
                                     cwd=str(REPO))
        self.pid = self.proc.pid
        self._buf = b""
        self.events: list[dict] = []

    def _lines(self, timeout: float) -> None:
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return
        chunk = os.read(fd, 65536)
        if not chunk:
            raise EOFError(f"{self.argv[2]} (pid {self.pid}) ended with {self.proc.wait(5)}; events {self.events}")
        self._buf += chunk
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            self.events.append(json.loads(line))

    def event(self, name: str, timeout: float = 60.0) -> dict:
        """The first ``name`` event (waits for it). Raises TimeoutError, EOFError."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if ev["event"] == name:
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {name!r} event from {self.argv[2]} within {timeout} s; got {self.events}")
            self._lines(min(left, 0.5))

    def wait(self, timeout: float = 60.0) -> int:
        rc = self.proc.wait(timeout)
        self.proc.stdout.close()
        return rc

    def kill(self, sig: int = signal.SIGKILL) -> int:
        if self.proc.poll() is None:
            os.kill(self.pid, sig)
        return self.wait()

    def stop(self) -> None:
        """Make sure the process is gone (teardown): SIGTERM, then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout and not self.proc.stdout.closed:
            self.proc.stdout.close()
        if self._err is not subprocess.DEVNULL:
            self._err.close()


def run(command: str, ring: str, *args: str, timeout: float = 60.0, rc: int = 0) -> dict[str, dict]:
    """Run a role to completion; returns its events by name (the last of each).

    Raises AssertionError if it does not end with exit status ``rc`` (-9: SIGKILL).
    """
    r = Role(command, ring, *args)
    try:
        out, _ = r.proc.communicate(timeout=timeout)
    finally:
        r.stop()
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert r.proc.returncode == rc, f"{command} ended with {r.proc.returncode}, expected {rc}; events {events}"
    return {ev["event"]: ev for ev in events}
