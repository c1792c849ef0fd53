"""glibc malloc settings for a process that handles large, short-lived buffers.

Request bodies, decoded base64 and decoded images are megabytes each and live for one
request. By default glibc raises its mmap threshold after the first such buffer is freed
(up to 32 MiB), so later ones come from the heap, where freed memory fragments and is not
given back: resident memory ratchets up under load and never comes down. It also keeps
one arena per thread. A fixed threshold sends every large buffer to mmap, which returns
it to the kernel on free, and two arenas bound per-thread slack.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 256 * 1024
ARENA_MAX = 2


def bound_malloc() -> None:
    """Apply the settings above; a no-op where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        log.warning("no glibc mallopt here: resident memory may not shrink after load")
        return
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    mallopt(_M_ARENA_MAX, ARENA_MAX)
