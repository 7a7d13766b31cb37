"""fuse(): the inference fast path agrees with the plain model and leaves it untouched."""
from __future__ import annotations

import copy
import io
import pickle
import warnings

import pytest
import torch
from torch.nn import functional as F

from models import InceptionResNetV1
from models import fused as fused_mod
from models.fused import FusedInceptionResNetV1, fuse_inception

FP32_TOL = 1e-5
BF16_MIN_COS = 0.9999


def _random_model(embedding_size: int, num_classes: int | None, seed: int) -> InceptionResNetV1:
    """Seeded random weights that keep activations alive: He-scaled convs, BatchNorm statistics
    calibrated on random images (so embeddings really depend on the input), then every BN's
    mean/variance/beta/gamma perturbed away from the calibrated values and from 0/1, so that
    folding is really exercised (TF-slim BN has gamma=1; fold it generally anyway)."""
    torch.manual_seed(seed)
    model = InceptionResNetV1(embedding_size=embedding_size, num_classes=num_classes)
    g = torch.Generator().manual_seed(seed + 1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Conv2d):
                fan_in = mod.weight[0].numel()
                mod.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=g)
                if mod.bias is not None:
                    mod.bias.normal_(0.0, 0.05, generator=g)
        for bn in bns:
            bn.momentum = 1.0  # one training-mode pass sets the running stats to the batch stats
        model.train()
        model(torch.randn(6, 3, 160, 160, generator=g))
        model.eval()
        for bn in bns:
            n = bn.num_features
            std = bn.running_var.sqrt()
            bn.running_mean.add_(0.2 * std * torch.randn(n, generator=g))
            bn.running_var.mul_(torch.rand(n, generator=g) * 0.8 + 0.6)
            bn.bias.copy_(torch.randn(n, generator=g) * 0.2)
            bn.weight.copy_(torch.rand(n, generator=g) * 0.8 + 0.6)
            bn.momentum = 0.005
    return model


@pytest.fixture(scope="module")
def model512():
    return _random_model(512, None, seed=0)


@pytest.fixture(scope="module")
def model128():
    return _random_model(128, 7, seed=1)


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 160, 160, generator=torch.Generator().manual_seed(42))


def _snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()}, model.training, model.classify,
            {k: v.requires_grad for k, v in model.named_parameters()})


def _assert_unchanged(model, snap):
    state, training, classify, rg = snap
    now = model.state_dict()
    assert now.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(now[k], v), k
    assert model.training == training and model.classify == classify
    assert {k: v.requires_grad for k, v in model.named_parameters()} == rg


@pytest.mark.parametrize("impl", ["auto", "aten"])
@pytest.mark.parametrize("which", ["model512", "model128"])
def test_fp32_parity_and_original_untouched(request, which, impl, images):
    model = request.getfixturevalue(which)
    snap = _snapshot(model)
    fused = model.fuse(torch.float32) if impl == "auto" else fuse_inception(model, impl=impl)
    _assert_unchanged(model, snap)
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
    _assert_unchanged(model, snap)


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
    snap = _snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # emulated bf16 on CPUs without AMX
        fused = model.fuse(torch.bfloat16)
    _assert_unchanged(model, snap)
    assert fused.dtype == torch.bfloat16
    assert fused.stem[0].weight.dtype == torch.bfloat16 and fused.conv_in.weight.dtype == torch.float32
    with torch.no_grad():
        ref = model(images)
        out = fused(images)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert F.cosine_similarity(out, ref).min().item() >= BF16_MIN_COS


def test_unsupported_dtype_raises(model512, monkeypatch):
    with pytest.raises(TypeError, match="float32"):
        model512.fuse(torch.float64)
    monkeypatch.setattr(fused_mod, "_onednn_dtype_ok", lambda dtype: False)
    with pytest.raises(RuntimeError, match="not supported on this CPU"):
        model512.fuse(torch.bfloat16)
    with pytest.raises(ValueError, match="impl"):
        fuse_inception(model512, impl="nope")


def test_emulated_bf16_warns(model512, monkeypatch):
    monkeypatch.setattr(fused_mod, "native_cpu_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="emulates bfloat16"):
        model512.fuse(torch.bfloat16)


def test_pickle_deepcopy_and_state(model512, images):
    fused = model512.fuse()
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
    again = model512.fuse().state_dict()
    assert again.keys() == fused.state_dict().keys()
    assert all(torch.equal(again[k], v) for k, v in fused.state_dict().items())
    assert not any(p.requires_grad for p in fused.parameters())


def test_inference_only(model512):
    fused = model512.fuse()
    with pytest.raises(RuntimeError, match="inference-only"):
        fused.train()
    fused.eval()  # fine
