"""``python -m pipeline.poller``: read PLC tags into the ring (its creator and only producer).

    python -m pipeline.poller                          poll TAGS_FILE (default: the demo plant, simulated)
    python -m pipeline.poller --check                  validate TAGS_FILE and exit (0, or 2 with the mistake)
    python -m pipeline.poller --rate N --duration S    load mode: N values/s for S seconds, then exit

Exit codes: 0 orderly stop; 2 bad setting or TAGS_FILE (one line on stderr, before the
ring is opened) or not enough shared memory for BUFFER_MAX_SIZE; 3 the ring needs
attention (another layout with records waiting); 4 another poller owns the ring;
6 load mode fell short of its rate; 1 unexpected error, or the ring was deleted under
the poller (a restart recreates it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from pipeline.common import exitcodes, sdnotify
from pipeline.common.process import StopSignals, start_process
from pipeline.common import telemetry
from shm import CapacityError, LayoutMismatch, Producer, RoleTaken

from .config import PlantConfig, TagsFileError, check_fits_ring, load_tags
from .load_options import DEFAULT_DURATION_S, add_load_options, load_options_problem

RATE_TOLERANCE = 0.95  # load mode: below this share of the asked rate the check fails


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m pipeline.poller", description=__doc__.split("\n")[0])
    add_load_options(ap, f"load mode: seconds to run (default {DEFAULT_DURATION_S:g})")
    ap.add_argument("--check", action="store_true", help="validate the tag definitions and exit")
    ns = ap.parse_args(argv)
    problem = load_options_problem(ns.rate, ns.duration)
    if problem:
        ap.error(problem)
    if ns.rate is not None and ns.check:
        ap.error("--check validates TAGS_FILE; load mode (--rate) does not read it")
    if ns.rate is not None and ns.duration is None:
        ns.duration = DEFAULT_DURATION_S
    return ns


def open_ring(settings, log: logging.Logger) -> Producer:
    """Take the producer role. Raises SystemExit with the documented code on failure."""
    try:
        producer = telemetry.open_producer(settings.ring_name, settings.buffer_max_size, settings.buffer_alert_threshold)
    except RoleTaken as e:
        print(f"tagpipe poller: {e}", file=sys.stderr)
        raise SystemExit(exitcodes.ROLE_TAKEN) from None
    except LayoutMismatch as e:  # RingNotDrained included
        print(f"tagpipe poller: {e}", file=sys.stderr)
        raise SystemExit(exitcodes.RING_NEEDS_ATTENTION) from None
    except CapacityError as e:
        print(f"tagpipe poller: bad setting BUFFER_MAX_SIZE={settings.buffer_max_size}: {e}", file=sys.stderr)
        raise SystemExit(exitcodes.CONFIG) from None
    for note in producer.notes:
        log.info("%s", note)
    return producer


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings, log = start_process("poller")
    plant = None
    if args.rate is None:
        try:
            plant = load_tags(settings)
        except TagsFileError as e:
            print(f"tagpipe poller: bad TAGS_FILE {e}", file=sys.stderr)
            return exitcodes.CONFIG
        if args.check:
            print(f"{plant.path}: {len(plant.plcs)} PLCs, {plant.tag_count} tags: OK")
            return exitcodes.OK
    secrets: dict[str, str | None] = {}
    if plant is not None and "opcua" in plant.protocols:
        rc = _opcua_preflight(plant, secrets, log)
        if rc:
            return rc
    signals = StopSignals().install()
    producer = open_ring(settings, log)
    if plant is not None and producer.capacity != settings.buffer_max_size:
        # The ring kept its old size (records still waiting): the groups must fit that one.
        try:
            check_fits_ring(plant, producer.capacity, f"ring {settings.ring_name!r} kept at capacity")
        except TagsFileError as e:
            producer.close()
            print(f"tagpipe poller: bad TAGS_FILE {e}", file=sys.stderr)
            return exitcodes.CONFIG
    try:
        if plant is None:
            return _run_load(producer, args, signals, log)
        return _run_poll(producer, plant, settings, signals, log, secrets)
    finally:
        sdnotify.stopping()
        producer.close()
        log.info("poller stopped (published up to seq %d)", producer.published)


def _run_poll(producer, plant: PlantConfig, settings, signals: StopSignals, log: logging.Logger,
              secrets: dict[str, str | None]) -> int:
    from .scheduler import Poller
    from .sources.simulator import SimulatedPlc

    sources = []
    for plc in plant.plcs:
        if plc.protocol == "modbus":
            from .sources.modbus import ModbusPlc, quiet_pymodbus

            quiet_pymodbus()
            sources.append(ModbusPlc(plc))
        elif plc.protocol == "mc":
            from .sources.mc import McPlc

            sources.append(McPlc(plc))
        elif plc.protocol == "opcua":
            from .sources.opcua import OpcUaPlc

            sources.append(OpcUaPlc(plc, secrets.get(plc.code)))
        else:
            sources.append(SimulatedPlc(plc))
    log.info("polling %d PLCs, %d tags from %s%s", len(plant.plcs), plant.tag_count, plant.path,
             "" if settings.tags_file else " (demo plant, simulated: set TAGS_FILE for real PLCs)")

    from .scheduler import latest_groups

    latest = _live_values(settings.ring_name, latest_groups(plant), log)

    async def run() -> bool:
        poller = Poller(producer, plant, sources, signals, latest=latest)
        sdnotify.ready(f"polling {len(plant.plcs)} PLCs, {plant.tag_count} tags")
        await poller.run(settings.shutdown_timeout_s)
        return poller.ring_lost

    try:
        lost = asyncio.run(run())
    finally:
        if latest is not None:
            latest.close()  # the table stays: the web process shows the last values and their age
    if lost:
        return exitcodes.ERROR  # the ring vanished: a restart recreates it
    log.info("stop requested (%s): last polls published", signals.signal_name or "stop")
    return exitcodes.OK


def _live_values(ring: str, groups: list, log: logging.Logger):
    """The live-values table of these poll groups (``GroupSpec``s; issue 15), replacing the
    previous poller's; None (logged, polling goes on) when /dev/shm cannot hold it."""
    from pipeline.common.latest import LatestTable

    try:
        return LatestTable.create(ring, groups)
    except OSError as e:
        log.error("no live tag values (/api/tags): cannot create the latest-values table: %s", e)
        return None


