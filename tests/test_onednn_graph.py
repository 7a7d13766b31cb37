"""fuse(impl="graph"): oneDNN Graph partitions compiled per input shape agree with the plain model,
leave TorchScript's process-wide fusion flag as they found it, and cache a bounded set of shapes."""
from __future__ import annotations

import copy
import pickle

import pytest
import torch

from facenet_tf2pt.models.engines.onednn_graph import GraphInceptionResNetV1
from tests.helpers import FP32_TOL, assert_model_unchanged, model_snapshot, random_model


@pytest.fixture(scope="module")
def model128c():
    return random_model(128, 7, seed=3)


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 160, 160, generator=torch.Generator().manual_seed(5))


def test_graph_parity_shapes_and_flag(model128c, images):
    snap = model_snapshot(model128c)
    graph = model128c.fuse(impl="graph")
    graph.max_shapes = 2
    assert isinstance(graph, GraphInceptionResNetV1) and graph.compiled_shapes == []
    assert not torch.jit.onednn_fusion_enabled()
    small = images[:1, :, :112, :96]
    with torch.no_grad():
        ref, ref1, ref_small = model128c(images), model128c(images[:1]), model128c(small)
        for _ in range(2):  # the second round runs the cached graphs
            assert (graph(images) - ref).abs().max().item() <= FP32_TOL
            assert (graph(images[:1]) - ref1).abs().max().item() <= FP32_TOL
        assert graph.compiled_shapes == [(3, 3, 160, 160), (1, 3, 160, 160)]
        assert (graph(small) - ref_small).abs().max().item() <= FP32_TOL
    assert graph.compiled_shapes == [(1, 3, 160, 160), (1, 3, 112, 96)]  # least recently used dropped
    assert not torch.jit.onednn_fusion_enabled()   # switched on only while compiling
    assert_model_unchanged(model128c, snap)
    # copies drop the compiled graphs (a cache) and compile again where they run
    for other in (copy.deepcopy(graph), pickle.loads(pickle.dumps(graph))):
        assert other.compiled_shapes == []
        with torch.no_grad():
            assert (other(images[:1]) - ref1).abs().max().item() <= FP32_TOL


def test_graph_classify_and_errors(model128c, images):
    model = copy.deepcopy(model128c)
    model.classify = True
    graph = model.fuse(impl="graph")
    with torch.no_grad():
        ref = model(images[:2])
        out = graph(images[:2])
        assert out.shape == (2, 7)
        assert (out - ref).abs().max().item() <= FP32_TOL * max(1.0, ref.abs().max().item())
        graph.classify = False                       # switchable, like the plain model
        model.classify = False
        assert (graph(images[:2]) - model(images[:2])).abs().max().item() <= FP32_TOL
    with pytest.raises(ValueError, match="float32"):
        model.fuse(torch.bfloat16, impl="graph")
    with pytest.raises(ValueError, match="workers"):
        model.fuse(impl="graph", workers=1)
    with pytest.raises(ValueError, match="batch"):
        graph(images[0])
    with pytest.raises(RuntimeError, match="inference-only"):
        graph.train()
