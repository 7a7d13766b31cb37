"""Which engine `fuse(impl="auto")` runs, per CPU class, dtype and batch size, and why.

Engines: "onnxruntime" (the folded graph run by onnxruntime, models/engines/onnxruntime_engine.py),
"fused-onednn" (BatchNorm folded, prepacked oneDNN convs with fused post-ops, big batches split over
single-threaded workers), "fused-aten" (BatchNorm folded, ATen's convs), "graph" (oneDNN Graph
compiled per input shape, models/engines/onednn_graph.py). The rules come from measurements
(`python -m benchmarks.engine_rules`; the tables and the machines they were taken on are in
docs/benchmarks.md, "Engine rules").

So, float32 on CPU: onnxruntime at every batch size on the classes where it was measured fastest
(ORT_CLASSES) when it is installed (the `onnxruntime` extra); otherwise oneDNN Graph for up to
GRAPH_MAX_BATCH images per call (its compile, ~3 s, is paid once per batch size) and the eager fused
model above it (as fast as the graph or faster, no compile, any shape, and far less hurt by a busy
neighbour core). CPU classes nobody measured (aarch64/NEON, others) get ATen's convs: the plain
model's own kernels with BatchNorm folded away, never more work than the plain model.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .cpu_caps import CpuCaps

__all__ = ["EngineDecision", "choose_engine", "GRAPH_MAX_BATCH", "ORT_CLASSES"]

# Largest batch per call that goes to oneDNN Graph under impl="auto", per measured CPU class. AMX
# tiles compute bfloat16/int8 only: float32 convs of an AMX CPU run on its AVX-512 units, same rule.
GRAPH_MAX_BATCH = {"amx": 8, "avx512": 8, "avx2": 8}
MEASURED = ("amx", "avx512", "avx2")
# CPU classes where onnxruntime ran the folded graph faster than every torch engine, batch 1 to 32.
# Its kernels pick their ISA from the CPU itself (ONEDNN_MAX_CPU_ISA does not restrict them), so the
# AVX2 class could not be measured by restriction: it keeps the oneDNN engines.
ORT_CLASSES = ("avx512", "amx")


@dataclass(frozen=True)
class EngineDecision:
    engine: str          # "onnxruntime" | "fused-onednn" | "fused-aten" | "graph"
    reason: str
    isa_class: str
    batch_size: int | None = None   # the batch the decision was made for; None = "any" (eager part)

    def as_dict(self) -> dict:
        return asdict(self)


def eager_impl(caps: CpuCaps, device: torch.device, dtype: torch.dtype) -> tuple[str, str]:
    """(impl, reason) for the eager fused model on `device`."""
    if device.type != "cpu":
        return "aten", f"{device.type}: ATen's convs (cuDNN)"
    name = str(dtype).replace("torch.", "")
    if dtype != torch.float32:
        support = caps.bf16 if dtype == torch.bfloat16 else caps.fp16
        if support == "none":
            return "aten", (f"oneDNN has no {name} convolutions on this CPU ({caps.isa_class}): ATen's generic "
                            f"{name} convs, slower than float32")
    if not caps.onednn:
        return "aten", "this PyTorch build has no oneDNN conv ops: ATen's convs"
    if caps.isa_class not in MEASURED:
        return "aten", (f"CPU class {caps.isa_class} not measured: ATen's convs (the plain model's kernels, "
                        f"BatchNorm folded)")
    return "onednn", (f"{caps.isa_class}: prepacked oneDNN convs with fused ReLU/residual, the fastest eager "
                      f"engine measured at large batches (models/engines/engine_rules.py)")


def choose_engine(caps: CpuCaps, device, dtype: torch.dtype, batch_size: int | None,
                  eager_only: bool = False) -> EngineDecision:
    """The engine impl="auto" runs a batch of `batch_size` with (None: any batch; then oneDNN Graph,
    compiled per shape, is not an answer). `eager_only`: the eager fused engines only."""
    device = torch.device(device)
    impl, reason = eager_impl(caps, device, dtype)
    if eager_only:
        return EngineDecision(f"fused-{impl}", reason, caps.isa_class, batch_size)
    if device.type == "cpu" and dtype == torch.float32 and caps.onnxruntime and caps.isa_class in ORT_CLASSES:
        return EngineDecision("onnxruntime", f"{caps.isa_class}, onnxruntime installed: the folded graph run by "
                                             f"onnxruntime, the fastest engine measured at batch 1 to 32 "
                                             f"(models/engines/engine_rules.py)", caps.isa_class, batch_size)
    limit = GRAPH_MAX_BATCH.get(caps.isa_class, 0)
    if (batch_size is not None and batch_size <= limit and device.type == "cpu" and dtype == torch.float32
            and caps.onednn_graph):
        return EngineDecision("graph", f"{caps.isa_class}, batch {batch_size} <= {limit}: oneDNN Graph, compiled "
                                       f"once per input shape, fastest at small batches (models/engines/engine_rules.py)",
                              caps.isa_class, batch_size)
    if batch_size is not None and limit and impl == "onednn":
        reason += f"; batch {batch_size} > {limit}: eager equals oneDNN Graph without its per-shape compile"
    return EngineDecision(f"fused-{impl}", reason, caps.isa_class, batch_size)
