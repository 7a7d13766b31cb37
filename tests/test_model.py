"""InceptionResNetV1: facenet-pytorch-compatible keys, shapes, normalization, classify."""
import pytest
import torch

from facenet_tf2pt.models import InceptionResNetV1, InceptionResnetV1
from facenet_tf2pt.models.nets.inception_resnet_v1 import l2_normalize

# facenet-pytorch 2.6.0 attribute order (docs/reference.md, from its models/inception_resnet_v1.py)
FACENET_PYTORCH_MODULES = ["conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a",
                           "conv2d_4b", "repeat_1", "mixed_6a", "repeat_2", "mixed_7a", "repeat_3",
                           "block8", "avgpool_1a", "dropout", "last_linear", "last_bn", "logits"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return InceptionResNetV1(num_classes=10).eval()


def test_module_names_and_order_match_facenet_pytorch(model):
    assert [n for n, _ in model.named_children()] == FACENET_PYTORCH_MODULES
    assert InceptionResnetV1 is InceptionResNetV1
    sd = model.state_dict()
    assert "conv2d_1a.bn.num_batches_tracked" in sd
    assert "repeat_1.4.branch2.2.conv.weight" in sd and "repeat_1.5.conv2d.weight" not in sd
    assert "repeat_2.9.branch1.2.conv.weight" in sd and sd["repeat_2.9.branch1.1.conv.weight"].shape == (128, 128, 1, 7)
    assert "repeat_3.4.conv2d.bias" in sd and "block8.conv2d.bias" in sd
    assert "last_linear.bias" not in sd and sd["last_bn.running_var"].shape == (512,)


def test_parameter_count_matches_facenet_pytorch():
    # facenet-pytorch's InceptionResnetV1 (512-d, no logits) has 23,482,624 parameters
    m = InceptionResNetV1()
    assert sum(p.numel() for p in m.parameters()) == 23_482_624


def _tf_batch_norm(x, bn, eps):
    """tf.nn.batch_normalization at inference, written out: (x - mean) / sqrt(var + eps) * gamma + beta."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return ((x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + eps)
            * bn.weight.view(shape) + bn.bias.view(shape))


def _small_variance_stats(bn, seed):
    """Running variances near slim's epsilon, where 1e-3 and torch's default 1e-5 differ visibly."""
    g = torch.Generator().manual_seed(seed)
    n = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
        bn.running_var.copy_(torch.rand(n, generator=g) * 2e-3 + 1e-4)
        bn.weight.copy_(torch.rand(n, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.mark.parametrize("bn_eps", [None, 1e-5])
def test_batchnorm_epsilon_behaves_like_slim(bn_eps):
    """The default model normalizes with slim's epsilon 1e-3 (Sandberg's arg scope; docs/reference.md),
    and a given bn_eps is the one used: outputs match the formula with that epsilon, not the other."""
    kwargs = {} if bn_eps is None else {"bn_eps": bn_eps}
    want, other = (1e-3, 1e-5) if bn_eps is None else (1e-5, 1e-3)
    m = InceptionResNetV1(**kwargs).eval()
    for bn, x in ((m.repeat_2[3].branch0.bn, torch.randn(2, 128, 5, 5)), (m.last_bn, torch.randn(4, 512))):
        _small_variance_stats(bn, seed=x.dim())
        with torch.no_grad():
            y = bn(x)
        torch.testing.assert_close(y, _tf_batch_norm(x, bn, want), rtol=1e-5, atol=1e-5)
        assert (y - _tf_batch_norm(x, bn, other)).abs().max() > 1e-2


@pytest.mark.parametrize("bn_momentum", [None, 0.1])
def test_batchnorm_momentum_is_one_minus_slim_decay(bn_momentum):
    """Training updates running stats as slim does with decay 0.995: new = old + (1 - decay) * (batch - old)."""
    kwargs = {} if bn_momentum is None else {"bn_momentum": bn_momentum}
    rate = 1 - 0.995 if bn_momentum is None else bn_momentum
    bn = InceptionResNetV1(**kwargs).conv2d_1a.bn.train()
    x = torch.randn(3, bn.num_features, 4, 4) * 2 + 1
    old = bn.running_mean.clone()
    with torch.no_grad():
        bn(x)
    torch.testing.assert_close(bn.running_mean, old + rate * (x.mean(dim=(0, 2, 3)) - old))


@pytest.mark.parametrize("size", [75, 160, 199])
def test_embeddings_are_unit_norm_for_sizes(model, size):
    with torch.no_grad():
        e = model(torch.randn(2, 3, size, size))
    assert e.shape == (2, 512)
    assert torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)


def test_classify_is_settable_and_returns_logits(model):
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        model.classify = True
        logits = model(x)
        model.classify = False
        emb = model(x)
    assert logits.shape == (2, 10)
    # logits are computed from the un-normalized prelogits, as in Sandberg's graph
    with torch.no_grad():
        pre = model.prelogits(x)
        assert torch.allclose(logits, model.logits(pre), atol=1e-5)
        assert torch.allclose(emb, l2_normalize(pre), atol=1e-6)


def test_classify_without_classes_is_an_error():
    with pytest.raises(ValueError, match="num_classes"):
        InceptionResNetV1(classify=True)


def test_l2_normalize_uses_tf_epsilon():
    # tf.nn.l2_normalize: x * rsqrt(max(sum(x^2), 1e-10)); a zero vector stays zero
    z = torch.zeros(1, 4)
    assert torch.equal(l2_normalize(z), z)
    tiny = torch.full((1, 4), 1e-6)  # sum of squares 4e-12 < 1e-10 -> scaled by 1e5, not normalized
    assert torch.allclose(l2_normalize(tiny), tiny * 1e5)


def test_end_points_in_graph_order(model):
    out = model.forward_end_points(torch.randn(1, 3, 160, 160))
    from facenet_tf2pt.models import END_POINTS
    assert list(out) == list(END_POINTS)
    assert out["Mixed_8b"].shape == (1, 1792, 3, 3) and out["Mixed_6a"].shape == (1, 896, 8, 8)
