"""What every process does at start and stop: settings or exit 2, logging, stop signals."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Any

from . import exitcodes
from .errors import ConfigError
from .logs import log_settings, setup_logging
from .settings import load_settings


def settings_or_exit(process: str, env_file: str | None = ".env") -> Any:
    """Load and validate settings, or print one line (``tagpipe <process>: bad setting
    ...``) to stderr and raise SystemExit(2). Opens nothing; for tool commands that print
    to the terminal and set up no logging."""
    try:
        return load_settings(env_file=env_file)
    except ConfigError as e:
        print(f"tagpipe {process}: {e}", file=sys.stderr)
        raise SystemExit(exitcodes.CONFIG) from None


def start_process(process: str, env_file: str | None = ".env") -> tuple[Any, logging.Logger]:
    """Load and validate settings, set up logging, log the effective settings.

    On a bad setting prints one line to stderr and raises SystemExit(2) before anything
    is opened.
    """
    settings = settings_or_exit(process, env_file)
    log = setup_logging(process, settings.log_level)
    log_settings(log, settings)
    return settings, log


class StopSignals:
    """SIGTERM/SIGINT handling in the gunicorn manner: handlers only record.

    The first signal sets ``requested`` (the loop finishes its work and stops); the second
    ends the process at once with exit code FORCED: nothing not yet durable has left the
    ring, so nothing is lost.
    """

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        self._count = 0

    def install(self) -> "StopSignals":
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self._count += 1
        if self._count >= 2:
            os._exit(exitcodes.FORCED)
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def request(self) -> None:
        self.requested = True

    def __call__(self) -> bool:
        return self.requested

    def sleep(self, seconds: float, step: float = 0.05) -> bool:
        """Sleep up to ``seconds``, returning early (True) once a stop is requested."""
        deadline = time.monotonic() + seconds
        while not self.requested:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(step, left))
        return True
