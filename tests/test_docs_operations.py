"""docs/operations.md only names commands, options and files that exist."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO

from pipeline.cli import COMMANDS


def _section(name: str) -> str:
    text = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    m = re.search(rf"<!-- section:{name} -->(.*?)<!-- /section:{name} -->", text, re.S)
    assert m, f"docs have no {name} section"
    return m.group(1)


def _help(args: list[str]) -> str:
    r = subprocess.run([sys.executable, *args, "--help"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_readme_operations_commands_and_options_exist():
    ops = _section("operations")
    for cmd in set(re.findall(r"python -m pipeline ([a-z][a-z-]+)", ops)):
        assert cmd in COMMANDS, cmd
    # Every option written after a command (up to the end of the code span) is in its --help.
    for cmd, rest in set(re.findall(r"python -m pipeline ([a-z][a-z-]+)([^`\n]*)", ops)):
        cmd_help = _help(["-m", "pipeline", cmd])
        for opt in re.findall(r"(--[a-z-]+)", rest):
            assert opt in cmd_help, (cmd, opt)
    run_help = _help(["-m", "pipeline", "run"])
    for opt in set(re.findall(r'RUN_ARGS="(--[a-z]+)', ops)) | {"--duration"}:
        assert opt in run_help, opt
    install = (REPO / "deploy" / "install.sh").read_text()
    for opt in set(re.findall(r"`(--[a-z-]+)(?: [^`]*)?`", ops)) & {"--app-dir", "--data-dir", "--backup-dir", "--env-file", "--user", "--group", "--python", "--unit-dir", "--render-only", "--no-start"}:
        assert f"    {opt})" in install, opt
    for path in re.findall(r"`(deploy/[\w./-]+|tests/[\w./-]+)`", ops):
        assert (REPO / path).exists(), path
    for unit in ("tagpipe-poller.service", "tagpipe-writer.service", "tagpipe-web.service", "tagpipe.target"):
        assert unit in ops and (REPO / "deploy" / "systemd" / unit).exists()


def test_readme_operations_make_targets_exist():
    ops = _section("operations")
    makefile = (REPO / "Makefile").read_text()
    for target in set(re.findall(r"\bmake ([a-z]+)\b", ops)):
        assert re.search(rf"^{target}:", makefile, re.M), target
    assert "$(RUN_ARGS)" in makefile


def test_readme_and_docs_links_point_at_files_that_exist():
    # The README is the front page; the reference lives in docs/. A moved or renamed page
    # must not leave a dead link behind.
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for doc in sorted((REPO / "docs").glob("*.md")):
        assert f"(docs/{doc.name})" in readme, f"README does not point at docs/{doc.name}"
