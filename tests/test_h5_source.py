"""Keras 2 .h5 sources: full-model and weights-only files convert to exactly the tensors of the
Sandberg-format checkpoint holding the same weights; hostile files are refused with exit 2.

The h5 files are written here with h5py from the TF-builder fixture's weights. Their Keras names
come from `keras_name` below, an independent spelling of the Keras convention (nyoki-mtl's
facenet_keras.h5, keras-facenet, deepface) written from the TF names with regular expressions,
not from converter.mapping: a wrong Keras naming scheme in the converter fails these tests.
"""
from __future__ import annotations

import base64
import json
import marshal
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from facenet_tf2pt.converter import cli
from facenet_tf2pt.models.hub.serialization import load_state_dict_file
from tests.conftest import run_cli, tree_snapshot

V1 = "InceptionResnetV1/"


def keras_name(tf_name: str) -> str:
    """InceptionResnetV1/Repeat_1/block17_10/Branch_1/Conv2d_0b_1x7/BatchNorm/beta ->
    Block17_10_Branch_1_Conv2d_0b_1x7_BatchNorm/Block17_10_Branch_1_Conv2d_0b_1x7_BatchNorm/beta:0"""
    name = tf_name.removeprefix(V1)
    name = re.sub(r"^Repeat(_\d)?/block(\d+)_(\d+)/", lambda m: f"Block{m[2]}_{m[3]}/", name)
    name = re.sub(r"^Block8/", "Block8_6/", name)               # Sandberg's final Block8
    scope, leaf = name.rsplit("/", 1)
    if scope.endswith("/BatchNorm"):
        layer = scope.removesuffix("/BatchNorm").replace("/", "_") + "_BatchNorm"
    else:
        layer, leaf = scope.replace("/", "_"), {"weights": "kernel", "biases": "bias"}[leaf]
    return f"{layer}/{layer}/{leaf}:0"


def keras_layers(tf_arrays: dict) -> dict[str, dict[str, np.ndarray]]:
    """{layer: {weight name: array}} in the order Keras lists them."""
    layers: dict[str, dict[str, np.ndarray]] = {}
    for tf_name in sorted(tf_arrays):
        layer, weight = keras_name(tf_name).split("/", 1)
        layers.setdefault(layer, {})[weight] = tf_arrays[tf_name]
    return layers


def model_config(embedding_size: int, layers, extra: list | None = None) -> str:
    """A Keras 2.1-style functional model_config (JSON): the layer list is what we read."""
    described = [{"name": "input_1", "class_name": "InputLayer", "config": {"name": "input_1"}}]
    for layer in layers:
        kind = ("BatchNormalization" if layer.endswith("BatchNorm")
                else "Dense" if layer == "Bottleneck" else "Conv2D")
        config = {"name": layer, **({"units": embedding_size, "use_bias": False} if kind == "Dense" else {})}
        described.append({"name": layer, "class_name": kind, "config": config})
    return json.dumps({"class_name": "Model", "config": {"name": "inception_resnet_v1",
                                                         "layers": described + (extra or [])}})


def write_keras_h5(path: Path, tf_arrays: dict, *, full_model: bool = True, embedding_size: int = 128,
                   extra_config_layers: list | None = None, edit=None) -> Path:
    """Write `tf_arrays` (TF names) as Keras 2 writes a model: `model.save` (full_model) or
    `model.save_weights`. `edit(layers)` may change the {layer: {weight: array}} dict first."""
    layers = keras_layers(tf_arrays)
    if edit:
        edit(layers)
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.1.2"
        f.attrs["backend"] = b"tensorflow"
        root = f
        if full_model:
            f.attrs["model_config"] = model_config(embedding_size, layers, extra_config_layers).encode()
            root = f.create_group("model_weights")
        root.attrs["layer_names"] = np.array([n.encode() for n in layers])
        for layer, weights in layers.items():
            group = root.create_group(layer)
            group.attrs["weight_names"] = np.array([w.encode() for w in weights])
            for weight, value in weights.items():
                group.create_dataset(weight, data=value)
    return path


@pytest.fixture(scope="session")
def fx128_h5(fixture128_arrays, tmp_path_factory):
    """The 128-d fixture's weights as a Keras full-model file (the 2017 models' form)."""
    return write_keras_h5(tmp_path_factory.mktemp("h5") / "facenet_keras.h5", fixture128_arrays)


