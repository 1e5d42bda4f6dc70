"""python-oracledb errors -> the sink's error classes, by ``full_code`` (never by text).

python-oracledb reports a lost connection as DPY-4011 whatever Oracle error lay behind it
(ORA-03113, ORA-03135, ORA-00028, ...), an unreachable listener as DPY-6005 (whose
``isrecoverable`` is False, so that flag alone cannot be trusted), a call timeout as
DPY-4024 (or DPY-4011 when the recovery after it also timed out) and a pool wait timeout
as DPY-4005. Those, and the ORA codes that mean "the database is not serving right now",
are transient: the writer keeps the batch and tries again later. Codes that mean "this
cannot work as configured" (bad login, missing table or column, no privilege) are
permanent: retrying cannot help until someone changes something. Anything not listed is
treated as transient, which keeps the data (on disk) instead of dropping it.
"""

from __future__ import annotations

from typing import Iterable

from .sinks.base import PermanentSinkError, SinkError, TransientSinkError

# The connection is gone or unusable: a commit in flight has an unknown outcome.
CONNECTION_LOST = frozenset({
    "DPY-1001",  # not connected
    "DPY-4011",  # the database or network closed the connection
    "DPY-4024",  # call timeout
    "ORA-00028", "ORA-01012", "ORA-02396", "ORA-03113", "ORA-03114", "ORA-03135",
    "ORA-12537", "ORA-12547",
})

# The codes known to be transient. classify() does not consult this set (every code not in
# PERMANENT is transient); it records which codes were considered, for the table in docs/oracle.md.
TRANSIENT = CONNECTION_LOST | frozenset({
    "DPY-4005",  # timed out waiting for the pool
    "DPY-6005",  # cannot connect (listener down, refused, unreachable)
    "DPY-6000", "DPY-6001", "DPY-6002", "DPY-6003",  # listener refused / service not registered
    "ORA-00018", "ORA-00020",  # too many sessions / processes
    "ORA-00051", "ORA-00054", "ORA-30006",  # resource busy / lock wait timed out
    "ORA-00060",  # deadlock victim
    "ORA-00257", "ORA-16038",  # archiver stuck
    "ORA-01033", "ORA-01034", "ORA-01089", "ORA-01090", "ORA-01092",  # starting up / shutting down
    "ORA-01653", "ORA-01654", "ORA-01688", "ORA-01536", "ORA-30036",  # space (DBA acts, data waits on disk)
    "ORA-12170", "ORA-12500", "ORA-12514", "ORA-12516", "ORA-12518", "ORA-12519", "ORA-12520",
    "ORA-12521", "ORA-12526", "ORA-12527", "ORA-12528", "ORA-12541", "ORA-12543",
    "ORA-25408",  # cannot safely replay call
})

PERMANENT = frozenset({
    "ORA-01017",  # invalid username/password
    "ORA-28000", "ORA-28001",  # account locked / password expired
    "ORA-01045",  # no CREATE SESSION privilege
    "ORA-00942",  # table or view does not exist
    "ORA-00904",  # invalid identifier (a mapped column is missing)
    "ORA-00913", "ORA-00947",  # too many / not enough values
    "ORA-01031",  # insufficient privileges
    "ORA-01950",  # no privileges on tablespace
    "ORA-00903", "ORA-00900", "ORA-00933",  # invalid table name / SQL (bad mapping)
    "DPY-4000", "DPY-4001", "DPY-4017", "DPY-4026", "DPY-4027",  # connect string / config problems
    "DPY-3010",  # server version not supported by Thin mode
})


def full_code(exc: BaseException) -> str:
    """The driver's full code (``ORA-01017``, ``DPY-4011``), or '' for a non-driver error."""
    err = exc.args[0] if getattr(exc, "args", None) else None
    return str(getattr(err, "full_code", "") or "")


def first_line(exc: BaseException) -> str:
    """The error's text on one line, without python-oracledb's "Help: <url>" line (the
    cause, e.g. ``[SSL: CERTIFICATE_VERIFY_FAILED]``, is often on the second line)."""
    err = exc.args[0] if getattr(exc, "args", None) else exc
    text = str(getattr(err, "message", None) or err)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("Help:")]
    return " ".join(lines) if lines else type(exc).__name__


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret replaced by a mask."""
    for s in secrets:
        if s:
            text = text.replace(s, "********")
    return text


def classify(exc: BaseException, doing: str, secrets: Iterable[str] = ()) -> SinkError:
    """The sink error to raise for driver error ``exc`` raised while ``doing`` something.

    Returns (does not raise) a TransientSinkError or PermanentSinkError whose ``code`` is
    the full code and whose message never contains a secret.
    """
    code = full_code(exc)
    message = scrub(f"{doing}: {first_line(exc)}", secrets)
    if code in PERMANENT:
        return PermanentSinkError(message, code)
    return TransientSinkError(message, code)


# The login itself was refused: retrying with the same password only counts toward the
# profile's FAILED_LOGIN_ATTEMPTS (10 by default, then the account is locked).
LOGIN_REFUSED = frozenset({"ORA-01017", "ORA-28000", "ORA-28001"})


def is_login_refused(code: str) -> bool:
    """True when the database refused the login (wrong password, locked, expired)."""
    return code in LOGIN_REFUSED


def is_connection_lost(code: str) -> bool:
    """True when the connection is gone: a commit in flight has an unknown outcome."""
    return code in CONNECTION_LOST
