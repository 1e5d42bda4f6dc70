"""``python -m pipeline``: run all three processes, or a tool given as a subcommand.

``python -m pipeline --help`` lists the commands; ``pipeline.cli`` parses them all.
"""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
