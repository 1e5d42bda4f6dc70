"""``python -m pipeline status``: the monitoring data in the terminal, for an SSH session.

Reads the ring through ``pipeline.common.telemetry.read``, the read path the web process
uses too, so the numbers match the status page. Works when
the ring is missing (and says so). ``--json`` prints one JSON object for scripts;
``--check`` exits 6 unless health is ``healthy``; ``--watch S`` repeats every S seconds;
``--env-file`` reads the settings (ring name, health thresholds) from the units' file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from typing import Callable

from .common import exitcodes
from .common.errors import ConfigError
from .common.settings import load_settings


def collect(ring: str, thresholds) -> dict:
    """One reading of the ring as a JSON-ready dict: figures plus health.

    Never raises for a missing or unreadable ring: ``ring_present`` is False and health
    says why. Does not block.
    """
    from .common import telemetry

    reading = telemetry.read(ring, thresholds, missing_hint=" (no poller has created it yet, or it was deleted)")
    health = _health_dict(reading.health)
    if reading.figures is None:
        return {"ring": ring, "ring_present": False, "health": health}
    d = telemetry.to_json(reading.figures)
    d["ring_present"] = True
    d["health"] = health
    return d


def _health_dict(h) -> dict:
    from .common.telemetry import to_json

    return {
        "status": h.status,
        "reasons": h.reasons,
        "checks": to_json(h.checks),
        "buffer_ok": h.buffer_ok,
        "writer_ok": h.writer_ok,
        "poller_ok": h.poller_ok,
        "oracle_connection_ok": h.oracle_connection_ok,
    }


def _t(us) -> str:
    """A header time (us UTC) as local time, the way operators read it."""
    if not us:
        return "-"
    return datetime.fromtimestamp(int(us) / 1e6, tz=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _s(x) -> str:
    return "-" if x is None else f"{x:.1f} s"


def render(d: dict) -> str:
    """The reading as text, a screenful: one fact per line, health first."""
    h = d["health"]
    out = [f"tagpipe ring {d['ring']!r}: {h['status'].upper()}"]
    out += [f"  - {r}" for r in h["reasons"]]
    if not d["ring_present"]:
        return "\n".join(out)
    b, wm, ws, lag, roles = d["buffer"], d["writer_metrics"], d["writer_state"], d["lag"], d["roles"]
    out.append("")
    out.append(f"ring      {b['current_size']:,} / {b['max_size']:,} records ({b['utilization_pct']:.1f} % full)"
               f"   epoch {b['epoch']}   created {_t(b['created_us'])}")
    out.append(f"          published {b['published']:,}   committed {b['committed']:,}   lost {b['overflow_count']:,}"
               f" ({b['overflow_rate_pct']:.3f} % last hour)   overwritten before commit {b['overwritten_before_commit']:,} (at risk)")
    for name in ("poller", "writer"):
        r = roles[name]
        out.append(f"{name:<9} {'running' if r['running'] else 'DOWN'} (state {r['state']}, pid {r['pid'] or '-'},"
                   f" heartbeat {_s(r['heartbeat_age_s'])} ago, starts {r['starts']})" + (f": {r['reason']}" if r["reason"] else ""))
    p = d["poller"]
    out.append(f"started   poller {_t(p['started_us'])} (up {_s(p['uptime_s'])}, source {p['source']})"
               f"   writer {_t(ws['started_us'])} (up {_s(ws['uptime_s'])})")
    out.append(f"database  {ws['sink']} {ws['db_state']}   last commit {_t(ws['last_commit_us'])}"
               + (f"   outage for {_s(ws['outage_s'])}" if ws["outage_s"] else "") + f"   probes {ws['probes']:,}")
    out.append(f"lag       {lag['records']:,} records waiting   oldest unwritten {_s(lag['oldest_unwritten_age_s'])} old")
    out.append(f"writes    last {wm['window_s'] // 60} min: {wm['successful_writes']:,} ok, {wm['failed_writes']:,} failed"
               f" ({wm['success_rate_pct']:.2f} %)   avg batch {wm['avg_batch_size']:.0f}   avg latency {wm['avg_write_latency_ms']:.1f} ms"
               f"   {wm['throughput_items_per_sec']:,.0f} values/s")
    out.append(f"          rows written {ws['rows_written']:,}   duplicates {ws['rows_duplicate']:,}   delivered {ws['delivered']:,}")
    out.append(f"backups   {ws['backup_files_pending']:,} files ({ws['backup_rows_pending']:,} rows,"
               f" {ws['backup_bytes_pending']:,} bytes, oldest {_s(ws['backup_oldest_age_s'])} old) waiting"
               f"   spilled {ws['rows_spilled']:,}   replayed {ws['rows_replayed']:,}   disk {ws['disk_state']}")
    out.append(f"quarantined {ws['rows_quarantined']:,} rows ({ws['corrupt_lines']:,} unreadable backup lines)   lost {b['lost']:,} values")
    out.append(f"polling   polls {p['polls']:,}   errors {p['poll_errors']:,}   overruns {p['overruns']:,}"
               f"   values {p['values']:,} (bad {p['bad_values']:,}, suppressed {p['suppressed']:,})")
    if d["plcs"]:
        out.append("")
        out.append(f"{'PLC':<17}{'connected':<11}{'last good poll':<21}{'polls':>9}{'errors':>8}{'overruns':>9}{'tags':>6}")
        for r in d["plcs"]:
            out.append(f"{r['plc_code']:<17}{'yes' if r['connected'] else 'NO':<11}{_t(r['last_good_poll_us']):<21}"
                       f"{r['polls']:>9,}{r['errors']:>8,}{r['overruns']:>9,}{r['tags']:>6}")
    return "\n".join(out)


# --- live tag values (issue 15): the table of /api/tags and of the status page ---
def render_tags(page) -> str:
    """A ``pipeline.common.latest.TagPage`` as a text table: the status page's tag table."""
    from .common.latest import STALE_INTERVALS

    if not page.present:
        return f"tagpipe tags: {page.problem}"
    head = (f"{'PLC':<17}{'address':<17}{'value':>16} {'unit':<8}{'quality':<10}{'age':>10}  {'state':<6}"
            f" {'group':<12}description")
    out = [head]
    for r in page.rows:
        v = "-" if r["value"] is None else f"{r['value']:.6g}"
        grp = f"{r['group']} {r['interval_s']:g}s"
        out.append(f"{r['plc_code']:<17}{r['address']:<17}{v:>16} {r['unit']:<8}{r['quality'].upper():<10}"
                   f"{_s(r['age_s']):>10}  {'STALE' if r['stale'] else 'fresh':<6} {grp:<12}"
                   f"{r['description']}")
    out.append(f"{page.matched:,} of {page.total:,} tags shown; {page.stale_count:,} of all stale"
               f" (no poll for {STALE_INTERVALS} x the group interval)")
    return "\n".join(out)