@pytest.fixture(scope="session")
def fx128_converted(fixture128, tmp_path_factory):
    out = tmp_path_factory.mktemp("h5ref") / "ckpt.pt"
    assert cli.main(["convert", str(fixture128.directory), "-o", str(out), "-q"]) == 0
    return load_state_dict_file(out)


def _assert_same_tensors(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert bool((a[key] == b[key]).all()), key


def test_full_model_h5_gives_the_checkpoints_tensors(fx128_h5, fx128_converted, tmp_path):
    out = tmp_path / "h5.pt"
    proc = run_cli("convert", fx128_h5, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "converted 490 variables (0 ignored" in proc.stdout       # every h5 weight used once
    assert "embedding 128" in proc.stdout
    _assert_same_tensors(load_state_dict_file(out), fx128_converted)
    report = json.loads(out.with_name("h5.pt.json").read_text())
    assert report["source"]["kind"] == "keras_h5"
    assert report["source"]["files"][0]["name"] == "facenet_keras.h5"


def test_weights_only_h5_and_safetensors(fixture128_arrays, fx128_converted, tmp_path):
    h5 = write_keras_h5(tmp_path / "facenet_weights.h5", fixture128_arrays, full_model=False)
    out = tmp_path / "w.safetensors"
    assert cli.main(["convert", str(h5), "-o", str(out), "-q"]) == 0
    _assert_same_tensors(load_state_dict_file(out), fx128_converted)


def test_512d_with_logits_h5(fixture512, fixture512_arrays, converted512, tmp_path):
    h5 = write_keras_h5(tmp_path / "m512.h5", fixture512_arrays, embedding_size=512)
    out = tmp_path / "m512.pt"
    assert cli.main(["convert", str(h5), "-o", str(out), "-q"]) == 0
    _assert_same_tensors(load_state_dict_file(out), load_state_dict_file(converted512.output))


# Names stated in the issue from nyoki-mtl's / keras-facenet's files, mapped to the PyTorch key a
# reader of both models would pair them with.
@pytest.mark.parametrize("keras,pt_key", [
    ("Conv2d_1a_3x3/Conv2d_1a_3x3/kernel:0", "conv2d_1a.conv.weight"),
    ("Conv2d_1a_3x3_BatchNorm/Conv2d_1a_3x3_BatchNorm/beta:0", "conv2d_1a.bn.bias"),
    ("Block35_1_Branch_1_Conv2d_0b_3x3/Block35_1_Branch_1_Conv2d_0b_3x3/kernel:0", "repeat_1.0.branch1.1.conv.weight"),
    ("Block17_10_Conv2d_1x1/Block17_10_Conv2d_1x1/bias:0", "repeat_2.9.conv2d.bias"),
    ("Mixed_6a_Branch_1_Conv2d_1a_3x3/Mixed_6a_Branch_1_Conv2d_1a_3x3/kernel:0", "mixed_6a.branch1.2.conv.weight"),
    ("Block8_6_Branch_1_Conv2d_0c_3x1_BatchNorm/Block8_6_Branch_1_Conv2d_0c_3x1_BatchNorm/moving_variance:0",
     "block8.branch1.2.bn.running_var"),
    ("Block8_5_Conv2d_1x1/Block8_5_Conv2d_1x1/kernel:0", "repeat_3.4.conv2d.weight"),
    ("Bottleneck/Bottleneck/kernel:0", "last_linear.weight"),
    ("Bottleneck_BatchNorm/Bottleneck_BatchNorm/moving_mean:0", "last_bn.running_mean"),
])
def test_known_keras_names(keras, pt_key):
    from facenet_tf2pt.converter.mapping import KERAS_NAMES, inception_resnet_v1_table

    rows = {r.tf_name: r.pt_key for r in inception_resnet_v1_table(False, KERAS_NAMES)}
    assert rows[keras] == pt_key


# --- hostile files: exit 2 naming the problem, nothing written ---------------------------------

MISSING_LAYER = "Block17_4_Branch_1_Conv2d_0c_7x1"
RESHAPED = "Block35_2_Branch_2_Conv2d_0b_3x3"


def _drop_layer(layers):
    del layers[MISSING_LAYER]


def _extra_layer(layers):
    layers["Logits_extra"] = {"Logits_extra/kernel:0": np.zeros((128, 3), np.float32)}


def _reshape(layers):
    layers[RESHAPED][f"{RESHAPED}/kernel:0"] = np.zeros((3, 3, 32, 31), np.float32)


def _nan(layers):
    weights = layers["Mixed_6a_Branch_1_Conv2d_0b_3x3_BatchNorm"]
    mean = weights["Mixed_6a_Branch_1_Conv2d_0b_3x3_BatchNorm/moving_mean:0"].copy()  # (shared fixture arrays)
    mean[3] = np.nan
    weights["Mixed_6a_Branch_1_Conv2d_0b_3x3_BatchNorm/moving_mean:0"] = mean


def _int_dtype(layers):
    w = layers["Conv2d_4b_3x3"]["Conv2d_4b_3x3/kernel:0"]
    layers["Conv2d_4b_3x3"]["Conv2d_4b_3x3/kernel:0"] = w.astype(np.int32)


BAD = {
    "missing layer": (_drop_layer, [f"missing Keras weight {MISSING_LAYER}/{MISSING_LAYER}/kernel:0",
                                    "repeat_2.3.branch1.2.conv.weight"]),
    "extra layer": (_extra_layer, ["unexpected Keras weight Logits_extra/Logits_extra/kernel:0", "[128, 3]"]),
    "wrong shape": (_reshape, [f"{RESHAPED}/{RESHAPED}/kernel:0", "[3, 3, 32, 31]", "[3, 3, 32, 32]"]),
    "NaN": (_nan, ["Mixed_6a_Branch_1_Conv2d_0b_3x3_BatchNorm/moving_mean:0", "NaN"]),
    "int dtype": (_int_dtype, ["Conv2d_4b_3x3/Conv2d_4b_3x3/kernel:0", "dtype int32"]),
}


def _refused(src: Path, out_dir: Path, needles: list[str]) -> str:
    out_dir.mkdir(exist_ok=True)
    before = tree_snapshot(out_dir)
    proc = run_cli("convert", src, "-o", out_dir / "out.pt")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert str(src) in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)
    assert tree_snapshot(out_dir) == before                              # nothing written
    return proc.stderr


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_weights_are_refused(case, fixture128_arrays, tmp_path):
    edit, needles = BAD[case]
    src = write_keras_h5(tmp_path / "bad.h5", fixture128_arrays, edit=edit)
    _refused(src, tmp_path / "out", needles)


def test_huge_declared_dataset_is_refused_before_reading(fixture128_arrays, tmp_path):
    src = write_keras_h5(tmp_path / "huge.h5", fixture128_arrays)
    with h5py.File(src, "a") as f:   # 4 TB declared, a few KB on disk: chunked, never written
        group = f["model_weights/Bottleneck"]
        del group["Bottleneck/kernel:0"]
        group.create_dataset("Bottleneck/kernel:0", shape=(1 << 20, 1 << 20), dtype="f4", chunks=(64, 64))
    assert src.stat().st_size < 200 << 20
    _refused(src, tmp_path / "out", ["Bottleneck/Bottleneck/kernel:0", "[1048576, 1048576]", "not read"])


def test_truncated_file_is_refused(fx128_h5, tmp_path):
    src = tmp_path / "cut.h5"
    src.write_bytes(fx128_h5.read_bytes()[: fx128_h5.stat().st_size // 2])
    _refused(src, tmp_path / "out", ["cut.h5"])


def test_keras3_weights_file_is_refused_with_the_reason(tmp_path):
    src = tmp_path / "model.weights.h5"
    with h5py.File(src, "w") as f:
        f.create_group("layers/conv2d_5/vars").create_dataset("0", data=np.zeros((3, 3, 3, 32), np.float32))
        f.create_group("vars")
    err = _refused(src, tmp_path / "out", ["Keras 3", "creation order"])
    renamed = tmp_path / "model3.h5"     # the layout is recognised without the file name too
    src.rename(renamed)
    assert "Keras 3" in _refused(renamed, tmp_path / "out", ["Keras 3"]) and err


def test_not_a_keras_file_is_refused(tmp_path):
    src = tmp_path / "plain.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    _refused(src, tmp_path / "out", ["not a Keras 2 weights file"])


def test_embedding_size_in_config_must_match_the_weights(fixture128_arrays, tmp_path):
    src = write_keras_h5(tmp_path / "lie.h5", fixture128_arrays, embedding_size=512)
    _refused(src, tmp_path / "out", ["Bottleneck has 512 units", "[1792, 128]"])


def test_lambda_bytecode_is_never_run(fixture128_arrays, fx128_converted, tmp_path):
    """A Lambda layer whose marshalled code would write a file if Keras deserialized it: the
    conversion reads weights only, succeeds, says it ignored the Lambda, and the file never appears."""
    marker = tmp_path / "ran.txt"
    code = compile(f"open({str(marker)!r}, 'w').write('ran')", "<lambda>", "exec")
    function = base64.b64encode(marshal.dumps(code)).decode()
    lam = {"name": "Block35_1_ScaleSum", "class_name": "Lambda",
           "config": {"name": "Block35_1_ScaleSum", "function": [function, None, None],
                      "function_type": "lambda", "arguments": {"scale": 0.17}}}
    src = write_keras_h5(tmp_path / "lambda.h5", fixture128_arrays, extra_config_layers=[lam])
    out = tmp_path / "lambda.pt"
    proc = run_cli("convert", src, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "1 Lambda layers hold marshalled Python bytecode: never loaded or run" in proc.stderr
    assert not marker.exists()
    _assert_same_tensors(load_state_dict_file(out), fx128_converted)


def test_verify_an_h5_source(fx128_h5, tmp_path):
    """The TF side of an h5 source is our TF graph with the h5 weights put in; the report says why."""
    from facenet_tf2pt.converter.verify import verify

    out = tmp_path / "v.pt"
    assert cli.main(["convert", str(fx128_h5), "-o", str(out), "-q"]) == 0
    report = verify(fx128_h5, out, batch=2)
    assert report.passed and report.tf_graph == "reference builder + facenet_keras.h5 weights"
    assert any("cannot load" in n for n in report.notes)
    assert not report.absent_end_points and report.l2_tf_vs_f64 is not None   # same table, float64 column


def test_checkpoint_written_from_the_h5_converts_to_the_same_tensors(fx128_h5, tmp_path):
    """h5 -> TF names (row-aligned schemes) -> a TF checkpoint written by TensorFlow: both convert alike."""
    from facenet_tf2pt.converter.h5_source import read_keras_h5, to_tf_names
    from facenet_tf2pt.converter.tf_graphs import save_checkpoint

    arrays = to_tf_names(read_keras_h5(fx128_h5).arrays, str(fx128_h5))
    prefix = save_checkpoint(tmp_path / "ckpt" / "model-x.ckpt-1", arrays)
    a, b = tmp_path / "from_ckpt.pt", tmp_path / "from_h5.pt"
    assert cli.main(["convert", str(prefix), "-o", str(a), "-q"]) == 0
    assert cli.main(["convert", str(fx128_h5), "-o", str(b), "-q"]) == 0
    assert a.read_bytes() == b.read_bytes()


def test_h5_converts_without_tensorflow_or_torch(fx128_h5, fx128_converted, tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    out = tmp_path / "plain.pt"
    proc = subprocess.run([sys.executable, "tools/without_tf.py", "--also", "torch", "-m", "facenet_tf2pt.converter", "convert",
                           str(fx128_h5), "-o", str(out), "-q"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    _assert_same_tensors(load_state_dict_file(out), fx128_converted)


@pytest.mark.parametrize("with_logits", [False, True])
def test_keras_scheme_is_row_aligned_with_the_tf_scheme(with_logits):
    """Row i names the same tensor in both schemes (h5_source.to_tf_names relies on it), and every
    Keras name is what the independent spelling above gives for the TF name."""
    from facenet_tf2pt.converter.mapping import KERAS_NAMES, TF_NAMES, inception_resnet_v1_table

    tf_rows = inception_resnet_v1_table(with_logits, TF_NAMES)
    keras_rows = inception_resnet_v1_table(with_logits, KERAS_NAMES)
    assert [r.pt_key for r in tf_rows] == [r.pt_key for r in keras_rows]
    for tf, keras in zip(tf_rows, keras_rows):
        assert (tf.tf_name is None) == (keras.tf_name is None) and tf.transform == keras.transform
        if tf.tf_name is not None:
            assert keras.tf_name == keras_name(tf.tf_name)


def test_dataset_stored_in_another_file_is_refused(fixture128_arrays, tmp_path):
    """External storage would make h5py read an arbitrary file named inside the h5."""
    secret = tmp_path / "elsewhere.bin"
    secret.write_bytes(np.zeros(1792 * 128, np.float32).tobytes())
    src = write_keras_h5(tmp_path / "external.h5", fixture128_arrays)
    with h5py.File(src, "a") as f:
        group = f["model_weights/Bottleneck"]
        del group["Bottleneck/kernel:0"]
        group.create_dataset("Bottleneck/kernel:0", shape=(1792, 128), dtype="f4",
                             external=[(str(secret), 0, 1792 * 128 * 4)])
    _refused(src, tmp_path / "out", ["Bottleneck/Bottleneck/kernel:0", "stored outside this file"])
