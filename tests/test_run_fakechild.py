"""A tiny child process for the supervisor's tests (no test functions here).

``main([role, events_file, *options])`` behaves like a real tagpipe process: settings-free,
one-line logging through ``setup_logging``, ``StopSignals``; it logs a numbered line every
20 ms and appends ``start/stopping/stopped <pid> <monotonic>`` to ``events_file``.
Options: ``exit=N@S`` exits N after S seconds; ``stopdelay=S`` takes S seconds to stop.
"""

from __future__ import annotations

import os
import time


def _event(path: str, what: str) -> None:
    with open(path, "a") as fh:
        fh.write(f"{what} {os.getpid()} {time.monotonic():.6f}\n")


def main(argv: list[str]) -> int:
    from pipeline.common.logs import setup_logging
    from pipeline.common.process import StopSignals

    role, events, *opts = argv
    options = dict(o.split("=", 1) for o in opts)
    log = setup_logging(role)
    stops = StopSignals().install()
    _event(events, "start")
    log.info("fake %s started pid=%d", role, os.getpid())
    exit_code, exit_after = None, None
    if "exit" in options:
        code, after = options["exit"].split("@")
        exit_code, exit_after = int(code), time.monotonic() + float(after)
    n = 0
    while not stops.requested:
        if exit_after is not None and time.monotonic() >= exit_after:
            log.error("fake %s exiting %d on purpose", role, exit_code)
            return exit_code
        n += 1
        log.info("fake %s line %d", role, n)
        time.sleep(0.02)
    _event(events, "stopping")
    time.sleep(float(options.get("stopdelay", "0")))
    _event(events, "stopped")
    log.info("fake %s stopped", role)
    return 0