def _show(args: argparse.Namespace, frame: Callable[[], str]) -> bool:
    """Print ``frame()`` once, or every ``args.watch`` seconds (at least 0.2 s; the screen
    cleared first unless ``--json``) until Ctrl-C. The one print loop of both views (status
    and ``--tags``). Returns False when Ctrl-C ended it."""
    try:
        while True:
            text = frame()
            if args.watch and not args.json:
                text = "\x1b[H\x1b[2J" + text
            print(text, flush=True)
            if not args.watch:
                return True
            time.sleep(max(0.2, args.watch))
    except KeyboardInterrupt:
        return False


def _run_tags(args: argparse.Namespace, ring: str) -> int:
    from .common.latest import LatestReader

    reader = LatestReader(ring)
    page = None

    def frame() -> str:
        nonlocal page
        page = reader.query(q=args.tags or None, limit=None)
        return json.dumps(page.to_json() | {"ring": ring}, sort_keys=True) if args.json else render_tags(page)

    try:
        if not _show(args, frame):
            return exitcodes.OK
    finally:
        reader.close()
    assert page is not None
    if args.check and (not page.present or any(r["stale"] for r in page.rows)):
        return exitcodes.CHECK_FAILED
    return exitcodes.OK
# --- end live tag values ---


def run(args: argparse.Namespace) -> int:
    """``python -m pipeline status`` with its parsed options (``pipeline.cli``). Returns the
    exit code: 0, 6 (``--check`` and not healthy) or 2 (a bad setting)."""
    try:
        settings = load_settings(env_file=args.env_file)
    except ConfigError as e:
        print(f"tagpipe status: {e}", file=sys.stderr)
        return exitcodes.CONFIG
    ring = args.ring or settings.ring_name
    if getattr(args, "tags", None) is not None:
        return _run_tags(args, ring)
    from .common.telemetry import Thresholds

    thresholds = Thresholds.from_settings(settings)
    d: dict = {}

    def frame() -> str:
        nonlocal d
        d = collect(ring, thresholds)
        return json.dumps(d, sort_keys=True) if args.json else render(d)

    if not _show(args, frame):
        return exitcodes.OK
    if args.check and d["health"]["status"] != "healthy":
        return exitcodes.CHECK_FAILED
    return exitcodes.OK
