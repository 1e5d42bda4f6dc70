"""``python -m pipeline``: poller, writer and web process together, as supervised children.

Each child calls the very ``main()`` its systemd unit runs, in a fresh interpreter
(multiprocessing's *spawn* start method, not fork: the children must behave exactly like
the separate units, and forking a parent that already runs signal handlers and imported
modules would hand them its state). Each child:

- gets its own process group, so a Ctrl-C typed in the terminal reaches only this
  supervisor, which then stops the children in order (poller, writer, web);
- gets one SIGTERM if this supervisor dies (``PR_SET_PDEATHSIG``), so no orphan keeps running;
- logs straight to the inherited stderr, one ``write()`` per line. multiprocessing-logging
  was measured here to wedge (a child SIGKILLed while holding its queue's lock stopped
  every other child's lines for good, after 1 to 45 kills): see docs/operations.md ("Logs").

One supervisor per ring: before any child starts, the supervisor lock of the ring
(``pipeline.instance``) is taken; a second supervisor exits 4 at once, starting nothing.
Then it waits (up to SHUTDOWN_TIMEOUT + 5 s) for the ring's roles to be free: the children
of a killed supervisor may still be stopping; a poller or writer that stays (its own unit)
makes it exit 4, again before starting anything.

Restart policy: a child that dies unasked is restarted with backoff (1 s doubling to 30 s,
reset once it has run 30 s) while the others keep running. The writer's wait is also
bounded by the ring: never more than half the time the ring can still take at its current
input rate (free slots / records per second, sampled from the ring's counters each
second; at least 0.5 s), re-checked while it waits. A child that hangs is treated
like one that died (gunicorn's arbiter does the same with stale workers): the poller and
the writer write heartbeats in the ring, the web process answers HTTP (``heartbeats``);
a child whose heartbeat is older than its limit (SUPERVISOR_HANG_TIMEOUT_S; a child still
starting gets as long for its first heartbeat) is SIGKILLed, said so in one log line and
systemd's STATUS=, counted, and restarted. The supervisor's own systemd watchdog is fed
only while no child is hung. Exit 2 (bad configuration),
3 (ring needs attention) or 4 (role taken) are not restarted: the whole run stops with
that code. First SIGINT/SIGTERM: orderly stop; second: SIGKILL every child, exit 5
(records not yet written stay in the ring and are written by the next run).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_sentinels

from .common import exitcodes, sdnotify
from .heartbeats import WEB, Heartbeats, WebProbe
from .instance import InstanceLock, InstanceTaken
from .common.errors import ConfigError
from .common.logs import log_settings, setup_logging
from .common.process import StopSignals
from .poller.load_options import LOAD_MAX_S, load_options_problem
from .common.settings import load_settings

FATAL_CODES = (exitcodes.CONFIG, exitcodes.RING_NEEDS_ATTENTION, exitcodes.ROLE_TAKEN)
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTHY_RUN_S = 30.0  # a child that ran this long starts again from the first backoff
# A child that drains the ring (the writer) never waits longer than this share of the time
# the ring can still take at the current input rate (the rest is for its own start-up),
# and never less than the floor (a crash loop must not spin the CPU).
HEADROOM_SHARE = 0.5
RESTART_FLOOR_S = 0.5
WEB_STOP_S = 5.0
EXTRA_STOP_S = 5.0  # on top of SHUTDOWN_TIMEOUT, for interpreter exit after the flush
HANG_CHECK_S = 1.0  # how often heartbeats are read
WEB_PROBE_MAX_S = 5.0  # the web process is asked at least this often, with this timeout


@dataclass(frozen=True)
class ChildSpec:
    """One child: its name (in logs), the module whose ``main(argv)`` it runs, the argv."""

    name: str
    module: str
    argv: tuple[str, ...] = ()
    stop_timeout_s: float = 10.0
    finishes: bool = False  # exit 0 or 6 ends the run (load mode with a duration) instead of a restart
    beat: str = ""  # where its heartbeat is: a ring role ("producer", "consumer"), "web", or "" (none)
    hang_timeout_s: float = 0.0  # heartbeat older than this (s): hung, killed and restarted (0: never)
    waits_for_ring: bool = False  # no heartbeat while the ring is missing is not a hang (the writer)
    drains_ring: bool = False  # while it is down the ring fills: restart waits bounded by the ring's headroom


def default_specs(
    shutdown_timeout_s: float,
    poller_argv: tuple[str, ...] = (),
    poller_finishes: bool = False,
    hang_limits_s: dict[str, float] | None = None,
) -> list[ChildSpec]:
    """The three processes in start order (stop order is the same: poller first).
    ``hang_limits_s`` (see ``hang_limits``) per child name; none: hangs are not watched."""
    limit = (hang_limits_s or {}).get
    return [
        ChildSpec("poller", "pipeline.poller.__main__", poller_argv, shutdown_timeout_s + EXTRA_STOP_S, poller_finishes,
                  "producer", limit("poller", 0.0)),
        ChildSpec("writer", "pipeline.writer.__main__", (), shutdown_timeout_s + EXTRA_STOP_S,
                  beat="consumer", hang_timeout_s=limit("writer", 0.0), waits_for_ring=True, drains_ring=True),
        ChildSpec("web", "web.__main__", (), WEB_STOP_S, beat=WEB, hang_timeout_s=limit("web", 0.0)),
    ]


def hang_limits(settings) -> dict[str, float]:
    """Seconds without a heartbeat after which each child counts as hung.

    SUPERVISOR_HANG_TIMEOUT_S for all three; with Oracle the writer gets at least two
    database calls (ORACLE_CALL_TIMEOUT_MS each: a batch may take several round trips)
    plus a connect and a pool wait, its longest legitimate stall between two heartbeats.
    """
    limit = float(settings.supervisor_hang_timeout_s)
    writer = limit
    if settings.oracle_configured:
        stall = 2 * settings.oracle_call_timeout_ms / 1000 + settings.oracle_connect_timeout_s + settings.oracle_pool_wait_ms / 1000
        writer = max(limit, stall)
    return {"poller": limit, "writer": writer, "web": limit}


def _set_parent_death_signal(sig: int) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the child may outlive a killed supervisor
        pass


# The kernel sends the parent-death signal each time the thread the child counts as its
# parent exits, and a dying supervisor with threads (the web probe, numpy's pool) has
# several: a second SIGTERM would make the child exit at once instead of in order. So
# the child asks for this signal and turns the first one into a single SIGTERM.
PARENT_DEATH_SIGNAL = signal.SIGUSR2


_parent_gone = False


def _on_parent_death(signum, frame) -> None:
    # Several signals can be pending before this handler first runs (one per exiting thread
    # of the parent): Python may then call it again even after SIG_IGN. Only the first call
    # sends the SIGTERM; a second SIGTERM would stop the child at once (exit 5), not in order.
    global _parent_gone
    signal.signal(PARENT_DEATH_SIGNAL, signal.SIG_IGN)  # the next ones: nothing more to say
    if _parent_gone:
        return
    _parent_gone = True
    os.kill(os.getpid(), signal.SIGTERM)


def child_entry(name: str, module: str, argv: tuple[str, ...]) -> None:
    """Runs in the child interpreter: detach from the terminal's signals, then ``main(argv)``."""
    os.setpgid(0, 0)
    signal.signal(PARENT_DEATH_SIGNAL, _on_parent_death)
    _set_parent_death_signal(PARENT_DEATH_SIGNAL)
    if os.getppid() == 1:  # the supervisor died before we set the death signal
        raise SystemExit(exitcodes.ERROR)
    # systemd accepts notifications from the unit's main pid only: the children stay quiet.
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        os.environ.pop(key, None)
    import importlib

    try:
        code = importlib.import_module(module).main(list(argv))
    except SystemExit:
        raise
    except BaseException:
        # Keep even a crash in the one-line format, with the process name.
        setup_logging(name).exception("%s crashed", name)
        code = exitcodes.ERROR
    sys.stderr.flush()
    raise SystemExit(code if isinstance(code, int) else exitcodes.ERROR)


