"""The telemetry area: shm's meaning-free words and tables (owner-checked, schema-fingerprinted)
and pipeline.common.telemetry's schema, recorders and typed figures on top of it."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.common import telemetry as T
from shm import Consumer, LayoutMismatch, Observer, Producer, RingNotDrained, Table, TelemetrySchema, Word, Words
from shm import layout as L

TOY = TelemetrySchema(
    Words("producer", (Word("p.count", "u64", "a producer counter"), Word("p.ratio", "f64", "a float"))),
    Words("consumer", (Word("c.count", "i64", "a consumer counter"),)),
    Table("grid", "consumer", 3, ("a", "b")),
)


def test_shm_refuses_a_write_to_a_word_or_table_the_role_does_not_own(ring_name):
    with Producer.open(ring_name, 100, telemetry=TOY) as p, Consumer.open(ring_name, wait=False, telemetry=TOY) as c:
        with pytest.raises(PermissionError, match="producer may not write c.count"):
            p.set("c.count", 1)
        with pytest.raises(PermissionError):
            c.add("p.count", 1)
        with pytest.raises(PermissionError, match="table grid"):
            p.row("grid", 0)
        with pytest.raises(IndexError):
            c.row("grid", 3)
        with pytest.raises(KeyError):
            p.set("p.misspelt", 1)
        with pytest.raises(PermissionError):
            p.cells("grid")
        with pytest.raises(KeyError):
            p.cells("p.count")
        p.add("p.count", 2)
        p.set("p.ratio", 0.25)
        c.set("c.count", -5)
        row = c.row("grid", 1)
        row.set("a", 7)
        row.add("b", 2)
        cells = c.cells("grid")
        cells[3] += 1  # row 1, column b
        del row, cells  # they hold views of the mapping
        with Observer(ring_name, telemetry=TOY) as o:
            snap = o.snapshot()
        assert (snap.fields["p.count"], snap.fields["p.ratio"], snap.fields["c.count"]) == (2, 0.25, -5)
        assert snap.tables["grid"] == [(0, 0), (7, 3), (0, 0)]


def test_schema_layout_is_line_aligned_and_checked():
    words = {f.name: f.word for f in TOY.fields.values()}
    assert words["p.count"] % 8 == 0 and words["c.count"] % 8 == 0 and words["c.count"] != words["p.count"]
    assert TOY.tables["grid"][0] % 8 == 0
    with pytest.raises(ValueError, match="declared twice"):
        TelemetrySchema(Words("producer", (Word("x", "u64", ""),)), Words("consumer", (Word("x", "u64", ""),)))
    with pytest.raises(ValueError, match="protocol word"):
        TelemetrySchema(Words("producer", (Word("producer.claim", "u64", ""),)))
    with pytest.raises(ValueError, match="owner"):
        TelemetrySchema(Words("creator", (Word("x", "u64", ""),)))
    with pytest.raises(ValueError, match="words"):
        TelemetrySchema(Table("huge", "producer", 2000, ("a",)))
    assert "grid[3][a, b]" in TOY.describe() and "p.count" in TOY.describe()
    assert T.SCHEMA.words_used <= L.HEADER_WORDS


def test_a_ring_of_another_schema_is_refused_and_replaced_only_when_drained(ring_name):
    other = TelemetrySchema(Words("producer", (Word("p.count", "u64", ""),)))
    assert other.fingerprint != TOY.fingerprint
    with Producer.open(ring_name, 100, telemetry=TOY) as p:
        p.publish(__import__("numpy").zeros(5, dtype=L.RECORD_DTYPE))
        with pytest.raises(LayoutMismatch, match="telemetry schema"):
            Observer(ring_name, telemetry=other)
        with pytest.raises(LayoutMismatch):
            Consumer.open(ring_name, wait=False, telemetry=other)
        Observer(ring_name).close()  # no schema: protocol words only, any ring will do
    with pytest.raises(RingNotDrained):
        Producer.open(ring_name, 100, telemetry=other)
    with Consumer.open(ring_name, wait=False, telemetry=TOY) as c:
        c.commit(c.read(100))
    with Producer.open(ring_name, 100, telemetry=other) as p:
        assert any("another telemetry schema" in n for n in p.notes)
        assert p.get("telemetry_schema") == other.fingerprint


def test_writer_buckets_and_plc_table_reach_the_figures(ring_name):
    with T.open_producer(ring_name, 100) as p, T.open_consumer(ring_name, wait=False) as c:
        m = T.WriterMetrics(c)
        m.record_write(True, 500, 1200)
        m.record_write(True, 300, 800)
        m.record_write(False, 0, 0)
        slot = T.plc_slot(p, 0)
        slot.set_code("KRCWO12ELOA101")
        slot.set("connected", 1)
        slot.add("polls", 3)
        p.set("poller.plc_count", 1)
        with pytest.raises(IndexError):
            T.plc_slot(p, T.MAX_PLCS)
        del slot
        with Observer(ring_name, telemetry=T.SCHEMA) as o:
            snap = o.snapshot()
        live = [b for b in snap.tables["writer_buckets"] if b[0]]
        assert len(live) == 1 and live[0][1:] == (2, 1, 800, 2000, 1200)
        rows = T.plc_rows(snap)
        assert rows[0].plc_code == "KRCWO12ELOA101"
        assert (rows[0].connected, rows[0].polls) == (True, 3)
        wm = T.writer_window(snap)
        assert (wm.successful_writes, wm.failed_writes, wm.max_write_latency_ms) == (2, 1, 1.2)


def test_owner_rule_covers_the_application_words(ring_name):
    with T.open_producer(ring_name, 100) as p, T.open_consumer(ring_name, wait=False) as c:
        p.add("poller.polls", 2)
        c.set("writer.db_state", T.DB_STATE_CODES["up"])
        assert p.get("poller.polls") == 2 and c.get("writer.db_state") == 1
        with pytest.raises(PermissionError):
            p.set("writer.db_state", 2)
        with pytest.raises(PermissionError):
            c.add("poller.values", 1)
        with pytest.raises(PermissionError):
            c.row("plcs", 0)


def test_the_minute_buckets_hold_what_was_published_and_overwritten(ring_name):
    import numpy as np

    with T.open_producer(ring_name, 100) as p:
        p.publish(np.zeros(250, dtype=L.RECORD_DTYPE))
        for _ in range(30):
            p.put(1, 1.0, b"P", b"D1", L.QUALITY_GOOD)
        p.flush()
        with Observer(ring_name, telemetry=T.SCHEMA) as o:
            snap = o.snapshot()
    assert T.overflow_window(snap) == (280, 180)
    assert T.buffer_status(snap).overflowing_now


def test_a_misspelt_figure_fails_at_once_not_in_front_of_an_operator(ring_name):
    with T.open_producer(ring_name, 100), T.open_consumer(ring_name, wait=False):
        reading = T.read(ring_name, T.Thresholds())
    fig = reading.figures
    with pytest.raises(AttributeError):
        fig.buffer.utilisation_pct  # noqa: B018 (the misspelling of utilization_pct)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fig.buffer.current_size = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        T.Lag(records=1, oldest_unwritten_us=None, oldest_unwritten_age_s=None, last_los_age_s=None)  # type: ignore[call-arg]
    # Slots: a misspelt attribute cannot be added by accident either.
    assert not hasattr(fig.writer_state, "__dict__")


def test_json_of_the_figures_keeps_the_documented_field_names(ring_name):
    with T.open_producer(ring_name, 100) as p, T.open_consumer(ring_name, wait=False) as c:
        T.WriterMetrics(c).attach(c, "sqlite")
        p.set("poller.started_us", T.now_us() - 5_000_000)
        p.set("poller.source_kind", T.SOURCE_KIND["modbus"])
        T.WriterMetrics(c).backlog(2, 30, 4096, T.now_us() - 60_000_000)
        c.add("writer.corrupt_lines", 3)
        c.add("writer.probes", 4)
        d = T.to_json(T.read(ring_name, T.Thresholds()).figures)
    assert list(d) == ["ring", "taken_us", "buffer", "writer_metrics", "writer_state", "roles", "lag", "poller", "plcs"]
    assert list(d["buffer"])[:5] == ["current_size", "max_size", "utilization_pct", "overflow_count", "overflow_rate_pct"]
    assert set(d["roles"]) == {"poller", "writer"} and d["plcs"] == [] and d["writer_metrics"]["buckets"] == []
    ws, po = d["writer_state"], d["poller"]
    assert ws["sink"] == "sqlite" and ws["uptime_s"] is not None and ws["uptime_s"] < 60
    assert (ws["backup_bytes_pending"], ws["corrupt_lines"], ws["probes"]) == (4096, 3, 4)
    assert ws["backup_oldest_age_s"] == pytest.approx(60, abs=5)
    assert po["source"] == "modbus" and po["uptime_s"] == pytest.approx(5, abs=3)
