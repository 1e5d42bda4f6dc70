"""deploy/prometheus/: the alerting rules pass ``promtool check rules`` and ``promtool test
rules`` (series that fire each alert and series that must not), and each alert has a
severity and a runbook that points at a section that exists in docs/."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from conftest import REPO, require_program

PROM = REPO / "deploy" / "prometheus"
RULES = PROM / "tagpipe.rules.yml"
RULE_TESTS = PROM / "tagpipe.rules.test.yml"


def alerts() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown viewers) give a heading: lower case, spaces to
    '-', punctuation other than '-' and '_' dropped."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_promtool_checks_the_rules_file():
    exe = require_program("promtool")
    r = subprocess.run([exe, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in r.stdout, r.stdout


def test_promtool_unit_tests_pass():
    exe = require_program("promtool")
    r = subprocess.run([exe, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=120, cwd=PROM)
    assert r.returncode == 0 and "SUCCESS" in r.stdout + r.stderr, r.stdout + r.stderr


def test_promtool_unit_tests_catch_a_wrong_threshold(tmp_path):
    """The unit tests are not vacuous: the ring-fill rule at >= instead of > fails them (the
    other pipeline sits at exactly 80 %), as does a growing-backups rule that ignores growth."""
    exe = require_program("promtool")
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    for old, new in (("tagpipe_ring_utilization_ratio > 0.8", "tagpipe_ring_utilization_ratio >= 0.8"),
                     ("delta(tagpipe_backup_rows_pending[15m]) > 0", "delta(tagpipe_backup_rows_pending[15m]) >= 0")):
        text = RULES.read_text()
        assert old in text
        (tmp_path / RULES.name).write_text(text.replace(old, new))
        r = subprocess.run([exe, "test", "rules", RULE_TESTS.name], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert r.returncode != 0 and "FAILED" in r.stdout + r.stderr, (old, r.stdout + r.stderr)


def test_every_alert_is_tested_both_firing_and_silent():
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired: set[str] = set()
    silent: set[str] = set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else silent).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    # Every alert has a case where it fires, and one where it must stay silent (still
    # pending within its `for:`, below its threshold, or its loss out of the window).
    assert names - fired == set(), names - fired
    assert names - silent == set(), names - silent


def test_every_alert_has_a_severity_and_a_runbook_section_that_exists():
    wanted = {"ring fill": "tagpipe_ring_utilization_ratio", "lost": "tagpipe_ring_lost_records_total",
              "database down": "tagpipe_database_state", "backups growing": "tagpipe_backup_rows_pending",
              "heartbeat": "tagpipe_process_up", "health": "tagpipe_health_status"}
    exprs = " ".join(a["expr"] for a in alerts())
    for what, metric in wanted.items():
        assert metric in exprs, f"no alert on {what} ({metric})"
    for a in alerts():
        assert a["labels"]["severity"] in ("critical", "warning"), a["alert"]
        assert a["annotations"]["summary"] and a["annotations"]["description"], a["alert"]
        m = re.fullmatch(r"(docs/[\w-]+\.md)#([\w-]+)", a["annotations"]["runbook"])
        assert m, (a["alert"], a["annotations"]["runbook"])
        doc = REPO / m.group(1)
        assert doc.exists(), (a["alert"], doc)
        text = re.sub(r"^```.*?^```", "", doc.read_text(encoding="utf-8"), flags=re.S | re.M)  # not code blocks
        anchors = {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}
        assert m.group(2) in anchors, (a["alert"], m.group(2), sorted(anchors)[:20])


def test_rule_and_dashboard_files_are_where_the_docs_say():
    ops = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    for path in ("deploy/prometheus/tagpipe.rules.yml", "deploy/prometheus/tagpipe.rules.test.yml",
                 "deploy/grafana/tagpipe-dashboard.json"):
        assert path in ops and (REPO / path).exists(), path
    assert Path(REPO / ".ci" / "run").read_text().count("prometheus") >= 1  # CI installs promtool
