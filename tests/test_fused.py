"""fuse(): the inference fast path agrees with the plain model and leaves it untouched."""
from __future__ import annotations

import copy
import io
import pickle
import warnings

import pytest
import torch
from torch.nn import functional as F

from facenet_tf2pt.models.engines import cpu_caps
from facenet_tf2pt.models.engines.engine_rules import GRAPH_MAX_BATCH, ORT_CLASSES, choose_engine
from facenet_tf2pt.models.engines.fused import FusedInceptionResNetV1, fuse_inception
from tests.helpers import FP32_TOL, assert_model_unchanged, model_snapshot, random_model

BF16_MIN_COS = 0.9999


@pytest.fixture(scope="module")
def model512():
    return random_model(512, None, seed=0)


@pytest.fixture(scope="module")
def model128():
    return random_model(128, 7, seed=1)


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 160, 160, generator=torch.Generator().manual_seed(42))


def _need_onednn(impl):
    if impl == "onednn" and not cpu_caps.detect().onednn:
        pytest.skip(f"this PyTorch has no oneDNN conv ops ({cpu_caps.detect().describe()})")
    if impl == "onnxruntime" and not cpu_caps.detect().onnxruntime:
        pytest.skip("onnx/onnxruntime not installed (the onnxruntime extra)")


@pytest.mark.parametrize("impl", ["auto", "onednn", "aten", "onnxruntime"])
@pytest.mark.parametrize("which", ["model512", "model128"])
def test_fp32_parity_and_original_untouched(request, which, impl, images):
    _need_onednn(impl)
    model = request.getfixturevalue(which)
    snap = model_snapshot(model)
    fused = model.fuse(torch.float32) if impl == "auto" else fuse_inception(model, impl=impl)
    assert_model_unchanged(model, snap)
    assert isinstance(fused, FusedInceptionResNetV1) and not fused.training
    assert not any(isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d) for m in fused.modules())
    with torch.no_grad():
        ref = model(images)
        out = fused(images)
    assert out.dtype == torch.float32 and out.shape == ref.shape == (3, model.embedding_size)
    assert (out - ref).abs().max().item() <= FP32_TOL
    # a second call (cached prepacked weights), batch 1 (its 3x3 Block8 maps take ATen's conv path)
    # and another image size agree too
    with torch.no_grad():
        assert (fused(images) - ref).abs().max().item() <= FP32_TOL
        assert (fused(images[1:2]) - ref[1:2]).abs().max().item() <= FP32_TOL
        small = images[:1, :, :112, :96]
        assert (fused(small) - model(small)).abs().max().item() <= FP32_TOL
    assert_model_unchanged(model, snap)


