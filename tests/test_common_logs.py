"""One log line format for every process: process and component on each line; no
timestamp under systemd (the journal adds its own)."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys

import pytest

from conftest import REPO, child_env
from pipeline.common.logs import log_settings, setup_logging
from pipeline.common.settings import load_settings


@pytest.fixture(autouse=True)
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def test_each_line_has_time_process_and_component(monkeypatch):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    out = io.StringIO()
    log = setup_logging("writer", "INFO", stream=out)
    log.info("started")
    logging.getLogger("tagpipe.shm").warning("ring is 85.0% full")
    logging.getLogger("tagpipe.sink.oracle").debug("not shown at INFO")
    logging.getLogger("urllib3").error("foreign logger")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    ts = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "
    assert re.fullmatch(ts + r"INFO \[writer/writer\] started", lines[0])
    assert re.fullmatch(ts + r"WARNING \[writer/shm\] ring is 85\.0% full", lines[1])
    assert re.fullmatch(ts + r"ERROR \[writer/urllib3\] foreign logger", lines[2])


@pytest.mark.parametrize("var", ["JOURNAL_STREAM", "INVOCATION_ID"])
def test_no_timestamp_under_systemd(monkeypatch, var):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.setenv(var, "8:12345")
    out = io.StringIO()
    setup_logging("poller", "DEBUG", stream=out)
    logging.getLogger("tagpipe.modbus").debug("read 125 registers")
    assert out.getvalue() == "DEBUG [poller/modbus] read 125 registers\n"


def test_setup_again_replaces_the_handler():
    a, b = io.StringIO(), io.StringIO()
    setup_logging("web", stream=a)
    setup_logging("web", stream=b)
    logging.getLogger("tagpipe.api").warning("once")
    assert a.getvalue() == "" and b.getvalue().count("once") == 1


def test_effective_settings_are_logged_once_with_secrets_masked():
    out = io.StringIO()
    log = setup_logging("writer", stream=out)
    log_settings(log, load_settings(env={"ORACLE_PASSWORD": "hunter2"}, env_file=None))
    text = out.getvalue()
    assert text.count("effective settings") == 1
    assert "hunter2" not in text and "ORACLE_PASSWORD='********'" in text


def test_a_process_logs_to_stderr_in_this_format():
    code = "from pipeline.common.process import start_process; s, log = start_process('poller', env_file=None); log.warning('hello')"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=child_env(JOURNAL_STREAM="8:1"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "WARNING [poller/poller] hello" in r.stderr.splitlines()
    assert r.stdout == ""
