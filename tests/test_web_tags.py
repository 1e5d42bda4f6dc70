"""``GET /api/tags`` and ``python -m pipeline status --tags`` against a real poller process:
the simulator, a Modbus server on 127.0.0.1, and a ring that turns over many times a second."""

from __future__ import annotations

import json
import math
import signal
from datetime import datetime

import pytest

from tests.conftest import run, spawn, stop, wait_until
from tests.poller_helpers.modbus_server import ModbusTestServer
from web import create_app, runtime

def _end(proc) -> None:
    """Stop a child (by pid) and close its output pipes."""
    stop(proc)
    proc.communicate(timeout=10)


FAST = [(f"D{i}", float(i)) for i in range(12)]  # address, constant value (simulator)
SLOW = [("W0", 100.0), ("W1", 101.0)]


def _sim_plant(tmp_path, fast_interval=0.2):
    fast = ",\n".join(f'    {{ address = "{a}", type = "float32", unit = "bar", description = "pressure {v:g}",'
                      f' sim = {{ wave = "constant", min = {v}, max = {v} }} }}' for a, v in FAST)
    slow = ",\n".join(f'    {{ address = "{a}", type = "float32", unit = "kW", description = "power {v:g}",'
                      f' sim = {{ wave = "constant", min = {v}, max = {v} }} }}' for a, v in SLOW)
    p = tmp_path / "tags.toml"
    p.write_text(f"""
[[plcs]]
code = "SIMPLC01"
protocol = "simulator"
  [[plcs.groups]]
  name = "fast"
  interval_s = {fast_interval}
  tags = [
{fast},
    {{ address = "T1", type = "float32", unit = "degC", description = "Boiler temperature", deadband = 1000.0, max_silence_s = 600, sim = {{ wave = "constant", min = 80.5, max = 80.5 }} }},
  ]

[[plcs]]
code = "SIMPLC02"
protocol = "simulator"
  [[plcs.groups]]
  name = "slow"
  interval_s = 1.0
  tags = [
{slow},
  ]
""")
    return p


@pytest.fixture
def app_on(ring_name):
    apps = []

    def make():
        app = create_app({"RING_NAME": ring_name, "SAMPLE_INTERVAL_S": 0})
        apps.append(app)
        return app.test_client()

    yield make
    for a in apps:
        runtime(a).close()


def _all(client, **params):
    q = "&".join(f"{k}={v}" for k, v in {"limit": 1000, **params}.items())
    r = client.get(f"/api/tags?{q}")
    return r.status_code, r.get_json()


