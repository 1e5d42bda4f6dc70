"""The writer's C heap: keep freed batch memory for the next batch instead of returning it.

Every batch allocates and frees the same few megabytes (the records read from the ring,
the Python values, the parameter lists: ~6 MB for 20,000 rows). With glibc's default,
large blocks come from fresh ``mmap`` calls and a freed heap top beyond twice the last
such block is handed back to the kernel, so the next batch faults the same pages in
again, zero-filled: ~16,000 page faults per 400,000 rows drained (BENCHMARKS.md,
throughput). Fixed thresholds (``mallopt``) keep those blocks on the heap and the heap's
top in the process; the memory kept is bounded by ``trim_bytes`` beyond what is in use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("tagpipe.writer.heap")

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 16 << 20  # blocks at least this large still get their own mapping
TRIM_BYTES = 64 << 20  # free heap top kept for the next batch


def keep_batch_memory(mmap_threshold_bytes: int = MMAP_THRESHOLD_BYTES, trim_bytes: int = TRIM_BYTES) -> bool:
    """Set fixed malloc thresholds for this process (glibc only).

    Returns True if both were set; False (and changes nothing it could not) where the C
    library has no ``mallopt`` (musl, macOS) or refuses a value. Never raises.
    """
    try:
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name) if name else ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError) as e:
        log.debug("no mallopt here (%s): batch memory is returned to the kernel after each batch", e)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # glibc returns 1 on success, 0 on an out-of-range value.
    ok = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold_bytes)) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, int(trim_bytes)) == 1 and ok
    return ok
