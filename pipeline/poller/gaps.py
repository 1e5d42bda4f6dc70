"""The gap-ledger records the poller publishes into the ring (pipeline/common/gaps.py).

Only the poller knows two kinds of gap; it publishes each as one FLAG_GAP record, so it
travels to the database like data (ring -> database or backup file) and takes its
identity (ring epoch, seq) from the ring:

* ``poller_down``, once at start when a poller ran on this ring before: from that
  poller's last heartbeat to now; the detail says whether it stopped or was killed.
* ``plc_unreachable``, once per episode of one group of one PLC not answering: from the
  first failed poll to the first good one (or to the poller's stop, if that comes
  first), with the first error, shortened to 16 characters. The BAD rows published
  during the episode stay as they are.

A poller killed during an episode publishes no record for it; the ``poller_down`` gap
of the next start covers the time from its last heartbeat.
"""

from __future__ import annotations

import logging

import numpy as np

from pipeline.common import gaps as G
from shm.ring import now_us

log = logging.getLogger("tagpipe.poller.gaps")


def publish_start_gap(producer) -> bool:
    """Publish the ``poller_down`` gap since the previous producer of this ring, if there
    was one. Returns True if a record was published."""
    starts, heartbeat_us, pid, state = producer.previous
    if starts == 0 or heartbeat_us <= 0:
        return False  # a new ring: nothing ran before
    now = now_us()
    detail = f"killed_pid_{pid}" if state == 1 and pid else "stopped"
    producer.publish(G.make_record(G.POLLER_DOWN, 0, min(heartbeat_us, now), now, G.ALL_PLCS, detail))
    log.warning("no poller ran for %.1f s before this start (previous poller %s): recorded in the gap ledger",
                (now - heartbeat_us) / 1e6, detail.replace("_", " "))
    return True


def unreachable_record(plc_code: str, start_us: int, end_us: int, error: str) -> np.ndarray:
    """The ``plc_unreachable`` record of one episode (``seq`` is set by publish)."""
    return G.make_record(G.PLC_UNREACHABLE, 0, start_us, max(start_us, end_us), plc_code, error)
