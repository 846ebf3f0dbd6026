"""Keep freed heap memory in the process, so that message-sized buffers reuse pages already
faulted in.

A 64K-key pull or push moves 4-5 MiB arrays, and every copy of one (protobuf's bytes, gRPC's
buffers, the numpy result) is a fresh allocation. glibc serves those from mmap or trims them
back to the OS when freed, so each copy pays one page fault per 4 KiB on first touch: 1024
faults per 4 MiB, several ms on a loaded VM (encoding a 64K-key pull reply measured 12-13 ms
that way and 2.5 ms with this setting, before the codec stopped copying). Ray's object store
has no such cost after warm-up: its pages stay mapped.
"""
from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["keep_freed_heap", "MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES"]

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest: blocks up to a 512K-key reply come from the heap
TRIM_THRESHOLD_BYTES = 128 << 20  # free heap kept before returning any to the OS: a few messages' worth
_done = False


def keep_freed_heap() -> bool:
    """Tune this process's malloc once (glibc only); False where it cannot be tuned."""
    global _done
    if _done:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt): keep the defaults
        return False
    if mallopt is None:
        return False
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD,
                                                                                  TRIM_THRESHOLD_BYTES))
    return _done
