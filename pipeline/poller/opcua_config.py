"""The OPC UA part of the tag file: a PLC's endpoint and security, a tag's node id.

``config.py`` calls the functions here for ``protocol = "opcua"`` PLCs (and to refuse
these keys elsewhere); every mistake goes through the loader's ``fail`` so it is the same
one-line ``TagsFileError`` naming the key path and the value. Nothing here imports
asyncua: loading a tag file stays cheap, and the node ids are checked by their text.

Passwords are never in the tag file: ``password_env`` names an environment variable (or a
``.env`` line) that holds it, read when the poller starts (``pipeline.common.settings.
read_secret``).
"""

from __future__ import annotations

import re
from pathlib import Path
from dataclasses import dataclass
from typing import Any

from pipeline.common.settings import mask_credentials

# Security policies offered (asyncua 2.x implements all four); the deprecated Basic128Rsa15
# and Basic256 are left out on purpose: plants must not be pushed onto them.
POLICIES = ("None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")
MODES = ("Sign", "SignAndEncrypt")
PLC_KEYS = ("endpoint", "security_policy", "security_mode", "certificate", "private_key", "trusted_certs",
            "username", "password_env")
TAG_KEYS = ("node",)
TAG_TYPE = "opcua"  # TagConfig.type of an OPC UA tag: the server's DataType decides the decoding

# Part 6 string form: optional ns=<index>; then i=<uint32> | s=<string> | g=<guid> | b=<base64>.
_NODE_RE = re.compile(
    r"(?:ns=(?P<ns>\d{1,5});)?"
    r"(?:i=(?P<i>\d{1,10})|s=(?P<s>.+)|g=(?P<g>[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})"
    r"|b=(?P<b>[A-Za-z0-9+/]+=*))"
)
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass(frozen=True)
class OpcUaOptions:
    """How to reach one OPC UA server (paths as written in the tag file)."""

    endpoint: str
    security_policy: str = "None"
    security_mode: str = "SignAndEncrypt"  # ignored when security_policy is None
    certificate: str = ""  # client certificate (DER or PEM)
    private_key: str = ""  # its private key (PEM or DER, unencrypted)
    trusted_certs: str = ""  # folder of trusted server (or CA) certificates
    username: str = ""  # empty: anonymous login
    password_env: str = ""  # environment variable (or .env key) holding the password

    @property
    def secure(self) -> bool:
        return self.security_policy != "None"


@dataclass(frozen=True)
class OpcUaTag:
    """Where one tag is read and how its raw value becomes engineering units."""

    node: str  # node id in its string form, e.g. ns=2;s=Line1.D100
    scale: float = 1.0
    offset: float = 0.0


def check_node_id(text: str) -> str | None:
    """None when ``text`` is an OPC UA node id in string form, else the reason."""
    m = _NODE_RE.fullmatch(text)
    if not m:
        return "must be an OPC UA node id such as ns=2;s=Line1.D100 or ns=3;i=1001"
    if m.group("ns") is not None and int(m.group("ns")) > 65535:
        return "namespace index must be at most 65535"
    if m.group("i") is not None and int(m.group("i")) > 0xFFFF_FFFF:
        return "numeric identifier must be at most 4294967295"
    return None


def plc_options(loader: Any, t: dict, where: str) -> OpcUaOptions:
    """Validate the OPC UA keys of one PLC table. Raises TagsFileError through ``loader.fail``."""
    endpoint = loader.text(t, "endpoint", where)
    if not re.fullmatch(r"opc\.tcp://[^\s/:]+(:\d{1,5})?(/\S*)?", endpoint):
        # shown masked: an endpoint written opc.tcp://user:password@host carries a password
        loader.fail(f"{where}.endpoint", mask_credentials(endpoint),
                    "must be an opc.tcp://host:port/path address (credentials go in username and password_env)")
    policy = loader.text(t, "security_policy", where, "None", POLICIES)
    mode = loader.text(t, "security_mode", where, "SignAndEncrypt", MODES)
    cert = loader.text(t, "certificate", where, "")
    key = loader.text(t, "private_key", where, "")
    trusted = loader.text(t, "trusted_certs", where, "")
    if policy != "None":
        base = Path(loader.path).parent
        for name, value in (("certificate", cert), ("private_key", key), ("trusted_certs", trusted)):
            if not value.strip():
                loader.fail(f"{where}.{name}", t.get(name), f"is required with security_policy = {policy!r}")
            # Relative paths are relative to the tag file, so a file and its certificates move together.
            full = value if Path(value).is_absolute() else str(base / value)
            if name == "trusted_certs" and not Path(full).is_dir():
                loader.fail(f"{where}.{name}", value, "must be a folder of trusted server (or CA) certificates")
            if name != "trusted_certs" and not Path(full).is_file():
                loader.fail(f"{where}.{name}", value, "no such file")
        cert, key, trusted = (v if Path(v).is_absolute() else str(base / v) for v in (cert, key, trusted))
    else:
        for name in ("security_mode", "certificate", "private_key", "trusted_certs"):
            if name in t:
                loader.fail(f"{where}.{name}", t[name], "only applies with a security_policy other than None")
    user = loader.text(t, "username", where, "")
    password_env = loader.text(t, "password_env", where, "")
    if password_env and not _ENV_NAME_RE.fullmatch(password_env):
        loader.fail(f"{where}.password_env", password_env, "must be an environment variable name (A-Z, 0-9, _)")
    if user and not password_env:
        loader.fail(f"{where}.password_env", None,
                    "is required with username (the name of the environment variable holding the password;"
                    " passwords are never written in the tag file)")
    if password_env and not user:
        loader.fail(f"{where}.username", None, "is required with password_env")
    if "password" in t:
        # Refused without echoing the value: it is a secret written where it must not be.
        loader.fail(f"{where}.password", "********",
                    "passwords are not read from the tag file: set password_env to the name of an environment"
                    " variable (or .env line) that holds it")
    return OpcUaOptions(endpoint, policy, mode, cert, key, trusted, user, password_env)


def refuse_plc_keys(loader: Any, t: dict, where: str, protocol: str) -> None:
    """A PLC of another protocol carrying OPC UA keys is a mistake worth naming."""
    for k in PLC_KEYS:
        if k in t:
            loader.fail(f"{where}.{k}", t[k], f"only an opcua PLC has {k} (this one is {protocol})")


def tag_options(loader: Any, t: dict, where: str, scale: float, offset: float) -> OpcUaTag:
    """Validate an OPC UA tag's node id (``node``, or ``address`` when it is the node id)."""
    key = "node" if "node" in t else "address"
    node = loader.text(t, key, where)
    reason = check_node_id(node)
    if reason:
        loader.fail(f"{where}.{key}", node, reason)
    for k in ("register", "bit", "word_order", "sim"):
        if k in t:
            loader.fail(f"{where}.{k}", t[k], "an opcua tag is a node: the server's data type decides the decoding")
    if "type" in t:
        loader.fail(f"{where}.type", t["type"], "an opcua tag takes its type from the server (every scalar number"
                    " and Boolean is read)")
    return OpcUaTag(node, scale, offset)


def refuse_tag_keys(loader: Any, t: dict, where: str, protocol: str) -> None:
    for k in TAG_KEYS:
        if k in t:
            loader.fail(f"{where}.{k}", t[k], f"only a tag of an opcua PLC has a node (this PLC is {protocol})")