def test_every_configured_tag_with_its_live_value_filters_paging_and_staleness(tmp_path, ring_name, app_on):
    tags = _sim_plant(tmp_path)
    proc = spawn(["-m", "pipeline.poller"], tmp_path, RING_NAME=ring_name, TAGS_FILE=str(tags))
    try:
        c = app_on()
        wait_until(lambda: (b := _all(c)[1])["present"] and all(t["quality"] == "good" for t in b["tags"]), 30,
                   "every tag polled")
        code, body = _all(c)
        assert code == 200 and body["total"] == body["matched"] == len(FAST) + 1 + len(SLOW)
        assert body["plcs"] == ["SIMPLC01", "SIMPLC02"] and body["stale_after_intervals"] == 3
        rows = body["tags"]
        assert [t["address"] for t in rows] == [a for a, _ in FAST] + ["T1"] + [a for a, _ in SLOW]  # configuration order
        want = {a: v for a, v in FAST + SLOW} | {"T1": 80.5}
        for t in rows:
            assert t["value"] == pytest.approx(want[t["address"]], abs=1e-4)
            assert t["stale"] is False and 0 <= t["age_s"] < 3
            assert datetime.fromisoformat(t["poll_time"].replace("Z", "+00:00")).timestamp() == pytest.approx(t["poll_us"] / 1e6)
        d0 = rows[0]
        assert (d0["plc_code"], d0["unit"], d0["description"], d0["group"], d0["interval_s"]) == ("SIMPLC01", "bar", "pressure 0", "fast", 0.2)
        assert rows[-1]["plc_code"] == "SIMPLC02" and rows[-1]["interval_s"] == 1.0

        # T1 never changes past its deadband: the ring got it once, yet its poll time keeps moving.
        first = next(t for t in _all(c, q="boiler")[1]["tags"])
        wait_until(lambda: _all(c, q="boiler")[1]["tags"][0]["poll_us"] > first["poll_us"] + 300_000, 10, "T1 polled again")

        # filters
        assert [t["address"] for t in _all(c, plc="SIMPLC02")[1]["tags"]] == ["W0", "W1"]
        assert [t["address"] for t in _all(c, prefix="d1")[1]["tags"]] == ["D1", "D10", "D11"]
        assert [t["address"] for t in _all(c, q="BOILER")[1]["tags"]] == ["T1"]
        assert [t["address"] for t in _all(c, q="kw")[1]["tags"]] == ["W0", "W1"]
        assert _all(c, plc="NOSUCHPLC")[1]["matched"] == 0
        assert _all(c, stale="true")[1]["matched"] == 0
        # paging: pages of 4 put back together are the whole list; past the end is empty
        pages = [_all(c, limit=4, offset=o)[1] for o in range(0, 16, 4)]
        assert [t["address"] for p in pages for t in p["tags"]] == [t["address"] for t in rows]
        assert all(p["matched"] == 15 and p["limit"] == 4 for p in pages)
        assert _all(c, offset=500)[1]["tags"] == []

        # the poller stops: values stay, ages grow, the fast group turns stale past 3 x 0.2 s
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        wait_until(lambda: _all(c, plc="SIMPLC01", stale="true")[1]["matched"] == len(FAST) + 1, 10, "fast tags stale")
        stale = _all(c, plc="SIMPLC01")[1]["tags"]
        assert all(t["stale"] and t["age_s"] > 0.6 and t["value"] is not None for t in stale)
        cli = run(["-m", "pipeline", "status", "--tags", "pressure 1", "--check"], tmp_path, RING_NAME=ring_name)
        assert cli.returncode == 6, cli.stdout + cli.stderr
        assert "STALE" in cli.stdout and "D1 " in cli.stdout and "D10" in cli.stdout and "W0" not in cli.stdout
    finally:
        _end(proc)


def test_status_tags_prints_the_same_rows_as_the_api(tmp_path, ring_name, app_on):
    tags = _sim_plant(tmp_path, fast_interval=0.5)
    proc = spawn(["-m", "pipeline.poller"], tmp_path, RING_NAME=ring_name, TAGS_FILE=str(tags))
    try:
        c = app_on()
        wait_until(lambda: (b := _all(c)[1])["present"] and all(t["poll_us"] for t in b["tags"]), 30, "every tag polled")
        out = run(["-m", "pipeline", "status", "--tags", "power"], tmp_path, RING_NAME=ring_name)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0].split()[:4] == ["PLC", "address", "value", "unit"]
        assert [ln.split()[:5] for ln in lines[1:3]] == [["SIMPLC02", "W0", "100", "kW", "GOOD"],
                                                         ["SIMPLC02", "W1", "101", "kW", "GOOD"]]
        assert lines[3].startswith("2 of 15 tags shown")
        js = run(["-m", "pipeline", "status", "--tags", "--json"], tmp_path, RING_NAME=ring_name)
        d = json.loads(js.stdout)
        api = _all(c)[1]
        assert [(t["plc_code"], t["address"], t["value"], t["unit"]) for t in d["tags"]] == \
               [(t["plc_code"], t["address"], t["value"], t["unit"]) for t in api["tags"]]
        assert run(["-m", "pipeline", "status", "--tags", "--check"], tmp_path, RING_NAME=ring_name).returncode == 0
    finally:
        _end(proc)


