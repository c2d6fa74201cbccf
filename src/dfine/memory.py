"""The C allocator setting that CPU inference wants: keep freed memory instead of returning it to the OS.

Each forward allocates and frees feature maps of several MB (N's stem: 16x321x321 fp32, 6.6 MB).
glibc serves blocks that large with ``mmap`` or trims them off the heap's top on ``free``, so the next
forward page-faults them back in: ~11,000 minor faults per D-FINE-N forward on the CPU, ~8 ms of its
~70 (``benchmarks/RESULTS.md``, "Page faults"). Raising glibc's mmap and trim thresholds makes the
freed blocks stay in the heap and be reused: 0 faults per forward.

This changes the whole process, so the library does it only when asked: the ``dfine predict`` and
``dfine track`` commands (their own processes) call :func:`keep_freed_memory` for CPU runs; API users
call it once themselves. ``DFINE_KEEP_FREED_MEMORY=0`` turns it off, and ``MALLOC_*`` settings in the
environment or an allocator in ``LD_PRELOAD`` (jemalloc, tcmalloc) are left in charge.
"""

from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass

__all__ = ["AllocatorSetting", "keep_freed_memory"]

OPT_OUT_VARIABLE = "DFINE_KEEP_FREED_MEMORY"
GLIBC_ENV_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")
# glibc <malloc.h> parameter numbers
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


@dataclass(frozen=True)
class AllocatorSetting:
    """What :func:`keep_freed_memory` did.

    Attributes:
        applied: glibc now keeps freed blocks (this call set it).
        reason: why, or why not, in a few words.
    """

    applied: bool
    reason: str

    def describe(self) -> str:
        """One line for the start of a run."""
        state = "keeps freed memory" if self.applied else "unchanged"
        return f"memory allocator: {state} ({self.reason})"


def keep_freed_memory(
    mmap_threshold_bytes: int = 32 << 20, trim_threshold_bytes: int = 1 << 30, top_pad_bytes: int = 256 << 20
) -> AllocatorSetting:
    """Make glibc keep freed blocks up to ``mmap_threshold_bytes`` in the heap for reuse (process-wide).

    Args:
        mmap_threshold_bytes: blocks at least this large still get their own mapping (default 32 MiB,
            glibc's own upper bound for its adaptive threshold).
        trim_threshold_bytes: free memory at the heap's top kept before any is returned to the OS.
        top_pad_bytes: extra heap grown at once when the heap must grow.

    Returns what was done; nothing changes on other C libraries (musl, macOS, Windows), when
    ``DFINE_KEEP_FREED_MEMORY=0``, or when the environment already configures the allocator.
    """
    if os.environ.get(OPT_OUT_VARIABLE, "").strip() == "0":
        return AllocatorSetting(False, f"{OPT_OUT_VARIABLE}=0")
    given = [name for name in GLIBC_ENV_SETTINGS if name in os.environ]
    if given:
        return AllocatorSetting(False, f"{given[0]} is set in the environment")
    preload = os.environ.get("LD_PRELOAD", "")
    if "jemalloc" in preload or "tcmalloc" in preload or "mimalloc" in preload:
        return AllocatorSetting(False, "an allocator is preloaded (LD_PRELOAD)")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return AllocatorSetting(False, "not glibc")
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return AllocatorSetting(False, "glibc's mallopt not found")
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = {
        _M_MMAP_THRESHOLD: mmap_threshold_bytes,
        _M_TRIM_THRESHOLD: trim_threshold_bytes,
        _M_TOP_PAD: top_pad_bytes,
    }
    if not all(mallopt(parameter, value) == 1 for parameter, value in settings.items()):
        return AllocatorSetting(False, "glibc refused the setting")
    reason = (
        f"glibc mallopt: freed blocks under {mmap_threshold_bytes >> 20} MiB are reused; {OPT_OUT_VARIABLE}=0 leaves it"
    )
    return AllocatorSetting(True, reason)
