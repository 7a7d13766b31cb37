"""fixture -> convert: every source kind, both formats, byte-reproducible, strict accounting."""
import json

import numpy as np
import pytest
import torch

from facenet_tf2pt.converter.convert import convert
from facenet_tf2pt.converter.errors import ConversionError
from facenet_tf2pt.converter.tf_graphs import save_checkpoint
from facenet_tf2pt.converter.writer import sha256_file
from facenet_tf2pt.models import InceptionResNetV1
from facenet_tf2pt.models.hub.serialization import load_state_dict_file
from tests.helpers import run_cli, same_torch_as_pinned


def test_model_dir_conversion_maps_every_variable(converted512, fixture512_arrays):
    r = converted512
    assert len(r.load_report.mapped) == 492 and not r.load_report.ignored
    assert (r.load_report.embedding_size, r.load_report.num_classes) == (512, 17)
    sd = torch.load(r.output, weights_only=True)
    # spot-check the named transforms against the TF arrays
    w = fixture512_arrays["InceptionResnetV1/Repeat_1/block17_3/Branch_1/Conv2d_0b_1x7/weights"]
    assert torch.equal(sd["repeat_2.2.branch1.1.conv.weight"], torch.from_numpy(w.transpose(3, 2, 0, 1)))
    b = fixture512_arrays["InceptionResnetV1/Bottleneck/weights"]
    assert torch.equal(sd["last_linear.weight"], torch.from_numpy(b.T.copy()))
    assert torch.equal(sd["mixed_7a.branch2.1.bn.running_var"], torch.from_numpy(
        fixture512_arrays["InceptionResnetV1/Mixed_7a/Branch_2/Conv2d_0b_3x3/BatchNorm/moving_variance"]))
    assert torch.equal(sd["block8.conv2d.bias"],
                       torch.from_numpy(fixture512_arrays["InceptionResnetV1/Block8/Conv2d_1x1/biases"]))
    assert torch.equal(sd["conv2d_4a.bn.weight"], torch.ones(192))
    assert sd["conv2d_4a.bn.num_batches_tracked"].item() == 0
    assert sd["logits.weight"].shape == (17, 512)


def test_conversion_report(converted512):
    report = json.loads(converted512.report_path.read_text())
    assert report["output"]["sha256"] == sha256_file(converted512.output) == converted512.sha256
    files = {f["name"]: f["sha256"] for f in report["source"]["files"]}
    prefix = converted512.source.checkpoint_prefix
    assert files[prefix.name + ".index"] == sha256_file(f"{prefix}.index")
    assert report["mapping"]["mapped_variables"] == 492
    assert report["mapping"]["embedding_size"] == 512 and report["mapping"]["num_classes"] == 17
    assert report["tool"]["name"] == "facenet-tf2pt"


def test_same_input_gives_byte_identical_files(fixture512, converted512, tmp_path):
    again = convert(fixture512.directory, tmp_path / "again.pt")
    assert again.output.read_bytes() == converted512.output.read_bytes()
    assert again.report["output"] == {**converted512.report["output"], "file": "again.pt"}


def test_all_source_kinds_give_the_same_weights(fixture512, converted512, tmp_path):
    reference = load_state_dict_file(converted512.output)
    from_prefix = convert(fixture512.checkpoint_prefix, tmp_path / "prefix.pt", reader="tf")
    from_index = convert(f"{fixture512.checkpoint_prefix}.index", tmp_path / "index.pt")
    from_pb = convert(fixture512.frozen_graph, tmp_path / "pb.pt")
    assert from_prefix.sha256 == from_index.sha256 == converted512.sha256
    pb_sd = load_state_dict_file(from_pb.output)
    # the frozen graph has no Logits; everything else is the same tensor for tensor
    assert set(reference) - set(pb_sd) == {"logits.weight", "logits.bias"}
    for k, v in pb_sd.items():
        assert torch.equal(v, reference[k]), k


def test_safetensors_and_pt_give_identical_outputs(fixture512, converted512, tmp_path):
    st = convert(fixture512.directory, tmp_path / "fx512.safetensors")
    a, b = load_state_dict_file(converted512.output), load_state_dict_file(st.output)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    from facenet_tf2pt.converter.verify import model_from_state_dict
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(model_from_state_dict(a)(x), model_from_state_dict(b)(x))


def test_outputs_equal_what_torch_and_safetensors_torch_write(converted512, tmp_path):
    """The converter writes without torch (converter/torch_zip.py, safetensors.numpy); its bytes
    are exactly those torch.save / safetensors.torch.save write for the same tensors."""
    import io

    from safetensors.torch import save as st_save

    sd = load_state_dict_file(converted512.output)
    model = InceptionResNetV1(embedding_size=512, num_classes=17).state_dict()
    assert {k: (v.dtype, v.shape) for k, v in sd.items()} == {k: (v.dtype, v.shape) for k, v in model.items()}
    st = convert(converted512.source.path, tmp_path / "fx.safetensors")
    assert st.output.read_bytes() == st_save({k: sd[k] for k in sorted(sd)}, metadata={"format": "pt"})
    same, why = same_torch_as_pinned()
    if not same:
        pytest.skip(f"safetensors compared; torch.save not: {why}")
    buf = io.BytesIO()
    torch.save({k: sd[k] for k in sorted(sd)}, buf)
    assert converted512.output.read_bytes() == buf.getvalue()


