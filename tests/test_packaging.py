"""The built wheel carries every module and data file, and setuptools has nothing to warn about."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from conftest import REPO


def test_wheel_builds_without_warnings_and_carries_package_data(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert "absent from the `packages` configuration" not in out, out
    assert "Warning" not in out, out
    (wheel,) = tmp_path.glob("tagpipe-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in ("web/static/status.js", "web/static/tags.js", "web/static/status.css", "web/templates/status.html",
                 "pipeline/poller/demo_plant.toml"):
        assert data in names, data
    missing = [str(p.relative_to(REPO)) for pkg in ("pipeline", "shm", "web") for p in (REPO / pkg).rglob("*.py")
               if "__pycache__" not in p.parts and str(p.relative_to(REPO)) not in names]
    assert not missing, missing
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "bench/"))]
