"""Several pipelines on one server: the template units (tagpipe-*@.service, tagpipe@.target)
rendered by ``deploy/install.sh --instance NAME``, verified by systemd, and the install step."""

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

ROLES = ("poller", "writer", "web")
TEMPLATES = (*(f"tagpipe-{r}@.service" for r in ROLES), "tagpipe@.target")
INSTANCES = ("line1", "line2")
# The only [Service] keys a template may set differently from its single-pipeline unit.
PER_INSTANCE_KEYS = {"WorkingDirectory", "EnvironmentFile", "ReadWritePaths"}


def _install(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "deploy" / "install.sh"), *args], capture_output=True, text=True,
                          timeout=timeout)


def _parse(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, strict=True, empty_lines_in_values=False)
    cp.optionxform = str  # systemd keys are case-sensitive
    cp.read(path)
    return cp


@pytest.fixture
def rendered(tmp_path):
    """Single units and template units rendered with the same options, paths that exist."""
    app, data, backup, etc = tmp_path / "app", tmp_path / "data", tmp_path / "backup", tmp_path / "etc"
    for d in (app, etc, *(p / i for p in (data, backup) for i in INSTANCES)):
        d.mkdir(parents=True)
    for i in INSTANCES:
        (etc / f"{i}.env").write_text(f"RING_NAME=tagpipe-{i}\n")
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    common = ["--app-dir", str(app), "--data-dir", str(data), "--backup-dir", str(backup),
              "--env-file", str(etc / "tagpipe.env"), "--python", sys.executable, "--user", user, "--group", group]
    r = _install("--render-only", str(tmp_path / "single"), *common)
    assert r.returncode == 0, r.stderr
    r = _install("--render-only", str(tmp_path / "templates"), "--instance", "line1", *common)
    assert r.returncode == 0, r.stderr
    return {"single": tmp_path / "single", "dir": tmp_path / "templates", "data": data, "backup": backup, "etc": etc}


def test_instance_render_writes_only_the_template_units(rendered):
    assert sorted(p.name for p in rendered["dir"].iterdir()) == sorted(TEMPLATES)
    for u in TEMPLATES:
        assert not re.search(r"@[A-Z_]+@", (rendered["dir"] / u).read_text()), u


def test_instance_units_of_two_instances_pass_systemd_analyze_verify(rendered):
    exe = require_program("systemd-analyze")
    # systemd instantiates each template from its folder (tagpipe-poller@line1.service
    # from tagpipe-poller@.service), with %i expanded, as it will on the server.
    names = [str(rendered["dir"] / u.replace("@.", f"@{i}.")) for i in INSTANCES for u in TEMPLATES]
    r = subprocess.run([exe, "verify", *names], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr


def test_instance_units_differ_from_the_single_units_only_in_per_instance_paths(rendered):
    data, backup, etc = rendered["data"], rendered["backup"], rendered["etc"]
    for role in ROLES:
        single = _parse(rendered["single"] / f"tagpipe-{role}.service")["Service"]
        tmpl = _parse(rendered["dir"] / f"tagpipe-{role}@.service")["Service"]
        # The hardening, restart policy, watchdog and timeouts are the single units' own.
        assert {k: v for k, v in single.items() if k not in PER_INSTANCE_KEYS} == \
               {k: v for k, v in tmpl.items() if k not in PER_INSTANCE_KEYS}, role
        assert tmpl["EnvironmentFile"] == f"{etc}/%i.env"
        assert tmpl["WorkingDirectory"] == f"{data}/%i"
        rw = tmpl.get("ReadWritePaths", "").split()
        assert rw == ([f"{data}/%i", f"{backup}/%i"] if role == "writer" else []), (role, rw)
        unit = _parse(rendered["dir"] / f"tagpipe-{role}@.service")
        assert unit["Unit"]["PartOf"] == "tagpipe@%i.target"
        assert unit["Install"]["WantedBy"] == "tagpipe@%i.target"
        # Ordering stays within the instance: line1's poller never waits on line2's writer.
        for dep in unit["Unit"].get("After", "").split():
            assert dep == "network-online.target" or dep.endswith("@%i.service"), (role, dep)
        for key in ("Requires", "BindsTo", "Requisite"):
            assert key not in unit["Unit"], (role, key)
    # Stop order poller -> writer -> web within an instance (systemd stops in reverse start order).
    after = {r: _parse(rendered["dir"] / f"tagpipe-{r}@.service")["Unit"]["After"].split() for r in ROLES}
    assert "tagpipe-writer@%i.service" in after["poller"] and "tagpipe-web@%i.service" in after["writer"]
    assert not any("@%i.service" in d for d in after["web"])
    target = _parse(rendered["dir"] / "tagpipe@.target")
    assert set(target["Unit"]["Wants"].split()) == {f"tagpipe-{r}@%i.service" for r in ROLES}
    assert target["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.parametrize("args, needle", [
    (["--instance", "line 1"], "--instance 'line 1' must be"),
    (["--instance", "x" * 57], "must be 1-56 of"),
    (["--instance", "a/b"], "--instance 'a/b' must be"),
    (["--instance", "backup"], "is reserved"),
    (["--instance", "tagpipe"], "is reserved"),  # /etc/tagpipe/tagpipe.env is the single pipeline's
    (["--instance", "line1", "--web-port", "0"], "--web-port '0' must be"),
    (["--instance", "line1", "--web-port", "http"], "--web-port 'http' must be"),
])
def test_instance_install_refuses_bad_names_and_ports_in_one_line(tmp_path, args, needle):
    r = _install("--render-only", str(tmp_path / "units"), *args)
    assert r.returncode == 2 and needle in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert not (tmp_path / "units").exists()


