"""Random SIGKILLs of a producer and a consumer process, then an exact reckoning.

Used by ``tests/test_ring_chaos.py`` (~15 s) and ``bench/bench_ring_chaos.py`` (minutes).
The consumer (``role.py chaos-consume``) stores every delivered identity in its own
SQLite file before it commits the batch in the ring; at the end the ring is drained and
the header's counters, the SQLite rows and the consumer's own torn/duplicate counts must
agree exactly. ``stored_then_overwritten`` counts records that are in SQLite *and* counted
lost: a consumer stored them, was killed before its ring commit, and the producer
overwrote them before the next consumer read them again (lost over-counts, never under).
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

from shm import Observer
from shm.header import W_CLAIM, W_PUBLISHED
from shm.producer import TEST_PUBLISH_STALL_ENV

from .proc import Role


# The producer's test hook (shm.producer.TEST_PUBLISH_STALL_ENV): this share of publishes
# stop this long between claim and publish, half written, so that aimed kills land there.
PUBLISH_STALL = "0.1,0.02"


def _in_publish_window(ring: str) -> bool:
    """True while the ring's producer has claimed records it has not published."""
    with Observer(ring) as o:
        u = o.h.u
        return int(u[W_CLAIM]) > int(u[W_PUBLISHED])


def run_chaos(ring: str, workdir: Path, duration_s: float, capacity: int = 8000, rate: float = 20_000,
              seed: int = 1, kill_gap_s: tuple[float, float] = (0.2, 1.0), stall_p: float = 0.005, log=None,
              aim_p: float = 0.5) -> dict:
    """Run the chaos for ``duration_s`` and return the reckoning (see ``check``).

    A share ``aim_p`` of the producer kills is aimed between claim and publish: the
    producer runs with the publish-stall test hook, and the kill waits (at most 1 s) until
    the header shows ``claim > published``. Whether each kill really landed there is read
    from the header after the process is dead (``kills_between_claim_and_publish``).
    Every process started is stopped before returning (by pid).
    """
    rnd = random.Random(seed)
    db = workdir / "delivered.db"
    roles: dict[str, Role] = {}

    def spawn(kind: str) -> Role:
        if kind == "producer":
            r = Role("chaos-produce", ring, "--capacity", capacity, "--batch", 300, "--rate", rate,
                     "--seed", rnd.randrange(1, 1 << 30), extra_env={TEST_PUBLISH_STALL_ENV: PUBLISH_STALL})
        else:
            r = Role("chaos-consume", ring, "--db", db, "--max-n", 500, "--stall-p", stall_p)
        roles[kind] = r
        return r

    kills = {"producer": 0, "consumer": 0}
    in_window = 0
    try:
        spawn("producer").event("ready")
        spawn("consumer").event("ready")
        end = time.monotonic() + duration_s
        while time.monotonic() < end:
            time.sleep(rnd.uniform(*kill_gap_s))
            victim = rnd.choice(("producer", "consumer"))
            if victim == "producer" and rnd.random() < aim_p:
                aim_until = time.monotonic() + 1.0
                while time.monotonic() < aim_until and not _in_publish_window(ring):
                    time.sleep(0.001)
            opened = any(e.get("event") == "ready" for e in roles[victim].events)
            roles[victim].kill()
            kills[victim] += 1
            # Dead now: a hole it left stays until the next producer opens (only one that
            # had opened counts: a hole found at its start belongs to its predecessor).
            if victim == "producer" and opened and _in_publish_window(ring):
                in_window += 1
            r = spawn(victim)
            if rnd.random() < 0.7:  # sometimes the next kill lands while it is starting
                r.event("ready")
            if log and sum(kills.values()) % 50 == 0:
                log(f"{sum(kills.values())} kills so far")
        roles["producer"].kill(15)  # SIGTERM: the last producer closes cleanly
        if roles["consumer"].proc.poll() is not None:
            spawn("consumer")
        roles["consumer"].event("ready")
        deadline = time.monotonic() + 120
        while True:
            with Observer(ring) as o:
                f = o.snapshot().fields
            if f["consumer.committed"] >= f["producer.published"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        roles["consumer"].kill(15)
    finally:
        for r in roles.values():
            r.stop()
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT COUNT(*), COUNT(DISTINCT epoch) FROM rows").fetchone()
        dup, torn, redelivered = con.execute(
            "SELECT COALESCE(SUM(dup),0), COALESCE(SUM(torn),0), COALESCE(SUM(redelivered),0) FROM runs").fetchone()
        orphan_lost = con.execute("SELECT COALESCE(SUM(n), 0) FROM orphan_lost").fetchone()[0]
        out_of_range = con.execute("SELECT COUNT(*) FROM rows WHERE seq < 0 OR seq >= ?", (f["producer.published"],)).fetchone()[0]
    con.close()
    return {
        "published": f["producer.published"],
        "committed": f["consumer.committed"],
        "delivered": f["consumer.delivered"],
        "lost": f["consumer.lost"],
        "padding": f["consumer.padding"],
        "producer_padding": f["producer.padding"],
        "overwritten_estimate": f["producer.overwritten"],
        "producer_starts": f["producer.starts"],
        "consumer_starts": f["consumer.starts"],
        "sqlite_rows": rows[0],
        "stored_then_overwritten": orphan_lost,
        "epochs": rows[1],
        "duplicates": dup,
        "torn": torn,
        "redelivered_after_kill": redelivered,
        "rows_out_of_range": out_of_range,
        "kills_producer": kills["producer"],
        "kills_consumer": kills["consumer"],
        "kills_between_claim_and_publish": in_window,
    }


def problems(r: dict) -> list[str]:
    """What is wrong with a reckoning (empty: exact)."""
    bad = []
    if r["published"] != r["delivered"] + r["lost"] + r["padding"]:
        bad.append("published != delivered + lost + padding")
    if r["committed"] != r["published"]:
        bad.append("not drained")
    if r["sqlite_rows"] != r["delivered"] + r["stored_then_overwritten"]:
        bad.append("SQLite rows != consumer.delivered + stored_then_overwritten")
    # Padding the producer published is either skipped by the consumer (consumer.padding)
    # or overwritten before the consumer got to it, and then counted lost with the records
    # around it (lost over-counts by that much, never under-counts).
    if r["padding"] > r["producer_padding"]:
        bad.append("padding skipped > padding published")
    if r["producer_padding"] - r["padding"] > r["lost"]:
        bad.append("padding neither skipped nor counted lost")
    for k in ("duplicates", "torn", "rows_out_of_range"):
        if r[k]:
            bad.append(f"{k}: {r[k]}")
    if r["epochs"] != 1:
        bad.append(f"{r['epochs']} epochs")
    return bad
