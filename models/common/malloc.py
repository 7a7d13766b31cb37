"""Reuse freed memory instead of page-faulting it in again: glibc's allocator set up for a process
that runs the same large tensor ops call after call (MTCNN's pyramid, crops and nets; the
embedding model). Torch-free.

By default glibc serves every allocation above its mmap threshold (128 KB at start, raised
dynamically up to 32 MB) with fresh pages from the kernel and hands freed memory back, so each
detector call pays the page faults of all its temporaries again: R-Net on 234 crops of a
900 x 600 photo ran in 11.3 ms with the default and 6.0 ms tuned, the whole detector in 62.9 vs
53.3 ms (benchmarks/bench_mtcnn.py's photos, one process, 2 threads). ``tune_malloc()`` sets the
mmap threshold to glibc's maximum (32 MB; larger blocks still come from mmap) and the trim
threshold to 256 MB (freed heap kept for reuse, up to that much): the same effect as
``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=268435456`` in the environment.

The setting is process-wide, so it is the application's choice: the ``facenet`` CLI and the
benchmarks call it; the library never does on its own (call it once at start-up, or set the
environment variables above). Settings made in the environment (those variables or a malloc
``GLIBC_TUNABLES``) are left alone. Other C libraries (macOS, Windows, musl) are reported, not
touched.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from dataclasses import dataclass, field

# mallopt(3) parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20   # glibc's largest allowed value (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 256 << 20
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


@dataclass
class MallocTuning:
    """What ``tune_malloc`` did: ``applied`` with ``settings``, or not, and ``reason`` why."""

    applied: bool
    reason: str
    settings: dict = field(default_factory=dict)

    def __str__(self) -> str:
        if self.applied:
            return "malloc tuned: " + ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"malloc left as it is: {self.reason}"


def _environment_setting() -> str | None:
    names = [n for n in ENVIRONMENT if os.environ.get(n)]
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        names.append("GLIBC_TUNABLES")
    return ", ".join(names) or None


def tune_malloc() -> MallocTuning:
    """Apply the settings above to this process (idempotent). Returns a report; never raises."""
    libc_name, _ = platform.libc_ver()
    if platform.system() != "Linux" or libc_name != "glibc":
        return MallocTuning(False, f"not glibc ({platform.system()} {libc_name or 'libc'})")
    already = _environment_setting()
    if already:
        return MallocTuning(False, f"set in the environment ({already})")
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as e:
        return MallocTuning(False, f"mallopt unavailable ({e})")
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    settings = {"M_MMAP_THRESHOLD": (M_MMAP_THRESHOLD, MMAP_THRESHOLD), "M_TRIM_THRESHOLD": (M_TRIM_THRESHOLD, TRIM_THRESHOLD)}
    for name, (param, value) in settings.items():
        if mallopt(param, value) != 1:
            return MallocTuning(False, f"mallopt({name}, {value}) was refused")
    return MallocTuning(True, "", {name: value for name, (_, value) in settings.items()})
