"""OPC UA in the tag file and at poller start: good entries load, each mistake is one clear
line, passwords come only from the environment or .env and never show, nodes that the
server refuses stop the poller (exit 2) before the ring is opened."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.common.settings import read_secret
from pipeline.poller.config import TagsFileError, load_plant
from pipeline.poller.opcua_config import check_node_id
from pipeline.poller.sources.opcua import password_for
from tests.conftest import REPO, run
from tests.poller_helpers.opcua_server import OpcUaTestServer

SECRET = "Hunter2-plant-pw"


def opcua_plc(tags: str = '{ address = "D100", node = "ns=2;s=Line1.D100" }', extra: str = "",
              endpoint: str = "opc.tcp://192.0.2.5:4840/") -> str:
    return (f'[[plcs]]\ncode = "LINE1"\nprotocol = "opcua"\nendpoint = "{endpoint}"\n{extra}\n'
            f'  [[plcs.groups]]\n  interval_s = 1\n  tags = [ {tags} ]\n')


def load(tmp_path, text):
    p = tmp_path / "tags.toml"
    p.write_text(text)
    return load_plant(p)


def secure_files(tmp_path) -> str:
    (tmp_path / "c.der").write_bytes(b"x")
    (tmp_path / "k.pem").write_bytes(b"x")
    (tmp_path / "trusted").mkdir(exist_ok=True)
    return 'security_policy = "Aes256_Sha256_RsaPss"\ncertificate = "c.der"\nprivate_key = "k.pem"\ntrusted_certs = "trusted"'


def test_good_opcua_plc_loads(tmp_path):
    tags = ('{ address = "D100", node = "ns=2;s=Line1.D100", scale = 0.1, offset = -5, unit = "degC", deadband = 0.2 },'
            ' { node = "ns=3;i=1001" }, { address = "G", node = "g=09087e75-8e5e-499b-954f-f2a9603db28a" }')
    extra = secure_files(tmp_path) + '\nusername = "op"\npassword_env = "OPCUA_LINE1_PASSWORD"'
    plant = load(tmp_path, opcua_plc(tags, extra))
    plc = plant.plcs[0]
    assert plant.protocols == {"opcua"}
    o = plc.opcua
    assert (o.endpoint, o.security_policy, o.security_mode, o.username, o.password_env) == \
        ("opc.tcp://192.0.2.5:4840/", "Aes256_Sha256_RsaPss", "SignAndEncrypt", "op", "OPCUA_LINE1_PASSWORD")
    # relative certificate paths are taken relative to the tag file
    assert o.certificate == str(tmp_path / "c.der") and o.trusted_certs == str(tmp_path / "trusted")
    t0, t1, t2 = plc.groups[0].tags
    assert (t0.address, t0.opcua.node, t0.opcua.scale, t0.opcua.offset, t0.unit, t0.deadband) == \
        ("D100", "ns=2;s=Line1.D100", 0.1, -5.0, "degC", 0.2)
    assert (t1.address, t1.opcua.node) == ("ns=3;i=1001", "ns=3;i=1001")  # the node id is the stored address
    assert t2.opcua.node.startswith("g=09087e75")


def test_the_deploy_example_loads(tmp_path):
    text = (REPO / "deploy" / "tags.opcua.example.toml").read_text()
    folder = tmp_path / "opcua"
    (folder / "trusted").mkdir(parents=True)
    (folder / "client.der").write_bytes(b"x")
    (folder / "client.key.pem").write_bytes(b"x")
    plant = load(tmp_path, text.replace("/etc/tagpipe/opcua", str(folder)))
    assert plant.protocols == {"opcua"} and plant.tag_count == 6
    assert plant.plcs[0].opcua.password_env == "OPCUA_LINE2_PASSWORD"


@pytest.mark.parametrize("text", ["ns=2;s=Line1.D100", "i=2258", "ns=0;i=4294967295", "ns=65535;s=a b",
                                  "ns=1;b=AAEC", "ns=4;g=09087E75-8E5E-499B-954F-F2A9603DB28A"])
def test_node_ids_accepted(text):
    assert check_node_id(text) is None


@pytest.mark.parametrize("text", ["", "D100", "ns=2", "ns=2;x=1", "ns=70000;i=1", "i=4294967296", "ns=2;i=abc",
                                  "s=", "ns=1;g=not-a-guid"])
def test_node_ids_refused(text):
    assert check_node_id(text)


NODE = '{ address = "D100", node = "ns=2;s=Line1.D100" }'
BAD = [
    (opcua_plc(endpoint="http://192.0.2.5/"), "plcs[0].endpoint", "'http://192.0.2.5/'"),
    (opcua_plc(extra='host = "192.0.2.5"'), "plcs[0].host", "'192.0.2.5'"),
    (opcua_plc(extra='security_policy = "Basic128Rsa15"'), "plcs[0].security_policy", "'Basic128Rsa15'"),
    (opcua_plc(extra='security_policy = "Basic256Sha256"'), "plcs[0].certificate", "None"),
    (opcua_plc(extra='security_mode = "Sign"'), "plcs[0].security_mode", "'Sign'"),
    (opcua_plc(extra='username = "op"'), "plcs[0].password_env", "is required with username"),
    (opcua_plc(extra='password_env = "OPCUA_PW"'), "plcs[0].username", "is required with password_env"),
    (opcua_plc(extra='username = "op"\npassword_env = "1BAD-NAME"'), "plcs[0].password_env", "'1BAD-NAME'"),
    (opcua_plc('{ address = "D100", node = "Line1.D100" }'), "plcs[0].groups[0].tags[0].node", "'Line1.D100'"),
    (opcua_plc('{ address = "D100", node = "ns=2;s=A", type = "int16" }'), "plcs[0].groups[0].tags[0].type", "'int16'"),
    (opcua_plc('{ address = "D100", node = "ns=2;s=A", register = "hr:1" }'),
     "plcs[0].groups[0].tags[0].register", "'hr:1'"),
    (opcua_plc('{ node = "ns=2;s=Line1.Conveyor.Speed.Setpoint" }'), "plcs[0].groups[0].tags[0].node",
     "give the plant's name in address"),
    (opcua_plc('{ address = "D100", node = "ns=2;s=A", scale = 0 }'), "plcs[0].groups[0].tags[0].scale", "0"),
    (opcua_plc(f'{NODE}, {NODE}'), "plcs[0].groups[0].tags[1].address", "is already defined"),
    ('[[plcs]]\ncode = "M1"\nhost = "192.0.2.1"\nendpoint = "opc.tcp://x:4840"\n[[plcs.groups]]\ninterval_s = 1\n'
     'tags = [ { address = "D1", type = "int16" } ]\n', "plcs[0].endpoint", "only an opcua PLC"),
    ('[[plcs]]\ncode = "M1"\nhost = "192.0.2.1"\n[[plcs.groups]]\ninterval_s = 1\n'
     'tags = [ { address = "D1", type = "int16", node = "ns=2;i=1" } ]\n', "plcs[0].groups[0].tags[0].node",
     "only a tag of an opcua PLC"),
]


@pytest.mark.parametrize("text,key,value", BAD, ids=[f"{i}:{b[1]}" for i, b in enumerate(BAD)])
def test_each_opcua_mistake_is_one_line_naming_key_and_value(tmp_path, text, key, value):
    with pytest.raises(TagsFileError) as ei:
        load(tmp_path, text)
    msg = str(ei.value)
    assert "\n" not in msg and key in msg and value in msg, msg


def test_a_password_written_into_the_endpoint_is_masked_in_the_error(tmp_path):
    """Issue 12 item 15's sibling: opc.tcp://user:password@host is refused without showing it."""
    with pytest.raises(TagsFileError) as e:
        load(tmp_path, opcua_plc(endpoint="opc.tcp://op:pw-9f8e7d@192.0.2.5:4840/"))
    assert "pw-9f8e7d" not in str(e.value) and "opc.tcp://op:********@192.0.2.5:4840/" in str(e.value)
    assert "plcs[0].endpoint" in str(e.value) and "\n" not in str(e.value)


