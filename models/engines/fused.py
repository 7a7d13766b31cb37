"""Inference fast path for InceptionResNetV1: `fuse_inception(model, dtype)` (= `model.fuse(dtype)`).

The fused copy computes the same function with these changes (exact algebra; only rounding differs:
~1e-6 max abs or less on float32 embeddings, the tests require <= 1e-5):

* every BatchNorm is folded into the conv/linear before it, in float64, then cast:
  W' = W * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps) + beta
  (TF-slim's BN has no gamma, i.e. gamma = 1, but any gamma folds);
* each residual block's scale is folded into its up conv: x + s*(W m + b) = x + (sW) m + sb;
* activations are channels_last (NHWC), the layout oneDNN's convolutions want; the input stays
  NCHW float32 and is converted on entry;
* on CPU each conv is one oneDNN primitive with the weights prepacked into oneDNN's blocked layout
  (no per-call weight reorder), the ReLU fused in, and each block's residual add (+ ReLU) fused into
  its up conv and written in place over the block input; convs on tiny maps (Block8 at batch 1) use
  ATen's conv instead, whose per-call setup is cheaper (see _ATEN_MAX_ROWS);
* on CPU a batch of >= 16 images is split over single-threaded worker threads (see
  "batch-parallel workers" below);
* no Dropout, no autograd: an inference-only module (`.train()` raises).

Why each of these is there, with the measurements behind it (the ablation, the per-call cost of
eager oneDNN convs at batch 1, what was tried and not kept): docs/benchmarks.md.

`dtype=torch.bfloat16` keeps conv weights and activations in bfloat16 (float32 accumulation inside
oneDNN/cuDNN). The first conv (3->32, 0.4% of the FLOPs) stays float32 so the image isn't rounded,
and the head (average pool, bottleneck, logits, L2 normalisation) runs in float32: float32 in and
out, like the plain model. It is meant for bulk embedding on CPUs with AMX (or AVX512-BF16) and on
GPUs. Without them (models/engines/cpu_caps.py decides) a RuntimeWarning says it is slower than float32:
on AVX-512 without BF16 oneDNN emulates bfloat16 (several times slower than float32); where oneDNN has no
bfloat16 convs at all (AVX2-only x86, most aarch64) the same fused model runs on ATen's generic
convs, which work on any CPU and are several times slower (docs/benchmarks.md).
float16 alike (oneDNN float16 convs need AVX512-FP16 / AMX-FP16). impl='onednn' given explicitly
raises instead of falling back.

`impl='auto'` (the default) picks the engine per CPU class and batch size by the measured rules in
models/engines/engine_rules.py: on a CPU, float32, where onnxruntime is installed and was measured
fastest, every batch goes to onnxruntime (models/engines/onnxruntime_engine.py, the folded graph
written as ONNX); otherwise batches up to a few images go to oneDNN Graph
(models/engines/onednn_graph.py, compiled once per input shape), bigger ones to this eager module. The
decision and its reason are on the module: `engine_decision` (any batch) and `decision_for(batch)`.

The fused module holds only ordinary tensors (buffers) and plain attributes; the prepacked oneDNN
weights are a cache built on first use and dropped on pickling/copying/moving, and the worker
threads live outside it, so it pickles, `torch.save`s and deep-copies like any module.
`fuse_inception` reads the model it is given and never modifies it.
"""
from __future__ import annotations

import copy
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn
from torch.nn import functional as F

from . import cpu_caps
from .engine_rules import EngineDecision, choose_engine, eager_impl
from .onnxruntime_engine import OrtSessions, require_onnxruntime
from ..nets.inception_resnet_v1 import BasicConv2d, l2_normalize

__all__ = ["fuse_inception", "FusedInceptionResNetV1", "check_dtype_supported", "native_cpu_bf16"]

_CL = torch.channels_last
_IMPLS = ("auto", "onednn", "aten", "graph", "onnxruntime")
_MAX_PACKED_SHAPES = 4  # input (C, H, W) shapes whose prepacked weights each conv keeps
_PACK_LOCK = threading.Lock()
# Convs whose output has at most this many pixels (N*H*W) go to ATen's own conv (im2col + MKL GEMM
# for such sizes) instead of oneDNN: a oneDNN call costs ~30-50 us of setup, more than the compute
# of Block8's convs at batch 1 (3x3 maps). Measured +2-5% images/s at batch 1; 64 (8x8 maps, also
# for the 1x1 convs alone) was 5% slower. (Rows are counted on the input; equal to the output's here.)
_ATEN_MAX_ROWS = 16


