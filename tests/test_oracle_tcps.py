"""TCPS: the sink connects over TLS, trusting the server through ORACLE_WALLET_LOCATION
(a PEM wallet, what Thin mode reads), and refuses a server its wallet does not trust."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pipeline.common.settings import load_settings
from pipeline.writer.sinks.base import SinkError
from pipeline.writer.sinks.oracle import OracleSink
from tests.oracle_emulator import Catalog, EmulatorServer, tagpipe_schema
from tests.oracle_emulator.fixtures import make_records


def self_signed(folder, name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return folder / "server.pem", folder / "server.key"


@pytest.fixture
def tcps_server(tmp_path):
    cert, key = self_signed(tmp_path / "server", "localhost")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    catalog = Catalog(str(tmp_path / "e.db"))
    tagpipe_schema(catalog)
    server = EmulatorServer(catalog, ssl_context=ctx).start()
    yield server, cert
    server.stop()


def sink_for(server, wallet) -> OracleSink:
    return OracleSink.from_settings(load_settings({
        "ORACLE_DSN": f"tcps://localhost:{server.port}/FREEPDB1", "ORACLE_USERNAME": "TAGPIPE", "ORACLE_PASSWORD": "tagpipe-secret",
        "ORACLE_WALLET_LOCATION": str(wallet), "ORACLE_POOL_MIN": "1", "ORACLE_POOL_MAX": "1",
        "ORACLE_POOL_WAIT_MS": "5000", "ORACLE_CONNECT_TIMEOUT_S": "5"}, env_file=None))


def test_oracle_tcps_with_a_wallet_that_trusts_the_server(tcps_server, tmp_path):
    server, cert = tcps_server
    wallet = tmp_path / "wallet"
    wallet.mkdir()
    (wallet / "ewallet.pem").write_bytes(cert.read_bytes())
    sink = sink_for(server, wallet)
    try:
        assert sink.write(9, make_records(range(25))).written == 25
    finally:
        sink.close()
    assert len(server.catalog.rows("TAG_DATA")) == 25


def test_oracle_tcps_refuses_a_server_the_wallet_does_not_trust(tcps_server, tmp_path):
    server, _ = tcps_server
    other, _ = self_signed(tmp_path / "other", "localhost")
    wallet = tmp_path / "wallet"
    wallet.mkdir()
    (wallet / "ewallet.pem").write_bytes(other.read_bytes())
    sink = sink_for(server, wallet)
    try:
        with pytest.raises(SinkError) as err:
            sink.write(9, make_records(range(5)))
        assert err.value.code == "DPY-6005" and "CERTIFICATE_VERIFY_FAILED" in str(err.value)
        assert sink.probe() is False
    finally:
        sink.close()
    assert server.catalog.rows("TAG_DATA") == []
