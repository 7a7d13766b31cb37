"""`model.fuse(impl="graph")`: InceptionResNetV1 compiled by oneDNN Graph, per input shape (CPU, float32).

Why: through PyTorch's eager oneDNN ops every conv call pays a fixed set-up cost before any
arithmetic, about a hundred times a forward, which dominates at batch 1. oneDNN Graph (PyTorch's
TorchScript "LLGA" fuser) compiles the frozen graph into fused partitions once and then just
executes them (figures: README "Performance", derivation: docs/benchmarks.md).

How: the plain model's backbone + bottleneck (`prelogits`, BatchNorm included) is traced and frozen
for one exact input shape (freezing folds each BatchNorm into its conv), with oneDNN fusion switched on
while it is traced and for its first two runs (the profiling run and the one that compiles); the
switch is a process-wide TorchScript flag, so it is restored right after. The logits or the L2
normalisation run eagerly on the result. Each new input shape costs one compile (seconds), so this
suits a fixed batch size (a service, a loader with a fixed batch); at most `max_shapes` compiled graphs
are kept (least recently used dropped), each holding its own frozen weights and oneDNN's packed
copies (a few hundred MB for the 512-d model: docs/benchmarks.md). Embeddings equal the plain
model's to ~1e-6 (tests: <= 1e-5).
"""
from __future__ import annotations

import copy
import threading
import warnings
from collections import OrderedDict

import torch
from torch import nn

from ..nets.inception_resnet_v1 import l2_normalize

__all__ = ["GraphInceptionResNetV1"]

_FUSION_LOCK = threading.Lock()  # the oneDNN fusion flag is process-wide: one compile at a time


class _Prelogits(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.prelogits(x)


class GraphInceptionResNetV1(nn.Module):
    """Inference-only InceptionResNetV1 run as oneDNN Graph partitions compiled per input shape."""

    engine_decision = None   # set by fuse(): an engine_rules.EngineDecision
    last_engine = "graph"

    def decision_for(self, batch_size: int | None):
        return self.engine_decision

    def __init__(self, model: nn.Module, max_shapes: int = 4):
        super().__init__()
        if next(model.parameters()).device.type != "cpu":
            raise RuntimeError("impl='graph' (oneDNN Graph) runs on CPU only; use impl='aten' on CUDA")
        self.model = copy.deepcopy(model).float().eval().requires_grad_(False)
        self.classify = bool(model.classify)
        self.embedding_size = model.embedding_size
        self.num_classes = model.num_classes
        self.dtype = torch.float32
        self.impl = "graph"
        self.max_shapes = max_shapes
        self._graphs: OrderedDict[tuple, torch.jit.ScriptModule] = OrderedDict()
        self._lock = threading.Lock()

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("a fused InceptionResNetV1 is inference-only; train the plain model")
        return super().train(False)

    def __getstate__(self):  # compiled graphs are a cache: rebuilt where the copy runs
        state = self.__dict__.copy()
        state["_graphs"] = OrderedDict()
        state.pop("_lock")
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _apply(self, fn, recurse=True):  # .to()/.double(): compiled graphs would be stale
        self._graphs = OrderedDict()
        return super()._apply(fn, recurse)

    @property
    def compiled_shapes(self) -> list[tuple]:
        return list(self._graphs)

    def _compile(self, x: torch.Tensor) -> torch.jit.ScriptModule:
        with _FUSION_LOCK:
            before = torch.jit.onednn_fusion_enabled()
            torch.jit.enable_onednn_fusion(True)
            try:
                with warnings.catch_warnings():  # TorchScript's deprecation notice: not the user's concern
                    warnings.filterwarnings("ignore", category=DeprecationWarning)
                    warnings.filterwarnings("ignore", message=".*TorchScript.*")
                    graph = torch.jit.freeze(torch.jit.trace(_Prelogits(self.model).eval(), x))
                    graph(x)  # profiling run
                    graph(x)  # optimized: the oneDNN Graph partitions are compiled here
            finally:
                torch.jit.enable_onednn_fusion(before)
        return graph

    def _graph_for(self, x: torch.Tensor) -> torch.jit.ScriptModule:
        key = tuple(x.shape)
        with self._lock:
            graph = self._graphs.get(key)
            if graph is None:
                graph = self._compile(x)
                while len(self._graphs) >= self.max_shapes:
                    self._graphs.popitem(last=False)
                self._graphs[key] = graph
            else:
                self._graphs.move_to_end(key)
        return graph

    @torch.no_grad()
    def prelogits(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected an (N, 3, H, W) batch, got shape {tuple(x.shape)}")
        if x.device.type != "cpu":
            raise RuntimeError(f"impl='graph' runs on CPU; got an input on {x.device}")
        x = x.to(torch.float32).contiguous()
        return self._graph_for(x)(x)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.classify and getattr(self.model, "logits", None) is None:
            raise RuntimeError("classify=True but this model has no logits layer (num_classes=None)")
        x = self.prelogits(x)
        return self.model.logits(x) if self.classify else l2_normalize(x)
