"""The embedding pipeline and the `facenet` console script (embed / compare / evaluate-lfw).

A seeded random-init InceptionResNetV1 saved to a .pt stands in for converted weights; the
images are crops of scikit-image's astronaut photo (a real face)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from facenet_tf2pt.models.cli.facenet import DEFAULT_THRESHOLD, main
from facenet_tf2pt.models.data.embed import Embedder, load_embeddings, load_model
from facenet_tf2pt.models.nets.inception_resnet_v1 import InceptionResNetV1
from facenet_tf2pt.models.data.preprocessing import fixed_image_standardization, prewhiten, resize, to_tensor
from tests import helpers

FACE_BOX = (150, 20, 330, 200)      # Eileen Collins' face in skimage.data.astronaut()


def run_cli(*args, timeout=240):
    """Run the `facenet` console script (`python -m facenet_tf2pt.models.cli`) in a fresh process."""
    return helpers.run_cli(*args, module="facenet_tf2pt.models.cli", timeout=timeout)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return InceptionResNetV1().eval()


@pytest.fixture(scope="module")
def weights(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "random_init.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def photo(astronaut):
    return Image.fromarray(astronaut)


@pytest.fixture(scope="module")
def crops(photo, tmp_path_factory):
    """eileen/: the face, shifted, zoomed out, mirrored; shuttle/: not a face; a corrupt file."""
    root = tmp_path_factory.mktemp("crops")
    (root / "eileen").mkdir()
    (root / "shuttle").mkdir()
    x0, y0, x1, y1 = FACE_BOX
    face = photo.crop(FACE_BOX)
    face.save(root / "eileen" / "face.jpg", quality=95)
    photo.crop((x0 + 12, y0 + 8, x1 + 12, y1 + 8)).save(root / "eileen" / "shifted.jpg", quality=95)
    photo.crop((x0 - 20, y0 - 15, x1 + 20, y1 + 25)).save(root / "eileen" / "wide.png")
    ImageOps.mirror(face).save(root / "eileen" / "mirrored.jpg", quality=95)
    photo.crop((350, 0, 470, 120)).save(root / "shuttle" / "nose.jpg", quality=95)
    (root / "eileen" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (root / "README.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def embedded(crops, weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "emb.npz"
    r = run_cli("embed", crops, "-o", out, "--weights", weights, "--batch-size", 3, "--device", "cpu")
    return r, out


def test_embed_cli_writes_npz(embedded, crops):
    r, out = embedded
    assert r.returncode == 0, r.stderr
    assert "embedded 5 images (2 labels)" in r.stdout and "512-d float32" in r.stdout
    assert "eileen/broken.jpg" in r.stdout                         # reported by path
    with np.load(out, allow_pickle=False) as z:                      # no pickles needed
        assert set(z.files) == {"paths", "labels", "label_ids", "classes", "embeddings", "skipped_paths",
                                "skipped_reasons", "root", "meta"}
        assert z["paths"].tolist() == ["eileen/face.jpg", "eileen/mirrored.jpg", "eileen/shifted.jpg",
                                       "eileen/wide.png", "shuttle/nose.jpg"]
        assert z["labels"].tolist() == ["eileen"] * 4 + ["shuttle"]
        assert z["classes"].tolist() == ["eileen", "shuttle"] and z["label_ids"].tolist() == [0, 0, 0, 0, 1]
        e = z["embeddings"]
        assert e.dtype == np.float32 and e.shape == (5, 512)
        np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
        assert z["skipped_paths"].tolist() == ["eileen/broken.jpg"]
        assert "corrupt or unreadable image" in str(z["skipped_reasons"][0])
        assert str(z["root"]) == str(crops.resolve())
        meta = json.loads(str(z["meta"]))
        assert meta["standardization"] == "fixed" and meta["image_size"] == 160 and meta["detect"] is False
    res = load_embeddings(out)
    assert res.paths[0] == str(crops.resolve() / "eileen" / "face.jpg") and len(res.skipped) == 1


def test_batched_equals_alone_and_matches_manual_pipeline(embedded, crops, model, photo):
    _, out = embedded
    with np.load(out) as z:
        cli_emb = z["embeddings"]
        paths = [str(crops / p) for p in z["paths"]]
    alone = Embedder(model, "fixed", device="cpu", batch_size=1)
    for p, e in zip(paths, cli_emb):
        np.testing.assert_allclose(alone.embed_paths([p]).embeddings[0], e, atol=1e-6)
    # the pipeline is: decode -> resize to 160 (bilinear) -> fixed standardization -> model
    face = Image.open(crops / "eileen" / "face.jpg").convert("RGB")
    x = fixed_image_standardization(to_tensor(resize(face, 160)))[None]
    with torch.no_grad():
        manual = model(x)[0].numpy()
    np.testing.assert_allclose(cli_emb[0], manual, atol=1e-6)
    # embeddings differ between images (the model is not collapsed onto one point)
    assert np.abs(cli_emb[0] - cli_emb[4]).max() > 1e-4      # (a random-init model: close, but 1000x the noise)


def test_engines_agree_and_are_recorded(model, crops, weights, tmp_path):
    """The default engine (model.fuse()), the plain model, oneDNN Graph and onnxruntime (when
    installed) give the same embeddings; the engine is recorded in the output's metadata; an unknown
    engine is refused."""
    from facenet_tf2pt.models.engines import cpu_caps

    faces = [Image.open(crops / "eileen" / n).convert("RGB") for n in ("face.jpg", "shifted.jpg", "wide.png",
                                                                      "mirrored.jpg")]
    engines = ("fused", "plain", "graph") + (("onnxruntime",) if cpu_caps.detect().onnxruntime else ())
    out = {e: Embedder(model, "fixed", device="cpu", batch_size=4, engine=e) for e in engines}
    assert out["fused"].model is not model and out["plain"].model is model
    emb = {e: m.embed_crops(faces) for e, m in out.items()}
    for e in engines:
        np.testing.assert_allclose(emb[e], emb["plain"], atol=1e-6)
    # a short batch is padded to the batch size: the same embeddings, no second compiled shape
    np.testing.assert_allclose(out["graph"].embed_crops(faces[:3]), emb["plain"][:3], atol=1e-6)
    assert out["graph"].model.compiled_shapes == [(4, 3, 160, 160)]
    with pytest.raises(ValueError, match="engine"):
        Embedder(model, "fixed", device="cpu", engine="turbo")
    res = run_cli("embed", crops, "-o", tmp_path / "plain.npz", "--weights", weights, "--engine", "plain", "-q")
    assert res.returncode == 0, res.stderr
    with np.load(tmp_path / "plain.npz") as z:
        assert json.loads(str(z["meta"]))["engine"] == "plain"
        assert json.loads(str(z["meta"]))["engine_decision"]["engine"] == "plain"


def test_embed_verbose_prints_and_stores_the_engine_decision(crops, weights, tmp_path):
    """`facenet embed --verbose` says which engine runs and why; the .npz meta holds the same
    decision. On a CPU class without measured rules (forced here) the default is ATen's convs."""
    from facenet_tf2pt.models.engines import cpu_caps
    from facenet_tf2pt.models.engines.engine_rules import ORT_CLASSES, choose_engine

    caps = cpu_caps.detect()
    res = run_cli("embed", crops, "-o", tmp_path / "auto.npz", "--weights", weights, "--batch-size", "64",
                  "--verbose", "-q")
    assert res.returncode == 0, res.stderr
    with np.load(tmp_path / "auto.npz") as z:
        meta = json.loads(str(z["meta"]))
    decision = meta["engine_decision"]
    assert meta["engine"] == "fused" and decision["batch_size"] == 64 and decision["isa_class"] == caps.isa_class
    assert f"engine: {decision['engine']} (batch 64, CPU class {caps.isa_class}): {decision['reason']}" in res.stdout
    # batch 64: onnxruntime where it is installed and was measured fastest; otherwise it is above every
    # measured graph limit: the eager fused model, oneDNN where measured
    assert decision["engine"] == ("onnxruntime" if caps.onnxruntime and caps.isa_class in ORT_CLASSES
                                  else "fused-onednn" if caps.isa_class in ("amx", "avx512", "avx2") and caps.onednn
                                  else "fused-aten")
    with cpu_caps.override(isa_class="neon", onednn_graph=False) as arm:
        assert choose_engine(arm, "cpu", torch.float32, 1).engine == "fused-aten"
        model = InceptionResNetV1(embedding_size=128).eval()
        emb = Embedder(model, "fixed", device="cpu", batch_size=2)
    assert emb.meta()["engine_decision"]["engine"] == "fused-aten"
    assert "not measured" in emb.meta()["engine_decision"]["reason"]


