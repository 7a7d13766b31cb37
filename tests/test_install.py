"""A regular (non-editable) install, as `pip install .` gives a user: the wheel holds one top-level
package, facenet_tf2pt, with its data (registry, committed MTCNN weights, py.typed) and nothing of
tests/, tools/, benchmarks/ or local weights; installed into a fresh venv, it runs from a folder
whose own models/, converter/ and checkpoints/ packages would break any generic top-level import."""
from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import pytest

from tests.fresh_env import build_wheel, checkout_copy, fresh_venv, pip_install, run, user_env, venv_site_packages

# Put into the copy before building, as a user's checkout may have them after `make checkpoints`:
# a converted Inception file (git-ignored) and a TF source folder. Neither may reach the wheel.
LOCAL_ONLY = ("checkpoints/fixture-512d-seed0-ci-fixture-5d69f52c.pt", "checkpoints/tf/20180402-114759/model.index")
NOT_SHIPPED = ("tests", "tools", "benchmarks", "docs")     # top-level folders of the repository, not the package


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    """(wheel path, the project's modules as paths in the package, seconds the build took)."""
    root = tmp_path_factory.mktemp("install")
    source = checkout_copy(root / "src")
    modules = {p.relative_to(source).as_posix() for p in source.rglob("*.py")
               if p.relative_to(source).parts[0] not in NOT_SHIPPED}
    for name in LOCAL_ONLY:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(b"local weights, not part of the package")
    start = time.perf_counter()
    path = build_wheel(source, root / "wheelhouse")
    return path, modules, time.perf_counter() - start


@pytest.fixture(scope="session")
def installed(wheel, tmp_path_factory):
    """The wheel installed into a fresh venv: (venv python, venv folder)."""
    venv = tmp_path_factory.mktemp("venv") / "user"
    python = fresh_venv(venv)
    pip_install(python, wheel[0])
    return python, venv


def _decoy_cwd(folder):
    """A project folder with its own models/, converter/ and checkpoints/ packages that fail to import."""
    for name in ("models", "converter", "checkpoints"):
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(f"raise ImportError('the user project\\'s own {name}/ was imported')\n")
    return folder


def test_wheel_holds_one_package_and_its_data(wheel):
    path, modules, seconds = wheel
    print(f"\nwheel built in {seconds:.1f} s: {path.name}")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        top_level = zf.read(f"{dist_info}/top_level.txt").decode().split()
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
    assert top_level == ["facenet_tf2pt"]
    assert all(n.startswith(("facenet_tf2pt/", f"{dist_info}/")) for n in names), \
        [n for n in names if not n.startswith(("facenet_tf2pt/", f"{dist_info}/"))]
    package = {n.removeprefix("facenet_tf2pt/") for n in names if n.startswith("facenet_tf2pt/")}
    assert not [n for n in package if n.split("/")[0] in NOT_SHIPPED or n.startswith("checkpoints/tf/")]
    assert not [n for n in package if n.endswith(".pt") and not n.startswith("checkpoints/mtcnn/")]
    assert {"py.typed", "__init__.py", "checkpoints/registry.json", "checkpoints/manifest.json",
            "checkpoints/mtcnn/pnet.pt", "checkpoints/mtcnn/rnet.pt", "checkpoints/mtcnn/onet.pt"} <= package
    # Every module of the project ships (a subpackage missing from pyproject's explicit list would not).
    assert modules - package == set()
    scripts = dict(line.replace(" ", "").split("=", 1) for line in entry_points.splitlines() if "=" in line)
    assert scripts == {"facenet": "facenet_tf2pt.models.cli.facenet:main",
                       "facenet-convert": "facenet_tf2pt.converter.cli:main"}


INSTALLED_SCRIPT = r"""
import json, sys
from facenet_tf2pt import (InceptionResNetV1, MTCNN, fixed_image_standardization, get_model, list_models,
                           load_weights, prewhiten)
import facenet_tf2pt
import numpy as np
import torch
from skimage.data import astronaut

torch.manual_seed(0)
model = InceptionResNetV1(num_classes=17).eval()
pixels = torch.randint(0, 256, (2, 3, 160, 160)).float()
with torch.no_grad():
    emb = model(fixed_image_standardization(pixels))
mtcnn = MTCNN()
boxes, probs = mtcnn.detect(astronaut())
# The installed package carries hubconf.py (the repository root is the package): torch.hub works on it.
hub_model = torch.hub.load(facenet_tf2pt.__path__[0], "inception_resnet_v1", source="local")
print(json.dumps({
    "package": facenet_tf2pt.__file__,
    "mtcnn_weights": str(mtcnn.weights_dir),
    "emb_shape": list(emb.shape), "emb_norms": emb.norm(dim=1).tolist(),
    "faces": 0 if boxes is None else len(boxes), "prob": None if probs is None else float(probs[0]),
    "models": list_models(), "hub_model_class": type(hub_model) is InceptionResNetV1,
    "top_level_loaded": sorted(m for m in ("models", "converter", "checkpoints") if m in sys.modules),
    "editable_finders": sorted(m for m in sys.modules if m.startswith("__editable__")),
}))
"""


def test_installed_package_works_from_a_project_with_its_own_models_folder(installed, tmp_path):
    python, venv = installed
    cwd = _decoy_cwd(tmp_path / "project")
    (cwd / "check.py").write_text(INSTALLED_SCRIPT)
    env = user_env(TORCH_HOME=str(tmp_path / "torch"))
    got = json.loads(run([python, "check.py"], cwd=cwd, env=env).stdout.strip().splitlines()[-1])
    site = venv_site_packages(venv).resolve()
    assert Path(got["package"]).resolve().is_relative_to(site), got["package"]
    assert Path(got["mtcnn_weights"]).resolve() == site / "facenet_tf2pt" / "checkpoints" / "mtcnn"
    assert got["top_level_loaded"] == [] and got["editable_finders"] == []
    assert got["emb_shape"] == [2, 512] and all(abs(n - 1) < 1e-5 for n in got["emb_norms"])
    assert got["faces"] == 1 and got["prob"] > 0.99
    assert got["hub_model_class"]
    assert {"inception_resnet_v1.vggface2", "inception_resnet_v1.ci-fixture", "mtcnn.sandberg"} <= set(got["models"])


@pytest.mark.parametrize("script", ["facenet", "facenet-convert"])
def test_installed_console_scripts(installed, wheel, tmp_path, script):
    python, venv = installed
    cwd = _decoy_cwd(tmp_path / "project")
    version = wheel[0].name.split("-")[1]
    out = run([python.parent / script, "--version"], cwd=cwd, env=user_env(TORCH_HOME=str(tmp_path / "torch")))
    assert version in out.stdout + out.stderr
