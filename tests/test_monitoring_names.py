"""Every metric name (and label value) the alerting rules and the Grafana dashboard use is
one a live web process really serves on /metrics: renaming a metric breaks this test, not
the dashboard. The pipeline runs for real (poller on a Modbus server and on a PLC that does
not answer, writer on SQLite, web process), so the per-PLC and after-the-first-commit
families have samples."""

from __future__ import annotations

import json
import re
import signal
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import REPO, free_port, spawn, stop, wait_until
from tests.poller_helpers.modbus_server import ModbusTestServer

pytestmark = pytest.mark.slow

RULES = REPO / "deploy" / "prometheus" / "tagpipe.rules.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "tagpipe-dashboard.json"
# Series Prometheus makes itself for every scrape target, not served by tagpipe.
PROMETHEUS_OWN = {"up"}
# Labels Prometheus adds to every series of a target.
TARGET_LABELS = {"job", "instance"}
NAME = re.compile(r"\b(tagpipe_[a-z0-9_]+|up)\b(?!\s*\()")
SELECTOR = re.compile(r"\b(tagpipe_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|=|!=|!~)\s*"([^"]*)"')


def rule_exprs() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def dashboard_targets() -> list[dict]:
    d = json.loads(DASHBOARD.read_text())
    return [t for p in d["panels"] for t in p.get("targets", [])]


def dashboard_exprs() -> list[str]:
    d = json.loads(DASHBOARD.read_text())
    variables = [v["query"]["query"] for v in d["templating"]["list"] if v["type"] == "query"]
    return [t["expr"] for t in dashboard_targets()] + variables


def names_in(exprs: list[str]) -> set[str]:
    # Label values inside {...} and quoted strings never count as names.
    return {n for e in exprs for n in NAME.findall(re.sub(r'"[^"]*"', '""', e))}


def scrape(port: int) -> tuple[set[str], dict[str, list[dict[str, str]]]]:
    """Names served (every sample name, and every declared family even without samples:
    a family with no series yet is still a name Prometheus will see), and each name's label sets."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    names: set[str] = set()
    labels: dict[str, list[dict[str, str]]] = {}
    for fam in text_string_to_metric_families(text):
        names.add(fam.name + ("_total" if fam.type == "counter" else ""))
        for s in fam.samples:
            names.add(s.name)
            labels.setdefault(s.name, []).append(dict(s.labels))
    return names, labels


def health_check_codes() -> set[str]:
    """The codes tagpipe_health_check{check} can carry (a failing check only has a series)."""
    return set(re.findall(r'Check\("(\w+)"', (REPO / "pipeline" / "common" / "telemetry.py").read_text()))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One real pipeline, scraped once it has committed and polled both PLCs."""
    from shm import delete_ring

    tmp = tmp_path_factory.mktemp("live")
    ring = f"tnames{free_port()}"
    dead_port = free_port()  # nothing listens: that PLC stays unreachable
    with ModbusTestServer(holding=[1, 2, 3, 4]) as srv:
        tags = tmp / "tags.toml"
        tags.write_text(f"""
[[plcs]]
code = "PRESS1"
host = "127.0.0.1"
port = {srv.port}
  [[plcs.groups]]
  interval_s = 0.2
  tags = [ {{ address = "D0", type = "uint16" }}, {{ address = "D1", type = "uint16" }} ]

[[plcs]]
code = "PRESS2"
host = "127.0.0.1"
port = {dead_port}
timeout_s = 1
  [[plcs.groups]]
  interval_s = 0.5
  tags = [ {{ address = "D0", type = "uint16" }} ]
""")
        port = free_port()
        proc = spawn(["-m", "pipeline"], tmp, RING_NAME=ring, WEB_PORT=str(port), TAGS_FILE=str(tags),
                     SQLITE_PATH=str(tmp / "data" / "tagpipe.db"), BACKUP_FILE_PATH=str(tmp / "backup"))
        try:
            def ready():
                try:
                    names, labels = scrape(port)
                except OSError:
                    return None
                plcs = {ls.get("plc") for ls in labels.get("tagpipe_plc_polls_total", [])}
                good = labels.get("tagpipe_plc_last_good_poll_timestamp_seconds", [])
                if plcs >= {"PRESS1", "PRESS2"} and good and "tagpipe_writer_last_commit_timestamp_seconds" in labels:
                    return names, labels
                return None

            yield wait_until(ready, 60, "a committed batch and both PLCs in /metrics", step=0.5)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(40)
                except Exception:
                    pass
            stop(proc)
            delete_ring(ring, force=True)
            from pipeline.common import latest

            latest.remove(ring)  # the poller's live-values table (issue 15)


def test_names_are_found_in_rules_and_dashboard():
    # The extraction itself works: the files use many names (a broken regex finds none).
    assert len(names_in(rule_exprs()) - PROMETHEUS_OWN) >= 10
    assert len(names_in(dashboard_exprs())) >= 15
    assert names_in(["rate(tagpipe_x_total{a=\"tagpipe_y\"}[5m]) / up"]) == {"tagpipe_x_total", "up"}


def test_every_name_in_rules_and_dashboard_is_served(live):
    served, _ = live
    for where, exprs in (("rules", rule_exprs()), ("dashboard", dashboard_exprs())):
        missing = names_in(exprs) - served - PROMETHEUS_OWN
        assert not missing, f"{where} use names /metrics does not serve: {sorted(missing)}"
    # And the check is real: a renamed metric would be caught.
    assert "tagpipe_ring_lost_total" not in served


def test_every_label_value_in_rules_and_dashboard_exists(live):
    _, labels = live
    codes = health_check_codes()
    assert {"values_lost", "writer_down", "utilization_high"} <= codes
    for expr in rule_exprs() + dashboard_exprs():
        for name, matchers in SELECTOR.findall(expr):
            for label, op, value in MATCHER.findall(matchers):
                if label in TARGET_LABELS:
                    continue
                seen = {ls.get(label) for ls in labels.get(name, [])}
                if label == "check":
                    seen |= codes  # a check has a series only while it fails
                assert seen - {None}, f"{name} has no label {label} ({expr})"
                wanted = value.split("|") if op == "=~" else [value]
                for v in wanted:
                    assert v in seen, f"{name}{{{label}={v!r}}} never served ({expr}); served: {sorted(seen - {None})}"


def test_dashboard_legends_name_real_labels(live):
    _, labels = live
    for t in dashboard_targets():
        used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", ""))) - TARGET_LABELS
        names = {n for n in names_in([t["expr"]])}
        have = {k for n in names for ls in labels.get(n, []) for k in ls}
        if "tagpipe_health_check" in names:
            have.add("check")  # only while a check fails; its labels are in docs/web.md
        assert used <= have, (t["expr"], used - have)


def test_dashboard_has_the_instance_variable_and_the_panels_the_plant_needs():
    d = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["instance"]["multi"] and variables["instance"]["includeAll"]
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)) and all("gridPos" in p for p in d["panels"])
    for t in dashboard_targets():
        # Every series is filtered by the chosen pipelines.
        for name, matchers in SELECTOR.findall(t["expr"]):
            assert 'instance=~"$instance"' in matchers, t["expr"]
        assert SELECTOR.search(t["expr"]), t["expr"]
        assert t["datasource"]["uid"] == "${datasource}"
    used = names_in(dashboard_exprs())
    for what, metric in {"ring fill": "tagpipe_ring_utilization_ratio", "in rate": "tagpipe_ring_published_records_total",
                         "written rate": "tagpipe_writer_rows_total", "lag": "tagpipe_ring_used_records",
                         "oldest unwritten": "tagpipe_oldest_unwritten_age_seconds", "backups pending": "tagpipe_backup_rows_pending",
                         "lost": "tagpipe_ring_lost_records_total", "database state": "tagpipe_database_state",
                         "per-PLC state": "tagpipe_plc_connected"}.items():
        assert metric in used, f"no panel for {what} ({metric})"