def test_security_files_must_exist(tmp_path):
    extra = 'security_policy = "Basic256Sha256"\ncertificate = "none.der"\nprivate_key = "k.pem"\ntrusted_certs = "t"'
    with pytest.raises(TagsFileError, match=r"plcs\[0\].certificate = 'none.der': no such file"):
        load(tmp_path, opcua_plc(extra=extra))


@pytest.mark.parametrize("protocol", ["opcua", "modbus"])
def test_a_password_in_the_tag_file_is_refused_without_showing_it(tmp_path, protocol):
    text = opcua_plc(extra=f'username = "op"\npassword_env = "PW"\npassword = "{SECRET}"')
    if protocol == "modbus":
        text = f'[[plcs]]\ncode = "M1"\nhost = "192.0.2.1"\npassword = "{SECRET}"\n[[plcs.groups]]\ninterval_s = 1\n' \
               'tags = [ { address = "D1", type = "int16" } ]\n'
    with pytest.raises(TagsFileError) as ei:
        load(tmp_path, text)
    assert "plcs[0].password" in str(ei.value) and SECRET not in str(ei.value)


def test_password_from_environment_first_then_env_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(f'# plant secrets\nOPCUA_LINE1_PASSWORD="{SECRET}"\n')
    assert read_secret("OPCUA_LINE1_PASSWORD", {}, str(env_file)) == SECRET
    assert read_secret("OPCUA_LINE1_PASSWORD", {"OPCUA_LINE1_PASSWORD": "from-env"}, str(env_file)) == "from-env"
    assert read_secret("OTHER", {}, str(env_file)) is None
    plant = load(tmp_path, opcua_plc(extra='username = "op"\npassword_env = "OPCUA_LINE1_PASSWORD"'))
    assert password_for(plant.plcs[0], {}, str(env_file)) == SECRET
    with pytest.raises(KeyError, match="OPCUA_LINE1_PASSWORD"):
        password_for(plant.plcs[0], {}, str(tmp_path / "no.env"))
    anonymous = load(tmp_path, opcua_plc())
    assert password_for(anonymous.plcs[0], {}, str(env_file)) is None


