"""asyncua's own OPC UA server on 127.0.0.1, in a background thread, for the tests.

* one variable per scalar type (Boolean, SByte ... Double) with known values, plus nodes
  of refused kinds (String, Int32 array, DateTime), and ``many`` Double nodes
  ``ns=2;s=Many.<i>`` for group-size tests;
* ``set_value(name, value, status)`` changes a value (and its status code) while it runs;
* security: the policies offered, a server certificate, and user/password login;
* ``hang(s)`` blocks the server for s seconds (accepts, never answers);
* ``stop()`` closes the listener and every session; ``start()`` serves again on the same
  port (a server restart);
* ``reads`` counts Read service calls received (split at MaxNodesPerRead is checked with it).

``make_certificates(folder)`` writes self-signed certificates (server, client, and an
unrelated "rogue" server) with the ``cryptography`` package.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import free_port

logging.getLogger("asyncua").setLevel(logging.CRITICAL)

SERVER_URI = "urn:tagpipe:test:opcua-server"
CLIENT_URI = "urn:tagpipe:test:poller"
NS_URI = "urn:tagpipe:test:plant"

# name -> (variant type, initial value); read back as float(value)
TYPED = {
    "Bool": (ua.VariantType.Boolean, True),
    "SByte": (ua.VariantType.SByte, -100),
    "Byte": (ua.VariantType.Byte, 200),
    "Int16": (ua.VariantType.Int16, -12345),
    "UInt16": (ua.VariantType.UInt16, 65535),
    "Int32": (ua.VariantType.Int32, -2_000_000_001),
    "UInt32": (ua.VariantType.UInt32, 4_000_000_123),
    "Int64": (ua.VariantType.Int64, -(2**53) + 1),
    "UInt64": (ua.VariantType.UInt64, 2**53 - 1),
    "Float": (ua.VariantType.Float, 3.140000104904175),  # exactly representable as float32
    "Double": (ua.VariantType.Double, -1.0e-7),
}
REFUSED = {
    "Text": (ua.VariantType.String, "hello"),
    "When": (ua.VariantType.DateTime, datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)),
}


@dataclass(frozen=True)
class Certs:
    folder: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    trusted: Path  # holds the server's certificate
    untrusted: Path  # holds only an unrelated certificate


def _self_signed(cn: str, uri: str, server: bool) -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.UniformResourceIdentifier(uri), x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=True,
                                     data_encipherment=True, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                              else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (cert.public_bytes(serialization.Encoding.DER),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def make_certificates(folder: Path) -> Certs:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for label, cn, uri, server in (("server", "tagpipe test server", SERVER_URI, True),
                                   ("client", "tagpipe poller", CLIENT_URI, False),
                                   ("rogue", "someone else", "urn:elsewhere", True)):
        der, pem = _self_signed(cn, uri, server)
        (folder / f"{label}.der").write_bytes(der)
        (folder / f"{label}.key.pem").write_bytes(pem)
        paths[label] = folder / f"{label}.der"
    trusted, untrusted = folder / "trusted", folder / "untrusted"
    trusted.mkdir(exist_ok=True)
    untrusted.mkdir(exist_ok=True)
    (trusted / "server.der").write_bytes(paths["server"].read_bytes())
    (untrusted / "rogue.der").write_bytes(paths["rogue"].read_bytes())
    return Certs(folder, paths["server"], folder / "server.key.pem", paths["client"], folder / "client.key.pem",
                 trusted, untrusted)


class _Users:
    """user/password login; anonymous allowed only when ``anonymous``."""

    def __init__(self, users: dict[str, str], anonymous: bool) -> None:
        self.users, self.anonymous = users, anonymous

    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username is None:
            return User(role=UserRole.User) if self.anonymous else None
        if self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


class OpcUaTestServer:
    def __init__(self, many: int = 0, policies: tuple = (ua.SecurityPolicyType.NoSecurity,),
                 certs: Certs | None = None, users: dict[str, str] | None = None, anonymous: bool = True,
                 max_nodes_per_read: int | None = None, client_trust: Path | None = None) -> None:
        self.many = many
        self.policies = list(policies)
        self.certs = certs
        self.users = users or {}
        self.anonymous = anonymous
        self.max_nodes_per_read = max_nodes_per_read
        self.client_trust = client_trust  # folder of client certificates the server trusts (None: any)
        self.port = free_port()
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}/tagpipe"
        self.ns = 2
        self.reads = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="opcua-test-server", daemon=True)
        self._server: Server | None = None
        self._nodes: dict[str, ua.NodeId] = {}

    def _call(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # --- life cycle ---
    def start(self) -> "OpcUaTestServer":
        if not self._thread.is_alive():
            self._thread.start()
            self._call(self._init())
        self._call(self._server.start())
        return self

    def stop(self) -> None:
        self._call(self._server.stop())

    def close(self) -> None:
        try:
            self._call(self._server.stop())
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _init(self) -> None:
        srv = Server(user_manager=_Users(self.users, self.anonymous))
        await srv.init()
        srv.set_endpoint(self.endpoint)
        srv.set_server_name("tagpipe test server")
        await srv.set_application_uri(SERVER_URI)
        srv.set_security_policy(self.policies)
        tokens = [ua.UserNameIdentityToken] + ([ua.AnonymousIdentityToken] if self.anonymous else [])
        srv.set_identity_tokens(tokens)
        if self.certs is not None:
            await srv.load_certificate(str(self.certs.server_cert))
            await srv.load_private_key(str(self.certs.server_key))
        if self.client_trust is not None:
            from asyncua.crypto.truststore import TrustStore
            from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

            store = TrustStore([self.client_trust], [])
            await store.load()
            srv.set_certificate_validator(CertificateValidator(
                CertificateValidatorOptions.TRUSTED | CertificateValidatorOptions.PEER_CLIENT, store))
        self.ns = await srv.register_namespace(NS_URI)
        objects = srv.nodes.objects
        for name, (vt, value) in {**TYPED, **REFUSED}.items():
            nid = ua.NodeId(f"Line1.{name}", self.ns)
            await objects.add_variable(nid, name, ua.Variant(value, vt))
            self._nodes[name] = nid
        nid = ua.NodeId("Line1.Array", self.ns)
        await objects.add_variable(nid, "Array", ua.Variant([1, 2, 3], ua.VariantType.Int32))
        self._nodes["Array"] = nid
        for i in range(self.many):
            nid = ua.NodeId(f"Many.{i}", self.ns)
            await objects.add_variable(nid, f"Many{i}", ua.Variant(float(i), ua.VariantType.Double))
            self._nodes[f"Many.{i}"] = nid
        if self.max_nodes_per_read is not None:
            await srv.write_attribute_value(
                ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead),
                ua.DataValue(ua.Variant(self.max_nodes_per_read, ua.VariantType.UInt32)))
        # Count Read service calls (the poller's values, its node checks and probes).
        orig = srv.iserver.attribute_service.read

        def counting_read(params, *a, **kw):
            self.reads += 1
            return orig(params, *a, **kw)

        srv.iserver.attribute_service.read = counting_read
        self._server = srv

    def hang(self, seconds: float) -> None:
        """Block the server's event loop for ``seconds`` (a hung server: nothing is answered)."""
        self._loop.call_soon_threadsafe(time.sleep, seconds)

    # --- contents ---
    def node(self, name: str) -> str:
        """The node id string of a test variable, e.g. ns=2;s=Line1.Int16."""
        return self._nodes[name].to_string()

    def set_value(self, name: str, value, vt: ua.VariantType | None = None, status: int = 0) -> None:
        vt = vt or (TYPED.get(name) or (ua.VariantType.Double,))[0]

        async def go():
            await self._server.write_attribute_value(
                self._nodes[name], ua.DataValue(ua.Variant(value, vt), StatusCode=ua.StatusCode(status)))

        self._call(go())
