"""Logging set-up shared by every process: one line format, journald friendly.

Every line carries the process (poller, writer, web, supervisor) and the component (the
logger name without its ``tagpipe.`` prefix). Under systemd (``JOURNAL_STREAM`` or
``INVOCATION_ID`` set) lines carry no timestamp: the journal adds its own.
"""

from __future__ import annotations

import logging
import os
import sys

_ROOT = "tagpipe"


class _Format(logging.Formatter):
    def __init__(self, process: str, timestamps: bool) -> None:
        fmt = ("%(asctime)s " if timestamps else "") + "%(levelname)s [%(proc)s/%(component)s] %(message)s"
        super().__init__(fmt)
        self.proc = process

    def format(self, record: logging.LogRecord) -> str:
        record.proc = getattr(record, "proc", self.proc)
        name = record.name
        record.component = name[len(_ROOT) + 1 :] if name.startswith(_ROOT + ".") else name
        return super().format(record)


def under_systemd() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


def setup_logging(process: str, level: str = "INFO", stream=None) -> logging.Logger:
    """Configure the root logger for ``process``; returns the ``tagpipe.<process>`` logger.

    Replaces handlers set up earlier (safe to call again in a child process).
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Format(process, timestamps=not under_systemd()))
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
