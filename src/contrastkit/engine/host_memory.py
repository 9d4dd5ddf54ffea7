"""Keep freed host memory in the process for reuse instead of handing it back to the OS (glibc).

glibc's malloc serves large blocks (above a dynamic threshold that starts at 128 KiB) with a fresh
``mmap`` and returns them with ``munmap`` on free, and trims the top of the heap when it is free. A
CPU training step allocates and frees the same large activation and gradient tensors every step, so
each step page-faults its working set in again: every first touch of every page is a kernel fault and
a zero-fill. Raising ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` keeps those blocks in the heap,
where the next step reuses them — the effect PyTorch's CPU performance guides get by preloading
jemalloc or tcmalloc, without a preload. Measured on the small ViT of
``benchmarks/train_throughput.py``: about 10% more samples/s (benchmarks/RESULTS.md). The cost: the
process's resident memory stays near its peak instead of shrinking between steps (the demo recipe's
peak RSS: 1.50 -> 1.63 GB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_BELOW = 1 << 30  # blocks up to 1 GiB come from the heap; larger ones are still mapped and unmapped
NEVER_TRIM = 2**31 - 1


def keep_freed_host_memory() -> bool:
    """Set glibc's thresholds (see module docstring); True when applied, False off glibc."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:  # musl and other C libraries
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BELOW)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