def test_prewhiten_standardization_and_flip(model, crops):
    face = Image.open(crops / "eileen" / "face.jpg").convert("RGB")
    pw = Embedder(model, "prewhiten", device="cpu")
    x = prewhiten(to_tensor(resize(face, 160)))[None]
    with torch.no_grad():
        expected = model(x)[0].numpy()
        expected_flip = model(torch.flip(x, dims=[-1]))[0].numpy()
    np.testing.assert_allclose(pw.embed_crops([face])[0], expected, atol=1e-6)
    both = Embedder(model, "prewhiten", device="cpu", flip=True).embed_crops([face])
    assert both.shape == (1, 1024)
    np.testing.assert_allclose(both[0, :512], expected, atol=1e-6)
    np.testing.assert_allclose(both[0, 512:], expected_flip, atol=1e-6)


def test_detect_pipeline_tolerates_no_face(model, crops, photo, tmp_path):
    """--detect's plumbing with a stand-in detector: one face per photo, None for a blank one."""
    Image.new("RGB", (300, 200), (90, 90, 90)).save(tmp_path / "blank.jpg")
    photo.save(tmp_path / "astronaut.png")
    photo.save(tmp_path / "astronaut_copy.png")
    calls = []

    def fake_mtcnn(images):
        calls.append(len(images))
        out = []
        for im in images:
            if np.asarray(im).std() < 1:
                out.append(None)
            else:
                out.append(to_tensor(resize(im.crop(FACE_BOX), 160)))
        return out

    emb = Embedder(model, "fixed", device="cpu", batch_size=8, detector=fake_mtcnn)
    res = emb.embed_dir(tmp_path)
    assert [Path(p).name for p in res.paths] == ["astronaut.png", "astronaut_copy.png"]
    assert res.skipped == [(str(tmp_path / "blank.jpg"), "no face detected")]
    assert res.meta["detect"] is True and res.embeddings.shape == (2, 512)
    np.testing.assert_allclose(res.embeddings[0], res.embeddings[1], atol=1e-6)


