"""Reference activations in HDF5: written with TensorFlow, checked later in a process where
`import tensorflow` fails."""
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from facenet_tf2pt.converter.errors import ConversionError
from facenet_tf2pt.converter.reference import read_reference, verify_reference, write_reference
from tests.helpers import REPO, WITHOUT_TF, run_cli


def test_the_tensorflow_blocker_blocks(tmp_path):
    """tools/without_tf.py, which the no-TensorFlow tests rely on, really makes `import tensorflow` fail."""
    probe = tmp_path / "probe.py"
    probe.write_text("import sys\ntry:\n    import tensorflow\nexcept ImportError as e:\n    print('blocked:', e)\n"
                     "print('loaded:', any(m.split('.')[0] == 'tensorflow' for m in sys.modules))\n")
    res = subprocess.run([sys.executable, str(WITHOUT_TF), str(probe)], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "blocked: No module named 'tensorflow'" in res.stdout and "loaded: False" in res.stdout


@pytest.fixture(scope="module")
def reference(fixture512, tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.h5"
    info = write_reference(fixture512.directory, path, batch=2, seed=3)
    return path, info


def test_reference_file_holds_inputs_end_points_embeddings_and_hashes(reference, fixture512):
    from facenet_tf2pt.converter.verify import make_batch
    from facenet_tf2pt.converter.writer import sha256_file

    path, info = reference
    with h5py.File(path, "r") as f:
        assert f["input"].shape == (2, 160, 160, 3)
        assert len(f["end_points"]) == 14 and f["end_points"]["Conv2d_1a_3x3"].shape == (2, 79, 79, 32)
        assert f["embeddings"].shape == (2, 512)
        assert f.attrs["tensorflow_version"] and f.attrs["seed"] == 3 and f.attrs["batch"] == 2
        assert f.attrs["tool_version"] == "0.1.0"
    attrs, images, outputs = read_reference(path)
    np.testing.assert_array_equal(images, make_batch(2, 3))
    hashes = {f["name"]: f["sha256"] for f in attrs["source_files"]}
    assert hashes[fixture512.frozen_graph.name] == sha256_file(fixture512.frozen_graph)
    index = fixture512.checkpoint_prefix.with_name(fixture512.checkpoint_prefix.name + ".index")
    assert hashes[index.name] == sha256_file(index)
    assert list(outputs)[-1] == "embeddings" and attrs["tf_graph"].startswith("frozen graph")


def test_verify_against_reference_equals_live_verify(reference, fixture512, converted512):
    from facenet_tf2pt.converter.verify import verify

    recorded = verify_reference(reference[0], converted512.output, float64=False)
    live = verify(fixture512.directory, converted512.output, batch=2, seed=3, float64=False)
    assert recorded.passed and [d.name for d in recorded.layers] == [d.name for d in live.layers]
    for a, b in zip(recorded.layers, live.layers):
        assert a.shape == b.shape
        assert a.max_abs == pytest.approx(b.max_abs, rel=1e-6, abs=1e-12)
        assert a.max_abs_tf == pytest.approx(b.max_abs_tf, rel=1e-6)
    assert recorded.l2 == pytest.approx(live.l2, rel=1e-6) and recorded.min_cosine == pytest.approx(live.min_cosine)
    assert "(recorded)" in recorded.versions["tensorflow"]


def test_cli_verify_reference_works_with_tensorflow_blocked(reference, converted512, tmp_path):
    report = tmp_path / "parity.json"
    res = run_cli("verify", "--reference", reference[0], converted512.output, "--report", report,
                  without=("tensorflow",))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "PASS" in res.stdout and "recorded in ref.h5" in res.stdout
    parity = json.loads(report.read_text())
    assert parity["passed"] and len(parity["layers"]) == 15
    assert all(layer["tf_vs_f64"] is not None for layer in parity["layers"])


def test_reference_catches_a_wrong_mapping(reference, converted512, tmp_path):
    sd = torch.load(converted512.output, weights_only=True)
    sd["repeat_2.4.branch1.1.bn.running_mean"] += 0.5
    bad = tmp_path / "bad.pt"
    torch.save(sd, bad)
    r = verify_reference(reference[0], bad, float64=False)
    layers = {d.name: d.max_abs for d in r.layers}
    assert not r.passed and layers["Mixed_6a"] < 1e-4 and layers["Mixed_6b"] > 1e-3


def test_reference_errors(reference, converted512, fixture512, tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(ConversionError, match="not an HDF5 file"):
        read_reference(junk)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["format"] = "something else"
    with pytest.raises(ConversionError, match="not a facenet-tf2pt reference"):
        read_reference(other)
    res = run_cli("verify", "--reference", reference[0], fixture512.directory, converted512.output)
    assert res.returncode == 2 and "takes WEIGHTS only" in res.stderr
    res = run_cli("verify", converted512.output)
    assert res.returncode == 2 and "SOURCE and WEIGHTS" in res.stderr
