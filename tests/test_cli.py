"""``python -m pipeline``'s one command line (``pipeline.cli``) and ``python -m bench``'s."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, run
from pipeline import cli


def test_help_lists_every_command_on_one_line_each(tmp_path):
    for args in (["--help"], ["-h"], ["help"]):
        r = run(["-m", "pipeline", *args], tmp_path)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        for name, cmd in cli.COMMANDS.items():
            assert any(re.fullmatch(rf"\s+{re.escape(name)}\s+{re.escape(cmd.help)}", line) for line in lines), (name, r.stdout)
    assert set(cli.COMMANDS) == {"run", "status", "check-db", "overflow-check", "quarantine", "delete-ring", "settings"}


def test_each_command_has_its_own_help_and_its_work_function(tmp_path):
    import importlib

    for name, cmd in cli.COMMANDS.items():
        assert callable(getattr(importlib.import_module(cmd.module), cmd.function)), name
        r = run(["-m", "pipeline", name, "--help"], tmp_path)
        assert r.returncode == 0 and f"python -m pipeline {name}" in r.stdout, (name, r.stderr)


def test_no_command_or_options_only_means_run():
    p = cli.build_parser()
    assert p.parse_args(["run", "--rate", "5"]).rate == 5.0
    with pytest.raises(SystemExit) as e:
        cli.main(["bogus"])
    assert e.value.code == 2


@pytest.mark.parametrize("args, option", [(["--rate", "-5"], "--rate"), (["--duration", "5"], "--duration"),
                                          (["run", "--rate", "5", "--duration", "0"], "--duration"),
                                          (["--rate", "2e9"], "--rate")])
def test_bad_load_options_exit_2_with_one_line_before_anything_starts(tmp_path, args, option):
    r = run(["-m", "pipeline", *args], tmp_path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and option in r.stderr, r.stderr
    assert r.stderr.startswith("tagpipe: bad option")


def test_poller_and_run_check_load_options_alike(tmp_path):
    for args in (["--rate", "-1"], ["--duration", "5"]):
        mine = run(["-m", "pipeline", *args], tmp_path).stderr.strip().removeprefix("tagpipe: bad option ")
        poller = run(["-m", "pipeline.poller", *args], tmp_path)
        assert poller.returncode == 2 and mine in poller.stderr, (mine, poller.stderr)


def test_bad_overflow_check_option_exits_2_with_one_line(tmp_path):
    r = run(["-m", "pipeline", "overflow-check", "--buffer-size", "3"], tmp_path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--buffer-size 3" in r.stderr, r.stderr


def test_older_module_spelling_still_runs_the_same_command(tmp_path, ring_name):
    r = run(["-m", "pipeline.poller.overflow_check", "--buffer-size", "100", "--overflow-count", "50", "--ring", ring_name], tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.search(r"overflow rate\s+33\.3 %", r.stdout) and not Path(f"/dev/shm/{ring_name}.ring").exists()


def test_supervisor_checks_the_tags_without_importing_a_main_module(tmp_path):
    code = ("import sys\n"
            "from pipeline.common.settings import load_settings\n"
            "from pipeline import supervisor\n"
            "assert supervisor._check_tags(load_settings(env={}, env_file=None)) is None\n"
            "print(sorted(m for m in sys.modules if m.endswith('__main__') and m != '__main__'))\n")
    r = run(["-c", code], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_console_script_points_at_the_one_command_line():
    text = (REPO / "setup.cfg").read_text()
    assert re.search(r"^\s+tagpipe = pipeline\.cli:main$", text, re.M)
    from pipeline.__main__ import main

    assert main is cli.main


# --- python -m bench ---

def test_bench_options_take_both_forms():
    from bench.__main__ import parse_args

    for argv in (["ring", "--rounds", "3"], ["ring", "--rounds=3"]):
        a = parse_args(argv)
        assert a.names == ["ring"] and a.options == argv[1:]
    a = parse_args(["e2e", "--rate=100000", "--buffer-size=3000000"])  # BENCHMARKS.md's forms
    assert (a.names, a.options) == (["e2e"], ["--rate=100000", "--buffer-size=3000000"])
    a = parse_args(["ring", "writer"])
    assert (a.names, a.options) == (["ring", "writer"], [])
    assert parse_args(["--quick"]).options == ["--quick"] and parse_args([]).names == []
    with pytest.raises(SystemExit) as e:
        parse_args(["nosuch"])
    assert e.value.code == 2


def test_bench_help_lists_every_benchmark(tmp_path):
    from bench.__main__ import available

    r = run(["-m", "bench", "--help"], REPO)
    assert r.returncode == 0, r.stderr
    for name in available():
        assert re.search(rf"^  {name}\s+\S", r.stdout, re.M), name


@pytest.mark.parametrize("rounds", [["--rounds", "1"], ["--rounds=1"]])
def test_bench_passes_a_spaced_option_value_to_the_benchmark(rounds):
    r = subprocess.run([sys.executable, "-m", "bench", "ring", "--n", "1000", *rounds],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "command: python -m bench ring --n 1000 --rounds 1 " in r.stdout, r.stdout + r.stderr
    assert "=== bench ring: exit" in r.stdout
