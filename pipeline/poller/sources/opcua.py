"""OPC UA servers with asyncua's client: the only module of the poller that imports asyncua.

asyncua is pinned ``>=2.0.1,<3`` (2.x: the client's connection supervisor and the
``certificate_validator`` hook used here). One client session per PLC, shared by its
groups. Reading is a polled Read service call per group (the value attribute of every
node, split at the server's ``MaxNodesPerRead``), chosen over subscriptions by
measurement (BENCHMARKS.md "OPC UA", docs/poller.md): it gives "one value per tag per
interval" and "BAD once per episode" directly, without a cache of last notifications.

* Time: a record's time is the poll time (UTC, the scheduler's wall clock at the start of
  the read), as for Modbus; the server's source timestamps are not requested
  (``TimestampsToReturn.Neither``: fewer bytes, and one clock for every protocol).
* Quality: the status code's severity bits: Good -> GOOD, Uncertain -> UNCERTAIN,
  Bad -> BAD (value NULL). A value that is not a scalar number or Boolean -> BAD.
* Nodes are checked once per session (data type and value rank): a node that does not
  exist or holds a string, array or structure is BAD with the reason, logged once per
  episode by the scheduler; ``check_nodes`` lets the poller refuse them at start.
* Faults: asyncua's own reconnect supervisor is off (``auto_reconnect=False``); a lost
  session is dropped and re-created after our backoff (0.5 s, 1 s, 2 s ... up to
  ``backoff_max_s``, with jitter). Every request waits at most ``timeout_s``; a connect
  (with security: the endpoint query, then channel, session and login) at most
  ``2 * timeout_s + 1`` s, so a slow server delays only its own groups.
* Secrets: the password is given by the caller (read from the environment or .env) and
  never appears in a log line, an error or ``repr``; any message that would contain it is
  masked anyway.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from pathlib import Path

import numpy as np
from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.crypto import security_policies as sp
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography import x509

from shm.layout import QUALITY_BAD, QUALITY_GOOD, QUALITY_UNCERTAIN

from ..config import PlcConfig
from .base import Reading, SourceUnavailable

log = logging.getLogger("tagpipe.poller.opcua")

BACKOFF_START_S = 0.5
MASK = "********"

POLICY_CLASSES = {
    "Basic256Sha256": sp.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": sp.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": sp.SecurityPolicyAes256Sha256RsaPss,
}
MODES = {"Sign": ua.MessageSecurityMode.Sign, "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}

# DataType node ids (namespace 0) read as numbers: Boolean, SByte .. Double, the abstract
# Number / Integer / UInteger, and the standard numeric subtypes (Duration, Counter,
# IntegerId, Index). Anything else (String, DateTime, structures, enumerations) is refused.
NUMERIC_TYPES = {1: "Boolean", 2: "SByte", 3: "Byte", 4: "Int16", 5: "UInt16", 6: "Int32", 7: "UInt32",
                 8: "Int64", 9: "UInt64", 10: "Float", 11: "Double", 26: "Number", 27: "Integer",
                 28: "UInteger", 290: "Duration", 289: "Counter", 288: "IntegerId", 17588: "Index"}
_NUMERIC_VARIANTS = {ua.VariantType.Boolean, ua.VariantType.SByte, ua.VariantType.Byte, ua.VariantType.Int16,
                     ua.VariantType.UInt16, ua.VariantType.Int32, ua.VariantType.UInt32, ua.VariantType.Int64,
                     ua.VariantType.UInt64, ua.VariantType.Float, ua.VariantType.Double}
MAX_MAX_NODES_PER_READ = 10_000  # our own ceiling per Read, whatever the server allows (message size)

# Status codes that say what to fix, spelled out in the log line.
_HINTS = {
    "BadUserAccessDenied": "wrong user name or password",
    "BadIdentityTokenInvalid": "wrong user name or password",
    "BadIdentityTokenRejected": "the server does not accept this kind of login",
    "BadCertificateUntrusted": "certificate not trusted (the server's is not in trusted_certs, or the server"
                               " does not trust ours)",
    "BadSecurityChecksFailed": "security checks failed (the server may not trust our certificate)",
    "BadCertificateTimeInvalid": "a certificate has expired or is not yet valid",
    "BadSecurityPolicyRejected": "the server does not offer this security policy and mode",
    "BadNodeIdUnknown": "no such node on the server",
}


def quiet_asyncua() -> None:
    """asyncua logs every refused connect and lost session itself; we log once per episode."""
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)


def status_name(code: int) -> str:
    """``BadNodeIdUnknown`` for 0x80340000, or the code in hex when unknown."""
    try:
        return ua.StatusCode(code).name
    except Exception:  # unknown code: asyncua raises for some
        return f"0x{code:08X}"


def quality_of(code: int) -> int:
    """OPC UA status code -> record quality by its severity bits (Part 4, 7.39)."""
    sev = code >> 30
    return QUALITY_GOOD if sev == 0 else QUALITY_UNCERTAIN if sev == 1 else QUALITY_BAD


def _certificate_uri(path: str) -> str | None:
    """The application URI in a certificate's subjectAltName (the client must announce it)."""
    raw = Path(path).read_bytes()
    try:
        cert = x509.load_der_x509_certificate(raw)
    except ValueError:
        cert = x509.load_pem_x509_certificate(raw)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


