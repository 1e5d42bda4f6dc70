"""Admin commands: ``delete-ring`` (on purpose only) and ``settings``.

``delete-ring`` exits 0 when done (or when there was no such ring), 4 while a poller or
writer still holds its role (unless ``--force``), 2 for a name no ring can have or a bad
setting. Arguments are parsed by ``pipeline.cli``.
"""

from __future__ import annotations

import argparse
import sys

from .common import exitcodes
from .common.process import settings_or_exit
from .common.settings import SETTINGS


def settings_command(args: argparse.Namespace) -> int:
    """``python -m pipeline settings``: every setting, its effective value (secrets masked)
    and its meaning, one a line. Returns 0, or 2 for a bad setting."""
    masked = settings_or_exit("settings").masked()
    for s in SETTINGS:
        print(f"{s.name}={masked[s.name]!s:<24} # {s.doc}")
    return exitcodes.OK


def delete_ring_command(args: argparse.Namespace) -> int:
    """``python -m pipeline delete-ring [--name N] [--force]``. Returns the exit code."""
    settings = settings_or_exit("delete-ring")  # checked even with --name, as every tool does
    name = args.name or settings.ring_name
    from shm import RingError, delete_ring

    try:
        removed = delete_ring(name, force=args.force)
    except ValueError as e:  # a ring name that cannot exist
        print(f"tagpipe delete-ring: {e}", file=sys.stderr)
        return exitcodes.CONFIG
    except RingError as e:  # a poller or writer still holds its role
        print(f"tagpipe delete-ring: {e}", file=sys.stderr)
        return exitcodes.ROLE_TAKEN
    from .common import latest

    if latest.remove(name):  # the poller's live-values table goes with its ring (issue 15)
        removed.append(f"/dev/shm/{latest.table_name(name)}")
    print("\n".join(f"removed {r}" for r in removed) if removed else f"no ring named {name!r}")
    return exitcodes.OK
