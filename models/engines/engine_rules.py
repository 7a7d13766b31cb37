"""Which engine `fuse(impl="auto")` runs, per CPU class, dtype and batch size, and why.

Engines: "fused-onednn" (BatchNorm folded, prepacked oneDNN convs with fused post-ops, big batches
split over single-threaded workers), "fused-aten" (BatchNorm folded, ATen's convs), "graph" (oneDNN
Graph compiled per input shape, models/onednn_graph.py). The rules come from measurements:

* `python -m benchmarks.engine_rules --batches 1,8,16,32` (512-d model, one process, 9 interleaved
  rounds, best round, x the plain model), 2-core AMD EPYC VM with AVX-512, 2 torch threads, while
  other jobs kept the load average near 8 (absolute figures meaningless, the order is what counts):

      batch   fused-onednn  fused-aten  graph
        1         2.93         2.48      6.16
        8         1.44         1.08      1.78   (ratio of medians: 1.86 / 1.51 / 1.67)
       16         5.16         3.15      1.98
       32         4.22         3.73      1.85

* the same, AVX2 class emulated (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2), load near 9.5;
  ratio of the medians (best rounds were dominated by the neighbours at batch 1):

      batch   fused-onednn  fused-aten  graph
        1         1.77         1.97      2.79
        8         0.75         1.08      1.81
       16         5.76         6.42      3.08
       32         6.86         7.31      3.33

* the same machine, quiet (models/fused.py, models/onednn_graph.py, README "Performance"): graph
  1.4x the eager fused model at batch 1, equal to it at batch 32;
* an AVX2-only AMD EPYC (issue 12's report), x TF: batch 1 eager fused 0.43, plain 0.68, graph
  1.95; batch 32 eager fused 1.27, graph 1.30.

So: oneDNN Graph for up to GRAPH_MAX_BATCH images per call (its compile, ~3 s, is paid once per
batch size), the eager fused model above it (as fast as the graph or faster, no compile, any shape,
and far less hurt by a busy neighbour core). CPU classes nobody measured (aarch64/NEON, others) get
ATen's convs: the plain model's own kernels with BatchNorm folded away, never more work than the
plain model.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .cpu_caps import CpuCaps

__all__ = ["EngineDecision", "choose_engine", "GRAPH_MAX_BATCH"]

# Largest batch per call that goes to oneDNN Graph under impl="auto", per measured CPU class. AMX
# tiles compute bfloat16/int8 only: float32 convs of an AMX CPU run on its AVX-512 units, same rule.
GRAPH_MAX_BATCH = {"amx": 8, "avx512": 8, "avx2": 8}
MEASURED = ("amx", "avx512", "avx2")


@dataclass(frozen=True)
class EngineDecision:
    engine: str          # "fused-onednn" | "fused-aten" | "graph"
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
                      f"engine measured at large batches (models/engine_rules.py)")


def choose_engine(caps: CpuCaps, device, dtype: torch.dtype, batch_size: int | None) -> EngineDecision:
    """The engine impl="auto" runs a batch of `batch_size` with (None: the eager engine for any batch)."""
    device = torch.device(device)
    impl, reason = eager_impl(caps, device, dtype)
    limit = GRAPH_MAX_BATCH.get(caps.isa_class, 0)
    if (batch_size is not None and batch_size <= limit and device.type == "cpu" and dtype == torch.float32
            and caps.onednn_graph):
        return EngineDecision("graph", f"{caps.isa_class}, batch {batch_size} <= {limit}: oneDNN Graph, compiled "
                                       f"once per input shape, fastest at small batches (models/engine_rules.py)",
                              caps.isa_class, batch_size)
    if batch_size is not None and limit and impl == "onednn":
        reason += f"; batch {batch_size} > {limit}: eager equals oneDNN Graph without its per-shape compile"
    return EngineDecision(f"fused-{impl}", reason, caps.isa_class, batch_size)