def test_a_restarted_poller_with_other_tags_replaces_the_table_under_a_running_web_app(tmp_path, ring_name, app_on):
    first = _sim_plant(tmp_path, fast_interval=0.5)
    proc = spawn(["-m", "pipeline.poller"], tmp_path, RING_NAME=ring_name, TAGS_FILE=str(first))
    c = app_on()
    try:
        wait_until(lambda: _all(c)[1].get("total") == 15, 30, "the first plant's tags")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        other = tmp_path / "other.toml"
        other.write_text('[[plcs]]\ncode = "OTHERPLC"\nprotocol = "simulator"\n  [[plcs.groups]]\n  interval_s = 0.2\n'
                         '  tags = [ { address = "Z9", type = "float32", unit = "A", description = "current",'
                         ' sim = { wave = "constant", min = 7, max = 7 } } ]\n')
        proc = spawn(["-m", "pipeline.poller"], tmp_path, RING_NAME=ring_name, TAGS_FILE=str(other))
        wait_until(lambda: _all(c)[1].get("total") == 1 and _all(c)[1]["tags"][0]["value"] == 7.0, 30, "the new plant")
        t = _all(c)[1]
        assert t["plcs"] == ["OTHERPLC"] and t["tags"][0]["address"] == "Z9" and t["tags"][0]["unit"] == "A"
    finally:
        _end(proc)
    out = run(["-m", "pipeline", "delete-ring", "--name", ring_name, "--force"], tmp_path)
    assert out.returncode == 0 and f"/dev/shm/{ring_name}.latest" in out.stdout
    assert _all(c)[0] == 503


def test_right_for_every_tag_while_the_ring_turns_over_many_times_a_second(tmp_path, ring_name, app_on):
    # 3,000 tags every 0.1 s (30,000 values/s) into a ring of 1,000 records and no writer:
    # each record is overwritten within a few ms, yet every tag's live value is current.
    # Four groups of 750 (a group larger than the ring is refused at load).
    n, per_group = 3000, 750

    def group(first: int) -> str:
        lines = ",\n".join(f'    {{ address = "D{i}", type = "float32", sim = {{ wave = "constant", min = {i}, max = {i} }} }}'
                           for i in range(first, first + per_group))
        return f'  [[plcs.groups]]\n  interval_s = 0.1\n  tags = [\n{lines}\n  ]\n'

    p = tmp_path / "big.toml"
    p.write_text('[[plcs]]\ncode = "BIG"\nprotocol = "simulator"\n' + "".join(group(g) for g in range(0, n, per_group)))
    proc = spawn(["-m", "pipeline.poller"], tmp_path, RING_NAME=ring_name, TAGS_FILE=str(p), BUFFER_MAX_SIZE="1000")
    try:
        c = app_on()

        def turned_over():
            b = c.get("/api/buffer/status").get_json()
            return b.get("overwritten_before_commit") and b["overwritten_before_commit"] > 20 * 1000  # no writer: nothing is counted lost yet

        wait_until(turned_over, 30, "the ring to turn over 20 times")
        code, body = _all(c, limit=1000, offset=0)
        rows = [t for o in range(0, n, 1000) for t in _all(c, offset=o)[1]["tags"]]
        assert len(rows) == n and body["total"] == n
        assert [t["value"] for t in rows] == [float(i) for i in range(n)]
        assert all(t["quality"] == "good" and not t["stale"] and t["age_s"] < 2.0 for t in rows), \
            max(t["age_s"] for t in rows)
    finally:
        _end(proc)


