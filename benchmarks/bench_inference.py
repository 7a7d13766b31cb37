"""Inference throughput, side by side in one process: TensorFlow frozen graph, onnxruntime (its tf2onnx
export), PyTorch plain, `fuse(float32)`, onnxruntime on our model's torch.onnx export (`facenet-convert
export`; row `onnxruntime_torch_export`), `fuse(impl="graph")` (oneDNN Graph, compiled per batch size
before timing; compile time reported), `fuse(impl="onnxruntime")` (our folded graph written as ONNX,
run by onnxruntime), `fuse(bfloat16)`; images/s at batch 1 and 32, 160x160.

    python -m benchmarks.bench_inference [--tf-pb MODEL.pb [--pt-weights MODEL.pt]] [--json OUT.json]

Variants are timed in interleaved rounds (each round runs every variant for ~`round_s` seconds), and
the median round is reported, so a neighbour's load hits all of them alike; the load average before
and after is recorded. Without `--pt-weights` the PyTorch model has seeded random weights (speed
doesn't depend on them) and TF/PyTorch parity isn't reported. TensorFlow, tf2onnx and onnxruntime
are imported only when a `.pb` is given (onnxruntime columns only if both are importable:
`pip install '.[bench]'`); the torch.onnx row runs whenever onnxruntime and onnxscript are installed
(`pip install '.[export]'`).

On a shared machine look at "cores busy elsewhere": torch's OpenMP threads lose far more than TF's
thread pool when another process takes a core, so only clean rounds compare the engines fairly.
bfloat16 parity depends on the weights (how much the network amplifies rounding): 0.99996 min cosine
on the TF fixture's weights, ~0.9994 on this script's own random model, where rounding only the
weights, or only the activations, to bfloat16 already costs ~3e-4 each.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

if __package__ in (None, ""):  # `python benchmarks/bench_inference.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facenet_tf2pt.models import InceptionResNetV1  # noqa: E402
from facenet_tf2pt.models.engines.cpu_caps import current  # noqa: E402
from facenet_tf2pt.models.engines.fused import fuse_inception  # noqa: E402

TF_GFLOPS_NOTE = 215.0  # GFLOP/s the TF frozen graph reached on the 2-core reference machine (issue 6)


# ----------------------------------------------------------------------------------------- models

def random_model(embedding_size: int = 512, seed: int = 0, image_size: int = 160) -> InceptionResNetV1:
    """Seeded random weights whose embeddings depend on the input: He-scaled convs, BatchNorm
    statistics calibrated on random images, then perturbed (so BN folding is exercised)."""
    torch.manual_seed(seed)
    model = InceptionResNetV1(embedding_size=embedding_size)
    g = torch.Generator().manual_seed(seed + 1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.normal_(0.0, (2.0 / m.weight[0].numel()) ** 0.5, generator=g)
        for bn in bns:
            bn.momentum = 1.0
        model.train()
        model(torch.randn(4, 3, image_size, image_size, generator=g))
        model.eval()
        for bn in bns:
            n = bn.num_features
            bn.running_mean.add_(0.1 * bn.running_var.sqrt() * torch.randn(n, generator=g))
            bn.running_var.mul_(torch.rand(n, generator=g) * 0.4 + 0.8)
            bn.bias.copy_(torch.randn(n, generator=g) * 0.1)
            bn.momentum = 0.005
    return model


def count_gflop(model: torch.nn.Module, image_size: int = 160) -> float:
    """GFLOP (2 x multiply-adds of the convs and linears) per image."""
    macs = 0

    def hook(mod, inp, out):
        nonlocal macs
        if isinstance(mod, torch.nn.Conv2d):
            macs += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        else:
            macs += out.numel() * mod.in_features

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in hooks:
            h.remove()
    return 2 * macs / 1e9


# ------------------------------------------------------------------------------------ TF and ORT

def conv_peak_gflops(seconds: float = 1.0) -> float:
    """This machine's practical float32 conv throughput, GFLOP/s (2 x multiply-adds): one large 3x3
    conv (8 x 512 x 32 x 32 -> 512 channels, channels_last: oneDNN's best kernel where it has one)
    on torch's threads, the best of several timed calls. No engine can run the network's convs
    faster than this, so it bounds every row's GFLOP/s."""
    x = torch.randn(8, 512, 32, 32).contiguous(memory_format=torch.channels_last)
    w = torch.randn(512, 512, 3, 3).contiguous(memory_format=torch.channels_last)
    flop = 2 * 8 * 32 * 32 * 512 * 512 * 9
    best = float("inf")
    with torch.inference_mode():
        F.conv2d(x, w, padding=1)
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            F.conv2d(x, w, padding=1)
            best = min(best, time.perf_counter() - t0)
    return flop / best / 1e9


def _load_tf(pb_path: str):
    """(session runner: NHWC float32 -> embeddings, embedding size)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    v1 = tf.compat.v1
    graph_def = v1.GraphDef()
    graph_def.ParseFromString(Path(pb_path).read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    images = graph.get_tensor_by_name("input:0")
    emb = graph.get_tensor_by_name("embeddings:0")
    feed_extra = {}
    for op in graph.get_operations():  # a bare bool `phase_train` placeholder must be fed False
        if op.type == "Placeholder" and op.name != "input":
            if "phase_train" in op.name:
                feed_extra[op.outputs[0]] = False
            else:
                raise ValueError(f"{pb_path}: unexpected placeholder {op.name!r}; the bench feeds "
                                 f"input:0 (and phase_train:0) only")
    sess = v1.Session(graph=graph)

    def run(x_nhwc: np.ndarray) -> np.ndarray:
        return sess.run(emb, {images: x_nhwc, **feed_extra})

    return run, int(emb.shape[-1]), graph_def, tf.__version__


def _load_ort(graph_def, threads: int):
    """onnxruntime on the tf2onnx export of the frozen graph, or (None, reason)."""
    try:
        import onnxruntime as ort
        import tf2onnx
    except ImportError as e:
        return None, f"not installed ({e.name}); pip install '.[bench]'"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model_proto, _ = tf2onnx.convert.from_graph_def(
            graph_def, input_names=["input:0"], output_names=["embeddings:0"], opset=17)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model_proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = {i.name: i for i in sess.get_inputs()}
    in_name = "input:0" if "input:0" in feeds else next(iter(feeds))
    extra = {n: np.array(False) for n in feeds if n != in_name}  # phase_train, if kept as an input

    def run(x_nhwc: np.ndarray) -> np.ndarray:
        return sess.run(None, {in_name: x_nhwc, **extra})[0]

    return run, f"onnxruntime {ort.__version__}, tf2onnx {tf2onnx.__version__}, opset 17"


def _load_ort_export(model, image_size: int, threads: int):
    """onnxruntime on our model exported by `facenet-convert export` (torch.onnx, dynamic batch),
    with the same session options as the tf2onnx row; or (None, reason)."""
    import importlib.util
    import tempfile

    try:
        import onnxruntime as ort
    except ImportError as e:
        return None, f"not installed ({e.name}); pip install '.[export]'"
    if importlib.util.find_spec("onnxscript") is None:
        return None, "onnxscript (torch.onnx's exporter) not installed; pip install '.[export]'"
    from facenet_tf2pt.converter.export import write_model

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        write_model(model, path, "onnx", image_size=image_size)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name

    def run(x_nchw: np.ndarray) -> np.ndarray:
        return sess.run(None, {in_name: x_nchw})[0]

    return run, f"onnxruntime {ort.__version__}, torch.onnx (dynamo) export of the PyTorch model"


# --------------------------------------------------------------------------------------- timing

_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_s() -> float | None:
    """CPU-seconds all processes on the machine have been busy (from /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _HZ


def time_interleaved(fns: dict, rounds: int = 5, round_s: float = 1.0, clean_below: float = 0.15) -> dict:
    """Time each fn (no arguments) in `rounds` interleaved rounds, each running every fn for
    >= round_s (>= 1 call). Per round it also measures how many cores *other* processes kept busy
    meanwhile (machine busy time from /proc/stat minus this process's CPU time): on a shared
    machine that shows which rounds were disturbed. Returns per fn: median s/call over all rounds,
    over the clean rounds (others < `clean_below` cores; None if no round was clean), the best
    round, and the median foreign load."""
    per = {k: [] for k in fns}
    for fn in fns.values():  # warm-up: allocations, oneDNN primitive creation, TF/ORT graph setup
        fn()
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            n = 0
            b0, c0, t0 = _busy_s(), time.process_time(), time.perf_counter()
            while True:
                fn()
                n += 1
                dt = time.perf_counter() - t0
                if dt >= round_s:
                    break
            b1, c1 = _busy_s(), time.process_time()
            foreign = None if b0 is None else max(0.0, ((b1 - b0) - (c1 - c0)) / dt)
            per[name].append((dt / n, foreign))
            time.sleep(0.02)  # let the previous framework's spinning worker threads park
    out = {}
    for k, v in per.items():
        times = [t for t, _ in v]
        clean = [t for t, f in v if f is not None and f < clean_below]
        loads = [f for _, f in v if f is not None]
        out[k] = {"median_s": statistics.median(times), "best_s": min(times),
                  "clean_median_s": statistics.median(clean) if clean else None, "clean_rounds": len(clean),
                  "rounds": len(v), "foreign_cores_median": round(statistics.median(loads), 3) if loads else None,
                  "round_s_per_call": [round(t, 5) for t in times],
                  "round_foreign_cores": [None if f is None else round(f, 3) for _, f in v]}
    return out


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------------------------------ run

def run(report: dict, tf_pb_path: str | None = None, *, pt_weights: str | None = None,
        batches=(1, 32), rounds: int = 5, round_s: float = 1.0, image_size: int = 160,
        compile_variant: bool = False, seed: int = 0, verbose: bool = True) -> dict:
    """Benchmark; results go into report["inference"] (JSON-able) and are returned. A variant this
    machine can't run is kept as a row {"na": reason}; every other row has its ratio to TF and to
    onnxruntime (when those ran)."""
    threads = torch.get_num_threads()
    caps = current()
    out: dict = {
        "machine": {"cpu": caps.cpu_model, "logical_cpus": os.cpu_count(), "torch_threads": threads,
                    "torch": torch.__version__, "python": platform.python_version(),
                    "isa_class": caps.isa_class, "flags": list(caps.flags), "capabilities": caps.describe(),
                    "isa_restriction": caps.restricted or None,
                    "cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "image_size": image_size, "batches": list(batches), "rounds": rounds, "round_s": round_s,
        "load_avg_before": _load(),
    }
    na: dict[str, str] = {}
    tf_run = ort_run = None
    embedding_size = 512
    if tf_pb_path:
        tf_run, embedding_size, graph_def, tf_version = _load_tf(tf_pb_path)
        out["tf"] = {"pb": str(tf_pb_path), "version": tf_version}
        ort_run, ort_info = _load_ort(graph_def, threads)
        out["onnxruntime"] = ort_info
        if ort_run is None:
            na["onnxruntime"] = ort_info
    else:
        na["tf_frozen_graph"] = na["onnxruntime"] = "no TF frozen graph given (--tf-pb)"
    if pt_weights:
        model = InceptionResNetV1(pretrained=pt_weights).eval()
        out["weights"] = str(pt_weights)
    else:
        model = random_model(embedding_size, seed=seed, image_size=image_size)
        out["weights"] = f"random (seed {seed})"
    gflop = count_gflop(model, image_size)
    out["gflop_per_image"] = round(gflop, 4)
    out["conv_peak_gflop_per_s"] = round(conv_peak_gflops(), 1)

    t0 = time.perf_counter()
    fused = model.fuse(torch.float32)   # the default: impl="auto"
    out["fuse_fp32_s"] = round(time.perf_counter() - t0, 3)
    out["engine_decisions"] = {str(b): fused.decision_for(b).as_dict() for b in batches}
    variants = {"torch_plain": model, "torch_fuse_default": fused}
    if caps.onednn:
        variants["torch_fused_fp32_eager"] = fuse_inception(model, torch.float32, impl="onednn")
    else:
        na["torch_fused_fp32_eager"] = "no oneDNN conv ops in this PyTorch build"
    if caps.onednn_graph:
        variants["torch_fused_fp32_graph"] = model.fuse(impl="graph")  # compiled on its first call per batch
    else:
        na["torch_fused_fp32_graph"] = f"no oneDNN Graph fuser for {caps.machine} in this PyTorch build"
    if caps.onnxruntime:
        variants["torch_fused_fp32_onnxruntime"] = model.fuse(impl="onnxruntime")  # sessions made on first call
    else:
        na["torch_fused_fp32_onnxruntime"] = "onnx/onnxruntime not installed (pip install '.[onnxruntime]')"
    if caps.bf16 == "none":
        na["torch_fused_bf16"] = ("oneDNN has no bfloat16 convs on this CPU; fuse(torch.bfloat16) falls back "
                                  "to ATen's, several times slower than float32 (not timed)")
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            variants["torch_fused_bf16"] = model.fuse(torch.bfloat16)
        out["bf16_warnings"] = [str(w.message) for w in caught]

    t0 = time.perf_counter()
    ort_export_run, ort_export_info = _load_ort_export(model, image_size, threads)
    out["onnxruntime_torch_export"] = ort_export_info
    if ort_export_run is None:
        na["onnxruntime_torch_export"] = ort_export_info
    else:
        out["onnxruntime_torch_export_s"] = round(time.perf_counter() - t0, 1)   # export + session

    # parity on one batch of 16 random images
    gen = torch.Generator().manual_seed(seed + 7)
    xp = torch.randn(16, 3, image_size, image_size, generator=gen)
    parity = {}
    with torch.inference_mode():
        ref = model(xp)
        for name, m in variants.items():
            if name != "torch_plain":
                e = m(xp)
                parity[f"{name}_vs_plain_max_abs"] = (e - ref).abs().max().item()
                if name == "torch_fused_bf16":
                    parity["torch_fused_bf16_vs_plain_min_cos"] = F.cosine_similarity(e, ref).min().item()
    if tf_run is not None:
        e_tf = torch.from_numpy(tf_run(xp.permute(0, 2, 3, 1).contiguous().numpy()))
        key = "tf_vs_plain_max_abs" if pt_weights else "tf_vs_plain_max_abs (different weights)"
        parity[key] = (e_tf - ref).abs().max().item()
        if ort_run is not None:
            e_ort = torch.from_numpy(ort_run(xp.permute(0, 2, 3, 1).contiguous().numpy()))
            parity["onnxruntime_vs_tf_max_abs"] = (e_ort - e_tf).abs().max().item()
    if ort_export_run is not None:
        parity["onnxruntime_torch_export_vs_plain_max_abs"] = float(np.abs(ort_export_run(xp.numpy())
                                                                           - ref.numpy()).max())
    out["parity"] = parity

    compiled = None
    if compile_variant:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        # workers=1: the batch-splitting thread pool isn't traceable; inductor gets one plain forward
        compiled = torch.compile(fuse_inception(model, torch.float32, impl="onednn", workers=1), dynamic=False)

    order = ["tf_frozen_graph", "onnxruntime", "torch_plain", "torch_fuse_default", "onnxruntime_torch_export",
             "torch_fused_fp32_eager", "torch_fused_fp32_graph", "torch_fused_fp32_onnxruntime",
             "torch_fused_bf16"] + (["torch_fused_fp32_compiled"] if compiled else [])
    results: dict = {}
    for b in batches:
        x = torch.randn(b, 3, image_size, image_size, generator=gen)
        x_nhwc = x.permute(0, 2, 3, 1).contiguous().numpy()
        fns = {}
        if tf_run is not None:
            fns["tf_frozen_graph"] = lambda: tf_run(x_nhwc)
        if ort_run is not None:
            fns["onnxruntime"] = lambda: ort_run(x_nhwc)
        if ort_export_run is not None:
            x_nchw = x.numpy()
            fns["onnxruntime_torch_export"] = lambda: ort_export_run(x_nchw)
        for name, m in variants.items():
            fns[name] = (lambda m=m: m(x))
        with torch.inference_mode():
            # first call = compile (graph) or ONNX graph + session (onnxruntime)
            for name in ("torch_fused_fp32_graph", "torch_fused_fp32_onnxruntime", "torch_fuse_default"):
                if name in fns:
                    t0 = time.perf_counter()
                    fns[name]()
                    out.setdefault("first_call_s", {}).setdefault(name, {})[str(b)] = round(
                        time.perf_counter() - t0, 1)
        if compiled is not None:
            with torch.inference_mode():
                t0 = time.perf_counter()
                compiled(x)
                out.setdefault("compile_s", {})[str(b)] = round(time.perf_counter() - t0, 1)
            fns["torch_fused_fp32_compiled"] = lambda: compiled(x)
        with torch.inference_mode():
            timing = time_interleaved(fns, rounds=rounds, round_s=round_s)
        # headline: the median of the rounds no other process disturbed, when every variant had one
        clean = all(t["clean_median_s"] is not None for t in timing.values())
        pick = {k: (t["clean_median_s"] if clean else t["median_s"]) for k, t in timing.items()}
        base, ort_base = pick.get("tf_frozen_graph"), pick.get("onnxruntime")
        rows = {}
        for name in order:
            if name in na:
                rows[name] = {"na": na[name]}
                continue
            t = timing[name]
            ips = b / pick[name]
            rows[name] = {"images_per_s": round(ips, 2), "headline": "clean rounds" if clean else "all rounds",
                          "median_all_images_per_s": round(b / t["median_s"], 2),
                          "best_images_per_s": round(b / t["best_s"], 2),
                          "clean_rounds": t["clean_rounds"], "rounds": t["rounds"],
                          "foreign_cores_median": t["foreign_cores_median"],
                          "gflop_per_s": round(ips * gflop, 1),
                          "of_conv_peak": round(ips * gflop / out["conv_peak_gflop_per_s"], 3),
                          "vs_tf": round(base / pick[name], 3) if base else None,
                          "vs_onnxruntime": round(ort_base / pick[name], 3) if ort_base else None,
                          "vs_torch_plain": round(pick["torch_plain"] / pick[name], 3),
                          "round_s_per_call": t["round_s_per_call"],
                          "round_foreign_cores": t["round_foreign_cores"]}
            if name == "torch_fuse_default":
                rows[name]["engine"] = fused.decision_for(b).engine
        results[str(b)] = rows
    out["results"] = results
    out["load_avg_after"] = _load()
    out["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["inference"] = out
    if verbose:
        print(format_table(out))
    return out


def _ratio(v) -> str:
    return f"{v:5.2f}" if v is not None else "    -"


def format_table(out: dict) -> str:
    res = out["results"]
    names = list(next(iter(res.values())).keys())
    bs = list(res.keys())
    head = (f"{'variant':28s}" + "".join(f" | b={b:<3s} img/s  x TF x ORT x plain" for b in bs)
            + f" | GFLOP/s b={bs[-1]} (of peak)")
    lines = [head, "-" * len(head)]
    for n in names:
        if "na" in res[bs[0]][n]:
            lines.append(f"{n:28s} | n/a ({res[bs[0]][n]['na']})")
            continue
        cells = []
        for b in bs:
            r = res[b][n]
            cells.append(f" | {r['images_per_s']:11.1f} {_ratio(r['vs_tf'])} {_ratio(r['vs_onnxruntime'])} "
                         f"{r['vs_torch_plain']:7.2f}")
        last = res[bs[-1]][n]
        lines.append(f"{n:28s}" + "".join(cells) + f" | {last['gflop_per_s']:10.1f} ({last['of_conv_peak']:.0%})")
    m = out["machine"]
    lines.append("")
    lines.append(f"CPU: {m['cpu']}, {m['logical_cpus']} logical CPUs; class {m['isa_class']}, flags "
                 f"{' '.join(m['flags']) or '-'}; {m['capabilities']}")
    lines.append(f"torch {m['torch']} ({m['torch_threads']} threads, ATen {m['cpu_capability']}); "
                 f"{out['gflop_per_image']} GFLOP/image; conv peak {out['conv_peak_gflop_per_s']} GFLOP/s "
                 f"(one large 3x3 conv on the same threads: the ceiling for every row)")
    if m.get("isa_restriction"):
        lines.append(f"note: {m['isa_restriction']} holds torch's and TF's oneDNN kernels (and the conv peak) to that "
                     f"ISA; onnxruntime's kernels choose theirs from the CPU, so its rows are not figures for that "
                     f"class and can pass 100% of the peak")
    for b, d in out.get("engine_decisions", {}).items():
        lines.append(f"fuse() default at batch {b}: {d['engine']} ({d['reason']})")
    for b in bs:
        timed = [r for r in res[b].values() if "na" not in r]
        r0 = timed[0]
        loads = ", ".join(f"{n} {r['foreign_cores_median']}" for n, r in res[b].items() if "na" not in r)
        lines.append(f"b={b}: {r0['headline']} (median; clean = other processes < 0.15 cores busy), "
                     f"clean rounds {[r['clean_rounds'] for r in timed]} of {r0['rounds']}; "
                     f"median cores busy elsewhere: {loads}")
    lines.append(f"load average before {out['load_avg_before']}, after {out['load_avg_after']}; "
                 f"{out['rounds']} interleaved rounds of ~{out['round_s']} s per variant")
    lines.append("parity: " + ", ".join(f"{k} {v:.7g}" if "cos" in k else f"{k} {v:.3g}" for k, v in out["parity"].items()))
    if out.get("first_call_s"):
        lines.append(f"first call (oneDNN Graph compiles there, onnxruntime makes its session; s, per batch size): "
                     f"{out['first_call_s']}")
    if out.get("compile_s"):
        lines.append(f"torch.compile time (s, per batch size): {out['compile_s']}")
    for w in out.get("bf16_warnings", []):
        lines.append(f"note: {w}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tf-pb", help="Sandberg-format frozen graph (.pb): adds TF and onnxruntime columns")
    p.add_argument("--pt-weights", help="the converted weights of that graph (.pt/.safetensors)")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--round-seconds", type=float, default=1.0)
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="add torch.compile(fused fp32) (slow to compile)")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    report: dict = {}
    run(report, a.tf_pb, pt_weights=a.pt_weights, batches=tuple(int(b) for b in a.batches.split(",")),
        rounds=a.rounds, round_s=a.round_seconds, image_size=a.image_size, compile_variant=a.compile)
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
