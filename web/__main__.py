"""``python -m web``: serve the monitoring API and status page with waitress.

Loads settings (a bad one: one line on stderr, exit 2), attaches to the ring read-only
(or waits for it while answering), listens on WEB_HOST:WEB_PORT, tells systemd it is
ready, pings the watchdog, and stops on SIGTERM/SIGINT with exit 0. The waitress event
loop runs here in the main thread, one bounded poll at a time, so a stop request is seen
within ``POLL_S`` and the sockets are closed by the thread that owns them.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.common import exitcodes, sdnotify
from pipeline.common.process import StopSignals, start_process

POLL_S = 0.5  # longest wait of one event-loop round: bounds how late a stop is seen
THREADS = 4  # request worker threads (each request takes well under 10 ms)


def _socket_map(server) -> dict:
    # A single listener (TcpWSGIServer) keeps its map in ``_map``; several (MultiSocketServer,
    # e.g. a host name resolving to IPv4 and IPv6) in ``map``.
    return server.map if hasattr(server, "map") else server._map


def serve(server, stop, on_round) -> None:
    """Run waitress's event loop until ``stop()``; ``on_round()`` after every round (≤ POLL_S)."""
    from waitress import wasyncore

    while not stop():
        wasyncore.loop(timeout=POLL_S, map=_socket_map(server), use_poll=server.adj.asyncore_use_poll, count=1)
        on_round()


def close_server(server) -> None:
    from waitress import wasyncore

    server.task_dispatcher.shutdown()
    wasyncore.close_all(_socket_map(server))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m web", description="tagpipe monitoring web process (read-only)")
    parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings, log = start_process("web")
    except SystemExit as e:  # bad setting: the one line is already on stderr
        return int(e.code or exitcodes.CONFIG)
    stop = StopSignals().install()

    from waitress import create_server

    from . import create_app, runtime

    app = create_app({"SETTINGS": settings})
    rt = runtime(app)
    try:
        server = create_server(app, host=settings.web_host, port=settings.web_port, threads=THREADS, ident="tagpipe", _start=True)
    except OSError as e:
        log.error("cannot listen on %s:%d: %s (is another web process running? set WEB_PORT)", settings.web_host, settings.web_port, e)
        rt.close()
        return exitcodes.ERROR
    host = settings.web_host if ":" not in settings.web_host else f"[{settings.web_host}]"
    port = getattr(server, "effective_port", settings.web_port)
    log.info("status page on http://%s:%s/ (API under /api/, metrics at /metrics; ring %r, read-only)", host, port, settings.ring_name)
    if settings.web_host in ("0.0.0.0", "::"):
        log.info("listening on every interface: the plant LAN can read the status (nothing writable, no secrets)")
    watchdog = sdnotify.Watchdog()
    sdnotify.ready(f"serving on port {port}")
    told = [None]

    def on_round() -> None:
        watchdog.tick()
        status = rt.monitor.last_status
        if status != told[0]:  # systemctl status shows the pipeline's health
            sdnotify.status(f"serving on port {port}; pipeline {status}")
            told[0] = status

    try:
        serve(server, stop, on_round)
        log.info("stopping on %s", stop.signal_name or "request")
        sdnotify.stopping()
    except Exception:  # loop boundary: log once, exit non-zero so systemd restarts us
        log.exception("web server failed; exiting")
        return exitcodes.ERROR
    finally:
        close_server(server)
        rt.close()
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