def native_cpu_bf16() -> bool:
    """Whether oneDNN computes bfloat16 in hardware here (AMX tiles or AVX512-BF16): models/engines/cpu_caps.py."""
    return cpu_caps.current().bf16 == "native"


def check_dtype_supported(dtype: torch.dtype, device, impl: str = "auto") -> str:
    """The conv impl for `dtype` on `device` ('onednn' / 'aten', or `impl` when explicit). Raises a clear
    error where it can't run; warns (RuntimeWarning) where it runs slower than float32."""
    device = torch.device(device)
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"fuse(dtype=...) supports torch.float32, torch.bfloat16 and torch.float16; got {dtype}")
    name = str(dtype).replace("torch.", "")
    caps = cpu_caps.current()
    if device.type == "cpu":
        chosen, reason = eager_impl(caps, device, dtype)
        support = {torch.bfloat16: caps.bf16, torch.float16: caps.fp16}.get(dtype, "native")
        if impl == "onednn" and (not caps.onednn or support == "none"):
            raise RuntimeError(f"impl='onednn' needs PyTorch's oneDNN conv ops for {name} on this CPU ({caps.describe()}); "
                               f"use impl='auto' (falls back to ATen's convs) or dtype=torch.float32")
        if support == "emulated" and impl != "aten":
            warnings.warn(f"this CPU has no AMX or AVX512-BF16: oneDNN emulates {name} with float32 arithmetic, "
                          f"which is slower than dtype=torch.float32", RuntimeWarning, stacklevel=3)
        elif support == "none":
            warnings.warn(f"{name} on this CPU: {reason} (use dtype=torch.float32 for speed)", RuntimeWarning,
                          stacklevel=3)
        return chosen if impl == "auto" else impl
    if device.type == "cuda":
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise RuntimeError(f"bfloat16 is not supported on {torch.cuda.get_device_name(device)}; "
                               f"use torch.float16 or torch.float32")
        if impl == "onednn":
            raise RuntimeError(f"impl='onednn' needs a CPU model and a PyTorch built with oneDNN (model on {device})")
        return "aten"
    if dtype != torch.float32 or impl == "onednn":
        raise RuntimeError(f"fuse(dtype={name}, impl={impl!r}) is only supported on CPU and CUDA, not {device.type}")
    return "aten"


def _fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn) -> tuple[torch.Tensor, torch.Tensor]:
    """(W', b') in float64 with the eval-mode BatchNorm `bn` folded into the layer (W, b) before it."""
    w = weight.detach().double()
    b = (torch.zeros(w.shape[0], dtype=torch.float64, device=w.device) if bias is None
         else bias.detach().double())
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"{bn} has no running statistics (track_running_stats=False); can't fold it")
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(b)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(b)
    mult = gamma / torch.sqrt(bn.running_var.detach().double() + bn.eps)
    w = w * mult.reshape(-1, *([1] * (w.dim() - 1)))
    b = (b - bn.running_mean.detach().double()) * mult + beta
    return w, b


