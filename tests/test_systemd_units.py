"""The systemd unit files: rendered as the install step renders them, verified by systemd."""

from __future__ import annotations

import configparser
import grp
import os
import pwd
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, require_program

from pipeline.common.settings import SETTINGS

SERVICES = ("tagpipe-poller.service", "tagpipe-writer.service", "tagpipe-web.service")
UNITS = (*SERVICES, "tagpipe.target")
FORBIDDEN = ("RemoveIPC", "DynamicUser", "PrivateIPC", "TemporaryFileSystem", "PrivateDevices", "PrivateUsers")


@pytest.fixture
def rendered(tmp_path):
    """Units rendered by deploy/install.sh --render-only with paths that exist."""
    app, data, backup = tmp_path / "app", tmp_path / "data", tmp_path / "backup"
    for d in (app, data, backup):
        d.mkdir()
    env_file = tmp_path / "tagpipe.env"
    env_file.write_text((REPO / ".env.example").read_text() if (REPO / ".env.example").exists() else "")
    out = tmp_path / "units"
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    r = subprocess.run(
        ["bash", str(REPO / "deploy" / "install.sh"), "--render-only", str(out), "--app-dir", str(app),
         "--data-dir", str(data), "--backup-dir", str(backup), "--env-file", str(env_file),
         "--python", sys.executable, "--user", user, "--group", group],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return {"dir": out, "data": data, "backup": backup, "env": env_file, "user": user, "group": group}


def _parse(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, strict=True, empty_lines_in_values=False)
    cp.optionxform = str  # systemd keys are case-sensitive
    cp.read(path)
    return cp


def test_systemd_units_pass_systemd_analyze_verify(rendered):
    exe = require_program("systemd-analyze")
    r = subprocess.run([exe, "verify", *[str(rendered["dir"] / u) for u in UNITS]], capture_output=True, text=True, timeout=120)
    # verify exits 0 even for unknown keys (it only warns): any output is a failure.
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr


def test_systemd_units_leave_no_placeholder(rendered):
    for u in UNITS:
        assert not re.search(r"@[A-Z_]+@", (rendered["dir"] / u).read_text()), u


def test_systemd_services_notify_restart_and_read_the_environment_file(rendered):
    shutdown_default = next(s.default for s in SETTINGS if s.name == "SHUTDOWN_TIMEOUT_S")
    for u in SERVICES:
        svc = _parse(rendered["dir"] / u)["Service"]
        assert svc["Type"] == "notify"
        assert svc["Restart"] == "always"
        assert "2" in svc["RestartPreventExitStatus"].split()
        assert svc["EnvironmentFile"] == str(rendered["env"])
        assert svc["User"] == rendered["user"] and svc["Group"] == rendered["group"]
        assert int(svc["WatchdogSec"]) >= 10
        assert int(svc["TimeoutStopSec"]) > shutdown_default + 5
        assert svc["ExecStart"].startswith(sys.executable + " -m ")
        assert _parse(rendered["dir"] / u)["Unit"]["PartOf"] == "tagpipe.target"


def test_systemd_hardening_keeps_the_shared_ring_working(rendered):
    for u in SERVICES:
        text = (rendered["dir"] / u).read_text()
        keys = {line.split("=", 1)[0] for line in text.splitlines() if "=" in line and not line.startswith("#")}
        assert not keys & set(FORBIDDEN), (u, keys & set(FORBIDDEN))
        svc = _parse(rendered["dir"] / u)["Service"]
        assert svc["ProtectSystem"] == "strict"  # leaves /dev (and /dev/shm) writable
        assert svc["NoNewPrivileges"] == "yes"
    rw = {u: _parse(rendered["dir"] / u)["Service"].get("ReadWritePaths", "").split() for u in SERVICES}
    assert sorted(rw["tagpipe-writer.service"]) == sorted([str(rendered["data"]), str(rendered["backup"])])
    assert rw["tagpipe-web.service"] == [] and rw["tagpipe-poller.service"] == []
    for paths in rw.values():
        assert set(paths) <= {str(rendered["data"]), str(rendered["backup"])}


def _start_order(units: dict[str, configparser.ConfigParser]) -> list[str]:
    """Topological start order of the services from their After=/Before= lines."""
    after: dict[str, set[str]] = {u: set() for u in SERVICES}
    for u, cp in units.items():
        for dep in cp["Unit"].get("After", "").split():
            if dep in after:
                after[u].add(dep)
        for dep in cp["Unit"].get("Before", "").split():
            if dep in after:
                after[dep].add(u)
    order: list[str] = []
    while len(order) < len(SERVICES):
        ready = sorted(u for u in SERVICES if u not in order and after[u] <= set(order))
        assert len(ready) == 1, f"start order not fully determined: {ready} (after={after})"
        order.append(ready[0])
    return order


def test_systemd_stopping_the_target_stops_poller_then_writer_then_web(rendered):
    units = {u: _parse(rendered["dir"] / u) for u in SERVICES}
    # systemd stops units in the reverse of their start order.
    stop_order = list(reversed(_start_order(units)))
    assert stop_order == ["tagpipe-poller.service", "tagpipe-writer.service", "tagpipe-web.service"]
    target = _parse(rendered["dir"] / "tagpipe.target")
    assert set(target["Unit"]["Wants"].split()) == set(SERVICES)
    assert target["Install"]["WantedBy"] == "multi-user.target"
    # No hard dependency between the services: each can be restarted alone.
    for cp in units.values():
        for key in ("Requires", "BindsTo", "Requisite"):
            assert not any(d in SERVICES for d in cp["Unit"].get(key, "").split())


def test_systemd_install_refuses_relative_paths(tmp_path):
    r = subprocess.run(["bash", str(REPO / "deploy" / "install.sh"), "--render-only", str(tmp_path), "--data-dir", "data"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "must be an absolute path" in r.stderr


def test_systemd_install_script_runs_every_step_in_temporary_folders(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("install.sh's full run needs root (it chowns the folders and the settings file)")
    app, data, units, env_file = tmp_path / "app", tmp_path / "data", tmp_path / "units", tmp_path / "etc" / "tagpipe.env"
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    args = ["bash", str(REPO / "deploy" / "install.sh"), "--no-start", "--app-dir", str(app), "--data-dir", str(data),
            "--env-file", str(env_file), "--user", user, "--group", group, "--python", sys.executable, "--unit-dir", str(units)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (data / "backup").is_dir() and oct((data / "backup").stat().st_mode & 0o777) == "0o750"
    assert oct(env_file.stat().st_mode & 0o777) == "0o640"
    text = env_file.read_text()
    assert f"\nSQLITE_PATH={data}/tagpipe.db\n" in text and f"\nBACKUP_FILE_PATH={data}/backup\n" in text
    assert "ORACLE_PASSWORD=" in text  # every setting is there to fill in
    for u in UNITS:
        assert f"EnvironmentFile={env_file}" in (units / u).read_text() or u.endswith(".target")
    # A mistake in the settings file stops the install before any unit is written, in one line.
    env_file.write_text(text + "BUFFER_BATCH_SIZE=0\n")
    for u in UNITS:
        (units / u).unlink()
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "BUFFER_BATCH_SIZE" in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert not any((units / u).exists() for u in UNITS)


def test_writer_units_restart_within_the_ring_headroom(rendered):
    # A writer restart must not outwait the ring: the default 100,000 slots hold 0.5 s at
    # 200,000 values/s. Both the single and the per-instance writer unit.
    for path in (rendered["dir"] / "tagpipe-writer.service", REPO / "deploy" / "systemd" / "tagpipe-writer@.service"):
        value = _parse(path)["Service"]["RestartSec"]
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)?", value)
        assert m, (path.name, value)
        seconds = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
        assert seconds <= 0.5, (path.name, value)
