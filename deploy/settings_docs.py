"""Regenerate the settings documentation from the one registry (``pipeline.common.settings``).

    python deploy/settings_docs.py          # rewrite .env.example and docs/settings.md's table
    python deploy/settings_docs.py --check  # exit 1 if either is out of date (what the tests check)

The settings table sits between ``<!-- settings-table -->`` markers inside
``docs/settings.md``; ``.env.example`` lists every setting, commented out at its default.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.common.settings import SETTINGS, settings_table_markdown  # noqa: E402

BEGIN, END = "<!-- settings-table -->", "<!-- /settings-table -->"

HEADER = """\
# tagpipe settings: copy to .env (make run) or to the systemd EnvironmentFile
# (/etc/tagpipe/tagpipe.env, see docs/operations.md) and uncomment what you change.
# The environment wins over this file. Every line below shows the default.
# A setting with an older name answers to both; giving both with different values is an error.
# Generated from pipeline/common/settings.py by deploy/settings_docs.py: do not edit by hand.
"""


def _num(x: float | None) -> str:
    return "-" if x is None else (str(int(x)) if float(x).is_integer() else str(x))


def env_example() -> str:
    out = [HEADER.rstrip("\n")]
    for s in SETTINGS:
        out.append("")
        out.append(f"# {s.doc}")
        extra = []
        if s.minimum is not None or s.maximum is not None:
            extra.append(f"from {_num(s.minimum)} to {_num(s.maximum)}")
        if s.choices:
            extra.append("one of " + ", ".join(s.choices))
        if s.secret:
            extra.append("secret: never logged or shown")
        if s.aliases:
            extra.append("also read as " + ", ".join(s.aliases) + ", its older name")
        if any(extra):
            out.append("# (" + "; ".join(e for e in extra if e) + ")")
        default = "" if s.default in ("", None) else s.default
        out.append(f"# {s.name}={default}")
    return "\n".join(out) + "\n"


def readme_with_table(readme: str) -> str:
    """Settings page text with the table between the markers replaced. Raises ValueError if absent."""
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[:start] + "\n" + settings_table_markdown() + "\n" + readme[end:]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    check = "--check" in argv
    targets = {
        REPO / ".env.example": env_example(),
        REPO / "docs" / "settings.md": readme_with_table((REPO / "docs" / "settings.md").read_text(encoding="utf-8")),
    }
    stale = [p for p, text in targets.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    if check:
        for p in stale:
            print(f"{p.name} is out of date: run python deploy/settings_docs.py", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        p.write_text(targets[p], encoding="utf-8")
        print(f"rewrote {p.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
