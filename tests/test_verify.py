"""Both graphs on the same batch: the converted weights reproduce TF's end points."""
import pytest
import torch

from facenet_tf2pt.converter.verify import verify
from tests.helpers import copy_checkpoint, run_cli


@pytest.fixture(scope="module")
def parity512(fixture512, converted512):
    return verify(fixture512.directory, converted512.output)


def test_parity_from_model_dir_uses_frozen_graph(parity512):
    r = parity512
    assert r.tf_graph.startswith("frozen graph")
    assert r.passed and r.max_abs < 1e-5 and r.min_cosine > 0.999999
    assert r.l2 < 1e-4
    names = [layer.name for layer in r.layers]
    assert names[0] == "Conv2d_1a_3x3" and names[-1] == "embeddings" and len(names) == 15
    assert not r.absent_end_points
    # float32 rounding, not mapping: TF and PyTorch are about as far from a float64 run
    emb = r.layers[-1]
    assert emb.tf_vs_f64 < 1e-5 and emb.pt_vs_f64 < 1e-5
    table = r.format_table()
    assert "Mixed_6b" in table and "PASS" in table


def test_parity_from_checkpoint_prefix_uses_meta_graph(fixture512, converted512, tmp_path):
    prefix = copy_checkpoint(fixture512, tmp_path / "ckpt", with_meta=True)
    r = verify(prefix, converted512.output, batch=2)
    assert r.tf_graph.startswith("meta graph") and r.passed, r.format_table()


def test_parity_128d_via_reference_builder(fixture128, tmp_path):
    """No .pb and no .meta: our builder is restored from the checkpoint."""
    from facenet_tf2pt.converter.convert import convert
    prefix = copy_checkpoint(fixture128, tmp_path / "ckpt")
    out = convert(prefix, tmp_path / "fx128.safetensors").output
    r = verify(prefix.parent, out, batch=3, seed=4)
    assert r.tf_graph.startswith("reference builder") and r.passed, r.format_table()
    assert r.layers[-1].shape == [3, 128]


def test_mismatched_weights_fail_parity_with_exit_1(fixture512, converted512, tmp_path):
    sd = torch.load(converted512.output, weights_only=True)
    sd["repeat_2.4.branch1.1.bn.running_mean"] += 0.5   # a wrong mapping, in effect
    bad = tmp_path / "bad.pt"
    torch.save(sd, bad)
    res = run_cli("verify", fixture512.frozen_graph, bad, "--batch", "2", "--report", tmp_path / "p.json")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAIL" in res.stdout
    import json
    report = json.loads((tmp_path / "p.json").read_text())
    layers = {layer["name"]: layer["max_abs"] for layer in report["layers"]}
    # the per-layer table localizes the fault: exact before Mixed_6b, off from there on
    assert layers["Mixed_6a"] < 1e-4 and layers["Mixed_6b"] > 1e-3


def test_cli_verify_bad_weights_file_exits_2(fixture512, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip")
    res = run_cli("verify", fixture512.frozen_graph, junk)
    assert res.returncode == 2 and "junk.pt" in res.stderr


def test_parity_from_frozen_graph_path_with_weights_converted_from_it(fixture512, tmp_path):
    from facenet_tf2pt.converter.convert import convert
    out = convert(fixture512.frozen_graph, tmp_path / "from_pb.pt").output
    r = verify(fixture512.frozen_graph, out, batch=2, seed=1)
    assert r.tf_graph.startswith("frozen graph") and r.passed, r.format_table()
    assert r.min_cosine > 0.999999
