"""Named exit codes of every tagpipe process (documented in docs/operations.md, "Exit codes")."""

OK = 0  # orderly stop
ERROR = 1  # unexpected error (logged); systemd restarts the unit
CONFIG = 2  # bad configuration: one line on stderr names the setting; never restarted
RING_NEEDS_ATTENTION = 3  # ring of another layout still holds records: drain or delete it
ROLE_TAKEN = 4  # another process already is this ring's poller (or writer)
FORCED = 5  # second stop signal: stopped at once (records not yet written stay in the ring)
CHECK_FAILED = 6  # a check found a problem (check-db, overflow-check, status --check, quarantine write-back, load mode)

NAMES = {
    OK: "ok",
    ERROR: "unexpected error",
    CONFIG: "bad configuration",
    RING_NEEDS_ATTENTION: "ring needs attention",
    ROLE_TAKEN: "role already taken",
    FORCED: "stopped at once",
    CHECK_FAILED: "check failed",
}
