"""The Oracle connection pool that never hangs: timed waits, call timeouts, and no
connection attempt left stuck for ever.

python-oracledb (Thin) creates pool connections on one background thread. Creating the
pool never fails because the database is down (the first acquire raises DPY-6005);
``getmode=POOL_GETMODE_TIMEDWAIT`` bounds every acquire (DPY-4005); ``call_timeout`` on
every acquired connection bounds every call (DPY-4024). What it does not bound is the
connect handshake: ``tcp_connect_timeout`` covers the TCP connect only, so a listener that
accepts and never answers keeps that background thread waiting for ever -- the pool
never connects again and its non-daemon thread keeps the process from exiting. The
keeper notices (acquires time out while no connection is in use), replaces the pool and
shuts the stuck socket down; ``close()`` does the same.
"""

from __future__ import annotations

import gc
import logging
import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import oracledb

from pipeline.common.settings import Settings, as_dict, credentials_in, mask_credentials

from ..oracle_errors import classify, full_code
from .base import PermanentSinkError, TransientSinkError

log = logging.getLogger("tagpipe.oracle")


class OracleConfig(Settings):
    """The settings the Oracle sink reads: the ``Settings`` themselves (``oracle_*`` fields,
    their defaults, units and bounds declared once in ``pipeline.common.settings``), plus
    what the sink derives from them (the connect string, the secrets to scrub, the lock
    wait). ``dataclasses.replace`` works on it and validates again."""

    @classmethod
    def from_settings(cls, s: Settings) -> "OracleConfig":
        return cls(**as_dict(s))

    @property
    def dsn(self) -> str:
        """ORACLE_DSN, else ``host:port/service``."""
        return self.oracle_dsn or f"{self.oracle_host}:{self.oracle_port}/{self.oracle_service_name}"

    @property
    def shown_dsn(self) -> str:
        """``dsn`` as logs and errors show it: a password inside it masked."""
        return mask_credentials(self.dsn)

    @property
    def secrets(self) -> tuple[str, ...]:
        """What is scrubbed from driver errors: the passwords, including one inside the DSN."""
        return tuple(x for x in (self.oracle_password, self.oracle_wallet_password, *credentials_in(self.dsn)) if x)

    @property
    def lock_wait_s(self) -> int:
        """FOR UPDATE WAIT: well inside the call timeout, so a held lock is a clean ORA-30006."""
        return max(1, min(30, self.oracle_call_timeout_ms // 3000))

    def __repr__(self) -> str:  # never show the passwords
        return f"OracleConfig(user={self.oracle_username!r}, dsn={self.shown_dsn!r}, table={self.oracle_table!r}, cursor_table={self.oracle_cursor_table!r})"


class PoolKeeper:
    """Owns the pool of one sink. Thread-safe (the writer's prober thread may use it)."""

    def __init__(self, config: OracleConfig) -> None:
        self.cfg = config
        self.pool: oracledb.ConnectionPool | None = None
        self._pool_lock = threading.Lock()
        self._stalled_since: float | None = None
        self.generation = 0  # +1 each time the pool is dropped (close / abandon)
        # A pool that cannot produce a connection for this long while none is in use has a
        # connection attempt stuck in a handshake (see _note_stall): it is replaced.
        self.stall_limit_s = 2 * config.oracle_pool_wait_ms / 1000 + config.oracle_connect_timeout_s

    def open(self) -> None:
        """Create the pool. Succeeds while the database is down (connections are made in
        the background); raises PermanentSinkError for a configuration it cannot use."""
        with self._pool_lock:
            if self.pool is None:
                self.pool = self._create_pool()

    def _extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.cfg.oracle_config_dir:
            extra["config_dir"] = self.cfg.oracle_config_dir
        if self.cfg.oracle_wallet_location:
            extra["wallet_location"] = self.cfg.oracle_wallet_location
        if self.cfg.oracle_wallet_password:
            extra["wallet_password"] = self.cfg.oracle_wallet_password
        return extra

    def connect_once(self, call_timeout_ms: int) -> oracledb.Connection:
        """One standalone connection: exactly one login attempt, and no pool behind it that
        would log in again in the background (a wrong password must not lock the account).
        Bounded: a handshake that gets no answer within ``connect_timeout_s`` plus the call
        timeout is ended by shutting the socket down (python-oracledb has no handshake
        timeout). Raises TransientSinkError / PermanentSinkError."""
        box: dict[str, Any] = {}

        def attempt() -> None:
            try:
                box["conn"] = oracledb.connect(user=self.cfg.oracle_username, password=self.cfg.oracle_password, dsn=self.cfg.dsn,
                                               tcp_connect_timeout=self.cfg.oracle_connect_timeout_s, **self._extra())
            except BaseException as e:  # handed to the caller below
                box["err"] = e

        limit = self.cfg.oracle_connect_timeout_s + call_timeout_ms / 1000
        t = threading.Thread(target=attempt, name="oracle-connect-once", daemon=True)
        t.start()
        t.join(limit)
        if t.is_alive():
            _shutdown_sockets_to(_dsn_ports(self.cfg))
            t.join(2.0)
            raise TransientSinkError(f"cannot connect as {self.cfg.oracle_username} to {self.cfg.dsn}: no answer to the login within "
                                     f"{limit:.0f} s (the listener accepted the connection and never answered)", "TAGPIPE-HANDSHAKE")
        err = box.get("err")
        if err is not None:
            if isinstance(err, oracledb.Error):
                raise classify(err, f"cannot connect as {self.cfg.oracle_username} to {self.cfg.dsn}", self.cfg.secrets) from None
            raise err
        conn = box["conn"]
        conn.call_timeout = call_timeout_ms
        return conn

    def _create_pool(self) -> oracledb.ConnectionPool:
        extra = self._extra()
        try:
            return oracledb.create_pool(
                user=self.cfg.oracle_username, password=self.cfg.oracle_password, dsn=self.cfg.dsn,
                min=self.cfg.oracle_pool_min, max=self.cfg.oracle_pool_max, increment=1,
                getmode=oracledb.POOL_GETMODE_TIMEDWAIT, wait_timeout=self.cfg.oracle_pool_wait_ms,
                tcp_connect_timeout=self.cfg.oracle_connect_timeout_s, expire_time=self.cfg.oracle_expire_time_min,
                **extra,
            )
        except oracledb.Error as exc:
            err = classify(exc, "cannot create the connection pool", self.cfg.secrets)
            raise PermanentSinkError(str(err), err.code) from None

    @contextmanager
    def connection(self, call_timeout_ms: int | None = None) -> Iterator[oracledb.Connection]:
        """A pooled connection with a call timeout. On any error the connection is
        dropped (rolled back by the database), never returned to the pool half-used.
        Raises TransientSinkError / PermanentSinkError for acquire failures."""
        self.open()
        pool = self.pool
        if pool is None:
            raise TransientSinkError("the sink is closed", "TAGPIPE-CLOSED")
        conn = self._acquire(pool)
        conn.call_timeout = call_timeout_ms or self.cfg.oracle_call_timeout_ms
        ok = False
        try:
            yield conn
            ok = True
        except oracledb.Error as exc:
            raise classify(exc, "database call", self.cfg.secrets) from None
        finally:
            self._give_back(pool, conn, ok)

    def _acquire(self, pool: oracledb.ConnectionPool) -> oracledb.Connection:
        try:
            conn = pool.acquire()
        except oracledb.Error as exc:
            if full_code(exc) == "DPY-4005" and pool.busy == 0:
                self._note_stall(pool)
            raise classify(exc, f"cannot connect as {self.cfg.oracle_username} to {self.cfg.shown_dsn}", self.cfg.secrets) from None
        self._stalled_since = None
        return conn

    def _note_stall(self, pool: oracledb.ConnectionPool) -> None:
        # python-oracledb has no timeout for the connect handshake (tcp_connect_timeout
        # covers the TCP connect only): when a listener accepts and never answers (a hung
        # server behind a load balancer), the pool's one background thread waits for ever
        # and the pool never opens another connection, even after the database is back.
        # Acquires still time out (DPY-4005); when that lasts, replace the pool.
        now = time.monotonic()
        if self._stalled_since is None:
            self._stalled_since = now
        elif now - self._stalled_since >= self.stall_limit_s:
            log.warning("no connection for %.0f s although none is in use: a connection attempt is stuck "
                        "(the listener accepted it and never answered); replacing the pool", now - self._stalled_since)
            self._stalled_since = None
            with self._pool_lock:
                if self.pool is pool:
                    self.pool = None
                    self._discard(pool)

    def _discard(self, pool: oracledb.ConnectionPool) -> None:
        """Close ``pool`` within a few seconds, unblocking a connection attempt stuck in a
        handshake (its non-daemon thread would otherwise also keep the process from exiting)."""
        closer = threading.Thread(target=_close_pool, args=(pool,), name="oracle-pool-close", daemon=True)
        closer.start()
        closer.join(2.0)
        if closer.is_alive():
            n = _shutdown_sockets_to(_dsn_ports(self.cfg))
            closer.join(5.0)
            log.warning("closed %d stuck connection attempt(s)%s", n, "" if not closer.is_alive() else "; the pool is still closing")

    def _give_back(self, pool: oracledb.ConnectionPool, conn: oracledb.Connection, ok: bool) -> None:
        if not ok:
            # Roll back explicitly before letting go: a clean logoff COMMITS what a
            # session left open (Oracle's rule), and the client only sends a rollback
            # of its own when it knows a transaction is open.
            try:
                conn.rollback()
            except oracledb.Error:
                pass  # dead connection: the database rolls back when it notices
        try:
            if ok:
                pool.release(conn)
            else:
                pool.drop(conn)
        except oracledb.Error:
            pass  # a dead connection: the pool has already let go of it

    def close(self) -> None:
        """Release the pool within a few seconds, even with a connect stuck in a handshake."""
        with self._pool_lock:
            pool, self.pool = self.pool, None
            self.generation += 1
            if pool is not None:
                self._discard(pool)

    def abandon(self) -> None:
        """Drop the pool at once, for a caller that gave up on a call stuck in it (or
        that must not wait: the writer's main thread when the circuit opens): the
        sockets to the listener are shut down now (the stuck call wakes up with DPY-4011 and
        its connection is dropped, never reused; the database rolls back what it did not
        commit) and the pool is closed on a background thread. Returns without waiting."""
        with self._pool_lock:
            pool, self.pool = self.pool, None
            self.generation += 1
        n = _shutdown_sockets_to(_dsn_ports(self.cfg))
        if n:
            log.warning("dropped the connection pool (%d socket(s) shut down)", n)
        if pool is not None:
            threading.Thread(target=self._discard, args=(pool,), name="oracle-pool-abandon", daemon=True).start()


def _close_pool(pool: oracledb.ConnectionPool) -> None:
    try:
        pool.close(force=True)
    except oracledb.Error:
        pass


def _dsn_ports(cfg: OracleConfig) -> set[int]:
    """The listener ports named by the connect string (1521 if it cannot be parsed)."""
    try:
        params = oracledb.ConnectParams(config_dir=cfg.oracle_config_dir or None)
        params.parse_connect_string(cfg.dsn)
        ports = params.port
        return set(ports) if isinstance(ports, list) else {int(ports)}
    except Exception:
        return {1521}


def _shutdown_sockets_to(ports: set[int]) -> int:
    """Shut down this process's TCP sockets connected to one of ``ports``: a thread blocked
    reading one of them wakes up with an error. Only called once the pool using them is
    being discarded. Returns how many were shut down."""
    n = 0
    for obj in gc.get_objects():
        if not isinstance(obj, socket.socket) or obj.fileno() < 0 or obj.type != socket.SOCK_STREAM:
            continue
        try:
            if obj.getpeername()[1] in ports:
                obj.shutdown(socket.SHUT_RDWR)
                n += 1
        except (OSError, IndexError, TypeError):
            continue
    return n