def test_modbus_values_follow_the_server_and_turn_bad_when_it_stops(tmp_path, ring_name, app_on):
    with ModbusTestServer(holding=[11, 22, 33, 44] + [0] * 12) as srv:
        lines = ",\n".join(f'    {{ address = "hr:{i}", type = "uint16", unit = "rpm", description = "speed {i}" }}' for i in range(4))
        p = tmp_path / "mb.toml"
        p.write_text(f'[[plcs]]\ncode = "MBPLC"\nhost = "127.0.0.1"\nport = {srv.port}\ntimeout_s = 0.5\nbackoff_max_s = 0.5\n'
                     f'  [[plcs.groups]]\n  interval_s = 0.2\n  tags = [\n{lines}\n  ]\n')
        proc = spawn(["-m", "pipeline.poller"], tmp_path, RING_NAME=ring_name, TAGS_FILE=str(p))
        try:
            c = app_on()
            vals = lambda: [t["value"] for t in (_all(c)[1].get("tags") or [])]  # noqa: E731
            wait_until(lambda: vals() == [11, 22, 33, 44], 30, "the server's registers")
            t0 = _all(c)[1]["tags"][0]
            assert (t0["plc_code"], t0["address"], t0["unit"], t0["quality"]) == ("MBPLC", "hr:0", "rpm", "good")
            srv.set_holding(1, [777])
            wait_until(lambda: vals() == [11, 777, 33, 44], 10, "the changed register")
            srv.stop()
            wait_until(lambda: all(t["quality"] == "bad" and t["value"] is None for t in _all(c)[1]["tags"]), 15,
                       "BAD while the server is down")
            srv.start()
            wait_until(lambda: vals() == [11, 777, 33, 44], 20, "good again")
        finally:
            _end(proc)


def test_load_mode_at_300000_values_per_second_keeps_every_tag_current(tmp_path, ring_name, app_on):
    # A 20,000-record ring at 300,000 values/s turns over 15 times a second. Each of the
    # 1,000 load tags holds the last value published for it: the generator's sine of the
    # tag's phase at the row's own poll time, so a row mixing two writes would not match.
    proc = spawn(["-m", "pipeline.poller", "--rate", "300000", "--duration", "60"], tmp_path, RING_NAME=ring_name,
                 BUFFER_MAX_SIZE="20000")
    try:
        c = app_on()

        def turned_over():
            b = c.get("/api/buffer/status").get_json()
            return b.get("overwritten_before_commit") and b["overwritten_before_commit"] > 3 * 20000

        wait_until(turned_over, 30, "the ring to turn over 3 times")
        rows = _all(c)[1]["tags"] + _all(c, offset=1000)[1]["tags"]
        body = _all(c, limit=1)[1]
        assert len(rows) == body["total"] == 1000
        assert rows[0]["plc_code"] == "LOADPLC00" and rows[-1]["plc_code"] == "LOADPLC09" and rows[-1]["address"] == "D99"
        for k, t in enumerate(rows):
            want = 50.0 + 40.0 * math.sin(k * 2 * math.pi / 1000 + t["poll_us"] * 1e-6)
            assert t["value"] == pytest.approx(want, abs=1e-9), t
            assert t["quality"] == "good" and t["age_s"] < 2.0  # the ring turns over every 67 ms
        assert rows[0]["interval_s"] == 0.01  # every tag gets a value each 10 ms tick (1,000 / 300,000 s apart)
    finally:
        _end(proc)


@pytest.mark.parametrize("query, word", [
    ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=abc", "limit"), ("limit=-1", "limit"), ("limit=1e3", "limit"),
    ("offset=-5", "offset"), ("offset=99999999999", "offset"), ("stale=maybe", "stale"), ("nope=1", "nope"),
    ("limit=%C2%B2", "limit"), ("offset=%EF%BC%91", "offset"), ("limit=1&limit=2", "more than once"), ("q=" + "x" * 101, "q"), ("plc=%00", "plc"),
])
def test_bad_parameters_are_400_json_naming_them(ring_name, app_on, query, word):
    r = app_on().get(f"/api/tags?{query}")
    assert r.status_code == 400 and r.is_json
    body = r.get_json()
    assert body["status"] == 400 and word in body["message"]


def test_no_poller_yet_is_503_with_the_reason(ring_name, app_on):
    r = app_on().get("/api/tags")
    body = r.get_json()
    assert r.status_code == 503 and body["present"] is False and body["tags"] == []
    assert "poller has not started" in body["error"]
    out = run(["-m", "pipeline", "status", "--tags", "--check"], "/tmp", RING_NAME=ring_name)
    assert out.returncode == 6 and "poller has not started" in out.stdout