def test_standardization_follows_the_registry_entry(model, weights, monkeypatch, capsys):
    """--pretrained takes the entry's preprocessing; a bare weights file defaults to 'fixed'."""
    from types import SimpleNamespace

    import facenet_tf2pt.models.hub.pretrained as registry

    entry = SimpleNamespace(name="20170512-110547", preprocessing="prewhiten", embedding_size=512, num_classes=None)
    monkeypatch.setattr(registry, "resolve_inception_weights", lambda name: (entry, model.state_dict()))
    lm = load_model(pretrained="20170512-110547")
    assert lm.standardization == "prewhiten" and lm.name == "20170512-110547" and lm.embedding_size == 512
    lm = load_model(pretrained="20170512-110547", standardization="fixed")      # explicit wins, with a warning
    assert lm.standardization == "fixed" and "expects 'prewhiten'" in capsys.readouterr().err
    assert load_model(weights=weights).standardization == "fixed"
    assert load_model(weights=weights, standardization="prewhiten").standardization == "prewhiten"
    # a weights file named as a registry entry's converted file takes that entry's preprocessing
    ms_celeb = SimpleNamespace(id="inception_resnet_v1.ms-celeb-1m", preprocessing="prewhiten")
    monkeypatch.setattr(registry, "default_registry",
                        lambda: SimpleNamespace(for_file=lambda p: ms_celeb if p.name.startswith("2017") else None))
    named = weights.parent / "20170512-110547-ms-celeb-1m.pt"
    if not named.exists():
        named.symlink_to(weights)
    assert load_model(weights=named).standardization == "prewhiten"
    assert load_model(weights=weights).standardization == "fixed"


