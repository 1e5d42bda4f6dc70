"""``python -m web``: serve the monitoring API and status page with waitress.

Loads settings (a bad one: one line on stderr, exit 2), attaches to the ring read-only
(or waits for it while answering), listens on WEB_HOST:WEB_PORT, tells systemd it is
ready, pings the watchdog, and stops on SIGTERM/SIGINT with exit 0.

Only waitress's public API is used: ``create_server()`` (listening when it returns) and
``server.run()`` in the main thread, which returns when a ``SystemExit`` interrupts it
(the way waitress itself stops on Ctrl-C): our stop-signal handler raises one, then
``server.close()``. The watchdog is pinged by a ``Liveness`` thread only after an HTTP
request to this very server was answered, so a wedged server stops the pings and systemd
restarts it. The history sampler has its own thread, independent of the server loop.
"""

from __future__ import annotations

import argparse
import resource
import sys
import threading

from pipeline.common import exitcodes, sdnotify
from pipeline.common.errors import ConfigError
from pipeline.common.httpprobe import answers
from pipeline.common.process import StopSignals, start_process

THREADS = 4  # request worker threads (each request takes well under 10 ms)
PROBE_TIMEOUT_S = 5.0
STATUS_EVERY_S = 1.0  # how often systemd's STATUS= line is brought up to date
MAX_REQUEST_HEADER_BYTES = 16 * 1024  # our requests are short GETs; waitress's default is 256 KiB
SPARE_FDS = 64  # files besides client connections: the ring, logs, the listening sockets


def server_options(settings) -> dict:
    """waitress ``create_server`` options: limits and timeouts so slow or stuck clients
    cannot starve operators. waitress stops accepting while ``connection_limit`` channels
    are open; an idle channel (a request half sent, or a kept-alive connection with nothing
    more) is closed after ``channel_timeout``, checked every ``cleanup_interval`` seconds."""
    return dict(
        threads=THREADS,
        ident="tagpipe",
        connection_limit=settings.web_connection_limit,
        channel_timeout=settings.web_client_timeout_s,
        cleanup_interval=max(1.0, min(5.0, settings.web_client_timeout_s / 4)),
        max_request_header_size=MAX_REQUEST_HEADER_BYTES,
    )


def ensure_file_limit(connections: int, log) -> None:
    """Raise the soft open-files limit so ``connections`` client sockets fit (up to the
    hard limit); a warning when even the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + SPARE_FDS
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (ValueError, OSError):
            new = soft
        if new < want:
            log.warning("open-files limit %d is below WEB_CONNECTION_LIMIT %d + %d: connections beyond it are refused",
                        new, connections, SPARE_FDS)


class StopServing(SystemExit):
    """Raised by the stop-signal handler in the main thread: ``server.run()`` returns."""


class ServeSignals(StopSignals):
    """``StopSignals`` (first signal: stop; second: exit 5 at once) that also interrupts
    ``server.run()`` while it runs (at most once)."""

    serving = False

    def _handle(self, signum, frame) -> None:
        super()._handle(signum, frame)
        if self.serving:
            self.serving = False
            raise StopServing(exitcodes.OK)


class Liveness(threading.Thread):
    """Pings systemd's watchdog after each answered self-probe, and keeps systemd's
    STATUS= line showing the pipeline's health. Probes nothing outside systemd."""

    def __init__(self, host: str, port: int, rt) -> None:
        super().__init__(name="tagpipe-web-liveness", daemon=True)
        self.host, self.port, self.rt = host, port, rt
        self.watchdog = sdnotify.Watchdog()
        self.done = threading.Event()
        self._told = None

    def run(self) -> None:
        interval = min(self.watchdog.interval or STATUS_EVERY_S, STATUS_EVERY_S)
        while not self.done.wait(interval):
            if self.watchdog.interval is not None and answers(self.host, self.port, min(PROBE_TIMEOUT_S, self.watchdog.interval)):
                self.watchdog.tick()
            status = self.rt.monitor.last_status
            if status != self._told:  # systemctl status shows the pipeline's health
                sdnotify.status(f"serving on port {self.port}; pipeline {status}")
                self._told = status

    def stop(self) -> None:
        self.done.set()
        self.join(PROBE_TIMEOUT_S + 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m web", description="tagpipe monitoring web process (read-only)")
    parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings, log = start_process("web")
    except SystemExit as e:  # bad setting: the one line is already on stderr
        return int(e.code or exitcodes.CONFIG)
    stop = ServeSignals().install()

    from waitress import create_server

    from . import create_app, runtime

    app = create_app({"SETTINGS": settings})
    rt = runtime(app)
    ensure_file_limit(settings.web_connection_limit, log)
    try:
        server = create_server(app, host=settings.web_host, port=settings.web_port, **server_options(settings))
    except ValueError:  # waitress: the host does not resolve to an address (e.g. a mistyped name)
        err = ConfigError("WEB_HOST", settings.web_host, "does not resolve to an address to listen on")
        print(f"tagpipe web: {err}", file=sys.stderr)
        rt.close()
        return exitcodes.CONFIG
    except OSError as e:
        log.error("cannot listen on %s:%d: %s (is another web process running? set WEB_PORT)", settings.web_host, settings.web_port, e)
        rt.close()
        return exitcodes.ERROR
    host = settings.web_host if ":" not in settings.web_host else f"[{settings.web_host}]"
    port = getattr(server, "effective_port", settings.web_port)
    log.info("status page on http://%s:%s/ (API under /api/, metrics at /metrics; ring %r, read-only)", host, port, settings.ring_name)
    if settings.web_host in ("0.0.0.0", "::"):
        log.info("listening on every interface: the plant LAN can read the status (nothing writable, no secrets)")
    liveness = Liveness(settings.web_host, port, rt)
    sdnotify.ready(f"serving on port {port}")
    liveness.start()
    try:
        stop.serving = True
        if not stop.requested:  # a signal before this point only set the flag
            server.run()
        stop.serving = False
        log.info("stopping on %s", stop.signal_name or "request")
        sdnotify.stopping()
    except StopServing:  # the signal came before run() entered its own try
        log.info("stopping on %s", stop.signal_name or "request")
        sdnotify.stopping()
    except Exception:  # loop boundary: log once, exit non-zero so systemd restarts us
        log.exception("web server failed; exiting")
        return exitcodes.ERROR
    finally:
        stop.serving = False
        liveness.stop()
        try:
            server.close()
        except OSError:  # already closed by run() (several listeners): nothing left to do
            pass
        rt.close()
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
