"""The status page's tag table in real headless Chromium (the DevTools pipe of
``test_web_page``), fed by a real poller of 10,000 simulated tags and a real web process:
paging, search, PLC filter, quality and staleness in words and colour, live ages, Korean.
A screenshot goes to ``test-artifacts/status_tags.png``."""

from __future__ import annotations

import json
import signal

from conftest import ARTIFACTS, spawn, stop
from test_web_page import browser  # noqa: F401  (the Chromium fixture)
from test_web_process import free_port, wait_listening


def _end(proc) -> None:
    """Stop a child (by pid) and close its output pipes."""
    stop(proc)
    proc.communicate(timeout=10)


ROWS = """Array.from(document.querySelectorAll('#tags tbody tr[data-key]')).map(tr =>
  [tr.dataset.key, tr.className].concat(Array.from(tr.cells).slice(2).map(c => (c.dataset.value || '') + '|' + c.textContent)))"""
OK_RGB, WARN_RGB, BAD_RGB = "rgb(46, 204, 113)", "rgb(241, 196, 15)", "rgb(231, 76, 60)"


def _plant(tmp_path):
    def tags(lo, hi, unit):
        return ",\n".join(f'    {{ address = "D{i}", type = "float32", unit = "{unit}", description = "sensor {i}",'
                          f' sim = {{ wave = "constant", min = {i}, max = {i} }} }}' for i in range(lo, hi))
    p = tmp_path / "tags.toml"
    p.write_text(f"""
[[plcs]]
code = "PAGEPLC1"
protocol = "simulator"
  [[plcs.groups]]
  interval_s = 1.0
  tags = [
{tags(0, 6000, "bar")},
  ]
[[plcs]]
code = "PAGEPLC2"
protocol = "simulator"
  [[plcs.groups]]
  interval_s = 0.5
  tags = [
{tags(6000, 9999, "degC")},
    {{ address = "X1", type = "float32", unit = "%", description = "flaky valve", sim = {{ wave = "constant", min = 5, max = 5, bad_rate = 1.0 }} }},
  ]
""")
    return p


def _type(b, element_id: str, value: str, event: str = "input") -> None:
    b.eval(f"(() => {{ const e = document.getElementById({json.dumps(element_id)}); e.value = {json.dumps(value)};"
           f" e.dispatchEvent(new Event({json.dumps(event)})); }})()")


def _colour(b, selector: str) -> str:
    return b.eval(f"getComputedStyle(document.querySelector({json.dumps(selector)})).color")


def test_tag_table_with_10000_tags_pages_filters_and_ages_live(tmp_path, ring_name, browser):  # noqa: F811
    poller = spawn(["-m", "pipeline.poller"], tmp_path, RING_NAME=ring_name, TAGS_FILE=str(_plant(tmp_path)))
    port = free_port()
    web = spawn(["-m", "web"], tmp_path, RING_NAME=ring_name, WEB_PORT=str(port))
    try:
        wait_listening(web, port)
        b = browser
        b.call("Page.navigate", {"url": f"http://127.0.0.1:{port}/?lang=en"})
        b.wait_for("document.getElementById('tag-matched').dataset.value === '10000'", timeout=60)
        b.wait_for(f"(r => r.length === 50 && r.every(x => x[2] !== '|-'))({ROWS})", timeout=30)
        rows = b.eval(ROWS)
        assert [r[0] for r in rows] == [f"PAGEPLC1/D{i}" for i in range(50)]  # one page of 50, in order
        assert rows[3][2] == "3|3bar" and rows[3][3] == "good|GOOD" and rows[3][5] == "0|fresh"
        assert b.eval("document.getElementById('tag-range').textContent") == "1-50"
        assert _colour(b, "#tags tbody tr td.quality") == OK_RGB
        marker = b.eval("window.__m = Math.random()")

        # the age ticks between two refreshes, without a reload
        a1 = b.eval("document.querySelector('#tags td.age').textContent")
        b.wait_for(f"document.querySelector('#tags td.age').textContent !== {json.dumps(a1)}", timeout=5)

        # search box: one tag of the second PLC, its unit and a 0.5 s group
        _type(b, "tag-q", "sensor 9998")
        b.wait_for("document.getElementById('tag-matched').dataset.value === '1'")
        b.wait_for(f"{ROWS}[0][0] === 'PAGEPLC2/D9998'")
        assert b.eval(ROWS)[0][2] == "9998|9,998degC"
        # a BAD tag: no value, BAD in words and red
        _type(b, "tag-q", "flaky")
        b.wait_for(f"({ROWS}).length === 1 && {ROWS}[0][0] === 'PAGEPLC2/X1'")
        b.wait_for(f"{ROWS}[0][3] === 'bad|BAD'")
        assert b.eval(ROWS)[0][2] == "|-%"
        assert _colour(b, "#tags tbody tr td.quality") == BAD_RGB

        # PLC filter and the next page
        _type(b, "tag-q", "")
        b.wait_for("document.getElementById('tag-plc').options.length === 3")
        _type(b, "tag-plc", "PAGEPLC2", "change")
        b.wait_for("document.getElementById('tag-matched').dataset.value === '4000'")
        b.eval("document.getElementById('tag-next').click()")
        b.wait_for("document.getElementById('tag-range').textContent === '51-100'")
        b.wait_for(f"{ROWS}[0][0] === 'PAGEPLC2/D6050'")
        assert b.eval("window.__m") == marker  # same document all along

        # the poller stops: its tags turn STALE (in words and in colour), values stay
        poller.send_signal(signal.SIGTERM)
        poller.wait(20)
        b.wait_for(f"({ROWS}).every(r => r[1] === 'stale' && r[5] === '1|STALE')", timeout=15)
        assert _colour(b, "#tags tbody tr td.state") == WARN_RGB
        assert b.eval(ROWS)[0][2] == "6050|6,050degC"
        b.screenshot(ARTIFACTS / "status_tags.png")

        # Korean, like the rest of the page
        b.call("Page.navigate", {"url": f"http://127.0.0.1:{port}/?lang=ko"})
        b.wait_for("document.body.dataset.tagUpdates >= '1' && document.querySelector('#tags td.state') !== null")
        assert b.eval("document.querySelector('#tags-card h2').textContent") == "태그 현재값"
        # PLC1 (1 s group) turns stale 3 s after the stop, PLC2 (0.5 s) after 1.5 s
        b.wait_for("document.querySelector('#tags td.state').textContent === '갱신 지연'", timeout=15)
        assert b.eval("document.getElementById('tag-q').placeholder") == "주소, 설명, 단위 검색"
    finally:
        _end(poller)
        _end(web)