def test_pretrained_name_from_the_real_registry(crops, capsys, converted512, tmp_path, monkeypatch):
    """`--pretrained` through the project's registry. The CI fixture's converted file is not
    committed (94 MB): the session's conversion of the same seeded fixture stands in, under
    $FACENET_HOME with the registry's file name, and must match its sha256 prefix to load."""
    from facenet_tf2pt.models.hub.registry import default_registry
    entry = default_registry().get("ci-fixture")
    home = tmp_path / "home"
    home.mkdir()
    (home / entry.weight("model").file).symlink_to(converted512.output)
    monkeypatch.setenv("FACENET_HOME", str(home))
    assert load_model(pretrained="ci-fixture").embedding_size == 512
    a, b = crops / "eileen" / "face.jpg", crops / "shuttle" / "nose.jpg"
    assert main(["compare", str(a), str(b), "--pretrained", "ci-fixture", "--json", "-q"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["distances"][0][1] == out["distances"][1][0] > 0


def test_compare_cli(crops, weights):
    a, b, c = crops / "eileen" / "face.jpg", crops / "eileen" / "mirrored.jpg", crops / "shuttle" / "nose.jpg"
    r = run_cli("compare", a, b, c, "--weights", weights, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    d = np.array(out["distances"])
    assert out["metric"] == "squared-l2" and out["threshold"] == DEFAULT_THRESHOLD
    assert d.shape == (3, 3) and np.allclose(d, d.T) and np.all(np.diag(d) == 0)
    assert np.all((d >= 0) & (d <= 4 + 1e-6))
    assert len(out["pairs"]) == 3
    for p in out["pairs"]:
        assert p["same"] == (p["distance"] < DEFAULT_THRESHOLD)


def test_compare_table_in_process(crops, tmp_path, capsys):
    """The threshold decides: just above the pair's distance says "same", just below "different".
    (Weights with calibrated BatchNorm statistics, whose embeddings really depend on the image.)"""
    weights = tmp_path / "calibrated.pt"
    torch.save(helpers.random_model(512, None, seed=0).state_dict(), weights)
    a, b = crops / "eileen" / "face.jpg", crops / "shuttle" / "nose.jpg"
    argv = ["compare", str(a), str(b), "--weights", str(weights), "-q"]
    assert main(argv + ["--json"]) == 0
    d = json.loads(capsys.readouterr().out)["distances"][0][1]
    assert 0.01 < d < 4                        # squared L2 between distinct unit vectors
    for threshold, verdict in ((d * 1.01, "same"), (d * 0.99, "different")):
        assert main(argv + ["--threshold", f"{threshold:.6f}"]) == 0
        out = capsys.readouterr().out
        assert f"same person if distance < {threshold:.3f}" in out
        assert out.strip().splitlines()[-1].split()[-2:] == [f"{d:.4f}", verdict]


@pytest.mark.parametrize("argv, fragment", [
    (["embed", "{tmp}/nowhere", "-o", "{tmp}/x.npz", "--weights", "{w}"], "nowhere: not a directory"),
    (["embed", "{crops}", "-o", "{tmp}/x.npz", "--weights", "{tmp}/missing.pt"], "missing.pt: no such weights file"),
    (["embed", "{crops}", "-o", "{tmp}/x.npz"], "no model: give --weights"),
    (["embed", "{crops}", "-o", "{tmp}/x.npz", "--weights", "{w}", "--strict"], "broken.jpg"),
    (["embed", "{crops}", "-o", "{tmp}/x.npz", "--weights", "{junk}"], "junk.pt: cannot be loaded"),
    (["embed", "{crops}", "-o", "{tmp}/x.npz", "--pretrained", "no-such-model"], "'no-such-model'"),
    (["compare", "{crops}/eileen/face.jpg", "{crops}/eileen/broken.jpg", "--weights", "{w}"], "broken.jpg: "),
    (["compare", "{crops}/eileen/face.jpg", "{tmp}/gone.jpg", "--weights", "{w}"], "gone.jpg: no such file"),
    (["evaluate-lfw", "{crops}", "--pairs", "{tmp}/bad_pairs.txt", "--weights", "{w}"], "bad_pairs.txt:2:"),
])
def test_bad_input_exits_2_naming_the_file(argv, fragment, crops, weights, tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    (tmp_path / "bad_pairs.txt").write_text("10 300\nSomeone 1\n")
    argv = [a.format(tmp=tmp_path, crops=crops, w=weights, junk=tmp_path / "junk.pt") for a in argv]
    assert main(argv + ["-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("facenet: error: ") and fragment in err[0], err


def test_bad_input_exit_code_from_console_script(tmp_path, weights):
    r = run_cli("compare", tmp_path / "a.jpg", tmp_path / "b.jpg", "--weights", weights)
    assert r.returncode == 2
    assert r.stderr.strip() == f"facenet: error: {tmp_path / 'a.jpg'}: no such file"


@pytest.fixture(scope="module")
def small_lfw(photo, tmp_path_factory):
    """A tiny LFW-like tree of real image content: 'people' are different regions of the photo."""
    root = tmp_path_factory.mktemp("lfw_small")
    regions = {"Eileen_Collins": FACE_BOX, "Space_Shuttle": (350, 0, 470, 120), "Flag_Stars": (0, 0, 110, 110),
               "Mission_Patch": (120, 330, 230, 440), "Helmet_Visor": (290, 340, 460, 510)}
    for name, (x0, y0, x1, y1) in regions.items():
        (root / name).mkdir()
        for k, (dx, dy) in enumerate([(0, 0), (6, 4), (-5, 6)], 1):
            photo.crop((max(0, x0 + dx), max(0, y0 + dy), x1 + dx, y1 + dy)).resize((80, 80)).save(
                root / name / f"{name}_{k:04d}.jpg", quality=90)
    names = list(regions)
    lines = ["10\t1"]
    for s in range(10):
        n = names[s % 5]
        lines.append(f"{n}\t{1 + s % 3}\t{1 + (s + 1) % 3}")
        lines.append(f"{n}\t{1 + s % 3}\t{names[(s + 2) % 5]}\t{1 + (s + 1) % 3}")
    lines.append("Nobody_Here\t1\t2")                                # missing images: skipped pair
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root


def test_evaluate_lfw_cli(small_lfw, weights, tmp_path):
    pytest.importorskip("matplotlib")
    roc, js = tmp_path / "roc.png", tmp_path / "lfw.json"
    r = run_cli("evaluate-lfw", small_lfw, "--pairs", small_lfw / "pairs.txt", "--weights", weights,
                "--roc", roc, "--json", js, "--paper", "-q")
    assert r.returncode == 0, r.stderr
    assert "metric angular, mean subtracted" in r.stdout and "flipped images" in r.stdout   # --paper
    assert "skipped 1 of 21 pairs" in r.stderr and "Nobody_Here" in r.stderr
    for key in ("Accuracy:", "Validation rate:", "Area Under Curve (AUC):", "Equal Error Rate (EER):"):
        assert key in r.stdout
    assert roc.read_bytes()[:4] == b"\x89PNG"
    res = json.loads(js.read_text())
    assert res["n_pairs"] == 20 and res["n_same"] == 10 and res["skipped_pairs"] == 1 and res["n_folds"] == 10
    assert 0.0 <= res["accuracy"] <= 1.0 and len(res["fold_accuracies"]) == 10
    assert 0.0 <= res["auc"] <= 1.0 and len(res["tpr"]) == 400
    assert res["metric"] == "angular" and res["flip"] is True and res["subtract_mean"] is True


def test_embed_detect_cli(photo, weights, tmp_path):
    photos = tmp_path / "photos"
    (photos / "eileen").mkdir(parents=True)
    small = photo.resize((256, 256))      # the face is still ~60 px; a small pyramid is quicker
    small.save(photos / "eileen" / "astronaut.jpg", quality=95)
    ImageOps.mirror(small).save(photos / "eileen" / "mirrored.jpg", quality=95)
    Image.new("RGB", (160, 120), (128, 128, 128)).save(photos / "blank.jpg")
    out = tmp_path / "det.npz"
    r = run_cli("embed", photos, "-o", out, "--weights", weights, "--detect", "-q")
    assert r.returncode == 0, r.stderr
    with np.load(out) as z:
        assert z["paths"].tolist() == ["eileen/astronaut.jpg", "eileen/mirrored.jpg"]
        assert z["skipped_paths"].tolist() == ["blank.jpg"]
        assert z["skipped_reasons"].tolist() == ["no face detected"]
        np.testing.assert_allclose(np.linalg.norm(z["embeddings"], axis=1), 1.0, atol=1e-5)
        assert json.loads(str(z["meta"]))["detect"] is True


def test_missing_pretrained_weights_message_is_shown_whole(crops, tmp_path, monkeypatch, capsys):
    """The CLI prints the whole actionable message the Python API raises (where it looked, why
    nothing was downloaded, the command that makes the file), not just its first line."""
    import facenet_tf2pt.models.hub.pretrained as pretrained

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("FACENET_HOME", str(empty))
    monkeypatch.setattr(pretrained, "search_dirs", lambda: [("$FACENET_HOME", empty)])
    monkeypatch.setattr(pretrained, "hub_checkpoints_dir", lambda: tmp_path / "hub")
    with pytest.raises(FileNotFoundError) as raised:
        pretrained.resolve_inception_weights("ci-fixture")
    api_message = str(raised.value)
    assert "\n" in api_message and "make checkpoints" in api_message
    rc = main(["embed", str(crops), "-o", str(tmp_path / "e.npz"), "--pretrained", "ci-fixture", "-q"])
    err = capsys.readouterr().err
    assert rc == 2
    assert api_message in err and str(empty) in err, err
    assert not (tmp_path / "e.npz").exists()
