"""Tag files written to break the poller (issue 12 item 10): nested thousands deep, huge
numbers and strings, values of the wrong kind, a group larger than the ring. Each is one
line and exit 2, in ``python -m pipeline.poller --check`` and in the supervisor's check;
never a traceback."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.poller.config import TagsFileError, _Loader, load_plant
from pipeline.common.telemetry import SCHEMA
from shm import Producer
from shm import layout as L
from tests.conftest import run

GOOD = '[[plcs]]\ncode = "A1"\nprotocol = "simulator"\n[[plcs.groups]]\nname = "fast"\ninterval_s = 1\ntags = [{address = "D1", type = "int16"}]\n'

HOSTILE = {
    "deep-array": "plcs = " + "[" * 5000 + "]" * 5000 + "\n",
    "deep-inline-table": GOOD.replace('type = "int16"}', 'type = "int16", sim = ' + "{a = " * 3000 + "1" + "}" * 3000 + "}"),
    "deep-dotted-key": "a" + ".a" * 5000 + " = 1\n" + GOOD,
    "integer-5000-digits": GOOD.replace("interval_s = 1", "interval_s = " + "9" * 5000),
    "integer-beyond-float": GOOD.replace('type = "int16"}', 'type = "int16", scale = ' + "9" * 400 + "}"),
    "string-1MB": GOOD.replace('code = "A1"', 'code = "' + "A" * 1_000_000 + '"'),
}


def _write(tmp_path, name: str, text: str):
    p = tmp_path / f"{name}.toml"
    p.write_text(text)
    return p


def _one_line(r, tags) -> str:
    # The poller logs its effective settings first (INFO); the error is the one other line.
    lines = [line for line in r.stderr.splitlines() if line.strip() and not re.match(r"^\d{4}-\d\d-\d\d .* INFO \[", line)]
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "Error:" not in r.stderr.replace("TagsFileError", "")
    assert len(lines) == 1, r.stderr[-2000:]
    assert str(tags) in lines[0] and len(lines[0]) < 1000, lines[0][:1000]
    return lines[0]


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_tag_file_is_one_line_and_exit_2_in_load_plant(tmp_path, name):
    path = _write(tmp_path, name, HOSTILE[name])
    with pytest.raises(TagsFileError) as e:
        load_plant(path)
    assert str(path) in str(e.value) and len(str(e.value)) < 1000 and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["deep-array", "deep-dotted-key", "integer-5000-digits", "string-1MB"])
def test_hostile_tag_file_in_poller_check_and_supervisor(tmp_path, ring_name, name):
    tags = _write(tmp_path, name, HOSTILE[name])
    check = run(["-m", "pipeline.poller", "--check"], tmp_path, TAGS_FILE=str(tags), RING_NAME=ring_name)
    _one_line(check, tags)
    sup = run(["-m", "pipeline"], tmp_path, TAGS_FILE=str(tags), RING_NAME=ring_name)
    line = _one_line(sup, tags)
    assert line.startswith("tagpipe: bad TAGS_FILE")


def _group_file(tmp_path, n: int):
    tags = ", ".join(f'{{address = "D{i}", type = "int16"}}' for i in range(n))
    text = ('[[plcs]]\ncode = "A1"\nprotocol = "simulator"\n[[plcs.groups]]\nname = "slow"\ninterval_s = 5\n'
            'tags = [{address = "X0", type = "int16"}]\n[[plcs.groups]]\nname = "huge"\ninterval_s = 1\n'
            f"tags = [{tags}]\n")
    return _write(tmp_path, f"group{n}", text)


def test_group_larger_than_the_ring_is_refused_naming_group_and_size(tmp_path, ring_name):
    tags = _group_file(tmp_path, 40)
    for args in (["-m", "pipeline.poller", "--check"], ["-m", "pipeline"]):
        r = run(args, tmp_path, TAGS_FILE=str(tags), RING_NAME=ring_name, BUFFER_MAX_SIZE="32")
        line = _one_line(r, tags)
        assert "plcs[0].groups[1]" in line and "A1/huge: 40 tags" in line and "BUFFER_MAX_SIZE 32" in line, line
    ok = run(["-m", "pipeline.poller", "--check"], tmp_path, TAGS_FILE=str(tags), RING_NAME=ring_name, BUFFER_MAX_SIZE="40")
    assert ok.returncode == 0, ok.stderr


def test_group_larger_than_a_ring_kept_at_its_old_size_is_refused(tmp_path, ring_name):
    # A ring of 32 with records not yet written keeps its size whatever BUFFER_MAX_SIZE says.
    p = Producer.open(ring_name, 32, telemetry=SCHEMA)
    recs = __import__("numpy").zeros(5, dtype=L.RECORD_DTYPE)
    p.publish(recs)
    p.close()
    tags = _group_file(tmp_path, 40)
    r = run(["-m", "pipeline.poller"], tmp_path, TAGS_FILE=str(tags), RING_NAME=ring_name, BUFFER_MAX_SIZE="1000")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "A1/huge: 40 tags" in last and f"ring {ring_name!r} kept at capacity 32" in last, last


# --- fuzz: whatever the document holds, the loader raises TagsFileError or succeeds ---

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**2000),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40), st.text(string.ascii_letters, min_size=2000, max_size=3000),
)
_values = st.recursive(_scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
                       max_leaves=12)
_PLC_KEYS = ["code", "protocol", "host", "port", "unit_id", "timeout_s", "groups", "word_order", "max_gap", "description"]
_TAG_KEYS = ["address", "register", "type", "bit", "scale", "offset", "deadband", "max_silence_s", "sim", "unit"]


def _good_doc() -> dict:
    return {"plcs": [{"code": "A1", "protocol": "simulator",
                      "groups": [{"name": "g", "interval_s": 1, "tags": [{"address": "D1", "type": "int16"}]}]}]}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["plc", "group", "tag", "root"]), st.data())
def test_fuzzed_documents_raise_only_tags_file_error(level, data):
    doc = _good_doc()
    plc = doc["plcs"][0]
    if level == "root":
        doc[data.draw(st.sampled_from(["plcs", "x"]))] = data.draw(_values)
    elif level == "plc":
        plc[data.draw(st.sampled_from(_PLC_KEYS))] = data.draw(_values)
        plc["protocol"] = data.draw(st.sampled_from(["simulator", "modbus", "mc", "opcua"]))
    elif level == "group":
        plc["groups"][0][data.draw(st.sampled_from(["name", "interval_s", "tags"]))] = data.draw(_values)
    else:
        plc["groups"][0]["tags"][0][data.draw(st.sampled_from(_TAG_KEYS))] = data.draw(_values)
    try:
        _Loader("fuzz.toml").plant(doc)
    except TagsFileError as e:
        assert "\n" not in str(e) and len(str(e)) < 1000


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, len(GOOD)), st.text(min_size=1, max_size=30), st.integers(1, 2000))
def test_fuzzed_tag_file_text_raises_only_tags_file_error(tmp_path, at, insert, repeat):
    text = GOOD[:at] + insert * (repeat if len(insert) * repeat < 200_000 else 1) + GOOD[at:]
    path = tmp_path / "fuzz.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_plant(path)
    except TagsFileError as e:
        assert "\n" not in str(e) and len(str(e)) < 1000


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_tag_file_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path, kind):
    import os

    if kind == "fifo":
        path = tmp_path / "tags.toml"
        os.mkfifo(path)  # opening it for reading would wait for a writer forever
    elif kind == "folder":
        path = tmp_path
    else:
        path = "/dev/zero"  # would never end
    with pytest.raises(TagsFileError, match=r"cannot be read: .*not a regular file"):
        load_plant(path)
