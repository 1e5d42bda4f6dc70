"""``python -m bench [NAME ...]``: run the benchmarks (bench/bench_NAME.py, each with main(argv) -> int).

Each benchmark prints its figures and the command that produced them; copy them into
BENCHMARKS.md. With no NAME, all run one after another (never in parallel: the machine
has 2 cores and each figure is a side-by-side ratio).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = [a for a in argv if not a.startswith("-")] or available()
    extra = [a for a in argv if a.startswith("-")]
    worst = 0
    for name in names:
        if name not in available():
            print(f"unknown benchmark {name!r}; have: {', '.join(available())}", file=sys.stderr)
            return 2
        print(f"\n=== bench {name} ===", flush=True)
        t0 = time.monotonic()
        rc = importlib.import_module(f"bench.bench_{name}").main(extra)
        print(f"=== bench {name}: exit {rc} after {time.monotonic() - t0:.1f} s ===", flush=True)
        worst = max(worst, rc or 0)
    return worst


if __name__ == "__main__":
    sys.exit(main())
