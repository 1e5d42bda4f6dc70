"""Admin commands: ``delete-ring`` (on purpose only) and ``settings``.

``delete-ring`` exits 0 when done (or when there was no such ring), 4 while a poller or
writer still holds its role (unless ``--force``), 2 for a name no ring can have.
"""

from __future__ import annotations

import argparse
import sys

from .common import exitcodes
from .common.process import settings_or_exit
from .common.settings import SETTINGS


def main(argv: list[str]) -> int:
    command, rest = argv[0], argv[1:]
    settings = settings_or_exit(command)
    if command == "settings":
        masked = settings.masked()
        for s in SETTINGS:
            print(f"{s.name}={masked[s.name]!s:<24} # {s.doc}")
        return exitcodes.OK
    parser = argparse.ArgumentParser(prog="python -m pipeline delete-ring", description="Delete a ring and the records in it.")
    parser.add_argument("--name", default=settings.ring_name, help="ring to delete (default: RING_NAME)")
    parser.add_argument("--force", action="store_true", help="delete even while a poller or writer runs")
    args = parser.parse_args(rest)
    from shm import RingError, delete_ring

    try:
        removed = delete_ring(args.name, force=args.force)
    except ValueError as e:  # a ring name that cannot exist
        print(f"tagpipe delete-ring: {e}", file=sys.stderr)
        return exitcodes.CONFIG
    except RingError as e:  # a poller or writer still holds its role
        print(f"tagpipe delete-ring: {e}", file=sys.stderr)
        return exitcodes.ROLE_TAKEN
    print("\n".join(f"removed {r}" for r in removed) if removed else f"no ring named {args.name!r}")
    return exitcodes.OK
