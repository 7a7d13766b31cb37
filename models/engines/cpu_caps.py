"""What this CPU (as PyTorch and oneDNN will use it) can run: one place for every hardware decision.

`current()` answers for the process; `override(...)` (a context manager) replaces any answer, so
tests exercise both sides of each decision on every machine. Everything else (fuse()'s dtype
fallback, impl="auto", the benchmark's "n/a" rows) asks this module, never torch.cpu directly.

The ISA class is the smaller of what ATen dispatches to (`ATEN_CPU_CAPABILITY` lowers it) and what
oneDNN may use (`ONEDNN_MAX_CPU_ISA` lowers it): with both set to AVX2 an AVX-512 machine behaves,
for our engines, like an AVX2-only one (that is how the AVX2 rules were measured).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["CpuCaps", "current", "detect", "override", "ISA_CLASSES", "missing_onnxruntime"]

# ordered from least to most capable (x86); "neon" is aarch64, "other" anything else
ISA_CLASSES = ("other", "neon", "avx2", "avx512", "amx")
_X86_RANK = {"other": 0, "avx2": 1, "avx512": 2, "amx": 3}
_X86_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_fp16")
ONNXRUNTIME_MODULES = ("onnx", "onnxruntime")   # what impl="onnxruntime" imports (the `onnxruntime` extra)


@dataclass(frozen=True)
class CpuCaps:
    cpu_model: str
    machine: str                 # platform.machine(): x86_64, aarch64, arm64
    isa_class: str               # one of ISA_CLASSES, after the ATen / oneDNN restrictions
    flags: tuple[str, ...]       # the relevant /proc/cpuinfo flags present (x86) or ("neon",)
    onednn: bool                 # eager oneDNN conv ops (prepacked weights, fused post-ops) usable
    onednn_graph: bool           # TorchScript's oneDNN Graph fuser present (x86 builds)
    bf16: str                    # oneDNN bfloat16 convs: "native" | "emulated" | "none"
    fp16: str                    # oneDNN float16 convs: "native" | "none"
    restricted: str              # the ISA restriction env vars in effect, "" when none
    onnxruntime: bool = False    # onnx + onnxruntime importable (the `onnxruntime` extra): impl="onnxruntime"

    def describe(self) -> str:
        s = (f"ISA {self.isa_class}, oneDNN {'yes' if self.onednn else 'no'}, oneDNN Graph "
             f"{'yes' if self.onednn_graph else 'no'}, bf16 {self.bf16}, fp16 {self.fp16}, onnxruntime "
             f"{'yes' if self.onnxruntime else 'no'}")
        return s + (f" ({self.restricted})" if self.restricted else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model", "Hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _onednn_isa_cap() -> str | None:
    """The x86 class ONEDNN_MAX_CPU_ISA allows (None: unrestricted). Values per oneDNN's docs:
    SSE41, AVX, AVX2[_VNNI[_2]], AVX512_CORE[_VNNI|_BF16|_FP16], AVX10_1_512[_AMX[_FP16]], ALL."""
    v = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).upper()
    if not v or v == "ALL" or "AMX" in v:
        return None
    if v.startswith(("AVX512", "AVX10")):
        return "avx512"
    if v.startswith("AVX2"):
        return "avx2"
    return "other"


def _native_bf16_allowed_by_onednn() -> bool:
    v = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).upper()
    return not v or v == "ALL" or "AMX" in v or "BF16" in v or "FP16" in v or v.startswith("AVX10")


def _probe(obj, name: str) -> bool:
    """Call a private torch probe if this torch has it (they come and go between releases)."""
    fn = getattr(obj, name, None)
    try:
        return bool(fn()) if fn is not None else False
    except RuntimeError:
        return False


@functools.lru_cache(maxsize=1)
def detect() -> CpuCaps:
    """Probe once (cached): cpuinfo flags, ATen's capability, oneDNN's own dtype checks."""
    machine = platform.machine().lower()
    flags = _cpu_flags()
    mkldnn = torch.backends.mkldnn.is_available()
    onednn = mkldnn and all(hasattr(torch.ops.mkldnn, op) for op in
                            ("_convolution_pointwise", "_convolution_pointwise_", "_reorder_convolution_weight"))
    restricted = " ".join(f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
                                                         "ATEN_CPU_CAPABILITY") if os.environ.get(k))
    if machine in ("x86_64", "amd64", "i686", "x86"):
        aten = torch.backends.cpu.get_cpu_capability().lower()     # "default", "avx2", "avx512"
        isa = "avx512" if aten.startswith("avx512") else "avx2" if aten.startswith("avx2") else "other"
        if isa == "avx512" and _probe(torch.cpu, "_is_amx_tile_supported"):
            isa = "amx"
        cap = _onednn_isa_cap()
        if cap is not None and _X86_RANK[cap] < _X86_RANK[isa]:
            isa = cap
        shown = tuple(f for f in _X86_FLAGS if f in flags)
        graph = hasattr(torch.jit, "enable_onednn_fusion") and mkldnn
    elif machine in ("aarch64", "arm64"):
        isa = "neon"
        shown = tuple(f for f in ("neon", "asimd", "bf16", "sve", "fphp") if f in flags) or ("neon",)
        graph = False   # PyTorch's oneDNN Graph fuser is built for x86 only
    else:
        isa, shown, graph = "other", (), False
    bf16 = "none"
    if mkldnn and _probe(torch.ops.mkldnn, "_is_mkldnn_bf16_supported"):
        hw = (_probe(torch.cpu, "_is_amx_tile_supported") or _probe(torch.cpu, "_is_avx512_bf16_supported")
              or "bf16" in flags)
        bf16 = "native" if hw and _native_bf16_allowed_by_onednn() else "emulated"
    fp16 = "native" if mkldnn and _probe(torch.ops.mkldnn, "_is_mkldnn_fp16_supported") else "none"
    return CpuCaps(_cpu_model(), machine, isa, shown, onednn, graph, bf16, fp16, restricted,
                   not missing_onnxruntime())


def missing_onnxruntime() -> list[str]:
    """The ONNXRUNTIME_MODULES this environment can't import (looked up now, not cached)."""
    return [m for m in ONNXRUNTIME_MODULES if importlib.util.find_spec(m) is None]


_OVERRIDE: list[CpuCaps] = []


def current() -> CpuCaps:
    """The capabilities decisions use: the innermost `override(...)`, else `detect()`."""
    return _OVERRIDE[-1] if _OVERRIDE else detect()


@contextlib.contextmanager
def override(**changes):
    """Pretend the CPU differs, e.g. `with override(bf16="none"):` or `override(isa_class="avx2")`.
    Only decisions change: an override can't make absent hardware run a kernel."""
    caps = dataclasses.replace(current(), **changes)
    _OVERRIDE.append(caps)
    try:
        yield caps
    finally:
        _OVERRIDE.remove(caps)