def test_fp32_folding_really_exercised(model512, images):
    """The random model's embeddings depend on the input, folded convs differ from the raw ones,
    and a BN statistic that's off changes the output far beyond the tolerance."""
    with torch.no_grad():
        emb = model512(images)
    assert (emb[0] - emb[1]).abs().max().item() > 1000 * FP32_TOL  # images are told apart
    assert 1 - (emb[0] @ emb[1]).item() > 100 * (1 - BF16_MIN_COS)
    fused = model512.fuse()
    first = fused.conv_in
    assert not torch.allclose(first.weight.float(), model512.conv2d_1a.conv.weight)
    broken = copy.deepcopy(model512)
    broken.conv2d_2a.bn.running_mean.zero_()
    with torch.no_grad():
        assert (broken(images) - fused(images)).abs().max().item() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_batch_split_over_workers(model128, dtype):
    """A batch of 16 with workers=2 runs as two chunks of 8 on two single-threaded worker threads
    (the default for big batches on multi-core CPUs); same result, caller's thread count intact."""
    x = torch.randn(16, 3, 160, 160, generator=torch.Generator().manual_seed(5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fused = fuse_inception(model128, dtype, workers=2)
        one = fuse_inception(model128, dtype, workers=1)
    assert fused._num_workers(x) == 2 and one._num_workers(x) == 1
    threads = torch.get_num_threads()
    with torch.no_grad():
        out, out1 = fused(x), one(x)
        ref = model128(x)
    assert torch.get_num_threads() == threads
    if dtype == torch.float32:
        assert (out - ref).abs().max().item() <= FP32_TOL
    assert F.cosine_similarity(out, ref).min().item() >= BF16_MIN_COS
    assert (out - out1).abs().max().item() <= (FP32_TOL if dtype == torch.float32 else 1e-2)
    assert pickle.loads(pickle.dumps(fused)).workers == 2


def test_classify_logits(model128, images):
    model = copy.deepcopy(model128)
    model.classify = True
    fused = model.fuse()
    assert fused.classify
    with torch.no_grad():
        ref = model(images)
        out = fused(images)
    assert out.shape == (3, 7)
    assert (out - ref).abs().max().item() <= FP32_TOL * max(1.0, ref.abs().max().item())
    # classify is switchable on the fused copy, as on the plain model
    fused.classify = False
    model.classify = False
    with torch.no_grad():
        assert (fused(images) - model(images)).abs().max().item() <= FP32_TOL


def test_classify_without_logits_raises(model512, images):
    fused = model512.fuse()
    fused.classify = True
    with pytest.raises(RuntimeError, match="no logits"):
        fused(images[:1])


@pytest.mark.parametrize("which", ["model512", "model128"])
def test_bf16_parity(request, which, images):
    model = request.getfixturevalue(which)
    snap = model_snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # emulated bf16 on CPUs without AMX
        fused = model.fuse(torch.bfloat16)
    assert_model_unchanged(model, snap)
    assert fused.dtype == torch.bfloat16
    assert fused.stem[0].weight.dtype == torch.bfloat16 and fused.conv_in.weight.dtype == torch.float32
    with torch.no_grad():
        ref = model(images)
        out = fused(images)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert F.cosine_similarity(out, ref).min().item() >= BF16_MIN_COS


def test_unsupported_dtype_raises(model512):
    with pytest.raises(TypeError, match="float32"):
        model512.fuse(torch.float64)
    with pytest.raises(ValueError, match="impl"):
        fuse_inception(model512, impl="nope")
    # asked for oneDNN explicitly where oneDNN has no such convs: a clear error, no fallback
    with cpu_caps.override(bf16="none", fp16="none"):
        for dtype in (torch.bfloat16, torch.float16):
            with pytest.raises(RuntimeError, match="impl='onednn' needs .*(bfloat16|float16).*impl='auto'"):
                model512.fuse(dtype, impl="onednn")


def test_emulated_bf16_warns(model512):
    if cpu_caps.detect().bf16 == "none":
        pytest.skip(f"oneDNN can't run bfloat16 convs here at all ({cpu_caps.detect().describe()})")
    with cpu_caps.override(bf16="emulated"):
        with pytest.warns(RuntimeWarning, match="emulates bfloat16"):
            fused = model512.fuse(torch.bfloat16)
    assert fused.impl == "onednn"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_no_native_low_precision_falls_back_with_warning(model128, images, dtype):
    """The branch an AVX2-only CPU takes (oneDNN has no bfloat16/float16 convs there), forced on
    every machine: fuse() warns that it is slower than float32 and runs ATen's convs, which exist
    on every CPU; the embeddings still match the float32 model."""
    name = str(dtype).replace("torch.", "")
    with cpu_caps.override(bf16="none", fp16="none"):
        with pytest.warns(RuntimeWarning, match=f"{name} on this CPU: oneDNN has no {name} convolutions.*slower "
                                                f"than float32"):
            fused = model128.fuse(dtype)
    assert fused.impl == "aten" and fused.dtype == dtype and fused.engine_decision.engine == "fused-aten"
    assert fused.small_batch_graph is None   # oneDNN Graph is float32 only
    with torch.no_grad():
        out, ref = fused(images[:2]), model128(images[:2])
    assert out.dtype == torch.float32
    assert F.cosine_similarity(out, ref).min().item() >= BF16_MIN_COS


def test_native_bf16_does_not_warn(model512):
    if cpu_caps.detect().bf16 != "native":
        pytest.skip(f"no native bfloat16 on this CPU ({cpu_caps.detect().describe()})")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fused = model512.fuse(torch.bfloat16)
    assert fused.impl == "onednn"


@pytest.mark.parametrize("isa", ["amx", "avx512", "avx2", "neon", "other"])
def test_auto_rules_per_cpu_class(isa):
    """impl='auto' without onnxruntime: oneDNN Graph for small float32 CPU batches on the measured x86
    classes, the eager fused model above; unmeasured classes get ATen's convs; never the graph off CPU
    or in bf16."""
    with cpu_caps.override(isa_class=isa, onednn=True, onednn_graph=isa in ("amx", "avx512", "avx2"),
                           onnxruntime=False) as caps:
        measured = isa in ("amx", "avx512", "avx2")
        small = choose_engine(caps, "cpu", torch.float32, 1)
        big = choose_engine(caps, "cpu", torch.float32, 64)
        assert small.engine == ("graph" if measured else "fused-aten")
        assert big.engine == ("fused-onednn" if measured else "fused-aten")
        if measured:
            assert choose_engine(caps, "cpu", torch.float32, GRAPH_MAX_BATCH[isa]).engine == "graph"
            assert choose_engine(caps, "cpu", torch.float32, GRAPH_MAX_BATCH[isa] + 1).engine == "fused-onednn"
        assert choose_engine(caps, "cpu", torch.bfloat16, 1).engine != "graph"
        assert choose_engine(caps, "cuda", torch.float32, 1).engine == "fused-aten"
        assert all(d.reason and d.isa_class == isa for d in (small, big))
    with cpu_caps.override(isa_class="avx2", onednn_graph=False, onnxruntime=False) as caps:
        assert choose_engine(caps, "cpu", torch.float32, 1).engine == "fused-onednn"


@pytest.mark.parametrize("isa", ["amx", "avx512", "avx2", "neon", "other"])
def test_auto_rules_with_onnxruntime(isa):
    """With onnxruntime installed: every float32 CPU batch goes to it on the classes where it was
    measured fastest (AVX-512, AMX), and nowhere else; never off CPU, in bf16, or when only the
    eager engines are asked for."""
    with cpu_caps.override(isa_class=isa, onednn=True, onednn_graph=isa != "neon", onnxruntime=True) as caps:
        chosen = {b: choose_engine(caps, "cpu", torch.float32, b).engine for b in (1, 8, 9, 64, None)}
        if isa in ("amx", "avx512"):
            assert set(chosen.values()) == {"onnxruntime"}
        else:
            assert "onnxruntime" not in chosen.values()
        assert choose_engine(caps, "cpu", torch.bfloat16, 1).engine != "onnxruntime"
        assert choose_engine(caps, "cuda", torch.float32, 1).engine == "fused-aten"
        assert choose_engine(caps, "cpu", torch.float32, 1, eager_only=True).engine.startswith("fused-")
    assert ORT_CLASSES == ("avx512", "amx")


def test_auto_small_batches_run_on_onednn_graph(model128, images):
    """fuse()'s default: a batch of 1 runs on oneDNN Graph, a big batch on the eager fused model;
    both equal the plain model, and each call records which engine ran; impl= overrides."""
    caps = cpu_caps.detect()
    if not (caps.onednn_graph and caps.isa_class in GRAPH_MAX_BATCH):
        pytest.skip(f"oneDNN Graph isn't chosen on this CPU ({caps.describe()})")
    with cpu_caps.override(onnxruntime=False):   # the rules where onnxruntime is not installed
        fused = model128.fuse()
    assert fused.decision_for(1).engine == "graph" and fused.decision_for(64).engine == "fused-onednn"
    x = torch.cat([images] * 4)[: GRAPH_MAX_BATCH[caps.isa_class] + 1]
    with torch.no_grad():
        assert (fused(images[:1]) - model128(images[:1])).abs().max().item() <= FP32_TOL
        assert fused.last_engine == "graph"
        assert (fused(x) - model128(x)).abs().max().item() <= FP32_TOL
        assert fused.last_engine == "fused-onednn"
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())  # the graph is no submodule
    clone = pickle.loads(pickle.dumps(fused))   # the graph's compiled shapes are a cache: dropped
    assert clone.small_batch_graph.compiled_shapes == [] and clone.graph_max_batch == fused.graph_max_batch
    forced = model128.fuse(impl="onednn")
    assert forced.small_batch_graph is None and forced.decision_for(1).engine == "fused-onednn"
    assert "impl='onednn' given" in forced.engine_decision.reason
    with cpu_caps.override(isa_class="neon", onednn_graph=False):
        arm = model128.fuse()
    assert arm.small_batch_graph is None and arm.impl == "aten"
    with torch.no_grad():
        assert (arm(images[:1]) - model128(images[:1])).abs().max().item() <= FP32_TOL


def test_auto_runs_onnxruntime_where_chosen(model128, images, monkeypatch):
    """Where the rules pick onnxruntime, fuse() runs every CPU batch on it: embeddings and logits
    equal the plain model's, the sessions are a cache (dropped by pickling, rebuilt), the options
    that only the eager module has (workers, merge_1x1) keep the eager engine, and impl='onnxruntime'
    refuses what it can't run, naming the missing package."""
    _need_onednn("onnxruntime")
    with cpu_caps.override(isa_class="avx512"):
        fused = model128.fuse()
        eager = model128.fuse(workers=1)
    assert fused.engine_decision.engine == "onnxruntime" and fused.decision_for(1).engine == "onnxruntime"
    assert eager.ort_sessions is None and eager.decision_for(1).engine.startswith("fused-")
    x = torch.cat([images] * 3)
    with torch.no_grad():
        for batch in (images[:1], x):
            assert (fused(batch) - model128(batch)).abs().max().item() <= FP32_TOL
            assert fused.last_engine == "onnxruntime"
        classify = copy.deepcopy(model128)
        classify.classify = True
        logits = classify.fuse(impl="onnxruntime")
        ref = classify(x)
        assert (logits(x) - ref).abs().max().item() <= FP32_TOL * ref.abs().max().item()
        clone = pickle.loads(pickle.dumps(fused))
        assert clone.ort_sessions._sessions == {}
        assert torch.equal(clone(x), fused(x))
    with pytest.raises(ValueError, match="float32"):
        model128.fuse(torch.bfloat16, impl="onnxruntime")
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime"
                        else real_find_spec(name, *a))
    with pytest.raises(RuntimeError, match=r"needs onnxruntime: pip install"):
        model128.fuse(impl="onnxruntime")


def test_pickle_deepcopy_and_state(model512, images):
    fused = model512.fuse(impl="onednn" if cpu_caps.detect().onednn else "aten")  # eager: no compile per copy
    with torch.no_grad():
        ref = fused(images)  # populates the prepacked-weight cache, which must not be pickled
    clone = pickle.loads(pickle.dumps(fused))
    buf = io.BytesIO()
    torch.save(fused, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    with torch.no_grad():
        for other in (clone, copy.deepcopy(fused), loaded):
            assert torch.equal(other(images), ref)
    # the state is plain tensors: a fresh fuse of the same model has the same state_dict
    again = model512.fuse(impl=fused.impl).state_dict()
    assert again.keys() == fused.state_dict().keys()
    assert all(torch.equal(again[k], v) for k, v in fused.state_dict().items())
    assert not any(p.requires_grad for p in fused.parameters())


def test_inference_only(model512):
    fused = model512.fuse()
    with pytest.raises(RuntimeError, match="inference-only"):
        fused.train()
    fused.eval()  # fine
