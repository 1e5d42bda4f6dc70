"""The import walls (.importlinter) hold, and the tool really catches a breach."""

from __future__ import annotations

import configparser
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

import pipeline

LINT = str(Path(sys.executable).with_name("lint-imports"))


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([LINT, str(root / ".importlinter"), "--no-cache"], cwd=str(root), env=env,
                          capture_output=True, text=True, timeout=120)


def test_import_contracts_are_kept():
    r = _lint(REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def test_web_contract_names_every_module_of_pipeline_but_common():
    # The web wall is a list of forbidden modules: a new module of pipeline/ must join it.
    cfg = configparser.ConfigParser()
    cfg.read(REPO / ".importlinter")
    forbidden = set(cfg["importlinter:contract:web-uses-only-common"]["forbidden_modules"].split())
    modules = {f"pipeline.{m.name}" for m in pkgutil.iter_modules(pipeline.__path__) if m.name != "common"}
    assert modules <= forbidden, modules - forbidden


def test_a_breach_of_a_wall_is_reported(tmp_path):
    for pkg in ("shm", "pipeline", "web"):
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".importlinter", tmp_path / ".importlinter")
    with open(tmp_path / "web" / "__init__.py", "a") as fh:
        fh.write("\nimport pipeline.writer  # a breach on purpose\n")
    r = _lint(tmp_path)
    assert r.returncode != 0 and "web/ imports from pipeline/ only pipeline/common BROKEN" in r.stdout, r.stdout
