"""``python -m bench [NAME ...] [OPTIONS]``: run the benchmarks (bench/bench_NAME.py, each with main(argv) -> int).

Each benchmark prints its figures and the command that produced them; copy them into
BENCHMARKS.md. With no NAME, all run one after another (never in parallel: the machine
has 2 cores and each figure is a side-by-side ratio). OPTIONS (everything from the first
word starting with ``-``, in either ``--rounds 3`` or ``--rounds=3`` form) go to each named
benchmark's own parser: ``python -m bench ring --help`` shows them.
"""

from __future__ import annotations

import argparse
import ast
import gc
import importlib
import pkgutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def available() -> list[str]:
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("bench_"))


def parse_source(text: str) -> ast.Module:
    """``ast.parse`` with the garbage collector held off. CPython 3.11.7 raises "SystemError:
    AST constructor recursion depth mismatch" when a collection runs finalizers in the
    middle of building the tree (seen in the test suite after tests that leave asyncio
    objects to the collector)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(text)
    finally:
        if was_enabled:
            gc.enable()


def summary(name: str) -> str:
    """The first paragraph of bench_NAME.py's docstring, on one line, read without importing it."""
    doc = ast.get_docstring(parse_source((HERE / f"bench_{name}.py").read_text(encoding="utf-8"))) or ""
    return " ".join(doc.split("\n\n")[0].split())


def build_parser() -> argparse.ArgumentParser:
    names = available()
    width = max(len(n) for n in names)
    listing = "\n".join(f"  {n:<{width}}  {summary(n)}" for n in names)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"benchmarks:\n{listing}\n\noptions after the names go to each benchmark, e.g. python -m bench ring --rounds 3")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="benchmarks to run (default: all)")
    parser.add_argument("options", nargs=argparse.REMAINDER, metavar="OPTIONS", help="passed to each benchmark's main(argv)")
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """NAMEs, then the benchmark options (the first word starting with '-' and all after it).
    Exits 2 (argparse) for a name that is no benchmark."""
    parser = build_parser()
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        return argparse.Namespace(names=[], options=argv)  # options for every benchmark
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in available()]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; have: {', '.join(available())}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    worst = 0
    for name in args.names or available():
        print(f"\n=== bench {name} ===", flush=True)
        t0 = time.monotonic()
        rc = importlib.import_module(f"bench.bench_{name}").main(list(args.options))
        print(f"=== bench {name}: exit {rc} after {time.monotonic() - t0:.1f} s ===", flush=True)
        worst = max(worst, rc or 0)
    return worst


if __name__ == "__main__":
    sys.exit(main())
