"""``python -m pipeline status``: the monitoring data in the terminal, for an SSH session.

Reads the ring read-only (``shm.Observer``) and derives every figure with ``shm.stats``,
the same functions the web API uses, so the numbers match the status page. Works when
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

from .common import exitcodes
from .common.errors import ConfigError
from .common.settings import load_settings


def collect(ring: str, thresholds) -> dict:
    """One reading of the ring as a JSON-ready dict: figures plus health.

    Never raises for a missing or unreadable ring: ``ring_present`` is False and health
    says why. Does not block.
    """
    from shm import Observer, RingError
    from shm.stats import HealthEvaluator, figures, peek_pending_ts_us

    evaluator = HealthEvaluator(thresholds)
    try:
        obs = Observer(ring)
    except (RingError, OSError, ValueError) as e:
        health = evaluator.evaluate(None, missing=f"ring missing: {e} (no poller has created it yet, or it was deleted)")
        return {"ring": ring, "ring_present": False, "health": _health_dict(health)}
    try:
        snap = obs.snapshot()
        fig = figures(snap, thresholds, ring_peek_us=peek_pending_ts_us(obs, snap))
    finally:
        obs.close()
    fig["ring_present"] = True
    fig["health"] = _health_dict(evaluator.evaluate(fig))
    return fig


def _health_dict(h) -> dict:
    return {
        "status": h.status,
        "reasons": h.reasons,
        "checks": [{"code": c.code, "severity": c.severity, "message": c.message} for c in h.checks],
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
    out.append(f"          published {b['published']:,}   committed {b['committed']:,}   overflow {b['overflow_count']:,}"
               f" ({b['overflow_rate_pct']:.3f} % last hour)   lost {b['lost']:,}")
    for name in ("poller", "writer"):
        r = roles[name]
        out.append(f"{name:<9} {'running' if r['running'] else 'DOWN'} (state {r['state']}, pid {r['pid'] or '-'},"
                   f" heartbeat {_s(r['heartbeat_age_s'])} ago, starts {r['starts']})" + (f": {r['reason']}" if r["reason"] else ""))
    out.append(f"database  {ws['sink']} {ws['db_state']}   last commit {_t(ws['last_commit_us'])}"
               + (f"   outage for {_s(ws['outage_s'])}" if ws["outage_s"] else ""))
    out.append(f"lag       {lag['records']:,} records waiting   oldest unwritten {_s(lag['oldest_unwritten_age_s'])} old")
    out.append(f"writes    last {wm['window_s'] // 60} min: {wm['successful_writes']:,} ok, {wm['failed_writes']:,} failed"
               f" ({wm['success_rate_pct']:.2f} %)   avg batch {wm['avg_batch_size']:.0f}   avg latency {wm['avg_write_latency_ms']:.1f} ms"
               f"   {wm['throughput_items_per_sec']:,.0f} values/s")
    out.append(f"          rows written {ws['rows_written']:,}   duplicates {ws['rows_duplicate']:,}   delivered {ws['delivered']:,}")
    out.append(f"backups   {ws['backup_files_pending']:,} files ({ws['backup_rows_pending']:,} rows) waiting   spilled {ws['rows_spilled']:,}"
               f"   replayed {ws['rows_replayed']:,}   disk {ws['disk_state']}")
    out.append(f"quarantined {ws['rows_quarantined']:,} rows   lost {b['lost']:,} values")
    p = d["poller"]
    out.append(f"polling   polls {p['polls']:,}   errors {p['poll_errors']:,}   overruns {p['overruns']:,}"
               f"   values {p['values']:,} (bad {p['bad_values']:,}, suppressed {p['suppressed']:,})")
    if d["plcs"]:
        out.append("")
        out.append(f"{'PLC':<17}{'connected':<11}{'last good poll':<21}{'polls':>9}{'errors':>8}{'overruns':>9}{'tags':>6}")
        for r in d["plcs"]:
            out.append(f"{r['plc_code']:<17}{'yes' if r['connected'] else 'NO':<11}{_t(r['last_good_poll_us']):<21}"
                       f"{r.get('polls', 0):>9,}{r.get('errors', 0):>8,}{r.get('overruns', 0):>9,}{r.get('tags', 0):>6}")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    """``python -m pipeline status`` with its parsed options (``pipeline.cli``). Returns the
    exit code: 0, 6 (``--check`` and not healthy) or 2 (a bad setting)."""
    try:
        settings = load_settings(env_file=args.env_file)
    except ConfigError as e:
        print(f"tagpipe status: {e}", file=sys.stderr)
        return exitcodes.CONFIG
    ring = args.ring or settings.ring_name
    from shm.stats import Thresholds

    thresholds = Thresholds.from_settings(settings)
    try:
        while True:
            d = collect(ring, thresholds)
            text = json.dumps(d, sort_keys=True) if args.json else render(d)
            if args.watch and not args.json:
                text = "\x1b[H\x1b[2J" + text
            print(text, flush=True)
            if not args.watch:
                break
            time.sleep(max(0.2, args.watch))
    except KeyboardInterrupt:
        return exitcodes.OK
    if args.check and d["health"]["status"] != "healthy":
        return exitcodes.CHECK_FAILED
    return exitcodes.OK
