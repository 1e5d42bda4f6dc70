"""Logging set-up shared by every process: one line format, journald friendly.

Every line carries the process (poller, writer, web, supervisor) and the component (the
logger name without its ``tagpipe.`` prefix). Under systemd (``JOURNAL_STREAM`` or
``INVOCATION_ID`` set) lines carry no timestamp: the journal adds its own; when stderr is
the journal itself (``JOURNAL_STREAM``) each line starts with its syslog priority (``<4>``)
so ``journalctl -p warning`` works.
"""

from __future__ import annotations

import logging
import os
import sys

_ROOT = "tagpipe"


# syslog priorities: journald reads a leading "<N>" as the line's priority (SyslogLevelPrefix=),
# so `journalctl -p warning` finds warnings and errors.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _Format(logging.Formatter):
    def __init__(self, process: str, timestamps: bool, priorities: bool = False) -> None:
        fmt = ("%(asctime)s " if timestamps else "") + "%(levelname)s [%(proc)s/%(component)s] %(message)s"
        super().__init__(fmt)
        self.proc = process
        self.priorities = priorities

    def format(self, record: logging.LogRecord) -> str:
        record.proc = getattr(record, "proc", self.proc)
        name = record.name
        record.component = name[len(_ROOT) + 1 :] if name.startswith(_ROOT + ".") else name
        line = super().format(record)
        if self.priorities:
            line = f"<{_PRIORITY.get(record.levelno, 6)}>{line}"
        return line


def under_systemd() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


def stream_is_journal(stream) -> bool:
    """True if ``stream`` is the journal stream systemd connected (JOURNAL_STREAM=dev:inode)."""
    want = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


def setup_logging(process: str, level: str = "INFO", stream=None) -> logging.Logger:
    """Configure the root logger for ``process``; returns the ``tagpipe.<process>`` logger.

    Replaces handlers set up earlier (safe to call again in a child process).
    """
    out = stream or sys.stderr
    handler = logging.StreamHandler(out)
    handler.setFormatter(_Format(process, timestamps=not under_systemd(), priorities=stream_is_journal(out)))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    return logging.getLogger(f"{_ROOT}.{process}")


def log_settings(logger: logging.Logger, settings) -> None:
    """Log the effective settings once, secrets masked."""
    items = " ".join(f"{k}={v!r}" for k, v in settings.masked().items())
    logger.info("effective settings: %s", items)