class OpcUaPlc:
    """One OPC UA server. ``read`` raises SourceUnavailable when it cannot be asked."""

    def __init__(self, plc: PlcConfig, password: str | None = None, clock=time.monotonic) -> None:
        if plc.opcua is None:
            raise ValueError(f"PLC {plc.code} is not an opcua PLC")
        self.code = plc.code
        self.plc = plc
        self.opts = plc.opcua
        self._password = password or None
        self._clock = clock
        self.nodes = [[ua.NodeId.from_string(t.opcua.node) for t in g.tags] for g in plc.groups]  # type: ignore[union-attr]
        self.node_text = [[t.opcua.node for t in g.tags] for g in plc.groups]  # type: ignore[union-attr]
        self.scale = [np.array([t.opcua.scale for t in g.tags]) for g in plc.groups]  # type: ignore[union-attr]
        self.offset = [np.array([t.opcua.offset for t in g.tags]) for g in plc.groups]  # type: ignore[union-attr]
        self._client: Client | None = None
        self._lock = asyncio.Lock()
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._last_error = ""
        self._closing: set[asyncio.Task] = set()
        self._connecting: Client | None = None  # the client of a connect in progress
        # Per session: tags refused by the node check (group -> {tag index: reason}).
        self.refused: list[dict[int, str]] = [{} for _ in plc.groups]
        self.max_nodes_per_read = 0  # the server's limit (0: none announced)
        self.requests = 0  # Read service calls for values (tests, benchmark)
        self.sessions = 0  # sessions created (a server restart shows as one more)

    def __repr__(self) -> str:
        return f"OpcUaPlc({self.code!r}, {self.opts.endpoint!r})"

    @property
    def connected(self) -> bool:
        return self._client is not None

    # --- connection ---
    def _mask(self, text: str) -> str:
        return text.replace(self._password, MASK) if self._password else text

    def _explain(self, e: BaseException) -> str:
        if isinstance(e, asyncio.TimeoutError):
            return f"no answer within {self.plc.timeout_s:g} s"
        if isinstance(e, ua.UaStatusCodeError):
            name = status_name(e.code)
            hint = _HINTS.get(name)
            return self._mask(f"{name} ({hint})" if hint else f"{name}")
        return self._mask(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)

    async def _new_client(self) -> Client:
        o = self.opts
        timeout = self.plc.timeout_s
        # The supervisor's health probe (a read of ServerState) at most once a second.
        client = Client(o.endpoint, timeout=timeout, watchdog_intervall=max(1.0, timeout), auto_reconnect=False)
        self._connecting = client
        client.name = client.description = f"tagpipe poller ({self.code})"
        if o.username:
            client.set_user(o.username)
            client.set_password(self._password or "")
        if o.secure:
            uri = _certificate_uri(o.certificate)
            if uri:
                client.application_uri = uri  # servers compare it with the certificate's
            trust = TrustStore([Path(o.trusted_certs)], [])
            await trust.load()
            client.certificate_validator = CertificateValidator(
                CertificateValidatorOptions.TIME_RANGE | CertificateValidatorOptions.TRUSTED
                | CertificateValidatorOptions.PEER_SERVER, trust)
            # Without server_certificate asyncua first asks the server's endpoints for it;
            # the validator above then refuses it unless trusted_certs holds it or its CA.
            await client.set_security(POLICY_CLASSES[o.security_policy], o.certificate, o.private_key,
                                      mode=MODES[o.security_mode])
        await client.connect()
        return client

    async def _connection(self) -> Client:
        async with self._lock:
            if self._client is not None:
                if self._client.uaclient.state is UaClientState.CONNECTED:
                    return self._client
                self._drop("session lost (server stopped or connection closed)")
            now = self._clock()
            if now < self._next_attempt:
                raise SourceUnavailable(f"{self._last_error}; next connection attempt in {self._next_attempt - now:.1f} s")
            task = asyncio.ensure_future(self._new_client())
            try:
                client = await asyncio.wait_for(asyncio.shield(task), 2 * self.plc.timeout_s + 1.0)
            except Exception as e:
                task.cancel()
                half, self._connecting = self._connecting, None
                if half is not None:  # a connect cut short may hold a socket (or a session): close it
                    self._close_later(half)
                self._last_error = f"connect to {self.opts.endpoint} failed: {self._explain(e)}"
                self._schedule_retry()
                raise SourceUnavailable(self._last_error) from None
            self._connecting = None
            try:
                await self._session_setup(client)
            except Exception as e:
                self._client = client
                self._drop(f"session set-up on {self.opts.endpoint} failed: {self._explain(e)}")
                raise SourceUnavailable(self._last_error) from None
            self._client = client
            self.sessions += 1
            self._backoff = 0.0
            return client

    async def _session_setup(self, client: Client) -> None:
        """Once per session: the server's MaxNodesPerRead, and every node's type checked."""
        limit = 0
        rv = await self._read_raw(client, [ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)],
                                  ua.AttributeIds.Value, count=False)
        if rv and rv[0].StatusCode.is_good() and isinstance(rv[0].Value.Value, int):
            limit = int(rv[0].Value.Value)
        self.max_nodes_per_read = limit
        for gi, nodes in enumerate(self.nodes):
            self.refused[gi] = await self._check_group(client, gi, nodes)

    async def _check_group(self, client: Client, gi: int, nodes: list) -> dict[int, str]:
        types = await self._read_raw(client, nodes, ua.AttributeIds.DataType, count=False)
        ranks = await self._read_raw(client, nodes, ua.AttributeIds.ValueRank, count=False)
        refused: dict[int, str] = {}
        for i, (dt, vr) in enumerate(zip(types, ranks)):
            if not dt.StatusCode.is_good():
                name = status_name(dt.StatusCode.value)
                hint = _HINTS.get(name)
                refused[i] = f"{name} ({hint})" if hint else name
                continue
            type_id = dt.Value.Value
            if not (isinstance(type_id, ua.NodeId) and type_id.NamespaceIndex == 0 and type_id.Identifier in NUMERIC_TYPES):
                refused[i] = f"data type {type_id.to_string() if isinstance(type_id, ua.NodeId) else type_id} is not a number or Boolean"
            elif vr.StatusCode.is_good() and vr.Value.Value != -1:
                refused[i] = f"not a scalar (ValueRank {vr.Value.Value}): arrays are not read"
        return refused

    def _chunks(self, n: int) -> list[tuple[int, int]]:
        size = min(self.max_nodes_per_read or MAX_MAX_NODES_PER_READ, MAX_MAX_NODES_PER_READ)
        return [(i, min(i + size, n)) for i in range(0, n, size)]

    async def _read_raw(self, client: Client, nodes: list, attribute, count: bool = True) -> list:
        """One attribute of every node, in Read calls of at most MaxNodesPerRead nodes."""
        out: list = []
        for a, b in self._chunks(len(nodes)):
            params = ua.ReadParameters()
            params.TimestampsToReturn = ua.TimestampsToReturn.Neither
            params.NodesToRead = [ua.ReadValueId(NodeId=nid, AttributeId=attribute) for nid in nodes[a:b]]
            if count:
                self.requests += 1
            res = await asyncio.wait_for(client.uaclient.read(params), self.plc.timeout_s)
            if len(res) != b - a:
                raise ua.UaError(f"server answered {len(res)} results for {b - a} nodes")
            out.extend(res)
        return out

    def _schedule_retry(self) -> None:
        self._backoff = min(max(self._backoff * 2, BACKOFF_START_S), self.plc.backoff_max_s)
        self._next_attempt = self._clock() + self._backoff * random.uniform(0.8, 1.0)

    def _drop(self, reason: str) -> None:
        self._last_error = self._mask(reason)
        client, self._client = self._client, None
        if client is not None:
            self._close_later(client)
        self._schedule_retry()

    def _close_later(self, client: Client) -> None:
        # Closing politely costs round trips a dead server never answers: do it in the
        # background, bounded by timeout_s, so the poll that noticed the loss ends now.
        t = asyncio.ensure_future(self._close_client(client))
        self._closing.add(t)
        t.add_done_callback(self._closing.discard)

    async def _close_client(self, client: Client) -> None:
        try:
            await asyncio.wait_for(client.disconnect(), self.plc.timeout_s)
        except BaseException:  # noqa: BLE001 - a close that fails leaves nothing to undo
            client.disconnect_socket()

    # --- the Source protocol ---
    async def read(self, group_index: int) -> Reading:
        client = await self._connection()
        nodes = self.nodes[group_index]
        try:
            results = await self._read_raw(client, nodes, ua.AttributeIds.Value)
        except ua.UaStatusCodeError as e:
            # A service-level error (session closed or invalid, too busy): the session is
            # no use any more; the next poll opens a new one.
            self._drop(f"read refused: {self._explain(e)}")
            raise SourceUnavailable(self._last_error) from None
        except Exception as e:  # timeout, connection lost, a library surprise: this PLC only
            self._drop(f"no answer to a read of {len(nodes)} nodes: {self._explain(e)}")
            raise SourceUnavailable(self._last_error) from None
        return self._decode(group_index, results)

    def _decode(self, gi: int, results: list) -> Reading:
        n = len(results)
        values = np.full(n, np.nan)
        quality = np.full(n, QUALITY_BAD, dtype=np.uint8)
        refused = self.refused[gi]
        problems: list[str] = []
        for i, dv in enumerate(results):
            if i in refused:
                problems.append(f"{self.node_text[gi][i]}: {refused[i]}")
                continue
            code = dv.StatusCode.value if dv.StatusCode is not None else 0
            q = quality_of(code)
            if q == QUALITY_BAD:
                problems.append(f"{self.node_text[gi][i]}: {status_name(code)}")
                continue
            var = dv.Value
            if var is None or var.is_array or var.VariantType not in _NUMERIC_VARIANTS:
                problems.append(f"{self.node_text[gi][i]}: value is "
                                f"{'an array' if var is not None and var.is_array else 'not a number or Boolean'}")
                continue
            values[i] = float(var.Value)
            quality[i] = q
        values = values * self.scale[gi] + self.offset[gi]
        error = ""
        if problems:
            error = problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
        return Reading(values, quality, error)

    async def check_nodes(self) -> list[tuple[int, int, str, str]]:
        """Connect and return every refused node as (group, tag, node id, reason).

        Raises SourceUnavailable when the server cannot be asked (then nothing is known)."""
        await self._connection()
        return [(gi, ti, self.node_text[gi][ti], reason)
                for gi, refused in enumerate(self.refused) for ti, reason in sorted(refused.items())]

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await self._close_client(client)
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=self.plc.timeout_s + 1.0)


def password_for(plc: PlcConfig, env=None, env_file: str | None = ".env") -> str | None:
    """The PLC's password from the variable its ``password_env`` names (environment, then
    .env), None for anonymous login. Raises KeyError(variable name) when it is not set."""
    from pipeline.common.settings import read_secret

    if plc.opcua is None or not plc.opcua.password_env:
        return None
    value = read_secret(plc.opcua.password_env, os.environ if env is None else env, env_file)
    if value is None:
        raise KeyError(plc.opcua.password_env)
    return value
