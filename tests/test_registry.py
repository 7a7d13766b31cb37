"""The model registry (checkpoints/registry.json): schema, facts, names, parameter counts."""
import copy
import json

import pytest
import torch

from facenet_tf2pt.models.nets.inception_resnet_v1 import InceptionResNetV1
from facenet_tf2pt.models.hub.registry import Registry, default_registry, registry_path, validate_registry
from tests.helpers import REPO

SANDBERG = {  # docs/reference.md ("The released models"): name -> (tag, training set, embedding, classes, LFW, preprocessing)
    "20180402-114759": ("vggface2", "VGGFace2", 512, 8631, 0.9965, "fixed"),
    "20180408-102900": ("casia-webface", "CASIA-WebFace", 512, 10575, 0.9905, "fixed"),
    "20170512-110547": ("ms-celeb-1m", "MS-Celeb-1M", 128, None, 0.992, "prewhiten"),
    "20170511-185253": ("casia-webface-2017", "CASIA-WebFace", 128, None, 0.987, "prewhiten"),
}


@pytest.fixture(scope="module")
def raw():
    return json.loads(registry_path().read_text())


def test_registry_file_is_the_repos_and_valid(raw):
    assert registry_path() == REPO / "checkpoints" / "registry.json"
    assert validate_registry(raw) == []
    reg = default_registry()
    assert {e.arch for e in reg} == {"inception_resnet_v1", "mtcnn"}
    assert len(reg) == 6


def test_registry_is_canonical_json(raw):
    """`--update-registry` rewrites it with writer.json_bytes: the committed bytes are already so."""
    from facenet_tf2pt.converter.writer import json_bytes

    assert registry_path().read_bytes() == json_bytes(raw)


def test_sandberg_entries_carry_the_reference_facts():
    reg = default_registry()
    for name, (tag, data, emb, classes, lfw, prep) in SANDBERG.items():
        e = reg.get(name)
        assert (e.tag, e.training_set, e.embedding_size, e.num_classes, e.lfw_accuracy, e.preprocessing) == \
            (tag, data, emb, classes, lfw, prep), name
        assert e.id == f"inception_resnet_v1.{tag}"
        assert e.weight("model").file_pattern == f"{name}-{tag}-{{sha8}}.pt"
        assert any(f.startswith(f"model-{name}.ckpt-") and f.endswith(".index") for f in e.source["files"])
        assert e.source["dir"] == f"tf/{name}" and e.source["urls"][0].startswith("https://drive.google.com/")
        w = e.weight("model")
        assert w.sha256 or w.reason, f"{name}: an unknown sha256 must say why"


def test_names_resolve_case_and_separator_insensitively():
    reg = default_registry()
    assert reg.get("VGGFace2").name == "20180402-114759"
    assert reg.get("casia_webface").name == "20180408-102900"      # facenet-pytorch's meaning
    assert reg.get("casia-webface-2017").name == "20170511-185253"
    assert reg.get("inception_resnet_v1.ms-celeb-1m").embedding_size == 128
    assert reg.get("mtcnn").arch == "mtcnn"
    with pytest.raises(ValueError, match="known names: .*vggface2"):
        reg.get("vggface3")
    with pytest.raises(ValueError):
        reg.get("mtcnn", arch="inception_resnet_v1")


def test_mirrors_are_facenet_pytorch_releases_with_trust_on_first_use():
    reg = default_registry()
    for tag, file in (("vggface2", "20180402-114759-vggface2.pt"),
                      ("casia-webface", "20180408-102900-casia-webface.pt")):
        (m,) = reg.get(tag).mirrors
        assert m.url == f"https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/{file}"
        assert m.file == file
        assert m.sha256 is None and "trust on first use" in m.reason


def test_param_counts_equal_the_built_models():
    from facenet_tf2pt.models.detection.mtcnn_nets import NETS

    for e in default_registry():
        if e.arch == "inception_resnet_v1":
            with torch.device("meta"):
                model = InceptionResNetV1(embedding_size=e.embedding_size, num_classes=e.num_classes)
        else:
            model = torch.nn.ModuleList(NETS[w.role]() for w in e.weights)
        assert e.param_count == sum(p.numel() for p in model.parameters()), e.id


def test_mtcnn_entry_matches_the_committed_weights():
    from facenet_tf2pt.converter.writer import sha256_file

    e = default_registry().get("mtcnn")
    for w in e.weights:
        path = REPO / "checkpoints" / w.file
        assert path.is_file(), path
        assert (sha256_file(path), path.stat().st_size) == (w.sha256, w.size), w.file
    from facenet_tf2pt.converter.npy_source import KNOWN_SHA256

    assert e.source["sha256"] == KNOWN_SHA256


def test_recorded_hashes_agree_with_the_committed_manifest():
    manifest = json.loads((REPO / "checkpoints" / "manifest.json").read_text())
    reg = default_registry()
    for entry_id, record in manifest["entries"].items():
        if record["status"] != "converted":
            continue
        e = reg.get(entry_id)
        for o in record["outputs"]:
            w = e.weight(o["role"])
            assert (w.file, w.sha256, w.size) == (o["file"], o["sha256"], o["size"]), (entry_id, o["role"])


def test_schema_check_names_each_problem(raw):
    bad = copy.deepcopy(raw)
    m = bad["models"]
    del m[0]["lfw_accuracy"]
    m[1]["tag"] = "Casia WebFace"
    unhashed = next(d for d in m[2:] if d["weights"][0]["sha256"] is None)
    unhashed["weights"][0]["reason"] = None                   # sha256 null and no reason
    fixture = next(d for d in m if d["tag"] == "ci-fixture")
    fixture["weights"][0].update(sha256="ab" * 32, file="fixture-512d-seed0-ci-fixture-00000000.pt")
    m[3]["mirrors"] = [dict(url="x", file="../x.pt", sha256="XYZ", size=None, provider="p", reason=None)]
    problems = "\n".join(validate_registry(bad))
    assert "missing keys ['lfw_accuracy']" in problems
    assert "'Casia WebFace' is not lowercase" in problems
    assert "sha256 is null without a stated reason" in problems
    assert "its hash prefix" in problems
    assert "not 64 lowercase hex digits" in problems and "plain weights file name" in problems
    with pytest.raises(ValueError, match="invalid registry"):
        Registry.from_dict(bad)


def test_duplicate_names_are_refused(raw):
    bad = copy.deepcopy(raw)
    bad["models"][2]["aliases"].append("vggface2")
    with pytest.raises(ValueError, match="'vggface2' names both"):
        Registry.from_dict(bad)
