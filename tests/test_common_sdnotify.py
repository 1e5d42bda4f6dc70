"""sd_notify on a real AF_UNIX datagram socket given as NOTIFY_SOCKET; a no-op without it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import uuid

import pytest

from conftest import REPO, child_env
from pipeline.common import sdnotify


@pytest.fixture
def path_socket(monkeypatch):
    d = tempfile.mkdtemp(prefix="tpn", dir="/tmp")  # AF_UNIX paths must stay under 108 bytes
    path = os.path.join(d, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()
    os.unlink(path)
    os.rmdir(d)


@pytest.fixture
def abstract_socket(monkeypatch):
    name = f"tagpipe-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def recv(sock) -> str:
    return sock.recv(4096).decode()


def test_ready_status_stopping_reach_the_socket(path_socket):
    assert sdnotify.ready("polling 3 PLCs")
    assert recv(path_socket) == "READY=1\nSTATUS=polling 3 PLCs"
    assert sdnotify.ready()
    assert recv(path_socket) == "READY=1"
    assert sdnotify.status("writer: database down, spilling")
    assert recv(path_socket) == "STATUS=writer: database down, spilling"
    assert sdnotify.stopping("flushing")
    assert recv(path_socket) == "STOPPING=1\nSTATUS=flushing"
    assert sdnotify.watchdog()
    assert recv(path_socket) == "WATCHDOG=1"


def test_abstract_socket_names_start_with_at(abstract_socket):
    assert sdnotify.ready()
    assert recv(abstract_socket) == "READY=1"


def test_no_socket_means_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    assert sdnotify.status("x") is False
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    sdnotify.Watchdog().tick()  # nothing to do, nothing raised


def test_a_socket_nobody_listens_on_is_not_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sdnotify.ready() is False


def test_watchdog_pings_at_most_every_half_interval(abstract_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    now = [100.0]
    wd = sdnotify.Watchdog(clock=lambda: now[0])
    assert wd.interval == 1.0
    wd.tick()
    assert recv(abstract_socket) == "WATCHDOG=1"
    abstract_socket.settimeout(0.2)
    now[0] += 0.5
    wd.tick()
    with pytest.raises(socket.timeout):
        abstract_socket.recv(4096)
    now[0] += 0.6
    wd.tick()
    assert recv(abstract_socket) == "WATCHDOG=1"


def test_watchdog_meant_for_another_pid_is_ignored(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    monkeypatch.delenv("WATCHDOG_PID")
    assert sdnotify.watchdog_interval_s() is None


def test_a_separate_process_notifies_ready(abstract_socket):
    name = os.environ["NOTIFY_SOCKET"]
    code = "from pipeline.common import sdnotify; import sys; sys.exit(0 if sdnotify.ready('up') else 1)"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=child_env(NOTIFY_SOCKET=name), timeout=60)
    assert r.returncode == 0
    assert recv(abstract_socket) == "READY=1\nSTATUS=up"
