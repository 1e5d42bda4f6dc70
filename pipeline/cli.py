"""``python -m pipeline [COMMAND]``: every command's arguments, parsed in one place.

    python -m pipeline [run] [--rate N [--duration S]]   poller + writer + web (the default)
    python -m pipeline status [--json] [--check] [--watch S] [--ring R] [--env-file PATH] [--tags [FILTER]]
    python -m pipeline check-db
    python -m pipeline overflow-check [--buffer-size N] [--overflow-count N] [--batch N] [--ring R]
    python -m pipeline quarantine list | write-back FILE [--skip-bad]
    python -m pipeline delete-ring [--name N] [--force]
    python -m pipeline settings

Each command's work stays in its own module, as a function taking the parsed arguments
(``COMMANDS``: module and function), imported only when that command runs: a tool starts
fast and a broken optional part cannot stop the others. With no command, or with options
only, ``run`` is meant. ``python -m pipeline.poller``, ``pipeline.writer`` and ``web``
keep their own (single-purpose) command lines.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable, NamedTuple

from .common import exitcodes
from .poller.load_options import LOAD_MAX_S, add_load_options


class Command(NamedTuple):
    """A subcommand: where its work is done, its one-line help, how to add its options."""

    module: str
    function: str
    help: str
    options: Callable[[argparse.ArgumentParser], None]


def _no_options(p: argparse.ArgumentParser) -> None:
    pass


def _run_options(p: argparse.ArgumentParser) -> None:
    add_load_options(p, "with --rate: seconds of load, then everything stops in order (default: run until stopped,"
                        f" at most {LOAD_MAX_S} s)")


def _status_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object (for scripts)")
    p.add_argument("--ring", default=None, help="ring name (default: RING_NAME)")
    p.add_argument("--check", action="store_true", help="exit 6 unless health is healthy")
    p.add_argument("--watch", type=float, default=None, metavar="S", help="print again every S seconds until Ctrl-C")
    p.add_argument("--env-file", default=".env", metavar="PATH",
                   help="settings file to read (default .env; e.g. /etc/tagpipe/tagpipe.env, the units' EnvironmentFile)")
    p.add_argument("--tags", nargs="?", const="", default=None, metavar="FILTER",
                   help="live tag values instead: every configured tag, or those with FILTER in PLC code, address,"
                        " unit or description (with --check: exit 6 if one is stale)")


def _overflow_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--buffer-size", type=int, default=1000, help="scratch ring capacity (records)")
    p.add_argument("--overflow-count", type=int, default=500, help="records published beyond the capacity")
    p.add_argument("--batch", type=int, default=1, help="records per publish (default 1, as the original feature did)")
    p.add_argument("--ring", default=f"overflowcheck{os.getpid()}", help="scratch ring name")


def _quarantine_options(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", help="list quarantine files and their row counts")
    wb = sub.add_parser("write-back", help="validate a corrected quarantine file and queue its rows for replay")
    wb.add_argument("file")
    wb.add_argument("--skip-bad", action="store_true", help="write back the valid rows even if some are still bad")


def _delete_ring_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default=None, help="ring to delete (default: RING_NAME)")
    p.add_argument("--force", action="store_true", help="delete even while a poller or writer runs")


COMMANDS: dict[str, Command] = {
    "run": Command("pipeline.supervisor", "run", "run poller, writer and web together (the default; --rate N: load mode)", _run_options),
    "status": Command("pipeline.status", "run", "print the monitoring data in the terminal", _status_options),
    "check-db": Command("pipeline.writer.checkdb", "run", "connect to the configured database and check the table", _no_options),
    "overflow-check": Command("pipeline.poller.overflow_check", "run", "the original overflow check on a scratch ring", _overflow_options),
    "quarantine": Command("pipeline.writer.quarantine", "run", "list quarantined rows or write a corrected file back", _quarantine_options),
    "delete-ring": Command("pipeline.admin", "delete_ring_command", "delete a ring on purpose (records in it are discarded)", _delete_ring_options),
    "settings": Command("pipeline.admin", "settings_command", "print every setting with its effective value", _no_options),
}


class _OneLineEach(argparse.HelpFormatter):
    """Help wide enough that every command and its help fit on one line of ``--help``."""

    def __init__(self, prog: str) -> None:
        longest = max(len(n) for n in COMMANDS)
        super().__init__(prog, max_help_position=longest + 8, width=max(100, longest + 8 + max(len(c.help) for c in COMMANDS.values())))
        # argparse sizes the name column from the options, not the commands: widen it.
        self._action_max_length = longest + 6


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one subparser per command (``--help`` lists each on one line)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline", description="tagpipe: PLC tags through a shared-memory ring into Oracle or SQLite.",
                                     epilog="With no command, run is meant: python -m pipeline --rate 1000 is python -m pipeline run --rate 1000.",
                                     formatter_class=_OneLineEach)
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help[0].upper() + cmd.help[1:] + ".")
        cmd.options(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's) and run the command. Returns its exit code;
    a bad argument exits 2 with argparse's message."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv.insert(0, "run")
    elif argv[0] == "help":
        argv[0] = "--help"
    args = build_parser().parse_args(argv)
    cmd = COMMANDS[args.command]
    code = getattr(importlib.import_module(cmd.module), cmd.function)(args)
    return exitcodes.OK if code is None else code
