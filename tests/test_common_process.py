"""Stop signals in the gunicorn manner, with real signals to a separate interpreter:
the first SIGTERM asks for an orderly stop, the second stops at once with exit 5."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from conftest import REPO, child_env
from pipeline.common import exitcodes
from pipeline.common.process import StopSignals

LOOP = """
import sys, time
from pipeline.common.process import StopSignals
stop = StopSignals().install()
print("ready", flush=True)
while not stop.requested:
    time.sleep(0.01)
print("stopping after", stop.signal_name, flush=True)
if "--slow" in sys.argv:
    time.sleep(60)  # a long flush, interrupted by a second signal
sys.exit(0)
"""


def start(*args: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", LOOP, *args], cwd=REPO, env=child_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def test_first_sigterm_asks_for_an_orderly_stop():
    p = start()
    try:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        assert p.returncode == exitcodes.OK, err
        assert "stopping after SIGTERM" in out
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_second_signal_stops_at_once_with_exit_5():
    p = start("--slow")
    try:
        p.send_signal(signal.SIGINT)
        assert p.stdout.readline().strip() == "stopping after SIGINT"
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        assert p.returncode == exitcodes.FORCED == 5
        assert time.monotonic() - t0 < 30
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_sleep_returns_early_once_requested():
    s = StopSignals()
    assert s.sleep(0.05) is False
    s.request()
    t0 = time.monotonic()
    assert s.sleep(30) is True and s() is True
    assert time.monotonic() - t0 < 5


def test_exit_codes_are_distinct_and_named():
    codes = [exitcodes.OK, exitcodes.ERROR, exitcodes.CONFIG, exitcodes.RING_NEEDS_ATTENTION,
             exitcodes.ROLE_TAKEN, exitcodes.FORCED, exitcodes.CHECK_FAILED]
    assert codes == [0, 1, 2, 3, 4, 5, 6]
    assert set(exitcodes.NAMES) == set(codes)


COUNTING = """
import signal, sys, time
from pipeline.common.process import StopSignals
stop = StopSignals(exit_on_second=False, hangup=True).install()
print("ready", flush=True)
while stop.count < 3:
    time.sleep(0.01)
print("counted", stop.count, "last", stop.signal_name, flush=True)
"""


def test_supervisor_manner_counts_every_signal_and_never_exits_by_itself():
    # The supervisor's kind (one class for both): the second signal is counted, not an
    # exit, because it must SIGKILL its children first; SIGHUP counts as a stop too.
    p = subprocess.Popen([sys.executable, "-c", COUNTING], cwd=REPO, env=child_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            p.send_signal(sig)
            time.sleep(0.2)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        assert out.strip() == "counted 3 last SIGHUP"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
