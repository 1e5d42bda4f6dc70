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

from pipeline.common import exitcodes, sdnotify
from pipeline.common.process import StopSignals, start_process

log = logging.getLogger("tagpipe.writer")


def make_sink(settings):
    """The configured sink: Oracle when ORACLE_HOST/ORACLE_DSN is set, else SQLite."""
    if settings.oracle_configured:
        from .sinks.oracle import OracleSink  # lazy: python-oracledb only when used

        return OracleSink.from_settings(settings)
    from .sinks.sqlite import SqliteSink

    return SqliteSink.from_settings(settings)


def _attach(settings, signals: StopSignals, tick=lambda: None):
    from pipeline.common.telemetry import open_consumer

    def waiting(reason: str) -> None:
        log.info("%s", reason)
        sdnotify.ready(status=f"waiting for ring {settings.ring_name!r}")

    def stop() -> bool:
        tick()  # keep systemd's watchdog fed while the poller is down (at most every 2 s)
        return signals()

    return open_consumer(settings.ring_name, wait=True, on_wait=waiting, stop=stop)


def main(argv: list[str] | None = None) -> int:
    """Run the writer until stopped. Returns an exit code (see the module docstring)."""
    settings, _ = start_process("writer")
    signals = StopSignals().install()
    from .heap import keep_batch_memory

    keep_batch_memory()  # fewer page faults per batch; a no-op where the C library cannot
    from shm import RingError, RoleTaken

    from .loop import Writer

    watchdog = sdnotify.Watchdog()

    def attach():  # at start, and again when the ring is replaced
        return _attach(settings, signals, watchdog.tick)

    try:
        consumer = attach()
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
        left = writer.run(attach, settings.shutdown_timeout_s)
        if left:
            log.warning("stopped (%s): %d records not written within SHUTDOWN_TIMEOUT stay in the ring", signals.signal_name or "stop", left)
        else:
            log.info("stopped (%s): everything published was written", signals.signal_name or "stop")
        return exitcodes.OK
    except RingError as e:
        log.error("ring problem: %s", e)
        return exitcodes.ERROR
    except Exception:
        log.exception("writer failed")
        return exitcodes.ERROR
    finally:
        if writer is not None:
            writer.close()  # the sink and the ring consumer it has now
        else:
            consumer.close()


if __name__ == "__main__":
    sys.exit(main())