# --- OPC UA (issue 14) ---
def _opcua_preflight(plant: PlantConfig, secrets: dict[str, str | None], log: logging.Logger) -> int:
    """Before the ring is opened: every OPC UA password (named by password_env) must be set,
    and every node of a server that answers must exist and be a scalar number or Boolean.

    Fills ``secrets`` (PLC code -> password). Returns 0, or exit code 2 after one line on
    stderr naming the variable or the node (a password is never shown). A server that
    does not answer now is not an error here: the poller retries it like any PLC.
    """
    from .sources.opcua import OpcUaPlc, password_for, quiet_asyncua

    quiet_asyncua()
    plcs = [(i, plc) for i, plc in enumerate(plant.plcs) if plc.protocol == "opcua"]
    for i, plc in plcs:
        try:
            secrets[plc.code] = password_for(plc)
        except KeyError as e:
            print(f"tagpipe poller: bad setting {e.args[0]}: is not set in the environment or .env"
                  f" (password_env of plcs[{i}] {plc.code!r} in {plant.path})", file=sys.stderr)
            return exitcodes.CONFIG

    async def check() -> list:
        srcs = [OpcUaPlc(plc, secrets[plc.code]) for _, plc in plcs]
        try:
            return await asyncio.gather(*(s.check_nodes() for s in srcs), return_exceptions=True)
        finally:
            await asyncio.gather(*(s.close() for s in srcs), return_exceptions=True)

    problems = []
    for (i, plc), res in zip(plcs, asyncio.run(check())):
        if isinstance(res, BaseException):
            log.info("OPC UA server of %s not checked at start (%s): its nodes are checked when it answers",
                     plc.code, res)
            continue
        problems += [(f"plcs[{i}].groups[{g}].tags[{t}].node", node, reason) for g, t, node, reason in res]
    if problems:
        key, node, reason = problems[0]
        more = f" (and {len(problems) - 1} more nodes)" if len(problems) > 1 else ""
        print(f"tagpipe poller: bad TAGS_FILE {plant.path}: {key} = {node!r}: {reason}{more}", file=sys.stderr)
        return exitcodes.CONFIG
    return 0
# --- end OPC UA ---


def _run_load(producer, args, signals: StopSignals, log: logging.Logger) -> int:
    from shm.ring import now_us

    from .loadgen import LoadGenerator, load_groups
    from .scheduler import SOURCE_KIND

    producer.set("poller.source_kind", SOURCE_KIND["load"])
    producer.set("poller.started_us", now_us())
    producer.set("poller.plc_count", 0)
    latest = _live_values(producer.name, load_groups(args.rate), log)
    gen = LoadGenerator(producer, args.rate, args.duration, signals, latest=latest)
    sdnotify.ready(f"load mode: {args.rate:g} values/s for {args.duration:g} s")
    log.info("load mode: %s values/s for %g s into ring %r", f"{args.rate:,.0f}" if args.rate else "max",
             args.duration, producer.name)
    try:
        res = gen.run()
    finally:
        if latest is not None:
            latest.close()
    line = (f"load mode: published {res.published:,} values in {res.elapsed_s:.2f} s ="
            f" {res.rate:,.0f} values/s (asked {f'{res.target_rate:,.0f}' if res.target_rate else 'max'};"
            f" {res.late_ticks} late ticks)")
    print(line, flush=True)
    log.info("%s", line)
    if signals.requested or not args.rate:
        return exitcodes.OK
    if res.rate < RATE_TOLERANCE * args.rate:
        print(f"load mode: FAILED: below {RATE_TOLERANCE:.0%} of the asked rate", file=sys.stderr)
        return exitcodes.CHECK_FAILED
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
