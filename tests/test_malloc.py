"""tune_malloc (models/common/malloc.py): glibc keeps freed tensor memory for reuse once the
application asks; settings made in the environment and other C libraries are left alone."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from facenet_tf2pt.models.common import malloc

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
needs_glibc = pytest.mark.skipif(not GLIBC, reason="mallopt and the heap/mmap split are glibc's")

# Where a fresh 24 MB malloc lands: on the heap (below the program break) or in its own mapping.
_WHERE_24MB_LANDS = """
import ctypes, ctypes.util
from facenet_tf2pt.models.common.malloc import tune_malloc
{tune}
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = libc.sbrk.restype = ctypes.c_void_p
libc.malloc.argtypes, libc.sbrk.argtypes = (ctypes.c_size_t,), (ctypes.c_long,)
block = libc.malloc(24 << 20)
print("heap" if block < libc.sbrk(0) else "mmap")
"""


def _child(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**clean, **env})


@needs_glibc
def test_tuning_moves_large_blocks_onto_the_reused_heap():
    """Untuned, glibc maps a 24 MB block afresh (and unmaps it on free: page faults on every
    call); tuned, the block comes from the heap, which keeps freed memory."""
    untuned = _child(_WHERE_24MB_LANDS.format(tune="pass"))
    tuned = _child(_WHERE_24MB_LANDS.format(tune="print(tune_malloc())"))
    assert untuned.returncode == 0 and tuned.returncode == 0, untuned.stderr + tuned.stderr
    assert untuned.stdout.split() == ["mmap"]
    assert tuned.stdout.splitlines() == [
        f"malloc tuned: M_MMAP_THRESHOLD={malloc.MMAP_THRESHOLD}, M_TRIM_THRESHOLD={malloc.TRIM_THRESHOLD}", "heap"]


@needs_glibc
def test_settings_from_the_environment_are_left_alone():
    code = "from facenet_tf2pt import tune_malloc; r = tune_malloc(); print(r.applied, '|', r.reason)"
    for env in ({"MALLOC_MMAP_THRESHOLD_": "1048576"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}):
        res = _child(code, **env)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == f"False | set in the environment ({next(iter(env))})"


def test_other_c_libraries_are_reported_not_touched(monkeypatch):
    monkeypatch.setattr(malloc.platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(malloc.ctypes, "CDLL", lambda *a, **k: pytest.fail("mallopt must not be called"))
    report = malloc.tune_malloc()
    assert not report.applied and report.reason.startswith("not glibc")
    assert str(report).startswith("malloc left as it is: not glibc")
