"""Is an HTTP server answering? One GET with a timeout (the web process's liveness).

Used by the web process before it pings systemd's watchdog and by the supervisor to see a
hung web child: a server whose event loop is wedged still accepts connections (the
kernel does that) but never answers, which only a real request shows.
"""

from __future__ import annotations

import http.client

PATH = "/api/status"  # cheap, always routed; any HTTP status proves the server serves


def reachable_host(host: str) -> str:
    """Where this machine reaches a server bound to ``host`` (the loopback for a wildcard)."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def answers(host: str, port: int, timeout_s: float, path: str = PATH) -> bool:
    """True if a GET of ``path`` on ``host:port`` got any HTTP answer (even an error status)
    within ``timeout_s`` seconds per socket operation. Never raises."""
    conn = http.client.HTTPConnection(reachable_host(host), port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers={"User-Agent": "tagpipe-liveness"})
        conn.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
