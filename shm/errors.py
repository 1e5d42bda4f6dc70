"""Exceptions raised by the ring."""


class RingError(Exception):
    """Base class of every error raised by ``shm``."""


class RoleTaken(RingError):
    """Another live process already is this ring's producer (or consumer)."""


class RingMissing(RingError):
    """No ring of that name exists (or it is still being created)."""


class LayoutMismatch(RingError):
    """The existing segment has another magic, layout version or record size."""


class RingNotDrained(LayoutMismatch):
    """The ring must be replaced (layout changed) but still holds unwritten records."""


class CapacityError(RingError):
    """The requested capacity is impossible (bounds, or not enough shared memory)."""


class CorruptRing(RingError):
    """A record read does not carry the sequence number its slot must hold."""
