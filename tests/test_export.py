"""`facenet-convert export`: ONNX (run by onnxruntime), torch.export (.pt2) and TorchScript (.ts) files
of a real converted model: the CI fixture (a Sandberg-format 512-d checkpoint with 17-class Logits,
built by our TF builder and converted by our converter). Each file is exported once per session.

What is checked: the export's own parity report, the files run by their plain runtimes in a process
that cannot import this package (on a real photo, at batch sizes the export never saw), the logits
export, `torch.jit.script` of the plain model, the CLI's exit codes (bad suffix, output = input,
unknown weights: 2 and nothing written), and that a planted difference fails with exit 1."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.helpers import tree_snapshot

FILES = {"onnx": "model.onnx", "torch.export": "model.pt2", "torchscript": "model.ts"}
ATOL = 1e-5   # on unit-length embeddings: float32 rounding of a reordered graph is ~1e-7


@pytest.fixture(scope="session")
def weights512(converted512):
    return converted512.output


@pytest.fixture(scope="session")
def eager512(weights512):
    from facenet_tf2pt.models.hub.builder import inception_resnet_v1

    return inception_resnet_v1(weights=weights512)


@pytest.fixture(scope="session")
def exported(weights512, tmp_path_factory):
    """{format: (ExportReport, folder)}: each format exported once, into a folder of its own."""
    from facenet_tf2pt.converter.export import export

    out = {}
    for fmt, name in FILES.items():
        folder = tmp_path_factory.mktemp(f"export-{fmt.replace('.', '-')}")
        out[fmt] = (export(weights512, folder / name, progress=False), folder)
    return out


@pytest.fixture(scope="session")
def faces(astronaut):
    """(4, 3, 160, 160) float32: the photo's face and its mirror image, and two other crops, with
    the 2018 models' fixed standardization; a batch size the export never ran."""
    from PIL import Image

    from facenet_tf2pt.models.data.preprocessing import fixed_image_standardization

    crops = [astronaut[20:260, 130:370], astronaut[20:260, 130:370, ::-1], astronaut[0:300, 100:400],
             astronaut[200:512, 0:312]]
    arrays = [np.asarray(Image.fromarray(np.ascontiguousarray(c)).resize((160, 160), Image.BILINEAR), np.float32)
              for c in crops]
    x = fixed_image_standardization(np.stack(arrays).transpose(0, 3, 1, 2))
    return np.ascontiguousarray(x, dtype=np.float32)


