"""The builders (models/hub/builder.py, re-exported at the package root): a model with its weights
from a registry name or a file, strict checked loading, conflicting arguments refused, and no I/O
when a bare model is constructed. Weights: the CI fixture (a real Sandberg-format checkpoint built
by our TF builder) converted by our converter, once per session (tests/conftest.py)."""
from __future__ import annotations

import pytest
import torch

import facenet_tf2pt
from facenet_tf2pt import (InceptionResNetV1, ModelLoadError, get_model, inception_resnet_v1, list_models,
                           load_weights, model_info)


@pytest.fixture(scope="module")
def home(converted512, tmp_path_factory):
    """$FACENET_HOME holding the session's conversion under the registry's file name for ci-fixture."""
    folder = tmp_path_factory.mktemp("home")
    (folder / model_info("ci-fixture").weight("model").file).symlink_to(converted512.output)
    return folder


@pytest.fixture(scope="module")
def batch():
    return torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(3))


def test_constructing_a_model_does_no_io(monkeypatch):
    """A bare InceptionResNetV1 touches neither the registry nor any file."""
    import builtins

    from facenet_tf2pt.models.hub import registry

    def refuse(*a, **k):
        raise AssertionError("I/O during construction")

    monkeypatch.setattr(registry, "default_registry", refuse)
    monkeypatch.setattr(builtins, "open", refuse)
    model = InceptionResNetV1(num_classes=5)
    assert model.embedding_size == 512 and model.num_classes == 5 and not model.training


def test_registry_name_and_file_give_the_same_model(home, converted512, batch, monkeypatch):
    monkeypatch.setenv("FACENET_HOME", str(home))
    by_id = get_model("inception_resnet_v1.ci-fixture")
    by_alias = inception_resnet_v1(weights="ci-fixture")
    by_file = inception_resnet_v1(weights=converted512.output)
    shorthand = InceptionResNetV1(pretrained="ci-fixture")
    into = load_weights(InceptionResNetV1(num_classes=by_file.num_classes), converted512.output)
    with torch.no_grad():
        ref = by_file(batch)
        for m in (by_id, by_alias, shorthand, into):
            assert not m.training and m.num_classes == by_file.num_classes
            torch.testing.assert_close(m(batch), ref, rtol=0, atol=0)
    # and they are the fixture's weights, not a random init
    assert not torch.equal(InceptionResNetV1(num_classes=by_file.num_classes)(batch), ref)


def test_conflicting_arguments_are_refused(converted512):
    with pytest.raises(ValueError, match="num_classes"):
        inception_resnet_v1(weights=converted512.output, num_classes=3)
    with pytest.raises(ValueError, match="embedding_size|512"):
        inception_resnet_v1(weights=converted512.output, embedding_size=128)
    with pytest.raises(ModelLoadError, match="num_classes"):
        load_weights(InceptionResNetV1(num_classes=4), converted512.output)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="vggface2"):
        get_model("no-such-model")
    ids = list_models()
    assert "inception_resnet_v1.vggface2" in ids and "mtcnn.sandberg" in ids
    assert list_models("mtcnn") == ["mtcnn.sandberg"]
    assert model_info("vggface2").lfw_accuracy == 0.9965


def test_get_model_builds_mtcnn_from_the_committed_weights(astronaut):
    mtcnn = get_model("mtcnn", keep_all=True)
    boxes, probs = mtcnn.detect(astronaut)
    assert boxes is not None and len(boxes) >= 1 and probs.max() > 0.99


def test_root_exports_are_the_implementations():
    from facenet_tf2pt.models.detection.mtcnn import MTCNN
    from facenet_tf2pt.models.hub import builder
    from facenet_tf2pt.models.nets.inception_resnet_v1 import InceptionResNetV1 as Net

    assert facenet_tf2pt.InceptionResNetV1 is Net and facenet_tf2pt.MTCNN is MTCNN
    assert facenet_tf2pt.get_model is builder.get_model
    with pytest.raises(AttributeError):
        facenet_tf2pt.no_such_name
