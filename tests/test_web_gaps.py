"""``GET /api/gaps`` over a real SQLite gap table written by the SQLite sink, its parameter
validation, the page section, and the gap counts in ``/metrics``."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.common import gaps as G
from pipeline.writer.sinks.sqlite import SqliteSink
from test_web_api import Rig, app_for  # noqa: F401  (fixture)
from test_web_prom import one, scrape

H = 3_600_000_000
T0 = 1_736_935_200_000_000  # 2025-01-15T10:00:00Z


@pytest.fixture
def ledger(tmp_path):
    """A database holding four gaps of 2025-01-15 (times relative to 10:00 UTC)."""
    path = str(tmp_path / "data" / "tagpipe.db")
    sink = SqliteSink(path)
    recs = np.concatenate([
        G.make_record(G.OVERWRITTEN, 100, T0, T0 + 60_000_000, G.ALL_PLCS, "1099"),
        G.make_record(G.PLC_UNREACHABLE, 2000, T0 + H, T0 + H + 30_000_000, "PLC_A", "timed out"),
        G.make_record(G.PLC_UNREACHABLE, 2100, T0 + 2 * H, T0 + 2 * H + 5_000_000, "PLC_B", "refused"),
        G.make_record(G.POLLER_DOWN, 3000, T0 + 3 * H, T0 + 3 * H + 9_000_000, G.ALL_PLCS, "killed_pid_42"),
    ])
    try:
        assert sorted(sink.write(5, recs).gaps) == ["overwritten", "plc_unreachable", "plc_unreachable", "poller_down"]
        assert sink.write(5, recs).gaps == []  # written once
    finally:
        sink.close()
    return path


def test_gaps_by_time_range_plc_kind_and_page(ring_name, app_for, ledger):  # noqa: F811
    c = app_for(ring_name, SQLITE_PATH=ledger)
    r = c.get(f"/api/gaps?from={T0}&to={T0 + 4 * H}")
    assert r.status_code == 200
    body = r.get_json()
    assert body["total"] == 4
    assert [g["first_seq"] for g in body["gaps"]] == [3000, 2100, 2000, 100]  # newest first
    assert body["gaps"][3] == {"ring_epoch": 5, "kind": "overwritten", "first_seq": 100, "last_seq": 1099, "count": 1000,
                               "start_us": T0, "end_us": T0 + 60_000_000, "plc_code": "*", "detail": ""}
    # ISO times; overlap, not containment: the range 10:00:30..11:00:10 meets the first two.
    r = c.get("/api/gaps?from=2025-01-15T10:00:30&to=2025-01-15T11:00:10")
    assert [g["first_seq"] for g in r.get_json()["gaps"]] == [2000, 100]
    # A PLC sees its own gaps and those of all PLCs.
    r = c.get(f"/api/gaps?from={T0}&to={T0 + 4 * H}&plc=PLC_B")
    assert [g["first_seq"] for g in r.get_json()["gaps"]] == [3000, 2100, 100]
    r = c.get(f"/api/gaps?from={T0}&to={T0 + 4 * H}&kind=plc_unreachable&limit=1&offset=1")
    body = r.get_json()
    assert (body["total"], [g["detail"] for g in body["gaps"]]) == (2, ["timed_out"])
    # Default range: the last 24 hours, which holds none of these 2025 gaps.
    assert c.get("/api/gaps").get_json()["total"] == 0


@pytest.mark.parametrize("query, param", [
    ("from=yesterday", "from"), ("to=2025-13-01", "to"), ("from=-5", "from"), (f"from={T0 + H}&to={T0}", "from"),
    ("from=99999999999999999999", "from"), ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=ten", "limit"),
    ("offset=-1", "offset"), ("plc=has%20space", "plc"), ("plc=" + "X" * 17, "plc"), ("kind=lost", "kind"),
    ("frm=1", "frm"),
])
def test_bad_parameters_answer_400_naming_the_parameter(ring_name, app_for, ledger, query, param):  # noqa: F811
    r = app_for(ring_name, SQLITE_PATH=ledger).get("/api/gaps?" + query)
    assert r.status_code == 400
    body = r.get_json()
    assert body["parameter"] == param and body["status"] == 400 and body["message"]


def test_no_database_yet_is_no_gaps_and_oracle_reads_the_ring(ring_name, app_for, tmp_path):  # noqa: F811
    r = app_for(ring_name, SQLITE_PATH=str(tmp_path / "none.db")).get("/api/gaps")
    assert r.status_code == 200 and r.get_json()["gaps"] == [] and r.get_json()["source"] == "database"
    # Oracle sink, no ring yet: no gaps (not an error), and where the whole ledger is.
    r = app_for(ring_name, ORACLE_HOST="db1", ORACLE_SERVICE_NAME="XE", ORACLE_TABLE="PLANT.MEAS").get("/api/gaps")
    body = r.get_json()
    assert r.status_code == 200 and body["gaps"] == [] and body["source"] == "ring"
    assert body["history"] == f"the last {G.RING_ROWS} gaps; all of them are in the Oracle table PLANT.MEAS_GAP"


def _gap(i: int) -> G.Gap:
    """The i-th of a run of distinct gaps (one per minute from T0), of every kind in turn."""
    kind = G.KINDS[1 + i % 4]
    detail = {"overwritten": "", "quarantine": f"quarantine_2025011{i % 10}.csv"}.get(kind, f"err{i}")
    return G.Gap((1 << 63) + 5, kind, (1 << 63) + 1000 * i, (1 << 63) + 1000 * i + (999 if kind == "overwritten" else 0),
                 1000 if kind == "overwritten" else (i if kind == "quarantine" else 0), T0 + i * 60_000_000,
                 T0 + i * 60_000_000 + 5_000_000, G.ALL_PLCS if i % 3 == 0 else f"PLC_{i % 3}", detail)


def test_ring_gap_table_wraps_past_its_rows_and_the_api_pages_it(ring_name, app_for):  # noqa: F811
    """N + 5 rows through WriterMetrics: the web lists the newest N, each exactly as written
    (64-bit epoch and seqs, codes, quarantine file names), filtered and paged like the table."""
    from pipeline.common.telemetry import WriterMetrics

    rig = Rig(ring_name)
    try:
        written = [_gap(i) for i in range(G.RING_ROWS + 5)]
        m = WriterMetrics(rig.c)
        m.gap_rows(written[:3])
        m.gap_rows(written[3:])
        assert rig.c.get(G.RING_COUNTER) == G.RING_ROWS + 5
        c = app_for(ring_name, ORACLE_HOST="db1", ORACLE_SERVICE_NAME="XE")
        body = c.get(f"/api/gaps?from={T0}&to={T0 + 2 * H}&limit=1000").get_json()
        newest = written[::-1][:G.RING_ROWS]
        assert body["total"] == G.RING_ROWS and body["source"] == "ring"
        assert body["gaps"] == [g.as_json() for g in newest]
        page = c.get(f"/api/gaps?from={T0}&to={T0 + 2 * H}&plc=PLC_1&kind=plc_unreachable&limit=2&offset=1").get_json()
        want = [g for g in newest if g.plc_code in ("PLC_1", "*") and g.kind == "plc_unreachable"]
        assert page["total"] == len(want) and page["gaps"] == [g.as_json() for g in want[1:3]]
    finally:
        rig.close()


def test_a_row_being_written_is_never_read(ring_name):
    """Publish after write: a row whose cells are in place but not yet counted is not
    listed; neither is the oldest row while its slot may be rewritten (the counter moved on
    during the copy), nor a slot whose own n cell disagrees."""
    from pipeline.common.telemetry import WriterMetrics

    rig = Rig(ring_name)
    try:
        m = WriterMetrics(rig.c)
        m.gap_rows([_gap(i) for i in range(G.RING_SLOTS)])  # every slot used once: n = 1..33
        snap_rows = lambda: [tuple(rig.c.row(G.RING_TABLE, i).words()) for i in range(G.RING_SLOTS)]  # noqa: E731
        total = G.RING_SLOTS
        assert [g.start_us for g in G.ring_gaps(snap_rows(), total, total)] == [_gap(i).start_us for i in range(total - 1, 0, -1)]
        # The writer fills slot 0 with row 34 (cells set, counter not yet bumped): still 33 rows,
        # and row 34 is not among them although its cells are there.
        row = rig.c.row(G.RING_TABLE, 0)
        cells = G.ring_row(total + 1, _gap(99))
        for col in G.RING_COLUMNS:
            row.set(col, cells[col])
        listed = G.ring_gaps(snap_rows(), total, total)
        assert len(listed) == G.RING_ROWS and _gap(99).start_us not in [g.start_us for g in listed]
        # The counter moved by 2 while the copy was taken: the slot of row 2 may be torn: left out.
        listed = G.ring_gaps(snap_rows(), total, total + 2)
        assert [g.start_us for g in listed] == [_gap(i).start_us for i in range(total - 1, 2, -1)]
        # A slot whose n cell is not the expected n (half rewritten: n set to 0 first) is left out.
        rig.c.row(G.RING_TABLE, 5).set("n", 0)
        assert _gap(5).start_us not in [g.start_us for g in G.ring_gaps(snap_rows(), total, total)]
    finally:
        rig.close()


def test_page_has_the_gap_section_in_both_languages(ring_name, app_for):  # noqa: F811
    c = app_for(ring_name)
    en = c.get("/?lang=en").get_data(as_text=True)
    ko = c.get("/?lang=ko").get_data(as_text=True)
    assert 'id="gaps"' in en and "Gaps in the data" in en and "No gap recorded" in en
    assert 'id="gaps"' in ko and "데이터 누락 구간" in ko and "기록된 누락 구간이 없습니다" in ko
    js = c.get("/static/status.js").get_data(as_text=True)
    assert "/api/gaps?limit=50" in js
    # With the Oracle sink the list is the ring's recent gaps: the page says so (hidden otherwise).
    assert '<p id="gaps-note" class="muted" hidden>' in en and "most recent gaps" in en and "최근 누락 구간만" in ko
    assert 'note.hidden = d.source !== "ring"' in js


def test_metrics_count_gaps_by_kind(ring_name, app_for):  # noqa: F811
    rig = Rig(ring_name)
    try:
        rig.c.set("writer.gaps_overwritten", 3)
        rig.c.set("writer.gaps_plc_unreachable", 2)
        m = scrape(app_for(ring_name))
        assert one(m, "tagpipe_gaps_recorded_total", kind="overwritten") == 3
        assert one(m, "tagpipe_gaps_recorded_total", kind="plc_unreachable") == 2
        assert one(m, "tagpipe_gaps_recorded_total", kind="poller_down") == 0
        assert one(m, "tagpipe_gaps_recorded_total", kind="quarantine") == 0
    finally:
        rig.close()


def test_the_documented_data_and_gaps_query_runs_on_sqlite(ledger):
    """The query of docs/writer.md ("Gap ledger") against real tables: values of one tag
    and hour, and the gaps that touch it, in time order."""
    import re
    import sqlite3

    from tests.conftest import REPO
    from tests.oracle_emulator.fixtures import make_records

    text = (REPO / "docs" / "writer.md").read_text()
    section = text[text.index("<!-- section:gap-ledger -->"):]
    sql = re.search(r"```sql\n(.*?)```", section, re.S).group(1)
    sink = SqliteSink(ledger)
    try:
        sink.write(5, make_records(range(5000, 5003), ts_us=[T0 + 10, T0 + 20, T0 + H + 1]))
    finally:
        sink.close()
    conn = sqlite3.connect(ledger)
    rows = conn.execute(sql).fetchall()
    conn.close()
    assert [(r[0], r[1]) for r in rows] == [(T0, "gap:overwritten"), (T0 + 10, "value"), (T0 + 20, "value")]
    assert rows[0][4] == T0 + 60_000_000