def test_128d_model_without_logits(fixture128, tmp_path):
    r = convert(fixture128.directory, tmp_path / "fx128.pt")
    assert (r.load_report.embedding_size, r.load_report.num_classes) == (128, None)
    sd = load_state_dict_file(r.output)
    assert sd["last_linear.weight"].shape == (128, 1792) and "logits.weight" not in sd


def _variant(fixture, tmp_path, edit):
    """A copy of the fixture checkpoint with `edit(arrays)` applied, written by TF's SaveV2."""
    from facenet_tf2pt.converter.sources import read_checkpoint_tf
    arrays = read_checkpoint_tf(fixture.checkpoint_prefix)
    edit(arrays)
    return save_checkpoint(tmp_path / "variant" / "model-variant.ckpt-1", arrays)


def test_wrong_shape_names_the_variable_and_both_shapes(fixture128, tmp_path):
    name = "InceptionResnetV1/Repeat/block35_2/Branch_1/Conv2d_0b_3x3/weights"
    prefix = _variant(fixture128, tmp_path, lambda a: a.__setitem__(name, np.zeros((3, 3, 32, 16), np.float32)))
    out = tmp_path / "out.pt"
    with pytest.raises(ConversionError) as e:
        convert(prefix, out)
    assert name in str(e.value) and "[3, 3, 32, 16]" in str(e.value) and "[3, 3, 32, 32]" in str(e.value)
    assert not out.exists()


def test_missing_and_unexpected_variables_are_all_listed(fixture128, tmp_path):
    gone = "InceptionResnetV1/Mixed_6a/Branch_1/Conv2d_0b_3x3/BatchNorm/moving_mean"

    def edit(a):
        del a[gone]
        a["InceptionResnetV1/Conv2d_1a_3x3/BatchNorm/gamma"] = np.ones(32, np.float32)
        a["global_step"] = np.array(5, np.int64)          # declared ignorable
    prefix = _variant(fixture128, tmp_path, edit)
    with pytest.raises(ConversionError) as e:
        convert(prefix, tmp_path / "out.pt")
    msg = str(e.value)
    assert f"missing TF variable {gone}" in msg
    assert "unexpected TF variable InceptionResnetV1/Conv2d_1a_3x3/BatchNorm/gamma" in msg
    assert "global_step" not in msg


def test_ignored_variables_are_reported(fixture128, tmp_path):
    def edit(a):
        a["global_step"] = np.array(7, np.int64)
        a["InceptionResnetV1/Conv2d_1a_3x3/weights/Adam"] = np.zeros((3, 3, 3, 32), np.float32)
    r = convert(_variant(fixture128, tmp_path, edit), tmp_path / "out.pt")
    assert r.load_report.ignored == {"global_step": "training step counter",
                                     "InceptionResnetV1/Conv2d_1a_3x3/weights/Adam": "optimizer slot"}


def test_nan_is_refused(fixture128, tmp_path):
    name = "InceptionResnetV1/Block8/Conv2d_1x1/biases"

    def edit(a):
        a[name] = a[name].copy()
        a[name][3] = np.nan
    with pytest.raises(ConversionError, match=f"{name}: 1 of 1792 values are NaN or Inf"):
        convert(_variant(fixture128, tmp_path, edit), tmp_path / "out.pt")


def test_cli_convert_prints_hash_and_keeps_old_output_on_error(fixture128, tmp_path):
    out = tmp_path / "model.pt"
    ok = run_cli("convert", fixture128.directory, "-o", out, "-q")
    assert ok.returncode == 0, ok.stderr
    assert f"sha256 {sha256_file(out)}" in ok.stdout
    before = out.read_bytes()
    bad = run_cli("convert", tmp_path / "nowhere", "-o", out)
    assert bad.returncode == 2 and "nowhere" in bad.stderr
    assert out.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_pure_reader_is_byte_identical_to_tensorflow_on_the_fixture(fixture512, fixture512_arrays):
    from facenet_tf2pt.converter.bundle_reader import read_checkpoint
    pure = read_checkpoint(fixture512.checkpoint_prefix)
    assert pure.keys() == fixture512_arrays.keys()
    for name, a in fixture512_arrays.items():
        b = pure[name]
        assert (b.dtype, b.shape, b.tobytes()) == (a.dtype, a.shape, a.tobytes()), name


def test_convert_works_without_tensorflow(fixture512, converted512, tmp_path):
    """With `import tensorflow` and `import torch` failing, convert still reads the checkpoint (pure
    reader) and writes the same bytes (our torch-format writer); a frozen .pb, which needs TF, fails
    with an actionable message."""
    out = tmp_path / "no_tf.pt"
    blocked = ("tensorflow", "torch")
    ok = run_cli("convert", "-q", fixture512.directory, "-o", out, without=blocked)
    assert ok.returncode == 0, ok.stderr
    assert out.read_bytes() == converted512.output.read_bytes()
    pb = run_cli("convert", "-q", fixture512.frozen_graph, "-o", tmp_path / "pb.pt", without=blocked)
    assert pb.returncode == 2 and "needs TensorFlow" in pb.stderr and "pip install" in pb.stderr