def _eager(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("fmt", FILES)
def test_export_passes_its_parity_check_and_writes_one_file(fmt, exported):
    report, folder = exported[fmt]
    print(f"\n{report.format_table()}")
    assert report.passed and report.format == fmt
    assert [d.batch for d in report.diffs] == [3, 1]          # traced at 3, then run at 1: a dynamic batch
    assert report.max_abs <= ATOL and report.tolerance == ATOL
    artifact = folder / FILES[fmt]
    assert sorted(p.name for p in folder.iterdir()) == [artifact.name]   # no side files, no temp file left
    assert report.size == artifact.stat().st_size > 80_000_000           # the weights are inside (~92 MB)
    from facenet_tf2pt.models.common.atomic_io import sha256_file

    assert report.sha256 == sha256_file(artifact)


RUN_WITHOUT_PACKAGE = """
import importlib.abc, json, sys


class Block(importlib.abc.MetaPathFinder):   # this package cannot be imported here
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "facenet_tf2pt":
            raise ModuleNotFoundError(name)


sys.meta_path.insert(0, Block())
import numpy as np
import onnxruntime, torch
try:
    import facenet_tf2pt
except ImportError:
    pass
else:
    sys.exit("facenet_tf2pt was importable")
x = np.load(sys.argv[1])
files = json.loads(sys.argv[2])
session = onnxruntime.InferenceSession(files["onnx"], providers=["CPUExecutionProvider"])
out = {"onnx": session.run(None, {session.get_inputs()[0].name: x})[0],
       "onnx_one": session.run(None, {session.get_inputs()[0].name: x[:1]})[0],
       "onnx_meta": np.array(json.dumps(session.get_modelmeta().custom_metadata_map))}
with torch.no_grad():
    out["torchscript"] = torch.jit.load(files["torchscript"]).eval()(torch.from_numpy(x)).numpy()
    out["torch.export"] = torch.export.load(files["torch.export"]).module()(torch.from_numpy(x)).numpy()
np.savez(sys.argv[3], **out)
"""


def test_exported_files_run_without_this_package(exported, eager512, faces, tmp_path):
    """Plain onnxruntime, torch.jit.load and torch.export.load, in a process where importing
    facenet_tf2pt fails, on real face crops: the same unit-length embeddings as the PyTorch model."""
    np.save(tmp_path / "x.npy", faces)
    files = {fmt: str(folder / FILES[fmt]) for fmt, (_, folder) in exported.items()}
    script = tmp_path / "run.py"
    script.write_text(RUN_WITHOUT_PACKAGE)
    res = subprocess.run([sys.executable, str(script),
                          str(tmp_path / "x.npy"), json.dumps(files), str(tmp_path / "out.npz")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    want = _eager(eager512, faces)
    with np.load(tmp_path / "out.npz", allow_pickle=False) as got:
        meta = json.loads(str(got["onnx_meta"]))
        assert (meta["standardization"], meta["output"]) == ("fixed", "embeddings")   # says what to feed it
        assert got["onnx_one"].shape == (1, 512)
        np.testing.assert_allclose(got["onnx_one"], want[:1], rtol=0, atol=ATOL)
        for fmt in FILES:
            assert got[fmt].shape == (len(faces), 512), fmt
            np.testing.assert_allclose(np.linalg.norm(got[fmt], axis=1), 1.0, rtol=0, atol=1e-5)  # normalized
            diff = float(np.abs(got[fmt] - want).max())
            print(f"{fmt}: max abs diff on {len(faces)} real face crops {diff:.3e}")
            assert diff <= ATOL, (fmt, diff)


def test_classify_export_returns_the_logits(weights512, faces, tmp_path):
    from facenet_tf2pt.converter.export import export
    from facenet_tf2pt.models.hub.builder import inception_resnet_v1

    report = export(weights512, tmp_path / "logits.ts", classify=True, progress=False)
    assert report.passed and report.output_name == "logits" and report.num_classes == 17
    want = _eager(inception_resnet_v1(weights=weights512, classify=True), faces)
    with torch.no_grad():
        got = torch.jit.load(str(tmp_path / "logits.ts"))(torch.from_numpy(faces)).numpy()
    assert got.shape == (len(faces), 17)
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("classify", [False, True], ids=["embeddings", "logits"])
def test_torch_jit_script_of_the_plain_model_matches_eager(classify, weights512, faces):
    from facenet_tf2pt.models.hub.builder import inception_resnet_v1

    model = inception_resnet_v1(weights=weights512, classify=classify)
    scripted = torch.jit.script(model)
    want = _eager(model, faces)
    with torch.no_grad():
        got = scripted(torch.from_numpy(faces)).numpy()
    assert got.shape == (len(faces), 17 if classify else 512)
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL * max(1.0, float(np.abs(want).max())))


# ------------------------------------------------------------------------------------- CLI

def _convert_main(argv) -> int:
    """facenet-convert in this process; argparse's refusals (SystemExit) count as exit codes."""
    from facenet_tf2pt.converter.cli import main

    try:
        return main([str(a) for a in argv])
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("name", ["model.pb", "model.onnx.txt", "model"])
def test_unknown_format_is_exit_2_and_writes_nothing(name, weights512, tmp_path, capsys):
    assert _convert_main(["export", weights512, "-o", tmp_path / name]) == 2
    err = capsys.readouterr().err
    assert name in err and ".onnx, .pt2, .ts" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("link", ["symlink", "hard"])
def test_output_that_is_the_input_is_refused(link, weights512, tmp_path, capsys):
    import os

    w = tmp_path / "w.pt"
    w.write_bytes(weights512.read_bytes())
    out = tmp_path / "w.onnx"
    (os.symlink if link == "symlink" else os.link)(w, out)
    before = tree_snapshot(tmp_path)
    assert _convert_main(["export", w, "-o", out]) == 2
    assert "same file" in capsys.readouterr().err
    assert tree_snapshot(tmp_path) == before


def test_unknown_weights_are_exit_2(tmp_path, capsys):
    assert _convert_main(["export", "no-such-model", "-o", tmp_path / "m.ts"]) == 2
    assert "no-such-model" in capsys.readouterr().err
    assert _convert_main(["export", tmp_path / "missing.pt", "-o", tmp_path / "m.ts"]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_classify_without_logits_is_exit_2(weights512, tmp_path, capsys):
    from facenet_tf2pt.converter.writer import write_state_dict
    from facenet_tf2pt.models.hub.serialization import load_state_dict_file

    sd = {k: v for k, v in load_state_dict_file(weights512).items() if not k.startswith("logits.")}
    write_state_dict(sd, tmp_path / "no_logits.safetensors")
    assert _convert_main(["export", tmp_path / "no_logits.safetensors", "-o", tmp_path / "m.ts", "--classify"]) == 2
    assert "classify" in capsys.readouterr().err
    assert not (tmp_path / "m.ts").exists()


@pytest.fixture(scope="session")
def planted_weights(weights512, tmp_path_factory):
    """The fixture's weights with one of 917,504 Bottleneck weights nudged by 0.01."""
    from facenet_tf2pt.converter.writer import write_state_dict
    from facenet_tf2pt.models.hub.serialization import load_state_dict_file

    sd = {k: v.clone() for k, v in load_state_dict_file(weights512).items()}
    sd["last_linear.weight"][0, 0] += 0.01
    path = tmp_path_factory.mktemp("planted") / "planted.safetensors"
    write_state_dict(sd, path)
    return path


def test_check_export_catches_a_planted_difference(exported, weights512, planted_weights, capsys):
    onnx_file = exported["onnx"][1] / FILES["onnx"]
    assert _convert_main(["check-export", onnx_file, weights512]) == 0
    assert "PASS" in capsys.readouterr().out
    assert _convert_main(["check-export", onnx_file, planted_weights]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out
    worst = max(float(line.split()[-1]) for line in out.splitlines() if line.strip().startswith("batch"))
    assert worst > ATOL


def test_check_export_does_not_load_pt2_or_ts(exported, weights512, capsys):
    """Loading a .pt2 or .ts runs code from the file: one handed in is refused, not loaded."""
    ts_file = exported["torchscript"][1] / FILES["torchscript"]
    assert _convert_main(["check-export", ts_file, weights512]) == 2
    assert "runs code" in capsys.readouterr().err


def test_export_that_fails_parity_is_exit_1_and_not_delivered(weights512, planted_weights, tmp_path, monkeypatch,
                                                             capsys):
    """A writer that exports other weights than those checked (a planted bug): exit 1, and the
    previous file at the output is left as it was."""
    from facenet_tf2pt.converter import export as export_module
    from facenet_tf2pt.models.hub.builder import inception_resnet_v1

    planted = inception_resnet_v1(weights=planted_weights)
    real_writer = export_module.WRITERS["torchscript"]
    monkeypatch.setitem(export_module.WRITERS, "torchscript",
                        lambda model, path, *args: real_writer(planted, path, *args))
    out = tmp_path / "model.ts"
    out.write_bytes(b"previous export")
    assert _convert_main(["export", weights512, "-o", out]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "not written" in captured.err
    assert out.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ts"]     # the temp file is gone


def test_export_does_not_import_tensorflow(weights512, tmp_path):
    """The whole export (model, TorchScript, parity) in a fresh process: TensorFlow never loaded."""
    code = ("import sys\nfrom facenet_tf2pt.converter.cli import main\n"
            f"rc = main(['export', {str(weights512)!r}, '-o', {str(tmp_path / 'm.ts')!r}])\n"
            "sys.exit(rc or (3 if 'tensorflow' in sys.modules else 0))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "PASS" in res.stdout and (tmp_path / "m.ts").is_file()


def test_missing_onnx_tools_are_named_with_the_install_command(weights512, tmp_path, monkeypatch, capsys):
    """Without onnxscript (not in a plain install): exit 2 naming it and the extra, before any work."""
    import importlib.metadata

    real_version = importlib.metadata.version

    def version(name):
        if name == "onnxscript":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert _convert_main(["export", weights512, "-o", tmp_path / "m.onnx"]) == 2
    err = capsys.readouterr().err
    assert "onnxscript" in err and "[export]" in err and "pip install" in err
    assert list(tmp_path.iterdir()) == []
