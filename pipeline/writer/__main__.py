"""``python -m pipeline.writer``: the ring's consumer; writes batches to the database.

Waits for the ring if the poller has not created it (systemd is told the unit is ready
meanwhile, so the unit does not fail because the poller is down). Stops on SIGTERM/SIGINT
after flushing what was published, within SHUTDOWN_TIMEOUT; what is not written stays in
the ring. Exit codes: 0 orderly stop, 1 unexpected error, 2 bad setting, 4 another writer
already consumes this ring, 5 second stop signal.
"""

from __future__ import annotations

import logging
import sys
import time

from pipeline.common import exitcodes, sdnotify
from pipeline.common.process import StopSignals, start_process

log = logging.getLogger("tagpipe.writer")

REPLACED_CHECK_S = 1.0


def make_sink(settings):
    """The configured sink: Oracle when ORACLE_HOST/ORACLE_DSN is set, else SQLite."""
    if settings.oracle_configured:
        from .sinks.oracle import OracleSink  # lazy: python-oracledb only when used

        return OracleSink.from_settings(settings)
    from .sinks.sqlite import SqliteSink

    return SqliteSink.from_settings(settings)


def _attach(settings, signals: StopSignals, tick=lambda: None):
    from shm import Consumer

    def waiting(reason: str) -> None:
        log.info("%s", reason)
        sdnotify.ready(status=f"waiting for ring {settings.ring_name!r}")

    def stop() -> bool:
        tick()  # keep systemd's watchdog fed while the poller is down (at most every 2 s)
        return signals()

    return Consumer.open(settings.ring_name, wait=True, on_wait=waiting, stop=stop)


def main(argv: list[str] | None = None) -> int:
    """Run the writer until stopped. Returns an exit code (see the module docstring)."""
    settings, _ = start_process("writer")
    signals = StopSignals().install()
    from shm import RoleTaken, RingError

    from .loop import Writer

    watchdog = sdnotify.Watchdog()
    try:
        consumer = _attach(settings, signals, watchdog.tick)
    except RoleTaken as e:
        print(f"tagpipe writer: {e}", file=sys.stderr)
        return exitcodes.ROLE_TAKEN
    if consumer is None:
        log.info("stopped while waiting for the ring")
        return exitcodes.OK
    writer = None
    try:
        writer = Writer(consumer, make_sink(settings), settings, stop=signals, tick=watchdog.tick)
        writer.start()
        sdnotify.ready(status=f"writing ring {settings.ring_name!r} to {writer.sink.kind}")
        log.info("writing ring %r (capacity %d, epoch %d) to %s", settings.ring_name, consumer.capacity, consumer.epoch, writer.sink.kind)
        next_check = time.monotonic() + REPLACED_CHECK_S
        while not signals.requested:
            if not writer.step():
                writer.run_once_idle()
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + REPLACED_CHECK_S
                if consumer.replaced():
                    log.warning("ring %r was replaced; attaching to the new one", settings.ring_name)
                    consumer.close()
                    consumer = _attach(settings, signals, watchdog.tick)
                    if consumer is None:
                        break
                    writer.attach(consumer)
        sdnotify.stopping("flushing")
        if consumer is not None:
            consumer.set("consumer.state", 2)  # ROLE_STATE "stopping", for the status page
        deadline = time.monotonic() + settings.shutdown_timeout_s
        done = writer.flush(deadline) if consumer is not None else True
        left = consumer.pending() if consumer is not None else 0
        if done:
            log.info("stopped (%s): everything published was written", signals.signal_name or "stop")
        else:
            log.warning("stopped (%s): %d records not written within SHUTDOWN_TIMEOUT stay in the ring", signals.signal_name or "stop", left)
        return exitcodes.OK
    except RingError as e:
        log.error("ring problem: %s", e)
        return exitcodes.ERROR
    except Exception:
        log.exception("writer failed")
        return exitcodes.ERROR
    finally:
        if writer is not None:
            writer.close()
        if consumer is not None:
            consumer.close()


if __name__ == "__main__":
    sys.exit(main())