def test_instance_install_runs_every_step_and_refuses_a_clashing_second_pipeline(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("install.sh's full run needs root (it chowns the folders and the settings file)")
    app, data, units, etc = tmp_path / "app", tmp_path / "data", tmp_path / "units", tmp_path / "etc"
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    common = ["--no-start", "--app-dir", str(app), "--data-dir", str(data), "--env-file", str(etc / "tagpipe.env"),
              "--user", user, "--group", group, "--python", sys.executable, "--unit-dir", str(units)]
    r = _install("--instance", "line1", "--web-port", "8081", *common)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "systemctl enable --now tagpipe@line1.target" in r.stdout
    for d in (data / "line1", data / "backup" / "line1"):
        assert d.is_dir() and oct(d.stat().st_mode & 0o777) == "0o750", d
    env = etc / "line1.env"
    assert oct(env.stat().st_mode & 0o777) == "0o640"
    text = env.read_text()
    for line in ("RING_NAME=tagpipe-line1", "WEB_PORT=8081", f"SQLITE_PATH={data}/line1/tagpipe.db",
                 f"BACKUP_FILE_PATH={data}/backup/line1"):
        assert f"\n{line}\n" in text, line
    assert sorted(p.name for p in units.iterdir()) == sorted(TEMPLATES)
    # A second line on the same port would fail to listen: refused before any change to units.
    for u in TEMPLATES:
        (units / u).unlink()
    r = _install("--instance", "line2", "--web-port", "8081", *common)
    assert r.returncode == 2 and "WEB_PORT=8081" in r.stderr and str(env) in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0 and not any(units.iterdir())
    assert not (etc / "line2.env").exists()  # written by that run, so removed: the next run starts afresh
    # With its own port it installs, and the two files differ in everything they must.
    r = _install("--instance", "line2", "--web-port", "8082", *common)
    assert r.returncode == 0, r.stdout + r.stderr
    text2 = (etc / "line2.env").read_text()
    assert "\nRING_NAME=tagpipe-line2\n" in text2 and f"\nSQLITE_PATH={data}/line2/tagpipe.db\n" in text2
    # The single pipeline installs beside them (its own file, ring "tagpipe", port 8080).
    r = _install(*common)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (units / "tagpipe.target").exists() and (units / "tagpipe@.target").exists()
