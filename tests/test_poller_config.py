"""Tag definition files: good ones load, each kind of mistake gives its one clear message."""

from __future__ import annotations

import pytest

from pipeline.poller import registers
from pipeline.poller.config import DEMO_PLANT, TagsFileError, load_plant

GOOD = """
[[plcs]]
code = "KRCWO12ELOA101"
host = "192.0.2.10"
port = 502
unit_id = 3
timeout_s = 0.5
word_order = "little"

  [[plcs.groups]]
  name = "fast"
  interval_s = 0.5
  tags = [
    { address = "D100", type = "int16", scale = 0.1, unit = "degC", deadband = 0.5 },
    { address = "D102", type = "float32" },
    { address = "D104", type = "int32", word_order = "big", max_silence_s = 10 },
    { address = "P1", register = "ir:7", type = "uint16" },
    { address = "co:3", type = "bool" },
  ]

[[plcs]]
code = "SIM1"
protocol = "simulator"
  [[plcs.groups]]
  interval_s = 2
  tags = [ { address = "X1", sim = { wave = "ramp", min = 0, max = 10, period_s = 5 } } ]
"""


def write(tmp_path, text, name="tags.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_good_file_loads_with_defaults_applied(tmp_path):
    plant = load_plant(write(tmp_path, GOOD))
    plc, sim = plant.plcs
    assert (plc.code, plc.host, plc.port, plc.unit_id, plc.timeout_s) == ("KRCWO12ELOA101", "192.0.2.10", 502, 3, 0.5)
    g = plc.groups[0]
    assert (g.name, g.interval_s, len(g.tags)) == ("fast", 0.5, 5)
    d100, d102, d104, p1, co3 = g.tags
    assert d100.spec == registers.TagSpec(registers.Location("hr", 100), "int16", "little", None, 0.1, 0.0)
    assert d100.deadband == 0.5 and d100.max_silence_s == 60.0
    assert d102.spec.word_order == "little" and d104.spec.word_order == "big" and d104.max_silence_s == 10
    assert p1.spec.location == registers.Location("ir", 7)
    assert co3.spec.location == registers.Location("co", 3)
    assert sim.protocol == "simulator" and sim.groups[0].tags[0].sim.wave == "ramp"
    assert sim.groups[0].interval_s == 2.0 and sim.groups[0].tags[0].type == "float32"
    assert plant.tag_count == 6


def test_shipped_demo_plant_and_example_file_load():
    demo = load_plant(DEMO_PLANT)
    assert len(demo.plcs) >= 3 and demo.tag_count >= 30
    assert demo.protocols == {"simulator"}
    from pathlib import Path

    example = load_plant(Path(__file__).resolve().parent.parent / "deploy" / "tags.example.toml")
    assert example.protocols == {"modbus"}


def plc(tags, plc_extra="", group_extra='interval_s = 1.0'):
    return f"""
[[plcs]]
code = "KRCWO12ELOA101"
host = "127.0.0.1"
{plc_extra}
  [[plcs.groups]]
  {group_extra}
  tags = [
{tags}
  ]
"""


T = '    { address = "D100", type = "int16" }'

# (file text, key path expected in the message, value expected in the message)
BAD = [
    ("this is = = not toml", "", "not valid TOML"),
    ("", "plcs", "is required"),
    ("[[plcs]]\ncode = 'A'\nhost = 'h'\n", "plcs[0].groups", "is required"),
    ("plcs = 3", "plcs", "3"),
    ("[[plc]]\ncode = 'A'", "plc", "unknown key"),
    (plc(T, 'code2 = "x"'), "plcs[0].code2", "unknown key"),
    (plc(T).replace('code = "KRCWO12ELOA101"', 'code = "KRCWO12ELOA101XXXX"'), "plcs[0].code", "'KRCWO12ELOA101XXXX'"),
    (plc(T).replace('code = "KRCWO12ELOA101"', 'code = "KRC,1"'), "plcs[0].code", "'KRC,1'"),
    (plc(T).replace('code = "KRCWO12ELOA101"', 'code = "KRCé"'), "plcs[0].code", "ASCII"),
    (plc(T).replace('code = "KRCWO12ELOA101"', 'code = "KRC 101"'), "plcs[0].code", "'KRC 101'"),
    (plc(T).replace('code = "KRCWO12ELOA101"', 'code = "KRC101 "'), "plcs[0].code", "spaces"),
    (plc('    { address = "\\"D100", type = "int16" }'), "plcs[0].groups[0].tags[0].address", "quotes"),
    (plc(T) + plc(T), "plcs[1].code", "already used by plcs[0]"),
    (plc(T, 'protocol = "profinet"'), "plcs[0].protocol", "'profinet'"),
    (plc(T).replace('host = "127.0.0.1"', ""), "plcs[0].host", "is required"),
    (plc(T, "port = 70000"), "plcs[0].port", "70000"),
    (plc(T, 'port = "502"'), "plcs[0].port", "'502'"),
    (plc(T, "unit_id = 256"), "plcs[0].unit_id", "256"),
    (plc(T, "timeout_s = 0"), "plcs[0].timeout_s", "0"),
    (plc(T, 'word_order = "middle"'), "plcs[0].word_order", "'middle'"),
    (plc(T, group_extra="interval_s = 0"), "plcs[0].groups[0].interval_s", "0"),
    (plc(T, group_extra="interval_s = -1"), "plcs[0].groups[0].interval_s", "-1"),
    (plc(T, group_extra="interval_s = 0.001"), "plcs[0].groups[0].interval_s", "0.001"),
    (plc(T, group_extra="interval_s = nan"), "plcs[0].groups[0].interval_s", "nan"),
    (plc(T, group_extra="interval_s = true"), "plcs[0].groups[0].interval_s", "True"),
    (plc(T, group_extra="interval_s = 100000"), "plcs[0].groups[0].interval_s", "100000"),
    (plc(T, group_extra="name = 'g'"), "plcs[0].groups[0].interval_s", "is required"),
    (plc(""), "plcs[0].groups[0].tags", "at least one"),
    (plc('    { address = "D100", type = "int64" }'), "plcs[0].groups[0].tags[0].type", "'int64'"),
    (plc('    { address = "D100" }'), "plcs[0].groups[0].tags[0].type", "is required"),
    (plc('    { address = "D100", type = "int16", word_order = "swap" }'), "plcs[0].groups[0].tags[0].word_order", "'swap'"),
    (plc('    { address = "D100", type = "int16", scale = 0 }'), "plcs[0].groups[0].tags[0].scale", "0"),
    (plc('    { address = "D100", type = "int16", scale = inf }'), "plcs[0].groups[0].tags[0].scale", "inf"),
    (plc('    { address = "D100", type = "int16", deadband = -1 }'), "plcs[0].groups[0].tags[0].deadband", "-1"),
    (plc('    { address = "D100", type = "int16", max_silence_s = 0 }'), "plcs[0].groups[0].tags[0].max_silence_s", "0"),
    (plc(T + ",\n" + T), "plcs[0].groups[0].tags[1].address", "already defined at plcs[0].groups[0].tags[0]"),
    (plc(T) + "  [[plcs.groups]]\n  interval_s = 2\n  tags = [" + T + "]\n",
     "plcs[0].groups[1].tags[0].address", "already defined at plcs[0].groups[0].tags[0]"),
    (plc('    { address = "TAG_NAME_THAT_IS_TOO_LONG", register = "hr:1", type = "int16" }'),
     "plcs[0].groups[0].tags[0].address", "'TAG_NAME_THAT_IS_TOO_LONG'"),
    (plc('    { address = "40101", type = "int16" }'), "plcs[0].groups[0].tags[0].address", "hr:100"),
    (plc('    { address = "X100", type = "int16" }'), "plcs[0].groups[0].tags[0].address", "'X100'"),
    (plc('    { address = "hr:70000", type = "int16" }'), "plcs[0].groups[0].tags[0].address", "'hr:70000'"),
    (plc('    { address = "hr:65535", type = "float32" }'), "plcs[0].groups[0].tags[0].address", "runs past"),
    (plc('    { address = "co:1", type = "int16" }'), "plcs[0].groups[0].tags[0].type", "must be bool"),
    (plc('    { address = "D1", type = "int16", bit = 3 }'), "plcs[0].groups[0].tags[0].bit", "3"),
    (plc('    { address = "D1", type = "bool", bit = 16 }'), "plcs[0].groups[0].tags[0].bit", "16"),
    (plc('    { address = "D1", type = "int16", colour = "red" }'), "plcs[0].groups[0].tags[0].colour", "unknown key"),
    (plc('    { address = "D1", type = "int16", sim = { wave = "sine" } }'), "plcs[0].groups[0].tags[0].sim", "only a simulator"),
    (plc('    { address = "D1", sim = { wave = "zigzag" } }', 'protocol = "simulator"').replace('host = "127.0.0.1"', ""),
     "plcs[0].groups[0].tags[0].sim.wave", "'zigzag'"),
    (plc('    { address = "D1", sim = { min = 5, max = 1 } }', 'protocol = "simulator"').replace('host = "127.0.0.1"', ""),
     "plcs[0].groups[0].tags[0].sim.max", "1"),
]


@pytest.mark.parametrize("text,key,value", BAD, ids=[f"{i}:{b[1] or 'syntax'}" for i, b in enumerate(BAD)])
def test_each_mistake_is_refused_with_file_key_and_value(tmp_path, text, key, value):
    path = write(tmp_path, text)
    with pytest.raises(TagsFileError) as ei:
        load_plant(path)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))
    assert key in msg
    assert value in msg


def test_more_plcs_than_the_ring_table_holds_is_refused(tmp_path):
    text = "".join(plc(T).replace("KRCWO12ELOA101", f"PLC{i}") for i in range(65))
    with pytest.raises(TagsFileError, match=r"plcs = '65 PLCs': at most 64"):
        load_plant(write(tmp_path, text))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(TagsFileError, match="nope.toml: no such file"):
        load_plant(tmp_path / "nope.toml")