class FusedConv(nn.Module):
    """conv2d + bias, then optionally `+ add` (a residual) and ReLU.

    impl='onednn' (CPU): one oneDNN primitive with the weights prepacked, the ReLU and the residual
    add as post-ops; with `add` the result is written into `add` (its storage is reused).
    impl='aten': F.conv2d then in-place add/ReLU (any device).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, stride, padding, relu: bool, impl: str):
        super().__init__()
        self.register_buffer("weight", weight.contiguous(memory_format=_CL))
        self.register_buffer("bias", bias.contiguous())
        self.stride = list(stride)
        self.padding = list(padding)
        self.relu = relu
        self.impl = impl
        self._packed: dict[tuple[int, ...], torch.Tensor] = {}

    def extra_repr(self) -> str:
        o, i, kh, kw = self.weight.shape
        return (f"{i}, {o}, kernel_size=({kh}, {kw}), stride={tuple(self.stride)}, padding={tuple(self.padding)}, "
                f"relu={self.relu}, impl={self.impl!r}, dtype={self.weight.dtype}")

    def _apply(self, fn, recurse=True):  # .to()/.cuda()/.half(): the packed copies would be stale
        self._packed = {}
        return super()._apply(fn, recurse)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_packed"] = {}
        return state

    def packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        """The weight in the blocked layout oneDNN picks for inputs shaped like x. The layout depends
        on the channels and the spatial size (a mismatch would cost a weight reorder on every call),
        not on the batch size, so it is cached per (C, H, W)."""
        key = tuple(x.shape[1:])
        w = self._packed.get(key)
        if w is None:
            with _PACK_LOCK:
                w = self._packed.get(key)
                if w is None:
                    w = torch.ops.mkldnn._reorder_convolution_weight(
                        self.weight, self.padding, self.stride, [1, 1], 1, list(x.shape))
                    packed = dict(self._packed)
                    while len(packed) >= _MAX_PACKED_SHAPES:
                        packed.pop(next(iter(packed)))
                    packed[key] = w
                    self._packed = packed  # replaced whole: readers in other threads never see it half-built
        return w

    def forward(self, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        if self.impl == "onednn" and x.shape[0] * x.shape[2] * x.shape[3] > _ATEN_MAX_ROWS:
            if x.device.type != "cpu":
                raise RuntimeError("this fused module was built for CPU (oneDNN); call fuse() on the model "
                                   "after moving it to the target device")
            w = self.packed_weight(x)
            if add is None:
                return torch.ops.mkldnn._convolution_pointwise(
                    x, w, self.bias, self.padding, self.stride, [1, 1], 1,
                    "relu" if self.relu else "none", [], "")
            return torch.ops.mkldnn._convolution_pointwise_.binary(
                add, x, w, self.bias, self.padding, self.stride, [1, 1], 1,
                "add", None, "relu" if self.relu else None, [], "")
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        if add is not None:
            y = y.add_(add)
        return F.relu_(y) if self.relu else y


class FusedMixed(nn.Module):
    """A block of parallel branches concatenated on channels, optionally with the residual up conv.

    `head` (may be None) is the merged 1x1 conv of every branch that starts with one; its output is
    split into `splits`; path i then reads split `src[i]` (or the block input when src[i] < 0).
    """

    def __init__(self, head, splits, paths, src, up=None):
        super().__init__()
        self.head = head
        self.splits = list(splits)
        self.paths = nn.ModuleList(paths)
        self.src = list(src)
        self.up = up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = self.head(x).split(self.splits, 1) if self.head is not None else ()
        outs = [path(x if s < 0 else parts[s]) for path, s in zip(self.paths, self.src)]
        y = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
        if self.up is None:
            return y
        return self.up(y, add=x)


# ------------------------------------------------------------------------ batch-parallel workers
#
# On CPU a batch of N >= 2 is split into k = min(N, torch.get_num_threads()) near-equal chunks that
# k worker threads run at the same time, each with ONE intra-op thread. Against one forward with k
# OpenMP threads this avoids a fork/join barrier per op (~300 per forward): measured ~5-10% faster
# at batch 32 on an idle 2-core machine, and 2-3x faster when another process keeps a core busy
# (a descheduled OpenMP thread stalls every barrier; independent workers just run slower).

_MIN_WORKER_BATCH = 8   # images per worker below which one multi-threaded forward is as fast
_WORKER_PIECE = 16      # a worker runs its share in pieces of at most this many images
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _init_worker(barrier: threading.Barrier) -> None:
    torch.get_num_threads()   # run ATen's lazy per-thread setup now, so it can't undo the next line
    torch.set_num_threads(1)  # this thread's OpenMP/MKL thread count (also ATen's default: restored below)
    barrier.wait()


def _pool(k: int) -> ThreadPoolExecutor:
    pool = _POOLS.get(k)
    if pool is None:
        with _POOLS_LOCK:
            pool = _POOLS.get(k)
            if pool is None:
                before = torch.get_num_threads()
                barrier = threading.Barrier(k + 1)
                pool = ThreadPoolExecutor(k, thread_name_prefix=f"fused-inception-{k}")
                for _ in range(k):
                    pool.submit(_init_worker, barrier)
                barrier.wait()
                torch.set_num_threads(before)  # set_num_threads(1) in a worker also set the process default
                _POOLS[k] = pool
    return pool


def _forget_pools() -> None:  # a forked child has the dicts but not the threads
    _POOLS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


def _chunk_forward(model: "FusedInceptionResNetV1", x: torch.Tensor, piece: int) -> torch.Tensor:
    with torch.no_grad():
        if x.shape[0] <= piece:
            return model._forward(x)
        return torch.cat([model._forward(p) for p in x.split(piece)])


class FusedInceptionResNetV1(nn.Module):
    """Inference-only InceptionResNetV1 built by `fuse_inception`; same call as the plain model.

    `workers` (CPU only): 'auto' splits a batch of N >= 16 over min(N // 8, torch.get_num_threads())
    single-threaded worker threads; an int k uses min(N // 8, k) workers; 1 always runs one forward
    with torch's intra-op threads (as smaller batches do).

    `engine_decision` (an EngineDecision) says which engine runs and why; with impl='auto' a CPU
    batch of at most `graph_max_batch` images runs on `small_batch_graph` (oneDNN Graph) instead,
    see `decision_for(batch_size)`. `last_engine` names the engine of the latest call.
    """

    engine_decision: EngineDecision | None = None
    graph_max_batch: int = 0
    small_batch_graph = None      # a GraphInceptionResNetV1 (not a submodule: its weights are a cache)
    ort_sessions: OrtSessions | None = None   # set: every CPU batch runs on onnxruntime
    last_engine: str | None = None
    _auto = False
    _caps = None

    def __init__(self, conv_in: FusedConv, stem, blocks, bottleneck: nn.Linear, logits: nn.Linear | None,
                 classify: bool, dtype: torch.dtype, embedding_size: int, num_classes: int | None, impl: str,
                 workers: int | str = "auto"):
        super().__init__()
        self.conv_in = conv_in
        self.stem = nn.Sequential(*stem)
        self.blocks = nn.Sequential(*blocks)
        self.bottleneck = bottleneck
        self.logits = logits
        self.classify = classify
        self.dtype = dtype
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        self.impl = impl
        self.workers = workers
        self.train(False)

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("a fused InceptionResNetV1 is inference-only; train the plain model")
        return super().train(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, 1792, h, w) Mixed_8b/Block8 activation, channels_last, in self.dtype."""
        x = self.conv_in(x.to(dtype=torch.float32, memory_format=_CL))
        return self.blocks(self.stem(x.to(self.dtype)))

    def prelogits(self, x: torch.Tensor) -> torch.Tensor:
        """Bottleneck output (BatchNorm folded in), float32."""
        x = self.features(x).float().mean((2, 3))
        return self.bottleneck(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._head(self.prelogits(x))

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x) if self.classify else l2_normalize(x)

    def _apply(self, fn, recurse=True):  # .to()/.cuda(): onnxruntime sessions hold the old weights
        if self.ort_sessions is not None:
            self.ort_sessions.clear()
        return super()._apply(fn, recurse)

    def _num_workers(self, x: torch.Tensor) -> int:
        if x.device.type != "cpu" or self.workers == 1:
            return 1
        k = torch.get_num_threads() if self.workers == "auto" else int(self.workers)
        return max(1, min(k, x.shape[0] // _MIN_WORKER_BATCH))

    def decision_for(self, batch_size: int | None) -> EngineDecision:
        """The engine (and why) a batch of `batch_size` images runs on; None: the eager engine."""
        if self._auto and batch_size is not None:
            decision = choose_engine(self._caps, self.bottleneck.weight.device, self.dtype, batch_size)
            if decision.engine == "graph" and not self._graph_runs(batch_size):   # merge_1x1/workers given
                return self.engine_decision
            if decision.engine == "onnxruntime" and self.ort_sessions is None:
                return self.engine_decision
            return decision
        return self.engine_decision

    def _graph_runs(self, batch_size: int | None) -> bool:
        return self.small_batch_graph is not None and batch_size is not None and batch_size <= self.graph_max_batch

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected an (N, 3, H, W) batch, got shape {tuple(x.shape)}")
        if self.classify and self.logits is None:
            raise RuntimeError("classify=True but this model has no logits layer (num_classes=None)")
        if self.ort_sessions is not None and x.device.type == "cpu":
            self.last_engine = "onnxruntime"
            return self._head(self.ort_sessions.prelogits(self, x))
        if self._graph_runs(x.shape[0]) and x.device.type == "cpu":
            self.last_engine = "graph"
            self.small_batch_graph.classify = self.classify
            return self.small_batch_graph(x)
        self.last_engine = self.engine_decision.engine if self.engine_decision else f"fused-{self.impl}"
        k = self._num_workers(x)
        if k == 1:
            return self._forward(x)
        pool = _pool(k)
        futures = [pool.submit(_chunk_forward, self, chunk, _WORKER_PIECE) for chunk in x.tensor_split(k)]
        return torch.cat([f.result() for f in futures])


def _as_list(m: nn.Module) -> list[nn.Module]:
    return list(m) if isinstance(m, nn.Sequential) else [m]


@torch.no_grad()
def fuse_inception(model: nn.Module, dtype: torch.dtype = torch.float32, *, impl: str = "auto",
                   merge_1x1: bool = False, workers: int | str = "auto") -> nn.Module:
    """An inference-only copy of `model` (an InceptionResNetV1) with BatchNorm folded; see module doc.

    dtype: torch.float32, or torch.bfloat16 / torch.float16 (a RuntimeWarning where it runs slower
      than float32; see the module doc).
    impl: 'auto' = the measured rules of models/engines/engine_rules.py (CPU class, dtype; on CPU float32 also
      onnxruntime, or oneDNN Graph for small batches); 'onednn' (prepacked weights, fused post-ops; raises where
      oneDNN can't run `dtype`), 'aten' (ATen's convs, any device), 'graph' (oneDNN Graph only,
      compiled per input shape: models/engines/onednn_graph.py) or 'onnxruntime' (CPU float32, the
      `onnxruntime` extra: models/engines/onnxruntime_engine.py) force one.
    merge_1x1: run each block's parallel 1x1 convs as one conv (measured slower on CPU; off).
    workers: see FusedInceptionResNetV1 (CPU batch splitting; 'auto', an int, or 1 for off).
    The model is read, never modified; the copy lives on the model's device.
    """
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
    try:
        device = next(model.parameters()).device
    except StopIteration:
        raise ValueError("model has no parameters") from None
    if impl == "graph":
        if dtype != torch.float32 or merge_1x1 or workers != "auto":
            raise ValueError("impl='graph' (oneDNN Graph) takes no dtype other than torch.float32, "
                             "and no merge_1x1 / workers")
        from .onednn_graph import GraphInceptionResNetV1

        graph = GraphInceptionResNetV1(model)
        graph.engine_decision = EngineDecision("graph", "impl='graph' given", cpu_caps.current().isa_class)
        return graph
    requested = impl
    if impl == "onnxruntime":
        require_onnxruntime()
        if dtype != torch.float32 or merge_1x1 or workers != "auto" or device.type != "cpu":
            raise ValueError("impl='onnxruntime' runs a CPU float32 model, with no merge_1x1 / workers")
        impl = "auto"
    impl = check_dtype_supported(dtype, device, impl)

    def conv(ref: nn.Conv2d, w, b, relu=True, dt=dtype):
        if ref.groups != 1 or ref.dilation != (1, 1) or isinstance(ref.padding, str) or ref.padding_mode != "zeros":
            raise ValueError(f"unexpected conv {ref}")
        return FusedConv(w.to(dt), b.to(dt), ref.stride, ref.padding, relu, impl)

    def basic(bc: BasicConv2d, dt=dtype) -> FusedConv:
        return conv(bc.conv, *_fold_bn(bc.conv.weight, bc.conv.bias, bc.bn), dt=dt)

    def seq(mods) -> nn.Module:
        mods = [basic(m) if isinstance(m, BasicConv2d) else copy.deepcopy(m) for m in mods]
        return mods[0] if len(mods) == 1 else nn.Sequential(*mods)

    def mixed(branches, up: nn.Conv2d | None = None, scale: float = 1.0, relu: bool = True) -> FusedMixed:
        heads = [i for i, br in enumerate(branches)
                 if isinstance(br[0], BasicConv2d) and br[0].conv.kernel_size == (1, 1)
                 and br[0].conv.stride == (1, 1) and br[0].conv.padding == (0, 0)]
        if not (merge_1x1 and len(heads) > 1):
            heads = []
        paths, src = [], []
        for i, br in enumerate(branches):
            rest = br[1:] if i in heads else br
            paths.append(seq(rest) if rest else nn.Identity())
            src.append(heads.index(i) if i in heads else -1)
        head, splits = None, []
        if heads:
            ws, bs = zip(*(_fold_bn(branches[i][0].conv.weight, branches[i][0].conv.bias, branches[i][0].bn)
                           for i in heads))
            head = conv(branches[heads[0]][0].conv, torch.cat(ws), torch.cat(bs))
            splits = [w.shape[0] for w in ws]
        upc = None
        if up is not None:
            b = (up.bias.detach().double() if up.bias is not None
                 else torch.zeros(up.out_channels, dtype=torch.float64, device=up.weight.device))
            upc = conv(up, up.weight.detach().double() * scale, b * scale, relu=relu)
        return FusedMixed(head, splits, paths, src, upc)

    m = model
    # The first conv (3->32, 0.4% of the FLOPs) stays float32 so the image itself isn't rounded.
    conv_in = basic(m.conv2d_1a, dt=torch.float32)
    stem = [basic(m.conv2d_2a), basic(m.conv2d_2b), copy.deepcopy(m.maxpool_3a),
            basic(m.conv2d_3b), basic(m.conv2d_4a), basic(m.conv2d_4b)]
    blocks = []
    for blk in m.repeat_1:
        blocks.append(mixed([_as_list(blk.branch0), _as_list(blk.branch1), _as_list(blk.branch2)],
                            blk.conv2d, blk.scale))
    b6 = m.mixed_6a
    blocks.append(mixed([_as_list(b6.branch0), _as_list(b6.branch1), _as_list(b6.branch2)]))
    for blk in m.repeat_2:
        blocks.append(mixed([_as_list(blk.branch0), _as_list(blk.branch1)], blk.conv2d, blk.scale))
    b7 = m.mixed_7a
    blocks.append(mixed([_as_list(b7.branch0), _as_list(b7.branch1), _as_list(b7.branch2), _as_list(b7.branch3)]))
    for blk in list(m.repeat_3) + [m.block8]:
        blocks.append(mixed([_as_list(blk.branch0), _as_list(blk.branch1)], blk.conv2d, blk.scale,
                            relu=not blk.no_relu))

    w, b = _fold_bn(m.last_linear.weight, m.last_linear.bias, m.last_bn)
    bottleneck = nn.Linear(w.shape[1], w.shape[0], device=device)
    bottleneck.weight = nn.Parameter(w.float(), requires_grad=False)
    bottleneck.bias = nn.Parameter(b.float(), requires_grad=False)
    logits = None
    if getattr(m, "logits", None) is not None:
        logits = copy.deepcopy(m.logits).float().requires_grad_(False)
    fused = FusedInceptionResNetV1(conv_in, stem, blocks, bottleneck, logits, bool(m.classify), dtype,
                                   m.embedding_size, m.num_classes, impl, workers)
    caps = cpu_caps.current()
    fused._caps = caps
    fused._auto = requested == "auto"
    default_module = not merge_1x1 and workers == "auto"   # what the compiled engines are built from
    if requested == "onnxruntime":
        fused.ort_sessions = OrtSessions()
        fused.engine_decision = EngineDecision("onnxruntime", "impl='onnxruntime' given", caps.isa_class)
    elif requested == "auto":
        fused.engine_decision = choose_engine(caps, device, dtype, None, eager_only=not default_module)
        small = choose_engine(caps, device, dtype, 1)
        if fused.engine_decision.engine == "onnxruntime":
            fused.ort_sessions = OrtSessions()
        elif small.engine == "graph" and default_module:
            from .engine_rules import GRAPH_MAX_BATCH
            from .onednn_graph import GraphInceptionResNetV1

            # a plain attribute, not a submodule: state_dict/modules() stay the folded model's
            object.__setattr__(fused, "small_batch_graph", GraphInceptionResNetV1(model))
            fused.graph_max_batch = GRAPH_MAX_BATCH[caps.isa_class]
    else:
        fused.engine_decision = EngineDecision(f"fused-{impl}", f"impl={requested!r} given", caps.isa_class)
    return fused
