"""The load mode's command-line options (``--rate``, ``--duration``) and their limits.

Taken by ``python -m pipeline.poller`` and ``python -m pipeline [run]`` alike, checked by
one function. Standard library only, so a command line is parsed without loading numpy.
"""

from __future__ import annotations

import argparse

RATE_MAX = 1e9  # values/s: --rate beyond this is a typo, not a plan
LOAD_MAX_S = 7 * 86_400  # the longest load run (--duration)
DEFAULT_DURATION_S = 60.0  # the poller's --duration when only --rate is given


def add_load_options(parser: argparse.ArgumentParser, duration_help: str) -> None:
    """``--rate`` and ``--duration``, as the poller and ``python -m pipeline`` both take them."""
    parser.add_argument("--rate", type=float, default=None, metavar="N",
                        help="load mode: values/s from the simulator (0: as fast as possible)")
    parser.add_argument("--duration", type=float, default=None, metavar="S", help=duration_help)


def load_options_problem(rate: float | None, duration: float | None) -> str | None:
    """What is wrong with ``--rate``/``--duration`` (one line naming the option), or None.

    ``--duration`` needs ``--rate``; rate 0 to RATE_MAX values/s; duration more than 0 and
    at most LOAD_MAX_S seconds.
    """
    if rate is None:
        return f"--duration={duration!r}: goes with --rate (load mode)" if duration is not None else None
    if not 0 <= rate <= RATE_MAX:
        return f"--rate={rate!r}: must be 0 (as fast as possible) to 1e9 values/s"
    if duration is not None and not 0 < duration <= LOAD_MAX_S:
        return f"--duration={duration!r}: must be more than 0 and at most {LOAD_MAX_S} s (a week)"
    return None
