"""``python -m web`` as a real process: listens, answers, follows the ring, stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.error
import urllib.request

import pytest

from conftest import free_port, spawn, stop
from test_web_api import Rig


def get(url: str, timeout: float = 5.0) -> tuple[int, dict | str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            status, body, ctype = r.status, r.read().decode(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, body, ctype = e.code, e.read().decode(), e.headers.get("Content-Type", "")
    return status, (json.loads(body) if ctype.startswith("application/json") else body)


def wait_listening(proc, port: int, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"web exited {proc.returncode}: {proc.stderr.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("web did not listen in time")


@pytest.fixture
def web(ring_name, tmp_path):
    port = free_port()
    proc = spawn(["-m", "web"], cwd=tmp_path, RING_NAME=ring_name, WEB_PORT=str(port), WEB_HOST="127.0.0.1")
    try:
        wait_listening(proc, port)
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
        proc.communicate(timeout=10)  # drain and close the pipes


def test_served_process_answers_before_and_after_the_ring_exists(web, ring_name):
    proc, base = web
    status, body = get(base + "/api/buffer/health")
    assert status == 503 and body["status"] == "unhealthy" and body["reasons"][0].startswith("ring missing")
    status, page = get(base + "/")
    assert status == 200 and "<canvas" in page
    rig = Rig(ring_name)
    try:
        rig.publish(123)
        rig.commit(23)
        status, body = get(base + "/api/buffer/status")
        assert status == 200 and body["current_size"] == 100 and body["max_size"] == 1000
        status, body = get(base + "/api/buffer/health")
        assert status == 200 and body["status"] == "healthy", body
        for path in ("/api/buffer/writer/metrics", "/api/buffer/metrics", "/api/status", "/metrics", "/static/status.js"):
            assert get(base + path)[0] == 200, path
        status, body = get(base + "/api/does-not-exist")
        assert status == 404 and body["status"] == 404
        req = urllib.request.Request(base + "/api/buffer/status", method="DELETE")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=5)
        assert e.value.code == 405
    finally:
        rig.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    err = proc.stderr.read()
    assert f"status page on {base}/" in err
    assert "Traceback" not in err


def test_bad_setting_exits_2_with_one_line(ring_name, tmp_path):
    proc = spawn(["-m", "web"], cwd=tmp_path, RING_NAME=ring_name, WEB_PORT="eighty")
    try:
        _, err = proc.communicate(timeout=30)  # communicate() also closes the pipes
        assert proc.returncode == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "WEB_PORT" in lines[0] and "eighty" in lines[0]
    finally:
        stop(proc)
    proc = spawn(["-m", "web"], cwd=tmp_path, RING_NAME=ring_name, WEB_LANG="fr")
    try:
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 2 and "WEB_LANG" in err
    finally:
        stop(proc)


@pytest.mark.parametrize("host, caught_by", [("999.1.1.1", "settings"), ("no-such-host.invalid", "waitress")])
def test_a_web_host_that_is_no_address_exits_2_with_one_line_and_no_traceback(ring_name, tmp_path, host, caught_by):
    """Issue 12 item 7: a mistyped address is refused by the settings check; a well-formed
    name that does not resolve makes waitress raise ValueError, caught as a bad setting (exit 2,
    which systemd's RestartPreventExitStatus= and the supervisor do not restart)."""
    proc = spawn(["-m", "web"], cwd=tmp_path, RING_NAME=ring_name, WEB_PORT=str(free_port()), WEB_HOST=host)
    try:
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 2, err
        bad = [line for line in err.splitlines() if "bad setting WEB_HOST" in line]
        assert len(bad) == 1 and repr(host) in bad[0], err
        assert "Traceback" not in err and "ERROR" not in err.replace(bad[0], "")
        if caught_by == "settings":
            assert len(err.strip().splitlines()) == 1  # before logging starts: the only line
    finally:
        stop(proc)


def test_sigint_also_stops_with_exit_0(web):
    proc, base = web
    assert get(base + "/api/status")[0] == 200
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0


def test_tells_systemd_ready_pings_the_watchdog_and_says_stopping(ring_name, tmp_path):
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(1.0)
    port = free_port()
    proc = spawn(["-m", "web"], cwd=tmp_path, RING_NAME=ring_name, WEB_PORT=str(port),
                 NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="400000")
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (any("READY=1" in m for m in seen) and any("WATCHDOG=1" in m for m in seen)):
            try:
                seen.append(sock.recv(4096).decode())
            except TimeoutError:
                pass
        assert any("READY=1" in m for m in seen), seen
        assert any("WATCHDOG=1" in m for m in seen), seen
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("STOPPING=1" in m for m in seen):
            try:
                seen.append(sock.recv(4096).decode())
            except TimeoutError:
                pass
        assert any("STOPPING=1" in m for m in seen), seen
        assert any("pipeline unhealthy" in m for m in seen), seen  # no ring: STATUS says so
        assert proc.wait(20) == 0
    finally:
        stop(proc)
        proc.communicate(timeout=10)  # drain and close the pipes
        sock.close()


def test_web_uses_no_private_waitress_names():
    """A waitress upgrade must not break the page: only its public API is used."""
    import re

    from conftest import REPO

    private = re.compile(r"\b(_map|wasyncore|task_dispatcher|_start)\b")
    hits = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in sorted((REPO / "web").rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if private.search(line)
    ]
    assert not hits, "private waitress names in web/:\n" + "\n".join(hits)


def test_liveness_probe_needs_an_http_answer(web):
    """The watchdog is fed only after an answer: a socket that accepts but never answers
    (a wedged event loop looks like that) fails the probe within its timeout."""
    from pipeline.common.httpprobe import answers

    proc, base = web
    assert answers("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout_s=5.0)
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(1)
        t0 = time.monotonic()
        assert not answers("127.0.0.1", mute.getsockname()[1], timeout_s=0.5)
        assert time.monotonic() - t0 < 3.0
    assert not answers("127.0.0.1", free_port(), timeout_s=0.5)  # nothing listening
