"""Log lines: one format, process and component in each, journald friendly under systemd."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import child_env

CODE = (
    "import logging\n"
    "from pipeline.common.logs import setup_logging\n"
    "log = setup_logging('writer', 'INFO')\n"
    "logging.getLogger('tagpipe.writer.spool').warning('disk low')\n"
    "logging.getLogger('tagpipe.writer').info('hello')\n"
    "logging.getLogger('tagpipe.writer').debug('not shown at INFO')\n"
)


def _run(tmp_path, journal: bool, **env: str) -> list[str]:
    path = tmp_path / f"stderr-{journal}.txt"
    with open(path, "w") as fh:
        st = os.fstat(fh.fileno())
        extra = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}", "INVOCATION_ID": "0" * 32} if journal else {}
        subprocess.run([sys.executable, "-c", CODE], stderr=fh, env=child_env(**extra, **env), timeout=60, check=True)
    return path.read_text().splitlines()


def test_run_logging_under_the_journal_has_priorities_and_no_timestamps(tmp_path):
    lines = _run(tmp_path, journal=True)
    assert lines == ["<4>WARNING [writer/writer.spool] disk low", "<6>INFO [writer/writer] hello"]


def test_run_logging_in_a_terminal_has_timestamps_and_no_priorities(tmp_path):
    lines = _run(tmp_path, journal=False)
    assert len(lines) == 2
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING \[writer/writer\.spool\] disk low", lines[0])
    assert lines[1].endswith("INFO [writer/writer] hello")
