"""The Oracle password never appears: in any log line, API response, page or error.

ORACLE_PASSWORD is set to a unique marker while the whole pipeline runs (on SQLite:
setting the password alone does not select Oracle), every endpoint is read, the tool
commands run, bad settings are tried; the marker must be nowhere.
"""

from __future__ import annotations

import importlib.util
import signal
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import spawn, stop
from test_run_e2e import delivered, free_port, wait_until
from test_run_supervisor import Lines

pytestmark = pytest.mark.slow

PATHS = ["/", "/api/buffer/status", "/api/buffer/writer/metrics", "/api/buffer/health", "/api/buffer/metrics",
         "/api/status", "/metrics", "/api/no-such-thing", "/no-such-page"]


def _fetch(port: int, path: str, method: str = "GET") -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.read().decode("utf-8", "replace")


def _run(args: list[str], cwd: Path, **env: str) -> tuple[int, str]:
    proc = spawn(args, cwd=cwd, **env)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        stop(proc)
    return proc.returncode, out + err


def test_run_password_never_appears_anywhere(tmp_path, ring_name):
    marker = f"Pw{uuid.uuid4().hex}Zz"
    port = free_port()
    env = dict(RING_NAME=ring_name, WEB_PORT=str(port), ORACLE_PASSWORD=marker, ORACLE_USERNAME="scott",
               ORACLE_WALLET_PASSWORD=marker + "w", LOG_LEVEL="DEBUG")
    seen: list[str] = []
    proc = spawn(["-m", "pipeline", "--rate", "1000"], cwd=tmp_path, **env)
    lines = Lines(proc.stderr)
    try:
        wait_until(lambda: delivered(ring_name) > 0, 60, "the first committed value")
        lines.wait_for(r"\[web/web\] status page on http", timeout=60)
        for path in PATHS:
            seen.append(_fetch(port, path))
        seen.append(_fetch(port, "/api/buffer/status", method="POST"))  # 405
        for args in (["status"], ["status", "--json"], ["settings"]):
            code, out = _run(["-m", "pipeline", *args], tmp_path, **env)
            assert code == 0, out
            seen.append(out)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        seen.append(proc.stdout.read())
    finally:
        stop(proc, timeout=40)
    seen.extend(lines.lines)
    # The settings were logged (masked) by every process: the check below is not vacuous.
    masked = [x for x in lines.lines if "effective settings" in x and "ORACLE_PASSWORD='********'" in x]
    assert len(masked) >= 4, "each process logs its effective settings with the password masked"
    assert any("ORACLE_PASSWORD=********" in s for s in seen)  # python -m pipeline settings

    # Bad settings next to the password: the one error line does not carry it either.
    for bad in (dict(ORACLE_HOST="db.example"), dict(ORACLE_POOL_MIN="9", ORACLE_POOL_MAX="2"), dict(WEB_PORT="0")):
        for args in (["-m", "pipeline"], ["-m", "pipeline.poller"], ["-m", "pipeline.writer"], ["-m", "web"],
                     ["-m", "pipeline", "status"]):
            code, out = _run(args, tmp_path, **{**env, **bad})
            assert code == 2, (args, bad, out)
            seen.append(out)
    # A database that refuses the connection: the error names the problem, not the password.
    if importlib.util.find_spec("pipeline.writer.checkdb") is not None:
        closed = free_port()
        code, out = _run(["-m", "pipeline", "check-db"], tmp_path, **{**env, "ORACLE_HOST": "127.0.0.1",
                         "ORACLE_PORT": str(closed), "ORACLE_SERVICE_NAME": "FREEPDB1"})
        assert code != 0
        seen.append(out)

    leaks = [s for s in seen if marker in s]
    assert not leaks, leaks[:3]
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert marker.encode() not in f.read_bytes(), f


def test_run_password_never_appears_with_the_real_oracle_client(tmp_path, ring_name):
    """The whole pipeline on the Oracle sink (python-oracledb against the wire-protocol
    emulator) with the password set to a marker: right password, then a wrong one."""
    from tests.oracle_emulator.server import SERVICE

    marker = f"Pw{uuid.uuid4().hex}Zz"
    emu = spawn(["-m", "tests.oracle_emulator", "--db", str(tmp_path / "emulator.db"), "--user", "TAGPIPE",
                 "--password", marker], cwd=tmp_path)
    seen: list[str] = []
    try:
        line = emu.stdout.readline()
        assert line.startswith("PORT "), line + emu.stderr.read()
        dsn = f"127.0.0.1:{int(line.split()[1])}/{SERVICE}"
        for password, works in ((marker, True), (marker + "x", False)):
            port = free_port()
            env = dict(RING_NAME=ring_name, WEB_PORT=str(port), ORACLE_DSN=dsn, ORACLE_USERNAME="TAGPIPE",
                       ORACLE_PASSWORD=password, LOG_LEVEL="DEBUG")
            proc = spawn(["-m", "pipeline", "--rate", "500"], cwd=tmp_path, **env)
            lines = Lines(proc.stderr)
            try:
                if works:
                    wait_until(lambda: delivered(ring_name) > 500, 90, "values committed to the emulator")
                else:
                    lines.wait_for(r"\[writer/", n=3, timeout=60)
                    lines.wait_for(r"(?i)ORA-01017|denied|invalid username", timeout=60)
                lines.wait_for(r"\[web/web\] status page on http", timeout=60)
                for path in PATHS:
                    seen.append(_fetch(port, path))
                code, out = _run(["-m", "pipeline", "status", "--json"], tmp_path, **env)
                seen.append(out)
                if works:
                    assert '"sink": "oracle"' in out
                code, out = _run(["-m", "pipeline", "check-db"], tmp_path, **env)
                assert (code == 0) == works, out
                seen.append(out)
                proc.send_signal(signal.SIGINT)
                assert proc.wait(60) == 0, "\n".join(lines.lines[-20:])
                seen.append(proc.stdout.read())
            finally:
                stop(proc, timeout=40)
            seen.extend(lines.lines)
    finally:
        stop(emu)
    leaks = [s for s in seen if marker in s]
    assert not leaks, leaks[:3]
    for f in tmp_path.rglob("*"):
        if f.is_file() and f.name != "emulator.db":  # the emulator's own user table holds it
            assert marker.encode() not in f.read_bytes(), f
