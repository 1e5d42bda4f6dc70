"""docs/settings.md's settings table and .env.example match the settings registry exactly."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO

from pipeline.common.settings import SETTINGS, as_dict, load_settings, settings_table_markdown


def _readme_table() -> str:
    text = (REPO / "docs" / "settings.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- settings-table -->\n(.*?)\n<!-- /settings-table -->", text, re.S)
    assert m, "docs have no <!-- settings-table --> block in its settings section"
    return m.group(1)


def test_readme_settings_table_is_the_registry():
    assert _readme_table() == settings_table_markdown(), "README settings table is stale: run python deploy/settings_docs.py"


def test_readme_env_example_names_every_setting_at_its_default(tmp_path):
    text = (REPO / ".env.example").read_text(encoding="utf-8")
    named = set(re.findall(r"^# ([A-Z][A-Z0-9_]+)=", text, re.M))
    missing = [s.name for s in SETTINGS if s.name not in named]
    assert not missing, f".env.example lacks {missing}: run python deploy/settings_docs.py"
    # Uncommenting every line gives exactly the built-in defaults.
    uncommented = tmp_path / "env"
    uncommented.write_text(re.sub(r"^# ([A-Z][A-Z0-9_]+=)", r"\1", text, flags=re.M))
    from_file = load_settings(env={}, env_file=str(uncommented))
    defaults = load_settings(env={}, env_file=None)
    assert as_dict(from_file) == as_dict(defaults)


def test_readme_settings_docs_check_passes():
    r = subprocess.run([sys.executable, str(REPO / "deploy" / "settings_docs.py"), "--check"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
