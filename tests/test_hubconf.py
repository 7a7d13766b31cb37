"""hubconf.py: torch.hub.load(<checkout>, ..., source="local") builds the registry's models with the
builder's weights, offline, without writing into the checkout; also from a bare checkout (nothing
installed, PYTHONPATH unset), and this folder's code wins over a facenet_tf2pt from another tree."""
from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

import facenet_tf2pt
from facenet_tf2pt import MTCNN, inception_resnet_v1, model_info
from tests.fresh_env import fresh_venv, run, user_env
from tests.helpers import REPO

ENTRY_POINTS = ["inception_resnet_v1", "mtcnn"]


def _git_status() -> str:
    return run(["git", "status", "--porcelain", "--untracked-files=all", "--ignored=no"], cwd=REPO).stdout


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """The hub cache in tmp_path, no network (any connection attempt fails the test), and the
    checkout's git status compared before and after."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"torch.hub.load(source='local') tried to connect: {args}")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("FACENET_HOME", raising=False)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    before = _git_status()
    yield tmp_path
    assert _git_status() == before


def _batch(seed=0, n=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 160, 160, generator=g) * 2 - 1


def _embed(model):
    with torch.no_grad():
        return model(_batch())


def test_hub_inception_from_a_file_is_the_builders_model(converted512, offline_hub):
    hub_model = torch.hub.load(str(REPO), "inception_resnet_v1", weights=str(converted512.output), source="local")
    ref = inception_resnet_v1(weights=converted512.output)
    assert isinstance(hub_model, facenet_tf2pt.InceptionResNetV1) and not hub_model.training
    assert hub_model.num_classes == 17 and hub_model.embedding_size == 512
    assert torch.equal(_embed(hub_model), _embed(ref))
    # Not the random initialisation: the file's weights.
    assert not torch.equal(_embed(hub_model), _embed(torch.hub.load(str(REPO), "inception_resnet_v1",
                                                                    source="local")))


def test_hub_inception_from_a_registry_name(converted512, offline_hub, monkeypatch):
    """weights="ci-fixture" finds the registered file in $FACENET_HOME (sha256 checked against the
    registry: the fixture is the registry's CI fixture, byte for byte)."""
    home = offline_hub / "home"
    home.mkdir()
    shutil.copy(converted512.output, home / model_info("ci-fixture").weights[0].file)
    monkeypatch.setenv("FACENET_HOME", str(home))
    hub_model = torch.hub.load(str(REPO), "inception_resnet_v1", weights="ci-fixture", source="local")
    assert torch.equal(_embed(hub_model), _embed(inception_resnet_v1(weights=converted512.output)))


def test_hub_mtcnn_detects_the_astronaut(astronaut, offline_hub):
    hub_mtcnn = torch.hub.load(str(REPO), "mtcnn", source="local", image_size=160, margin=14)
    boxes, probs = hub_mtcnn.detect(astronaut)
    assert len(boxes) == 1 and probs[0] > 0.99
    x1, y1, x2, y2 = boxes[0]
    assert 150 < (x1 + x2) / 2 < 300 and 50 < (y1 + y2) / 2 < 200    # her face, upper middle of the photo
    ref_boxes, ref_probs = MTCNN(image_size=160, margin=14).detect(astronaut)
    np.testing.assert_array_equal(boxes, ref_boxes)
    np.testing.assert_array_equal(probs, ref_probs)
    assert hub_mtcnn(astronaut).shape == (3, 160, 160)


def test_hub_list_and_help(offline_hub, monkeypatch):
    """torch.hub.list / help only take GitHub repositories: pointed at the checkout instead of a
    download, they run their own listing over our hubconf."""
    monkeypatch.setattr(torch.hub, "_get_cache_or_reload", lambda *args, **kwargs: str(REPO))
    assert torch.hub.list("owner/facenet-tf2pt") == ENTRY_POINTS
    for name in ENTRY_POINTS:
        assert "kwargs" in torch.hub.help("owner/facenet-tf2pt", name)


def _load_hubconf():
    spec = importlib.util.spec_from_file_location("hubconf_under_test", REPO / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_already_imported_other_tree_is_kept_with_a_warning(tmp_path, monkeypatch):
    other = types.ModuleType("facenet_tf2pt")
    other.__file__ = str(tmp_path / "site-packages" / "facenet_tf2pt" / "__init__.py")
    monkeypatch.setitem(sys.modules, "facenet_tf2pt", other)
    with pytest.warns(RuntimeWarning, match="already imported from .*site-packages.*using it, not"):
        assert _load_hubconf()._package() is other


# --- a bare checkout: facenet_tf2pt not installed, PYTHONPATH unset -------------------------------

BARE_SCRIPT = r"""
import json, socket, sys, warnings
import numpy as np
import torch

def refuse(*args, **kwargs):
    raise AssertionError("torch.hub.load(source='local') tried to connect")
socket.socket.connect = refuse
socket.create_connection = refuse
warnings.simplefilter("error")                 # the hubconf's "other tree" warning must not occur

repo, weights, out, detect = sys.argv[1:5]
model = torch.hub.load(repo, "inception_resnet_v1", weights=weights, source="local")
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    np.save(out, model(torch.rand(3, 3, 160, 160, generator=g) * 2 - 1).numpy())
probs = []
if detect == "detect":
    from skimage.data import astronaut
    boxes, probs = torch.hub.load(repo, "mtcnn", source="local").detect(astronaut())
import facenet_tf2pt
print(json.dumps({"package": facenet_tf2pt.__file__, "probs": [float(p) for p in probs],
                  "same_class": type(model) is facenet_tf2pt.InceptionResNetV1}))
"""


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory):
    """A fresh venv that sees the dependencies (torch, numpy, scikit-image) but no facenet_tf2pt."""
    return fresh_venv(tmp_path_factory.mktemp("bare") / "venv")


@pytest.mark.parametrize("other_tree", [False, True], ids=["not-installed", "other-tree-on-path"])
def test_hub_from_a_bare_checkout(bare_venv, converted512, tmp_path, other_tree):
    """torch.hub loads the checkout as facenet_tf2pt when the name does not resolve (or resolves to
    another tree: a package on PYTHONPATH that fails if imported), with the builder's embeddings."""
    env = user_env(TORCH_HOME=str(tmp_path / "torch"), PYTHONDONTWRITEBYTECODE="1")
    if other_tree:
        decoy = tmp_path / "elsewhere" / "facenet_tf2pt"
        decoy.mkdir(parents=True)
        (decoy / "__init__.py").write_text("raise ImportError('another tree of facenet_tf2pt was imported')\n")
        env["PYTHONPATH"] = str(decoy.parent)
    else:
        probe = subprocess.run([bare_venv, "-c", "import facenet_tf2pt"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=120)
        assert probe.returncode != 0 and "No module named 'facenet_tf2pt'" in probe.stderr
    (tmp_path / "bare.py").write_text(BARE_SCRIPT)
    before = _git_status()
    detect = "skip" if other_tree else "detect"      # MTCNN once is enough
    r = run([bare_venv, "bare.py", REPO, converted512.output, tmp_path / "emb.npy", detect], cwd=tmp_path, env=env)
    assert _git_status() == before
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["package"] == str(REPO / "__init__.py") and got["same_class"]
    if not other_tree:
        assert len(got["probs"]) == 1 and got["probs"][0] > 0.99
    ref = _embed(inception_resnet_v1(weights=converted512.output)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "emb.npy"), ref, rtol=0, atol=1e-6)
