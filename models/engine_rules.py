"""Which engine `fuse(impl="auto")` runs, per CPU class, dtype and batch size, and why.

Engines: "fused-onednn" (BatchNorm folded, prepacked oneDNN convs with fused post-ops),
"fused-aten" (BatchNorm folded, ATen's convs), "graph" (oneDNN Graph compiled per input shape,
models/onednn_graph.py). The rules are measurements, side by side in one process
(`python -m benchmarks.engine_rules --batches 1,4,32`, x the plain model, 512-d model, 2 threads,
2-core AMD EPYC VM; AVX2 class emulated on it with ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2):

    class   batch  plain  fused-onednn  fused-aten  graph
    avx512    1    1.00      1.71          1.66      2.39
    avx512    4    1.00      1.65          1.57      2.02
    avx512   32    1.00      1.74          1.71      1.72
    avx2      1    1.00      1.24          1.26      2.26
    avx2      4    1.00      1.32          1.33      1.84
    avx2     32    1.00      1.49          1.49      1.48

(An AVX2 EPYC measured by the issue's reporter: batch 1 fuse() 0.43x TF vs plain 0.68x vs graph
1.95x; batch 32 fuse() 1.27x, graph 1.30x -- graph first at batch 1 there too.)
So: oneDNN Graph up to GRAPH_MAX_BATCH images per call (its per-shape compile, ~3 s, is paid once
per batch size), the eager fused model above (equal to the graph within noise, no compile, any
shape). CPU classes nobody measured (aarch64/NEON, others) get ATen's convs: the plain model's own
kernels with BatchNorm folded away, so never more work than the plain model.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .cpu_caps import CpuCaps

__all__ = ["EngineDecision", "choose_engine", "GRAPH_MAX_BATCH"]

# Largest batch per call that goes to oneDNN Graph under impl="auto", per measured CPU class.
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
    return "onednn", f"{caps.isa_class}: prepacked oneDNN convs, fused ReLU/residual (measured 1.2-1.7x plain)"


def choose_engine(caps: CpuCaps, device, dtype: torch.dtype, batch_size: int | None) -> EngineDecision:
    """The engine impl="auto" runs a batch of `batch_size` with (None: the eager engine for any batch)."""
    device = torch.device(device)
    impl, reason = eager_impl(caps, device, dtype)
    limit = GRAPH_MAX_BATCH.get(caps.isa_class, 0)
    if (batch_size is not None and batch_size <= limit and device.type == "cpu" and dtype == torch.float32
            and caps.onednn_graph):
        return EngineDecision("graph", f"{caps.isa_class}, batch {batch_size} <= {limit}: oneDNN Graph, compiled "
                                       f"once per input shape (measured 1.8-2.4x plain vs 1.2-1.7x eager)",
                              caps.isa_class, batch_size)
    if batch_size is not None and limit and impl == "onednn":
        reason += f"; batch {batch_size} > {limit}: eager equals oneDNN Graph without its per-shape compile"
    return EngineDecision(f"fused-{impl}", reason, caps.isa_class, batch_size)
