"""glibc's heap, set for the request path's large short-lived buffers.

Every read of a data port is a new bytes object of up to 256 KiB, and a gRPC call's
messages are copied whole for analysis: allocations above glibc's default mmap threshold
that live a few microseconds. With glibc's defaults the heap's top is handed back to the
kernel as they are freed and taken again at the next read, and each page taken again is
a page fault: 17 of them per 100 KB gRPC call, 30% of the request path's CPU time at 16
streams (bench/grpc.py). Keeping up to KEEP_BYTES of free heap and serving allocations
below MMAP_FROM_BYTES from it ends that churn; what is kept is bounded, and it is memory
the next burst would take again anyway.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

KEEP_BYTES = 16 * 1024**2  # free heap kept at its top rather than handed back (M_TRIM_THRESHOLD)
MMAP_FROM_BYTES = 1024**2  # allocations this large and larger are mapped apart (M_MMAP_THRESHOLD)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def operator_tuned() -> bool:
    """Whether the environment sets glibc's malloc itself: its choice stands."""
    return any(name.startswith("MALLOC_") for name in os.environ) or \
        "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")


def keep_heap() -> bool:
    """Set glibc's malloc for this process; False where it is not glibc's (musl, for one)
    or the environment already sets it."""
    if operator_tuned():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    if not (mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES) and mallopt(_M_MMAP_THRESHOLD,
                                                                MMAP_FROM_BYTES)):
        log.debug("mallopt refused the heap settings; glibc's defaults stay")
        return False
    return True