@dataclass
class Child:
    spec: ChildSpec
    process: mp.process.BaseProcess | None = None
    started_at: float = 0.0
    started_mono: float = 0.0  # time.monotonic() at start (the heartbeat sources' clock)
    restart_at: float | None = None
    failures: int = 0
    starts: int = 0
    hangs: int = 0  # times killed for a stale heartbeat
    beat_seen_at: float = 0.0  # last time its heartbeat was fresh (supervisor clock), or its start
    hang_killed_at: float | None = None  # SIGKILLed for a hang, not yet reaped
    exit_codes: list[int] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.exitcode is None


class Supervisor:
    """Starts, watches, restarts and stops the children. ``step()`` is one watch cycle."""

    def __init__(
        self,
        specs: list[ChildSpec],
        log: logging.Logger,
        stops: StopSignals,
        clock=time.monotonic,
        beats: Heartbeats | None = None,
        kill_hung=os.kill,  # (pid, signal) for a hung child; tests stand in for a kernel that cannot kill it
    ) -> None:
        self.children = [Child(s) for s in specs]
        self.log = log
        self.stops = stops
        self.clock = clock
        self.beats = beats  # None: hangs are not watched
        self._kill_hung_pid = kill_hung
        self.healthy = True  # no child hung past its limit (gates the supervisor's own watchdog)
        self._next_hang_check = 0.0
        self._next_ring_sample = 0.0
        self.ctx = mp.get_context("spawn")

    def start(self, child: Child) -> None:
        spec = child.spec
        child.process = self.ctx.Process(target=child_entry, args=(spec.name, spec.module, spec.argv), name=spec.name)
        child.process.start()
        child.started_at = child.beat_seen_at = self.clock()
        child.started_mono = time.monotonic()
        child.restart_at = None
        child.hang_killed_at = None
        child.starts += 1
        self.log.info("started %s (pid %d%s)", spec.name, child.process.pid, f", start {child.starts}" if child.starts > 1 else "")

    def start_all(self) -> None:
        for child in self.children:
            self.start(child)

    def step(self, timeout_s: float = 0.2) -> int | None:
        """Wait up to ``timeout_s`` for a child to end; handle deaths and due restarts.

        Returns an exit code when the run must end (a fatal child exit), else None.
        """
        sentinels = [c.process.sentinel for c in self.children if c.alive]
        if sentinels:
            ready = wait_sentinels(sentinels, timeout=timeout_s)
            for c in self.children:
                # The sentinel is ready as soon as the child has closed its files, a moment
                # before it can be reaped: join (bounded) so its exit code is known now.
                if c.alive and c.process.sentinel in ready:
                    c.process.join(1.0)
        else:
            time.sleep(timeout_s)
        now = self.clock()
        if self.beats is not None and now >= self._next_ring_sample:
            self._next_ring_sample = now + HANG_CHECK_S
            self.beats.sample_ring()
        for child in self.children:
            if child.process is not None and child.process.exitcode is not None and child.restart_at is None:
                code = self._reap(child, now)
                if code is not None:
                    return code
            if child.restart_at is not None and child.spec.drains_ring:
                # The ring keeps filling while it waits: a wait that was fine at its death
                # may be too long now.
                cap = self.restart_cap_s()
                if cap is not None and child.restart_at > now + cap:
                    child.restart_at = now + cap
            if child.restart_at is not None and now >= child.restart_at and self.stops.count == 0:
                self.start(child)
        if self.beats is not None and now >= self._next_hang_check:
            self._next_hang_check = now + HANG_CHECK_S
            self.healthy = self.check_hangs(now)
        return None

    def restart_cap_s(self) -> float | None:
        """Longest restart wait for a child that drains the ring: ``HEADROOM_SHARE`` of the
        seconds the ring can still take at its current input rate, at least
        ``RESTART_FLOOR_S``. None when there is no bound (rate unknown, or nothing coming in)."""
        if self.beats is None:
            return None
        room = self.beats.ring_headroom_s()
        if room is None or room == float("inf"):
            return None
        return max(RESTART_FLOOR_S, HEADROOM_SHARE * room)

    def check_hangs(self, now: float) -> bool:
        """Kill every child whose heartbeat is older than its limit (it is then reaped and
        restarted like a child that died). Returns True when no child is hung, i.e. none
        was left alive after being killed for a hang."""
        healthy = True
        for child in self.children:
            spec = child.spec
            if not child.alive or not spec.beat or spec.hang_timeout_s <= 0:
                continue
            if child.hang_killed_at is not None:
                healthy = False  # SIGKILLed and still there (uninterruptible sleep): systemd decides
                continue
            age = self.beats.age_s(spec.beat, child.process.pid, child.started_mono)
            if age is not None and age <= spec.hang_timeout_s:
                child.beat_seen_at = now
                continue
            if age is None:
                if spec.waits_for_ring and not self.beats.ring_exists():
                    child.beat_seen_at = now  # waiting for the poller to create the ring is not a hang
                    continue
                # Still starting (or re-attaching to a replaced ring): the limit runs from
                # its start or its last fresh heartbeat.
                silent = now - child.beat_seen_at
                if silent <= spec.hang_timeout_s:
                    continue
                what = f"no heartbeat {silent:.1f} s after its start or its last one"
            else:
                what = f"heartbeat {age:.1f} s old"
            self._kill_hung(child, what, now)
        return healthy

    def _kill_hung(self, child: Child, what: str, now: float) -> None:
        child.hangs += 1
        child.hang_killed_at = now
        name, pid = child.spec.name, child.process.pid
        self.log.error("%s (pid %d) is hung: %s (limit %.0f s, SUPERVISOR_HANG_TIMEOUT_S); killing it to restart it (hang restart %d)",
                       name, pid, what, child.spec.hang_timeout_s, child.hangs)
        sdnotify.status(f"restarted hung {name} (pid {pid}); hang restarts: " + ", ".join(f"{c.spec.name} {c.hangs}" for c in self.children if c.hangs))
        try:
            self._kill_hung_pid(pid, signal.SIGKILL)  # a hung process may ignore SIGTERM; nothing durable is lost
        except ProcessLookupError:
            pass

    @property
    def hang_restarts(self) -> dict[str, int]:
        """Children killed for a stale heartbeat so far, by name."""
        return {c.spec.name: c.hangs for c in self.children}

    def _reap(self, child: Child, now: float) -> int | None:
        code = child.process.exitcode
        child.exit_codes.append(code)
        name = child.spec.name
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited {code} ({exitcodes.NAMES.get(code, 'unknown')})"
        if child.hang_killed_at is not None:
            how += " (hung)"
        if code in FATAL_CODES:
            self.log.error("%s %s: not restarting it; stopping the others", name, how)
            return code
        if child.spec.finishes and code in (exitcodes.OK, exitcodes.CHECK_FAILED):
            self.log.info("%s finished its run (%s): stopping the others", name, how)
            return code
        ran = now - child.started_at
        child.failures = 1 if ran >= HEALTHY_RUN_S else child.failures + 1
        delay = min(BACKOFF_FIRST_S * 2 ** (child.failures - 1), BACKOFF_MAX_S)
        why = ""
        if child.spec.drains_ring:
            cap = self.restart_cap_s()
            if cap is not None and cap < delay:
                delay = cap
                why = (f" (the ring holds {self.beats.ring_headroom_s():.1f} s more at"
                       f" {self.beats.ring_rate():,.0f} values/s)")
        child.restart_at = now + delay
        child.process.close()
        child.process = None
        self.log.warning("%s %s after %.1f s; restarting it in %s s%s (the others keep running)",
                         name, how, ran, f"{delay:.0f}" if delay >= 10 or delay == int(delay) else f"{delay:.1f}", why)
        return None

    def stop_in_order(self) -> int:
        """SIGTERM each child in order, waiting for it (bounded) before the next.

        A child still alive at its deadline is SIGKILLed (its unwritten records stay in the
        ring). A second stop signal kills everything at once and returns FORCED.
        Returns OK when every child stopped by itself, ERROR otherwise.
        """
        seen = self.stops.count
        result = exitcodes.OK
        for child in self.children:
            child.restart_at = None
            if not child.alive:
                continue
            name, proc = child.spec.name, child.process
            self.log.info("stopping %s (pid %d, up to %.0f s)", name, proc.pid, child.spec.stop_timeout_s)
            os.kill(proc.pid, signal.SIGTERM)
            deadline = self.clock() + child.spec.stop_timeout_s
            while proc.exitcode is None and self.clock() < deadline:
                if self.stops.count > seen:
                    return self.kill_all()
                proc.join(0.1)
            if proc.exitcode is None:
                self.log.error("%s did not stop within %.0f s: killing it (records stay in the ring)", name, child.spec.stop_timeout_s)
                os.kill(proc.pid, signal.SIGKILL)
                proc.join(5)
                result = exitcodes.ERROR
            elif proc.exitcode == -signal.SIGTERM:
                # Default disposition: it was still starting up (no handler yet, nothing opened).
                self.log.info("%s stopped while starting", name)
            elif proc.exitcode != exitcodes.OK:
                self.log.warning("%s stopped with exit %s", name, proc.exitcode)
                result = exitcodes.ERROR
            else:
                self.log.info("%s stopped", name)
        return result

    def kill_all(self) -> int:
        """Second stop signal: SIGKILL every child now. Nothing durable is lost: records not
        yet written stay in the ring for the next run."""
        self.log.warning("second stop signal: killing every child now (unwritten records stay in the ring)")
        for child in self.children:
            if child.alive:
                os.kill(child.process.pid, signal.SIGKILL)
        for child in self.children:
            if child.process is not None:
                child.process.join(5)
        return exitcodes.FORCED

    def run(self) -> int:
        """Watch the started children until a stop signal or a fatal exit; stop in order."""
        code = None
        watchdog = sdnotify.Watchdog()  # when run as a unit itself (Type=notify, WatchdogSec=)
        while self.stops.count == 0 and code is None:
            code = self.step()
            if self.healthy:  # a child hung past its limit that would not die starves it
                watchdog.tick()
        sdnotify.stopping()
        if self.stops.count:
            self.log.info("%s received: stopping poller, then writer, then web", self.stops.signal_name or "stop")
        stopped = self.stop_in_order()
        if code is not None:
            return code
        return stopped


