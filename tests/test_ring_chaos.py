"""~15 s of random SIGKILLs of the producer and the consumer (most producer kills aimed
between claim and publish), then exact accounting."""

from __future__ import annotations

from ring_helpers.chaos import problems, run_chaos


def test_random_kills_of_both_sides_lose_nothing_uncounted(ring_name, tmp_path):
    r = run_chaos(ring_name, tmp_path, duration_s=15, capacity=8000, rate=20_000, seed=2026, aim_p=0.8)
    assert problems(r) == [], r
    assert r["kills_producer"] + r["kills_consumer"] >= 10, r
    assert r["kills_producer"] and r["kills_consumer"], r
    assert r["lost"] > 0, r  # the ring overflowed while the consumer was down or stalled
    assert r["delivered"] > 10_000, r
    assert r["producer_starts"] <= r["kills_producer"] + 1
    # Aimed kills landed between claim and publish: the next producer filled the holes with
    # padding, which the consumer skipped, counted on both sides (problems() checks equal).
    assert r["kills_between_claim_and_publish"] > 0, r
    assert r["producer_padding"] > 0 and r["padding"] > 0, r
