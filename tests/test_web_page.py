"""The status page in real headless Chromium, driven over the DevTools protocol on a pipe.

``--remote-debugging-pipe`` makes Chromium read DevTools commands from fd 3 and write
answers to fd 4 (NUL-terminated JSON), so no websocket library is needed. The page must
show the same numbers as ``/api/status`` and follow the counters as the test changes them,
without a reload. A screenshot goes to ``test-artifacts/status_page.png``.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import ARTIFACTS, require_program, spawn, stop
from pipeline.common.telemetry import DB_STATE_CODES, plc_slot
from shm import delete_ring
from shm.ring import now_us
from test_web_api import PLC, Rig
from test_web_process import free_port, get, wait_listening


def _high_fd(fd: int) -> int:
    hi = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return hi


class Chromium:
    """A headless Chromium and one page, over the DevTools pipe. Every wait is bounded."""

    def __init__(self, exe: str, profile: str, width: int = 1600, height: int = 1000) -> None:
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()
        # Move the child's ends above 9 so "exec 3<&X 4>&Y" cannot clobber one with the other.
        cmd_r, out_w = _high_fd(cmd_r), _high_fd(out_w)
        flags = [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--remote-debugging-pipe", f"--user-data-dir={profile}",
            f"--window-size={width},{height}", "about:blank",
        ]
        # A tiny launcher puts the pipe ends on fds 3 and 4, where Chromium expects them
        # (dash cannot redirect fds above 9, and preexec_fn is unsafe with threads).
        launcher = "import os,sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); os.execv(sys.argv[3], sys.argv[3:])"
        self.log = open(profile + "-chromium.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", launcher, str(cmd_r), str(out_w), exe, *flags],
            pass_fds=(cmd_r, out_w), stdout=subprocess.DEVNULL, stderr=self.log,
            start_new_session=True,
        )
        os.close(cmd_r)
        os.close(out_w)
        self._buf = b""
        self._id = 0
        self.session = None
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from Chromium")
            ready, _, _ = select.select([self._out_r], [], [], left)
            if ready:
                chunk = os.read(self._out_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})

    def eval(self, expression: str):
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"])
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                v = self.eval(expression)
            except RuntimeError:  # page still loading (document.body not there yet)
                v = None
            if v:
                return v
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for: {expression}")

    def screenshot(self, path) -> None:
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            os.close(self._cmd_w)  # Chromium exits when its command pipe closes
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        os.close(self._out_r)
        self.log.close()


@pytest.fixture
def browser(tmp_path):
    exe = require_program("chromium")
    profile = tmp_path / "profile"
    b = Chromium(exe, str(profile))
    yield b
    b.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def served(ring_name, tmp_path):
    port = free_port()
    proc = spawn(["-m", "web"], cwd=tmp_path, RING_NAME=ring_name, WEB_PORT=str(port), TZ="Asia/Seoul")
    try:
        wait_listening(proc, port)
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


VALUES = """(() => { const o = {}; document.querySelectorAll('[id^="v-"]').forEach(e => {
  o[e.id] = {value: e.dataset.value, text: e.textContent}; }); return o; })()"""
PLC_ROWS = """Array.from(document.querySelectorAll('#plcs tbody tr[data-plc]')).map(tr =>
  [tr.dataset.plc].concat(Array.from(tr.cells).slice(1).map(c => c.dataset.value + '|' + c.textContent)))"""


# Pixels of the "in" line's colour (#3498db) on the chart canvas.
CHART_HAS_BLUE = """(() => { const c = document.getElementById('chart'); const d = c.getContext('2d')
  .getImageData(0, 0, c.width, c.height).data; let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] < 0x50 && d[i + 1] > 0x80 && d[i + 1] < 0xb0 && d[i + 2] > 0xc0) n++;
  return n; })()"""


def updates(b) -> int:
    return int(b.eval("document.body.dataset.updates"))


def settle(b, base: str) -> tuple[dict, dict]:
    """Wait for a page refresh after now, then return (page values, API figures)."""
    n = updates(b)
    b.wait_for(f"parseInt(document.body.dataset.updates) >= {n + 2}")
    return b.eval(VALUES), get(base + "/api/status")[1]


def test_status_page_shows_the_api_numbers_and_follows_the_counters(served, browser, ring_name):
    proc, base = served
    rig = Rig(ring_name, capacity=100_000)
    # Heartbeats as a live poller and writer send them, so a slow machine cannot make
    # the roles look dead between two steps of this test.
    beating = threading.Event()
    beater = threading.Thread(target=lambda: [rig.beat() for _ in iter(lambda: beating.wait(0.5), True)], daemon=True)
    beater.start()
    try:
        slot = plc_slot(rig.p, 0)
        slot.set_code(PLC)
        slot.set("connected", 1)
        slot.set("polls", 1234)
        slot.set("errors", 2)
        slot.set("last_good_poll_us", now_us())
        rig.p.set("poller.plc_count", 1)
        del slot  # it holds a view of the mapping, which would keep it from closing
        rig.publish(40_000, age_s=4)
        rig.commit(15_000)
        rig.c.set("writer.backup_files_pending", 3)
        rig.c.set("writer.backup_rows_pending", 1500)
        rig.c.set("writer.rows_replayed", 98_765)
        rig.c.set("writer.rows_quarantined", 4)

        browser.call("Page.navigate", {"url": base + "/?lang=en"})
        browser.wait_for("parseInt(document.body.dataset.updates) >= 1")
        page, api = settle(browser, base)
        f = api["figures"]
        assert page["v-used"]["value"] == str(f["buffer"]["current_size"]) == "25000"
        assert page["v-used"]["text"] == "25,000"
        assert page["v-max"]["text"] == "100,000"
        assert float(page["v-util"]["value"]) == f["buffer"]["utilization_pct"] == 25.0
        assert page["v-util"]["text"] == "25.0"
        assert page["v-backups"]["text"] == "3" and page["v-backup-rows"]["text"] == "1,500"
        assert page["v-replayed"]["text"] == "98,765"
        assert page["v-quarantined"]["text"] == "4"
        assert page["v-lost"]["text"] == "0"
        assert page["v-pending"]["text"] == "25,000"
        assert float(page["v-oldest"]["value"]) == pytest.approx(f["lag"]["oldest_unwritten_age_s"], abs=3)
        assert page["v-writer"]["text"] == "running" and page["v-db"]["text"] == "connected"
        assert browser.eval("document.body.dataset.status") == api["health"]["status"]
        rows = browser.eval(PLC_ROWS)
        assert rows[0][0] == PLC and rows[0][1] == "1|yes" and rows[0][3].startswith("1234|1,234") and rows[0][4].startswith("2|")
        assert browser.eval("document.getElementById('banner').hidden") is True

        # The counters change: the page follows without a reload.
        marker = browser.eval("window.__marker = Math.random()")
        rig.publish(50_000, age_s=1)  # 75,000 of 100,000: above the 60 % band, under the 80 % alert
        rig.c.set("writer.rows_quarantined", 9)
        rig.c.set("writer.db_state", DB_STATE_CODES["down"])
        browser.wait_for("document.getElementById('v-used').dataset.value === '75000'")
        page, api = settle(browser, base)
        assert browser.eval("window.__marker") == marker  # same document: no reload
        assert page["v-used"]["text"] == "75,000" and page["v-util"]["text"] == "75.0"
        assert page["v-quarantined"]["text"] == "9"
        assert page["v-db"]["text"].startswith("DOWN")
        assert browser.eval("document.getElementById('health').textContent") == "DEGRADED"
        assert browser.eval("Array.from(document.querySelectorAll('#reasons li')).map(l => l.dataset.code)") == ["database_down"]
        assert browser.eval("document.getElementById('banner').hidden") is True
        # The chart's history (sampled once a second by the web process) saw the burst.
        deadline = time.monotonic() + 20
        while not any((p["in_per_s"] or 0) > 1000 for p in api["history"]) and time.monotonic() < deadline:
            time.sleep(0.5)
            api = get(base + "/api/status")[1]
        assert any((p["in_per_s"] or 0) > 1000 for p in api["history"]), api["history"]
        blue = browser.wait_for(CHART_HAS_BLUE)
        assert blue > 0
        browser.screenshot(ARTIFACTS / "status_page.png")

        # The writer goes away: PIPELINE DOWN in Korean.
        beating.set()
        beater.join(5)
        rig.c.close()
        rig.c = None
        browser.call("Page.navigate", {"url": base + "/?lang=ko"})
        browser.wait_for("document.body.dataset.banner === 'down'")
        text = browser.eval("document.getElementById('banner-text').textContent")
        assert "PIPELINE DOWN" in text and "DB 기록기 정지" in text
        assert browser.eval("document.getElementById('health').textContent") == "위험"
        browser.screenshot(ARTIFACTS / "status_page_down_ko.png")
    finally:
        beating.set()
        beater.join(5)
        rig.close()

    # The ring itself goes away: the page says so.
    delete_ring(ring_name, force=True)
    browser.wait_for("document.getElementById('banner-text').textContent.includes('링 버퍼 없음')")
    assert browser.eval("document.getElementById('v-used').textContent") == "-"

    # The web process stops: the page says its figures are STALE.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    browser.wait_for("document.body.dataset.banner === 'stale'", timeout=30)
    assert "STALE" in browser.eval("document.getElementById('banner-text').textContent")
    browser.screenshot(ARTIFACTS / "status_page_stale_ko.png")
