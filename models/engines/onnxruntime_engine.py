"""`fuse(impl="onnxruntime")`: the folded InceptionResNetV1 run by onnxruntime (CPU, float32).

Why: onnxruntime's CPU kernels (MLAS, its own NCHWc convolutions and thread pool) ran the folded graph
faster than every PyTorch engine we have, at batch 1 and at batch 32, on the AVX-512 machines it was
measured on (docs/benchmarks.md, "Engine rules"); engine_rules.py says where `impl="auto"` picks it.

How: the fused model's prelogits are written as an ONNX graph in memory (onnx_graph.py, ~0.3 s), and
one onnxruntime session is made per intra-op thread count (torch.get_num_threads() at the call, so
`torch.set_num_threads` is honoured), on first use. The L2 normalisation or the logits then run in
torch on the result, as for the other engines. Sessions are a cache: dropped on pickling and copying,
rebuilt where the copy runs. Needs onnx and onnxruntime (the `onnxruntime` extra; `export` has them too).
"""
from __future__ import annotations

import threading

import torch

from .cpu_caps import missing_onnxruntime

__all__ = ["OrtSessions", "require_onnxruntime", "INPUT", "OUTPUT"]

INPUT, OUTPUT = "images", "prelogits"   # the ONNX graph's input and output names (onnx_graph.py)


def require_onnxruntime() -> None:
    """Raise a clear error when onnx or onnxruntime can't be imported."""
    missing = missing_onnxruntime()
    if missing:
        from ..common.install import install_hint   # pyproject's [onnxruntime] extra, for this installation

        raise RuntimeError(f"impl='onnxruntime' needs {' and '.join(missing)}: {install_hint('onnxruntime')}")


class OrtSessions:
    """onnxruntime sessions of one fused model's prelogits, per thread count, built on first use."""

    def __init__(self):
        self._sessions: dict[int, object] = {}
        self._lock = threading.Lock()

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.__init__()

    def clear(self) -> None:
        """Forget the sessions (the model's weights changed, or moved)."""
        with self._lock:
            self._sessions = {}

    def _session(self, fused, threads: int):
        session = self._sessions.get(threads)
        if session is None:
            with self._lock:
                session = self._sessions.get(threads)
                if session is None:
                    import onnxruntime as ort

                    from .onnx_graph import prelogits_onnx   # imports fused.py, which imports this module

                    opts = ort.SessionOptions()
                    opts.intra_op_num_threads = threads
                    opts.inter_op_num_threads = 1
                    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                    opts.log_severity_level = 3     # errors only
                    # threads spin during a run (latency) but stop when it returns: left spinning they
                    # took the cores from whatever torch ran next (MTCNN right after a batch of 4: 58.5
                    # vs 28.4 ms alone; with this 29.4 ms, and 122 vs 125 images/s at batch 1)
                    opts.add_session_config_entry("session.force_spinning_stop", "1")
                    session = ort.InferenceSession(prelogits_onnx(fused), opts, providers=["CPUExecutionProvider"])
                    self._sessions = {**self._sessions, threads: session}
        return session

    def prelogits(self, fused, x: torch.Tensor) -> torch.Tensor:
        """fused.prelogits(x) computed by onnxruntime: (N, 3, H, W) -> (N, E) float32."""
        if x.device.type != "cpu":
            raise RuntimeError(f"impl='onnxruntime' runs on CPU; got an input on {x.device}")
        x = x.detach().to(torch.float32).contiguous()
        out = self._session(fused, torch.get_num_threads()).run([OUTPUT], {INPUT: x.numpy()})[0]
        return torch.from_numpy(out)