# --- the poller process at start (a real interpreter, real server on loopback) ---

@pytest.fixture(scope="module")
def server():
    srv = OpcUaTestServer(users={"op": SECRET}, anonymous=False).start()
    yield srv
    srv.close()


def test_poller_exits_2_naming_an_unset_password_variable(tmp_path, ring_name):
    tags = tmp_path / "tags.toml"
    tags.write_text(opcua_plc(extra='username = "op"\npassword_env = "OPCUA_LINE1_PASSWORD"'))
    r = run(["-m", "pipeline.poller"], tmp_path, RING_NAME=ring_name, TAGS_FILE=str(tags))
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]  # (the lines before are the log's start-up lines)
    assert last.startswith("tagpipe poller: bad setting OPCUA_LINE1_PASSWORD: is not set") and "plcs[0]" in last
    assert not Path(f"/dev/shm/{ring_name}.ring").exists()


def test_poller_exits_2_naming_a_node_the_server_refuses_and_never_shows_the_password(tmp_path, ring_name, server):
    tags = tmp_path / "tags.toml"
    tags.write_text(opcua_plc(
        f'{{ address = "A", node = "{server.node("Int16")}" }}, {{ address = "B", node = "{server.node("Text")}" }},'
        ' { address = "C", node = "ns=2;s=Line1.Missing" }',
        'username = "op"\npassword_env = "OPCUA_LINE1_PASSWORD"', server.endpoint))
    (tmp_path / ".env").write_text(f"OPCUA_LINE1_PASSWORD={SECRET}\n")  # read from .env like every setting
    r = run(["-m", "pipeline.poller"], tmp_path, RING_NAME=ring_name, TAGS_FILE=str(tags), LOG_LEVEL="DEBUG")
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "plcs[0].groups[0].tags[1].node = 'ns=2;s=Line1.Text'" in last and "not a number or Boolean" in last
    assert "(and 1 more nodes)" in last
    assert SECRET not in r.stderr + r.stdout
    assert not Path(f"/dev/shm/{ring_name}.ring").exists()


def test_poller_reads_opcua_into_the_ring_with_the_password_from_env_file(tmp_path, ring_name, server):
    from tests.conftest import spawn, stop
    from tests.poller_helpers.modbus_server import wait_for
    from tests.poller_helpers.ring_reader import RingReader

    tags = tmp_path / "tags.toml"
    tags.write_text(opcua_plc(f'{{ address = "D100", node = "{server.node("UInt32")}" }}',
                              'username = "op"\npassword_env = "OPCUA_LINE1_PASSWORD"', server.endpoint))
    (tmp_path / ".env").write_text(f"OPCUA_LINE1_PASSWORD='{SECRET}'\n")
    proc = spawn(["-m", "pipeline.poller"], tmp_path, RING_NAME=ring_name, TAGS_FILE=str(tags), LOG_LEVEL="DEBUG")
    try:
        reader = RingReader(ring_name)
        wait_for(lambda: reader.drain() is not None and len(reader.of("LINE1", "D100")) >= 1, timeout=30)
        rec = reader.of("LINE1", "D100")[0]
        assert rec["value"] == 4_000_000_123 and rec["quality"] == 1
        reader.close()
    finally:
        stop(proc)
        out, err = proc.communicate(timeout=10)
    assert SECRET not in out + err
    shutil.rmtree(tmp_path / "data", ignore_errors=True)
