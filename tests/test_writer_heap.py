"""The writer keeps freed batch memory: after the first batch, a batch's allocations no
longer fault fresh pages in (glibc; elsewhere keep_batch_memory says it did nothing)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import resource, sys
    from pipeline.writer.heap import keep_batch_memory
    ok = keep_batch_memory() if sys.argv[1] == "keep" else None
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    def batch():  # what a 20,000-row batch allocates and frees: a few lists of ~1 MB
        blocks = [[None] * 140_000 for _ in range(6)]
        del blocks
    batch()  # the first batch grows the heap either way
    f0 = faults()
    for _ in range(20):
        batch()
    print(ok, faults() - f0)
    """
)


def _run(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True, timeout=60).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's; elsewhere keep_batch_memory returns False")
def test_batches_after_the_first_fault_no_pages_in():
    ok, kept = _run("keep")
    assert ok == "True"
    _, default = _run("default")
    # 20 batches of ~6.7 MB: the default hands the heap top back and faults ~1,600 pages
    # per batch in again; kept memory leaves a few stray faults at most.
    assert kept < 300, kept
    assert default > 10 * kept + 1000, (default, kept)


def test_a_c_library_without_mallopt_is_left_alone(monkeypatch):
    import ctypes

    from pipeline.writer import heap

    class NoMallopt:  # musl or macOS: the symbol is missing
        def __getattr__(self, name):
            raise AttributeError(name)

    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: NoMallopt())
    assert heap.keep_batch_memory() is False
