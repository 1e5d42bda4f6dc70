"""``python -m pipeline``: run all three processes, or a tool given as a subcommand.

    python -m pipeline                      poller + writer + web (what `make run` uses)
    python -m pipeline status               the monitoring data, in the terminal
    python -m pipeline check-db             connect to the configured database and check it
    python -m pipeline overflow-check --buffer-size 1000 --overflow-count 500
    python -m pipeline delete-ring [--name N] [--force]
    python -m pipeline settings             every setting, its value (secrets masked)

Each subcommand lives in its own module with ``main(argv) -> int``; imported lazily so a
tool starts fast and a broken optional part cannot stop the others.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("pipeline.supervisor", "run poller, writer and web together (the default; --rate N [--duration S]: load mode)"),
    "status": ("pipeline.status", "print the monitoring data in the terminal"),
    "check-db": ("pipeline.writer.checkdb", "connect to the configured database and check the table"),
    "overflow-check": ("pipeline.poller.overflow_check", "the original overflow check on a scratch ring"),
    "delete-ring": ("pipeline.admin", "delete a ring on purpose (records in it are discarded)"),
    "settings": ("pipeline.admin", "print every setting with its effective value"),
    "quarantine": ("pipeline.writer.quarantine", "list quarantined rows or write a corrected file back"),
}


def usage() -> str:
    lines = ["usage: python -m pipeline [COMMAND] [ARGS...]", "", "commands:"]
    lines += [f"  {name:<16}{text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command = argv.pop(0) if argv and not argv[0].startswith("-") else "run"
    if command not in COMMANDS:
        print(f"tagpipe: unknown command {command!r}\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    if command in ("delete-ring", "settings"):
        return module.main([command, *argv])
    return module.main(argv)


if __name__ == "__main__":
    sys.exit(main())
