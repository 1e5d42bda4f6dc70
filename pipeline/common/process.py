"""What every process does at start and stop: settings or exit 2, logging, stop signals."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from . import exitcodes
from .errors import ConfigError
from .logs import log_settings, setup_logging
from .settings import Settings, load_settings


def settings_or_exit(process: str, env_file: str | None = ".env") -> Settings:
    """Load and validate settings, or print one line (``tagpipe <process>: bad setting
    ...``) to stderr and raise SystemExit(2). Opens nothing; for tool commands that print
    to the terminal and set up no logging."""
    try:
        return load_settings(env_file=env_file)
    except ConfigError as e:
        print(f"tagpipe {process}: {e}", file=sys.stderr)
        raise SystemExit(exitcodes.CONFIG) from None


def start_process(process: str, env_file: str | None = ".env") -> tuple[Settings, logging.Logger]:
    """Load and validate settings, set up logging, log the effective settings.

    On a bad setting prints one line to stderr and raises SystemExit(2) before anything
    is opened.
    """
    settings = settings_or_exit(process, env_file)
    log = setup_logging(process, settings.log_level)
    log_settings(log, settings)
    return settings, log


class StopSignals:
    """Stop-signal handling in the gunicorn manner: handlers only count; the loop acts.

    The first signal sets ``requested`` (the loop finishes its work and stops). A process
    (``exit_on_second``, the default) ends at once on the second with exit code FORCED:
    nothing not yet durable has left the ring, so nothing is lost. The supervisor passes
    ``exit_on_second=False`` and watches ``count`` itself (it must SIGKILL its children
    first), and ``hangup=True``: a closed terminal stops it in order too, unless started
    with nohup (SIGHUP ignored).
    """

    def __init__(self, exit_on_second: bool = True, hangup: bool = False) -> None:
        self.count = 0  # stop signals received
        self.signal_name = ""  # the last one's name, e.g. "SIGTERM"
        self.exit_on_second = exit_on_second
        self.hangup = hangup
        self._asked = False

    def install(self) -> "StopSignals":
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)
        if self.hangup and signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            signal.signal(signal.SIGHUP, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.count += 1
        if self.count >= 2 and self.exit_on_second:
            os._exit(exitcodes.FORCED)
        self.signal_name = signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        """A stop was asked for, by a signal or by ``request()``."""
        return self._asked or self.count > 0

    def request(self) -> None:
        self._asked = True

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
