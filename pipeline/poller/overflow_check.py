"""``python -m pipeline overflow-check --buffer-size 1000 --overflow-count 500``: the original feature's check.

On a scratch ring of ``--buffer-size`` records with no writer attached, publish
``buffer-size + overflow-count`` records, print the ring's statistics (as the monitoring
API computes them, ``pipeline.common.telemetry.buffer_status``) and check them: the ring is full;
a writer attaching then gets the newest ``buffer-size`` records and, once it commits, exactly
``overflow-count`` records are counted dropped (oldest first: the overflow count is the exact
loss count) and the overflow rate is ``overflow / (size + overflow)`` (33.3 % for the original feature's
figures). The scratch ring is
deleted afterwards, whatever happens. Exit 0 when the figures match, 6 when not.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from pipeline.common import exitcodes
from pipeline.common.process import start_process
from pipeline.common.telemetry import SCHEMA, buffer_status, open_consumer, open_producer, record_losses
from shm import RECORD_DTYPE, Observer, delete_ring
from shm.layout import MAX_CAPACITY, MIN_CAPACITY, QUALITY_GOOD


def problem_with(args: argparse.Namespace) -> str | None:
    """What is wrong with the parsed options (one line naming the option), or None."""
    if not MIN_CAPACITY <= args.buffer_size <= MAX_CAPACITY:
        return f"--buffer-size {args.buffer_size}: must be between {MIN_CAPACITY} and {MAX_CAPACITY}"
    if not 0 <= args.overflow_count <= 100 * MAX_CAPACITY:
        return f"--overflow-count {args.overflow_count}: must be 0 or more"
    if args.batch < 1:
        return f"--batch {args.batch}: must be at least 1"
    return None


def run(args: argparse.Namespace) -> int:
    """``python -m pipeline overflow-check`` with its parsed options (``pipeline.cli``).
    Returns 0 when the figures match, 6 when not, 2 for a bad option or setting."""
    problem = problem_with(args)
    if problem:
        print(f"tagpipe overflow-check: bad option {problem}", file=sys.stderr)
        return exitcodes.CONFIG
    settings, log = start_process("overflow-check")
    ring = args.ring
    total = args.buffer_size + args.overflow_count
    try:
        producer = open_producer(ring, args.buffer_size, settings.buffer_alert_threshold)
    except Exception as e:
        print(f"overflow-check: cannot create scratch ring {ring!r}: {e}", file=sys.stderr)
        return exitcodes.ERROR
    try:
        recs = np.zeros(total, dtype=RECORD_DTYPE)
        recs["ts_us"] = np.arange(total) + 1_700_000_000_000_000
        recs["value"] = np.arange(total, dtype=np.float64)
        recs["plc_code"] = b"OVERFLOWCHECK"
        recs["tag_address"] = b"D100"
        recs["quality"] = QUALITY_GOOD
        for off in range(0, total, args.batch):
            producer.publish(recs[off : off + args.batch].copy())
        with Observer(ring, telemetry=SCHEMA) as obs:
            full = buffer_status(obs.snapshot())
        # What a writer attaching now gets: the newest buffer-size records, the oldest
        # dropped first. It commits them as the writer does (Writer._durable), which is
        # where the dropped ones are counted lost; the overflow figures are then read.
        consumer = open_consumer(ring, wait=False)
        try:
            batch = consumer.read(total)
            consumer.commit(batch)
            record_losses(consumer)
        finally:
            consumer.close()
        with Observer(ring, telemetry=SCHEMA) as obs:
            st = buffer_status(obs.snapshot())
    finally:
        producer.close()
        delete_ring(ring, force=True)
    expected_rate = 100.0 * args.overflow_count / total if total else 0.0
    print(f"overflow check: published {total} records into a ring of {args.buffer_size} with no writer")
    print(f"  current size       {full.current_size}")
    print(f"  max size           {full.max_size}")
    print(f"  utilization        {full.utilization_pct:.1f} %")
    print(f"  overflow count     {st.overflow_count}  (records dropped: the exact loss count)")
    print(f"  overflow rate      {st.overflow_rate_pct:.1f} %  (expected {expected_rate:.1f} %)")
    print(f"  a writer would get {len(batch)} records (values {_span(batch.records)}), {batch.lost} lost")
    problems = []
    if full.current_size != min(args.buffer_size, total):
        problems.append(f"current size {full.current_size} != {min(args.buffer_size, total)}")
    if st.lost != st.overflow_count:
        problems.append(f"overflow count {st.overflow_count} != lost {st.lost}")
    if st.overflow_count != args.overflow_count:
        problems.append(f"overflow count {st.overflow_count} != {args.overflow_count}")
    if abs(st.overflow_rate_pct - expected_rate) > 0.05:
        problems.append(f"overflow rate {st.overflow_rate_pct:.3f} % != {expected_rate:.3f} %")
    if batch.lost != args.overflow_count or len(batch) != min(args.buffer_size, total):
        problems.append(f"reader got {len(batch)} records and {batch.lost} lost")
    elif len(batch) and batch.records["value"][0] != args.overflow_count:
        problems.append("the oldest records were not the ones dropped")
    if problems:
        print("overflow check: FAILED: " + "; ".join(problems))
        log.error("overflow check failed: %s", "; ".join(problems))
        return exitcodes.CHECK_FAILED
    print("overflow check: OK")
    return exitcodes.OK


def _span(recs: np.ndarray) -> str:
    return f"{recs['value'][0]:.0f}..{recs['value'][-1]:.0f}" if len(recs) else "none"


if __name__ == "__main__":  # the older spelling python -m pipeline.poller.overflow_check
    from pipeline.cli import main

    sys.exit(main(["overflow-check", *sys.argv[1:]]))
