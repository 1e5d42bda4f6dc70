"""The OPC UA source against asyncua's own server on loopback: types, status codes,
refused nodes, many nodes, security modes, wrong password, untrusted certificate,
server down, restart and a server that never answers.

One server (with every security policy) is shared by the module; certificates are
generated once per session. The restart test has its own server (it stops it).
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest
from asyncua import ua

from pipeline.poller.config import load_plant
from pipeline.poller.scheduler import GroupPoller
from pipeline.poller.sources.base import SourceUnavailable
from pipeline.poller.sources.opcua import OpcUaPlc, quality_of
from shm import Producer
from shm.layout import QUALITY_BAD, QUALITY_GOOD, QUALITY_UNCERTAIN
from tests.poller_helpers.modbus_server import Blackhole, refused_port
from tests.poller_helpers.opcua_server import TYPED, OpcUaTestServer, make_certificates
from tests.poller_helpers.ring_reader import RingReader

PASSWORD = "S3cret-Pa55word!"  # must never show in a log line or an error
MANY = 250
LIMIT = 100  # the server's MaxNodesPerRead: 250 nodes are 3 Read calls
ALL_POLICIES = (
    ua.SecurityPolicyType.NoSecurity,
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
)


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("opcua-certs"))


@pytest.fixture(scope="module")
def server(certs):
    srv = OpcUaTestServer(many=MANY, policies=ALL_POLICIES, certs=certs, users={"operator": PASSWORD},
                          anonymous=True, max_nodes_per_read=LIMIT).start()
    yield srv
    srv.close()


def plant(tmp_path, endpoint: str, tags: list[str], plc_extra: str = "", timeout: float = 2.0, code: str = "LINE1"):
    body = (f'[[plcs]]\ncode = "{code}"\nprotocol = "opcua"\nendpoint = "{endpoint}"\ntimeout_s = {timeout}\n'
            f'backoff_max_s = 1.0\n{plc_extra}\n[[plcs.groups]]\ninterval_s = 0.1\ntags = [\n'
            + ",\n".join(tags) + "\n]\n")
    p = tmp_path / f"{code}.toml"
    p.write_text(body)
    return load_plant(p)


def tag(address: str, node: str, extra: str = "") -> str:
    return f'{{ address = "{address}", node = "{node}"{", " + extra if extra else ""} }}'


def run(coro):
    return asyncio.run(coro)


async def read_once(plc, password=None, group=0):
    src = OpcUaPlc(plc, password)
    try:
        return await src.read(group), src
    finally:
        await src.close()


def test_every_scalar_type_reads_exactly_with_scale_and_offset(tmp_path, server):
    names = list(TYPED)
    tags = [tag(n, server.node(n)) for n in names] + [tag("D100", server.node("Int16"), "scale = 0.5, offset = 10")]
    cfg = plant(tmp_path, server.endpoint, tags)
    reading, _ = run(read_once(cfg.plcs[0]))
    expected = [float(TYPED[n][1]) for n in names] + [-12345 * 0.5 + 10]
    assert reading.values.tolist() == expected
    assert reading.quality.tolist() == [QUALITY_GOOD] * len(expected) and reading.error == ""


def test_status_codes_map_to_good_uncertain_bad(tmp_path, server):
    assert [quality_of(c) for c in (0, 0x00A80000, 0x40000000, 0x408F0000, 0x80000000, 0x80340000, 0xC0000000)] == \
        [QUALITY_GOOD, QUALITY_GOOD, QUALITY_UNCERTAIN, QUALITY_UNCERTAIN, QUALITY_BAD, QUALITY_BAD, QUALITY_BAD]
    server.set_value("Many.1", 11.5, status=0x40000000)  # Uncertain
    server.set_value("Many.2", 12.5, status=ua.StatusCodes.BadSensorFailure)
    server.set_value("Many.3", 13.5, status=0)
    try:
        cfg = plant(tmp_path, server.endpoint, [tag(f"M{i}", server.node(f"Many.{i}")) for i in (1, 2, 3)])
        reading, _ = run(read_once(cfg.plcs[0]))
        assert reading.quality.tolist() == [QUALITY_UNCERTAIN, QUALITY_BAD, QUALITY_GOOD]
        assert reading.values[0] == 11.5 and np.isnan(reading.values[1]) and reading.values[2] == 13.5
        assert "BadSensorFailure" in reading.error and "Many.2" in reading.error
    finally:
        for i in (1, 2, 3):
            server.set_value(f"Many.{i}", float(i))


def test_missing_node_and_refused_types_are_bad_with_the_reason(tmp_path, server):
    tags = [tag("OK", server.node("Double")), tag("TEXT", server.node("Text")), tag("ARR", server.node("Array")),
            tag("WHEN", server.node("When")), tag("GONE", "ns=2;s=Line1.DoesNotExist")]
    cfg = plant(tmp_path, server.endpoint, tags)

    async def go():
        src = OpcUaPlc(cfg.plcs[0])
        try:
            return await src.check_nodes(), await src.read(0)
        finally:
            await src.close()

    problems, reading = run(go())
    by_tag = {t: reason for _, t, _, reason in problems}
    assert set(by_tag) == {1, 2, 3, 4}
    assert "not a number or Boolean" in by_tag[1] and "not a scalar" in by_tag[2]
    assert "not a number or Boolean" in by_tag[3] and "BadNodeIdUnknown" in by_tag[4]
    assert reading.quality.tolist() == [QUALITY_GOOD] + [QUALITY_BAD] * 4
    assert reading.values[0] == TYPED["Double"][1] and np.isnan(reading.values[1:]).all()
    assert "Line1.Text" in reading.error and "(and 3 more)" in reading.error


def test_many_nodes_in_one_group_are_split_at_max_nodes_per_read(tmp_path, server):
    cfg = plant(tmp_path, server.endpoint, [tag(f"M{i}", server.node(f"Many.{i}")) for i in range(MANY)])

    async def go():
        src = OpcUaPlc(cfg.plcs[0])
        try:
            await src.read(0)  # connects: session set-up reads are not counted in requests
            r0, s0 = src.requests, server.reads
            reading = await src.read(0)
            return reading, src.requests - r0, server.reads - s0, src.max_nodes_per_read
        finally:
            await src.close()

    reading, requests, server_reads, limit = run(go())
    assert limit == LIMIT
    assert requests == 3 and server_reads == 3  # ceil(250 / 100)
    assert reading.values.tolist() == [float(i) for i in range(MANY)]
    assert (reading.quality == QUALITY_GOOD).all()


@pytest.mark.parametrize("policy,mode", [("Basic256Sha256", "Sign"), ("Basic256Sha256", "SignAndEncrypt"),
                                         ("Aes128_Sha256_RsaOaep", "SignAndEncrypt"),
                                         ("Aes256_Sha256_RsaPss", "Sign"), ("Aes256_Sha256_RsaPss", "SignAndEncrypt")])
def test_security_policies_and_modes_with_user_and_password(tmp_path, server, certs, policy, mode):
    extra = (f'security_policy = "{policy}"\nsecurity_mode = "{mode}"\ncertificate = "{certs.client_cert}"\n'
             f'private_key = "{certs.client_key}"\ntrusted_certs = "{certs.trusted}"\n'
             f'username = "operator"\npassword_env = "OPCUA_TEST_PASSWORD"')
    cfg = plant(tmp_path, server.endpoint, [tag("D100", server.node("Int32"))], extra)
    reading, src = run(read_once(cfg.plcs[0], PASSWORD))
    assert reading.values.tolist() == [-2_000_000_001.0] and reading.quality.tolist() == [QUALITY_GOOD]
    assert src.sessions == 1


def test_wrong_password_is_refused_and_never_shown(tmp_path, server, caplog):
    extra = 'username = "operator"\npassword_env = "OPCUA_TEST_PASSWORD"'
    cfg = plant(tmp_path, server.endpoint, [tag("D100", server.node("Int16"))], extra)
    wrong = PASSWORD + "-wrong"
    caplog.set_level(logging.DEBUG)

    async def go():
        src = OpcUaPlc(cfg.plcs[0], wrong)
        try:
            with pytest.raises(SourceUnavailable) as ei:
                await src.read(0)
            return str(ei.value), repr(src)
        finally:
            await src.close()

    msg, rep = run(go())
    assert "BadUserAccessDenied" in msg and "wrong user name or password" in msg
    for text in (msg, rep, caplog.text):
        assert wrong not in text and PASSWORD not in text
    # ...and the right password logs in.
    reading, _ = run(read_once(cfg.plcs[0], PASSWORD))
    assert reading.quality.tolist() == [QUALITY_GOOD]


def test_anonymous_login_is_refused_when_the_server_wants_a_user(tmp_path, certs):
    srv = OpcUaTestServer(users={"operator": PASSWORD}, anonymous=False).start()
    try:
        cfg = plant(tmp_path, srv.endpoint, [tag("D100", srv.node("Int16"))])
        with pytest.raises(SourceUnavailable, match="BadIdentityTokenRejected|BadUserAccessDenied"):
            run(read_once(cfg.plcs[0]))
    finally:
        srv.close()


def test_untrusted_server_certificate_is_refused(tmp_path, server, certs):
    extra = (f'security_policy = "Basic256Sha256"\ncertificate = "{certs.client_cert}"\n'
             f'private_key = "{certs.client_key}"\ntrusted_certs = "{certs.untrusted}"')
    cfg = plant(tmp_path, server.endpoint, [tag("D100", server.node("Int16"))], extra)
    with pytest.raises(SourceUnavailable, match="BadCertificateUntrusted"):
        run(read_once(cfg.plcs[0]))


def test_server_down_at_start_backs_off_then_connects(tmp_path):
    cfg = plant(tmp_path, f"opc.tcp://127.0.0.1:{refused_port()}/x", [tag("D100", "ns=2;s=Line1.Int16")])

    async def go():
        src = OpcUaPlc(cfg.plcs[0])
        try:
            with pytest.raises(SourceUnavailable, match="connect to opc.tcp://127.0.0.1:.* failed"):
                await src.read(0)
            with pytest.raises(SourceUnavailable, match="next connection attempt in"):
                await src.read(0)  # within the backoff: no new connection attempt
            return src.connected
        finally:
            await src.close()

    assert run(go()) is False


def test_server_restart_recreates_the_session(tmp_path):
    srv = OpcUaTestServer().start()
    try:
        cfg = plant(tmp_path, srv.endpoint, [tag("D100", srv.node("Int16"))])

        async def go():
            src = OpcUaPlc(cfg.plcs[0])
            try:
                first = await src.read(0)
                await asyncio.to_thread(srv.stop)
                with pytest.raises(SourceUnavailable):
                    await src.read(0)
                await asyncio.to_thread(srv.start)
                srv.set_value("Int16", 77)
                deadline = time.monotonic() + 15
                while True:
                    try:
                        again = await src.read(0)
                        break
                    except SourceUnavailable:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.2)
                return first, again, src.sessions
            finally:
                await src.close()

        first, again, sessions = run(go())
        assert first.values.tolist() == [-12345.0] and again.values.tolist() == [77.0]
        assert sessions == 2
    finally:
        srv.close()


def test_a_server_that_never_answers_costs_at_most_its_timeout(tmp_path):
    hole = Blackhole()
    try:
        cfg = plant(tmp_path, f"opc.tcp://127.0.0.1:{hole.port}/x", [tag("D100", "ns=2;s=Line1.Int16")],
                    timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(SourceUnavailable, match="no answer within 0.5 s"):
            run(read_once(cfg.plcs[0]))
        assert time.monotonic() - t0 < 2 * 0.5 + 1.0 + 1.0  # connect budget, plus close
    finally:
        hole.close()


def test_scheduler_bad_once_per_episode_and_slow_server_does_not_delay_another(tmp_path, ring_name, server, caplog):
    """Two OPC UA PLCs on one loop: one never answers (timeout 1.5 s), one answers with a
    missing node. The healthy one keeps its 0.1 s schedule; each problem is logged once."""
    hole = Blackhole()
    caplog.set_level(logging.INFO, logger="tagpipe")
    try:
        good = plant(tmp_path, server.endpoint, [tag("D100", server.node("Double")), tag("GONE", "ns=2;s=Nope")],
                     code="GOOD").plcs[0]
        dead = plant(tmp_path, f"opc.tcp://127.0.0.1:{hole.port}/x", [tag("D100", "ns=2;s=A")], timeout=1.5,
                     code="DEAD").plcs[0]
        producer = Producer.open(ring_name, 100_000)
        reader = RingReader(ring_name)
        try:
            srcs = [OpcUaPlc(good), OpcUaPlc(dead)]
            gps = [GroupPoller(producer, s, p, i, 0) for i, (s, p) in enumerate(zip(srcs, (good, dead)))]

            async def go():
                stop = asyncio.Event()
                tasks = [asyncio.create_task(g.run(stop)) for g in gps]
                await asyncio.sleep(4.0)
                stop.set()
                await asyncio.wait(tasks, timeout=10)
                for s in srcs:
                    await s.close()

            run(go())
            reader.drain()
            d = reader.of("GOOD", "D100")
            assert set(d["quality"].tolist()) == {QUALITY_GOOD} and len(d) >= 20
            gaps = np.diff(d["ts_us"]) / 1e6
            assert gaps.max() < 0.75, f"healthy server delayed: largest gap {gaps.max():.2f} s"
            gone = reader.of("GOOD", "GONE")  # BAD once, then silent (deadband of BAD: once per episode)
            assert gone["quality"].tolist() == [QUALITY_BAD]
            bad = reader.of("DEAD", "D100")
            assert bad["quality"].tolist() == [QUALITY_BAD]
            del gps, srcs
        finally:
            reader.close()
            producer.close()
        text = caplog.text
        assert text.count("DEAD/group0 does not answer") == 1
        assert text.count("GOOD/group0 answers but refuses part of the group") == 1
        assert "ns=2;s=Nope: BadNodeIdUnknown" in text
    finally:
        hole.close()


def test_a_server_that_hangs_mid_session_costs_one_timeout_then_recovers(tmp_path, server):
    cfg = plant(tmp_path, server.endpoint, [tag("D100", server.node("Int16"))], timeout=0.5)

    async def go():
        src = OpcUaPlc(cfg.plcs[0])
        try:
            await src.read(0)
            server.hang(2.0)  # the server's event loop blocks: requests are accepted, never answered
            t0 = time.monotonic()
            with pytest.raises(SourceUnavailable, match="no answer within 0.5 s"):
                await src.read(0)
            took = time.monotonic() - t0
            await asyncio.sleep(2.5)
            return took, await src.read(0), src.sessions
        finally:
            await src.close()

    took, reading, sessions = run(go())
    assert took < 1.2, f"a hung server held the read {took:.2f} s"
    assert reading.values.tolist() == [-12345.0] and sessions == 2


def test_a_server_that_does_not_trust_our_certificate_refuses_the_connection(tmp_path, certs):
    srv = OpcUaTestServer(policies=(ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,), certs=certs,
                          client_trust=certs.untrusted).start()  # trusts only someone else
    try:
        extra = (f'security_policy = "Basic256Sha256"\ncertificate = "{certs.client_cert}"\n'
                 f'private_key = "{certs.client_key}"\ntrusted_certs = "{certs.trusted}"')
        cfg = plant(tmp_path, srv.endpoint, [tag("D100", srv.node("Int16"))], extra)
        with pytest.raises(SourceUnavailable) as ei:
            run(read_once(cfg.plcs[0]))
        assert "BadCertificateUntrusted" in str(ei.value)
    finally:
        srv.close()