def status_url(host: str, port: int) -> str:
    """Where a browser finds the status page (the machine's name when bound to all addresses)."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def _check_tags(settings) -> str | None:
    """The poller's own validation of TAGS_FILE (or the demo plant), run before any child
    starts; returns the one-line problem, or None."""
    from .poller.config import TagsFileError, load_tags

    try:
        load_tags(settings)
    except TagsFileError as e:
        return f"bad TAGS_FILE {e}"
    return None


def supervise(specs: list[ChildSpec], log: logging.Logger, announce: str | None = None, beats: Heartbeats | None = None) -> int:
    """Run ``specs`` until stopped; returns the exit code. Installs the stop-signal handlers.

    ``announce`` (e.g. where the status page is) is printed once every child has started.
    ``beats``: where the children's heartbeats are read (None: hangs are not watched).
    """
    stops = StopSignals(exit_on_second=False, hangup=True).install()
    sup = Supervisor(specs, log, stops, beats=beats)
    if beats is not None:
        beats.start()
    sup.start_all()
    if announce:
        log.info("%s  (Ctrl-C stops in order; a second Ctrl-C stops at once)", announce)
        print(f"tagpipe: {announce}", flush=True)
    sdnotify.ready(announce)
    try:
        code = sup.run()
    finally:
        if beats is not None:
            beats.close()
    log.info("exit %d (%s)", code, exitcodes.NAMES.get(code, "unknown"))
    return code


def run(args: argparse.Namespace) -> int:
    """``python -m pipeline [run] [--rate N [--duration S]]`` (parsed by ``pipeline.cli``):
    check everything, start the children, supervise them until stopped. Returns the exit code."""
    problem = load_options_problem(args.rate, args.duration)
    if problem:
        print(f"tagpipe: bad option {problem}", file=sys.stderr)
        return exitcodes.CONFIG
    # Check every setting before starting anything: one line, exit 2.
    try:
        settings = load_settings()
    except ConfigError as e:
        print(f"tagpipe: {e}", file=sys.stderr)
        return exitcodes.CONFIG
    if args.rate is None:
        problem = _check_tags(settings)
        if problem:
            print(f"tagpipe: {problem}", file=sys.stderr)
            return exitcodes.CONFIG
    # One supervisor per ring, decided before any child exists (see pipeline.instance).
    lock = InstanceLock(settings.ring_name)
    try:
        lock.acquire()
    except InstanceTaken as e:
        print(f"tagpipe: {e}", file=sys.stderr)
        return exitcodes.ROLE_TAKEN
    except ConfigError as e:
        print(f"tagpipe: {e}", file=sys.stderr)
        return exitcodes.CONFIG
    try:
        busy = _wait_for_free_roles(settings.ring_name, settings.shutdown_timeout_s + EXTRA_STOP_S)
        if busy:
            print(f"tagpipe: {busy}", file=sys.stderr)
            return exitcodes.ROLE_TAKEN
        return _run_locked(args, settings)
    finally:
        lock.release()


def _wait_for_free_roles(ring: str, wait_s: float, step_s: float = 0.1) -> str | None:
    """Wait (at most ``wait_s``) until no process holds the ring's producer or consumer role.

    Taken before any child starts: the children of a supervisor that was killed are still
    stopping in order for up to SHUTDOWN_TIMEOUT (they hold the roles meanwhile), and a
    poller or writer run as its own unit holds them for good. Starting our children anyway
    would let some of them win and others exit 4, the half-run this lock exists to prevent.
    Returns None when the roles are free, else the one-line refusal naming the holders.
    """
    from shm import Observer, RingError
    from shm.segment import role_alive

    deadline = time.monotonic() + wait_s
    while True:
        held = [role for role in ("producer", "consumer") if role_alive(ring, role)]
        if not held:
            return None
        if time.monotonic() >= deadline:
            break
        time.sleep(step_s)
    pids: dict[str, int] = {}
    try:
        with Observer(ring) as obs:
            f = obs.snapshot().fields
            pids = {role: int(f[f"{role}.pid"]) for role in held}
    except (RingError, OSError, ValueError):
        pass
    who = ", ".join(f"{'poller' if r == 'producer' else 'writer'} (pid {pids.get(r) or 'unknown'})" for r in held)
    return (f"ring {ring!r} is still used by a {who} not started by this supervisor"
            f" (waited {wait_s:.0f} s); stop it first")


def _run_locked(args: argparse.Namespace, settings) -> int:
    log = setup_logging("supervisor", settings.log_level)
    log_settings(log, settings)
    poller_argv: tuple[str, ...] = ()
    if args.rate is not None:
        # Load mode always has a duration in the poller; "until stopped" is its longest.
        poller_argv = ("--rate", repr(args.rate), "--duration", repr(args.duration or LOAD_MAX_S))
    limits = hang_limits(settings)
    specs = default_specs(settings.shutdown_timeout_s, poller_argv, poller_finishes=args.duration is not None, hang_limits_s=limits)
    probe_s = min(WEB_PROBE_MAX_S, limits["web"] / 4)
    beats = Heartbeats(settings.ring_name, WebProbe(settings.web_host, settings.web_port, every_s=probe_s, timeout_s=probe_s))
    return supervise(specs, log, f"status page on {status_url(settings.web_host, settings.web_port)}", beats)
