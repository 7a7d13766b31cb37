"""Hostile inputs, class by class (issue 13): every command of both CLIs and the public Python
loaders, tried as a hostile user would.

1. An output that is an input or another output (links included) is refused, nothing changed.
2. Every write is atomic with a unique temp name (concurrent saves, a 243-byte name, a full disk).
3. Nothing hangs: FIFOs and devices are refused by name; a folder walk visits each file once.
4. Sizes from files and options are bounded before anything is allocated (child's max RSS < 1 GB).
5. Every bad input or environment fault is exit 2 with one line; 1 means parity failed only.
6. No silent nonsense: NaN / complex / integer weights are refused by every loader, naming the key.

Cases that must not hang or balloon run the real CLI in a child process with a 30 s timeout and
read its peak memory (ru_maxrss of the child) back.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO, copy_checkpoint, tree_snapshot

LINUX = sys.platform.startswith("linux")
linux_only = pytest.mark.skipif(not LINUX, reason="FIFOs, /dev/zero and /dev/full as used here are Linux's")
CASE_TIMEOUT = 30          # seconds per hostile case (the issue's bound)
RSS_LIMIT_KB = 1 << 20     # 1 GB, in ru_maxrss units (KiB on Linux)

# runs argv[2:] and reports the peak RSS of that child (and its children) on stderr
_MEASURED = ("import resource, subprocess, sys\n"
             "try:\n"
             "    rc = subprocess.run(sys.argv[2:], timeout=float(sys.argv[1])).returncode\n"
             "except subprocess.TimeoutExpired:\n"
             "    rc = 'timeout'\n"
             "print(f'@@ rc={rc} maxrss_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr)\n")


def measured(*args, module="facenet_tf2pt.models.cli", cwd=REPO):
    """Run `python -m module args` in a child: (returncode, stdout, stderr, peak RSS in KiB)."""
    res = subprocess.run([sys.executable, "-c", _MEASURED, str(CASE_TIMEOUT), sys.executable, "-m", module,
                          *map(str, args)], capture_output=True, text=True, timeout=CASE_TIMEOUT + 60,
                         cwd=cwd)   # facenet_tf2pt resolves from any cwd (installed, or PYTHONPATH)
    tail = res.stderr.rstrip().splitlines()[-1]
    assert tail.startswith("@@ rc="), res.stderr
    rc_text, rss_text = tail[len("@@ rc="):].split(" maxrss_kb=")
    assert rc_text != "timeout", f"ran past {CASE_TIMEOUT} s: {args}\n{res.stderr}"
    return int(rc_text), res.stdout, "\n".join(res.stderr.splitlines()[:-1]), int(rss_text)


def assert_clean_refusal(rc, out, err, rss, *needles):
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err, err
    assert rss < RSS_LIMIT_KB, f"peak RSS {rss / 1024:.0f} MB"
    for n in needles:
        assert n in err, (n, err)


def in_process(main, argv) -> tuple[int, str]:
    """Run a CLI's main in this process; argparse's refusals (SystemExit) count as exit codes."""
    try:
        return main(argv), ""
    except SystemExit as e:
        return e.code, ""
    except Exception as e:   # noqa: BLE001 - what a process would show as a traceback, exit 1
        return 1, f"{type(e).__name__}: {e}"


# --------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def weights128(fixture128, tmp_path_factory):
    """The 128-d fixture converted (pure-Python reader: no TensorFlow in this process)."""
    from facenet_tf2pt.converter.convert import convert

    return convert(fixture128.directory, tmp_path_factory.mktemp("w128") / "fx128.pt").output


@pytest.fixture(scope="module")
def good_sd(weights128):
    from facenet_tf2pt.models.hub.serialization import load_state_dict_file

    return {k: v.clone() for k, v in load_state_dict_file(weights128).items()}


def _face(path: Path, seed: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def lfw(tmp_path):
    """A tiny LFW layout (3 people, 2 images each) and a pairs.txt of 4 pairs."""
    root = tmp_path / "lfw"
    for k, name in enumerate(("Ann", "Bob", "Cy")):
        for n in (1, 2):
            _face(root / name / f"{name}_{n:04d}.jpg", 10 * k + n)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2 2\nAnn 1 2\nBob 1 2\nAnn 1 Bob 2\nBob 1 Cy 1\n")
    return root, pairs


def _save(sd, path: Path) -> Path:
    torch.save(sd, path)
    return path


# ============================================ 1. no output may be an input or another output

def _link(kind: str, target: Path, name: Path) -> Path:
    (os.symlink if kind == "symlink" else os.link)(target, name)
    return name


def _clobber_cases(fx, weights, npy_dir, lfw_dir, pairs, tmp):
    """(command line, files whose bytes must survive) per command of both CLIs; each names an
    input (through a link where the suffix rule alone would refuse it) as an output."""
    index = Path(f"{fx.checkpoint_prefix}.index")
    image = next(lfw_dir.rglob("*.jpg"))
    ref = tmp / "ref.h5"
    ref.write_bytes(b"not read: the guard comes first")
    parity = tmp / "p.json"
    parity.write_text(json.dumps({"layers": [], "l2": 0.0, "max_abs": 0.0, "min_cosine": 1.0, "atol": 1e-5,
                                  "weights": str(weights)}))
    mt_out = tmp / "mt"
    mt_out.mkdir()
    _link("symlink", npy_dir / "det1.npy", mt_out / "pnet.pt")
    devlink = _link("symlink", "/dev/full", tmp / "dev.json") if LINUX else None
    cases = {
        "convert -o = --report": (["convert", fx.directory, "-o", tmp / "o.pt", "--report", tmp / "o.pt"], "facenet_tf2pt.converter"),
        "convert --report -> .index": (["convert", fx.directory, "-o", tmp / "o.pt", "--report",
                                        _link("symlink", index, tmp / "idx.json")], "facenet_tf2pt.converter"),
        "convert -o hard link of shard": (["convert", fx.directory, "-o",
                                           _link("hard", Path(f"{fx.checkpoint_prefix}.data-00000-of-00001"),
                                                 tmp / "shard.pt")], "facenet_tf2pt.converter"),
        "verify --report -> weights": (["verify", fx.directory, weights, "--report",
                                        _link("symlink", weights, tmp / "w.json")], "facenet_tf2pt.converter"),
        "verify --reference --report -> ref": (["verify", "--reference", ref, weights, "--report",
                                                _link("hard", ref, tmp / "ref.json")], "facenet_tf2pt.converter"),
        "reference -o -> .index": (["reference", fx.directory, "-o", _link("symlink", index, tmp / "i.h5")],
                                   "facenet_tf2pt.converter"),
        "fixture OUT_DIR is a file": (["fixture", weights], "facenet_tf2pt.converter"),
        "mtcnn pnet.pt -> det1.npy": (["mtcnn", npy_dir, "-o", mt_out], "facenet_tf2pt.converter"),
        "verify-mtcnn --json -> det2.npy": (["verify-mtcnn", npy_dir, "--json",
                                             _link("symlink", npy_dir / "det2.npy", tmp / "d.json")], "facenet_tf2pt.converter"),
        "report --conversion = output .md": (["report", parity, "--no-png", "--conversion",
                                              _link("symlink", parity, tmp / "p.md")], "facenet_tf2pt.converter"),
        "export -o -> weights": (["export", weights, "-o", _link("symlink", weights, tmp / "w.onnx")],
                                 "facenet_tf2pt.converter"),
        "export -o hard link of weights": (["export", weights, "-o", _link("hard", weights, tmp / "w.ts")],
                                           "facenet_tf2pt.converter"),
        "embed -o -> weights": (["embed", lfw_dir, "--weights", weights, "-o",
                                 _link("hard", weights, tmp / "w.npz")], "facenet_tf2pt.models.cli"),
        "embed -o -> image": (["embed", lfw_dir, "--weights", weights, "-o",
                               _link("symlink", image, tmp / "img.npz")], "facenet_tf2pt.models.cli"),
        "evaluate-lfw --json -> pairs": (["evaluate-lfw", lfw_dir, "--pairs", pairs, "--folds", "2", "--weights",
                                          weights, "--json", _link("symlink", pairs, tmp / "r.json")], "facenet_tf2pt.models.cli"),
        "evaluate-lfw --roc -> image": (["evaluate-lfw", lfw_dir, "--pairs", pairs, "--folds", "2", "--weights",
                                         weights, "--roc", _link("hard", image, tmp / "roc.png")], "facenet_tf2pt.models.cli"),
        "evaluate-lfw --json = --roc": (["evaluate-lfw", lfw_dir, "--pairs", pairs, "--folds", "2", "--weights",
                                         weights, "--json", tmp / "x.json", "--roc",
                                         _link("symlink", tmp / "x.json", tmp / "x.png")], "facenet_tf2pt.models.cli"),
    }
    if devlink:
        cases["convert --report is a device"] = (["convert", fx.directory, "-o", tmp / "o.pt", "--report", devlink],
                                                 "facenet_tf2pt.converter")
    return cases


def test_naming_an_input_as_an_output_is_refused_with_nothing_changed(fixture128, weights128, mtcnn_npy_dir,
                                                                     lfw, tmp_path, capsys):
    """Every command that writes: exit 2, a message naming the clash, every file byte-identical.
    (`compare` writes nothing; its inputs are checked by the same call.)"""
    from facenet_tf2pt.converter.cli import main as convert_main
    from facenet_tf2pt.models.cli.facenet import main as facenet_main

    fx_copy = copy_checkpoint(fixture128, tmp_path / "src").parent
    fx = type("F", (), {"directory": fx_copy, "checkpoint_prefix": fx_copy / fixture128.checkpoint_prefix.name})
    w = tmp_path / "w" / "fx128.pt"
    w.parent.mkdir()
    w.write_bytes(Path(weights128).read_bytes())
    npy = tmp_path / "npy"
    npy.mkdir()
    for f in mtcnn_npy_dir.iterdir():
        (npy / f.name).write_bytes(f.read_bytes())
    lfw_dir, pairs = lfw
    work = tmp_path / "work"
    work.mkdir()
    cases = _clobber_cases(fx, w, npy, lfw_dir, pairs, work)
    failures = []
    for name, (argv, cli) in cases.items():
        before = tree_snapshot(tmp_path)
        main = convert_main if cli == "facenet_tf2pt.converter" else facenet_main
        rc, _ = in_process(main, [str(a) for a in argv])
        after = tree_snapshot(tmp_path)
        err = capsys.readouterr().err
        said = any(s in err for s in ("same file", "not a folder", "character device", "must end in"))
        if rc != 2 or before != after or not said:
            failures.append(f"{name}: exit {rc}, changed {sorted(k for k in after if before.get(k) != after[k])}, "
                            f"said {err.strip()!r}")
    assert not failures, "\n".join(failures)


def test_the_clash_message_names_both_files(fixture128, tmp_path, capsys):
    from facenet_tf2pt.converter.cli import main

    out, report = tmp_path / "o.pt", tmp_path / "r.json"
    index = Path(f"{fixture128.checkpoint_prefix}.index")
    os.symlink(index, report)
    assert main(["convert", str(fixture128.directory), "-o", str(out), "--report", str(report)]) == 2
    err = capsys.readouterr().err
    assert "same file" in err and str(report) in err and str(index) in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert main(["convert", str(fixture128.directory), "-o", str(out), "--report", str(out)]) == 2
    assert "must end in .json" in capsys.readouterr().err


def test_output_suffix_is_required(fixture128, tmp_path, capsys):
    from facenet_tf2pt.converter.cli import main

    assert main(["reference", str(fixture128.directory), "-o", str(tmp_path / "ref.txt")]) == 2
    assert "must end in .h5" in capsys.readouterr().err


def test_guard_for_folder_outputs_refuses_overlap(tmp_path):
    """The call a folder-to-folder command (facenet align IN_DIR OUT_DIR) makes."""
    from facenet_tf2pt.models.common.paths import PathError, check_run_paths

    (tmp_path / "in" / "sub").mkdir(parents=True)
    for out in (tmp_path / "in", tmp_path / "in" / "sub", tmp_path):
        with pytest.raises(PathError, match="overlaps input folder"):
            check_run_paths(inputs=[tmp_path / "in"], output_dirs=[out])
    check_run_paths(inputs=[tmp_path / "in"], output_dirs=[tmp_path / "out"])


# ==================================================================== 2. atomic, unique writes

def test_concurrent_saves_never_mix(tmp_path):
    from facenet_tf2pt.models.data.embed import EmbedResult, load_embeddings

    target = tmp_path / "e.npz"
    results = [EmbedResult([f"/x/{k}.jpg"] * 3, ["a"] * 3, np.full((3, 8), k, np.float32)) for k in range(6)]
    errors = []

    def save(r):
        try:
            for _ in range(5):
                r.save(target)
        except Exception as e:   # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=save, args=(r,)) for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    got = load_embeddings(target).embeddings
    assert any(np.array_equal(got, r.embeddings) for r in results)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npz"]


def test_a_legal_243_byte_output_name_is_written(fixture128, tmp_path, capsys):
    from facenet_tf2pt.converter.cli import main

    out = tmp_path / ("n" * 240 + ".pt")     # the default report adds ".json": 248 bytes
    assert main(["convert", str(fixture128.directory), "-o", str(out), "-q"]) == 0, capsys.readouterr().err
    assert out.stat().st_size > 0 and Path(f"{out}.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, out.name + ".json"])


def test_full_disk_keeps_previous_lfw_json_and_roc(weights128, lfw, tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib", reason="--roc needs matplotlib")
    from facenet_tf2pt.models.cli.facenet import main

    lfw_dir, pairs = lfw
    out_json, out_png = tmp_path / "r.json", tmp_path / "roc.png"
    out_json.write_text('{"previous": true}\n')
    out_png.write_bytes(b"previous png")
    before = tree_snapshot(tmp_path)
    real_fsync = os.fsync

    def full(fd):
        if os.path.realpath(f"/proc/self/fd/{fd}").startswith(str(tmp_path.resolve())) if LINUX else True:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    rc = main(["evaluate-lfw", str(lfw_dir), "--pairs", str(pairs), "--folds", "2", "--weights", str(weights128),
               "--json", str(out_json), "--roc", str(out_png), "-q", "--engine", "plain"])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left" in err and "Traceback" not in err
    assert tree_snapshot(tmp_path) == before


# ======================================================================= 3. nothing hangs

@linux_only
@pytest.mark.parametrize("where", ["index", "shard", "pb", "meta"])
def test_fifo_in_a_model_folder_is_refused_by_name(where, fixture128, tmp_path):
    src = tmp_path / "m"
    copy_checkpoint(fixture128, src, with_meta=True)
    name = {"index": f"{fixture128.checkpoint_prefix.name}.index",
            "shard": f"{fixture128.checkpoint_prefix.name}.data-00000-of-00001",
            "pb": "frozen.pb", "meta": Path(fixture128.meta_graph).name}[where]
    (src / name).unlink(missing_ok=True)
    os.mkfifo(src / name)
    rc, out, err, rss = measured("convert", src, "-o", tmp_path / "o.pt", module="facenet_tf2pt.converter")
    assert_clean_refusal(rc, out, err, rss, name, "FIFO")


@linux_only
@pytest.mark.parametrize("what", ["weights", "image", "pairs", "devzero-pairs"])
def test_fifo_or_device_given_to_facenet_is_refused(what, weights128, lfw, tmp_path):
    lfw_dir, pairs = lfw
    fifo = tmp_path / ("fifo.pt" if what == "weights" else "fifo.jpg")
    os.mkfifo(fifo)
    if what == "weights":
        args = ["compare", *sorted(lfw_dir.rglob("*.jpg"))[:2], "--weights", fifo]
    elif what == "image":
        args = ["compare", fifo, next(lfw_dir.rglob("*.jpg")), "--weights", weights128]
    else:
        args = ["evaluate-lfw", lfw_dir, "--pairs", fifo if what == "pairs" else "/dev/zero", "--weights",
                weights128]
    rc, out, err, rss = measured(*args)
    assert_clean_refusal(rc, out, err, rss, "not a regular file")


@linux_only
def test_fifo_det_npy_report_json_and_reference_are_refused(mtcnn_npy_dir, weights128, tmp_path):
    npy = tmp_path / "npy"
    npy.mkdir()
    for f in mtcnn_npy_dir.iterdir():
        (npy / f.name).write_bytes(f.read_bytes())
    (npy / "det2.npy").unlink()
    os.mkfifo(npy / "det2.npy")
    os.mkfifo(tmp_path / "p.json")
    os.mkfifo(tmp_path / "ref.h5")
    for args in (["mtcnn", npy, "-o", tmp_path / "out"], ["report", tmp_path / "p.json", "--no-png"],
                 ["verify", "--reference", tmp_path / "ref.h5", weights128]):
        rc, out, err, rss = measured(*args, module="facenet_tf2pt.converter")
        assert_clean_refusal(rc, out, err, rss, "FIFO")


@linux_only
def test_walk_visits_each_file_once_and_reports_links_and_fifos(tmp_path):
    from facenet_tf2pt.models.data.datasets import FaceDataset

    root = tmp_path / "faces"
    _face(root / "ann" / "a.jpg", 1)
    _face(root / "bob" / "b.jpg", 2)
    outside = _face(tmp_path / "elsewhere" / "x.jpg", 3)
    os.symlink(root, root / "ann" / "up")            # two links back to the root: loops
    os.symlink(root / "bob", root / "ann" / "up2")
    os.symlink(outside, root / "bob" / "out.jpg")    # leaves the tree
    os.link(root / "ann" / "a.jpg", root / "bob" / "same.jpg")
    os.mkfifo(root / "bob" / "pipe.jpg")
    ds = FaceDataset(root)
    assert sorted(Path(p).name for p in ds.paths) == ["a.jpg", "b.jpg"]
    reasons = {Path(p).name: r for p, r in ds.skipped}
    assert "link leaves the tree" in reasons["out.jpg"] and "FIFO" in reasons["pipe.jpg"]
    assert "same folder" in reasons["up"] and "same file" in reasons["same.jpg"]


def _deny(monkeypatch, module, name: str, blocked: Path) -> None:
    """`module.name(path, ...)` raises EACCES for `blocked`, as a mode-0 folder does for anyone but
    root (the suite may run as root, who reads and writes everything)."""
    real = getattr(module, name)

    def denied(path, *args, **kwargs):
        if Path(path) == blocked or Path(path).parent == blocked:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module, name, denied)


def test_unreadable_subfolder_is_listed(tmp_path, monkeypatch):
    import facenet_tf2pt.models.common.paths as paths_module
    from facenet_tf2pt.models.data.datasets import FaceDataset

    _face(tmp_path / "ann" / "a.jpg", 1)
    _face(tmp_path / "locked" / "b.jpg", 2)
    _deny(monkeypatch, paths_module.os, "scandir", tmp_path / "locked")
    (tmp_path / "locked").chmod(0)
    try:
        ds = FaceDataset(tmp_path)
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert [Path(p).name for p in ds.paths] == ["a.jpg"]
    assert any(p.endswith("locked") and "unreadable folder" in r for p, r in ds.skipped)


def test_symlink_loops_under_a_cli_finish(weights128, tmp_path):
    root = tmp_path / "faces"
    _face(root / "ann" / "a.jpg", 1)
    for k in range(2):
        os.symlink(root, root / "ann" / f"loop{k}")
    rc, out, err, rss = measured("embed", root, "--weights", weights128, "-o", tmp_path / "e.npz", "-q",
                                 "--engine", "plain")
    assert rc == 0, err
    from facenet_tf2pt.models.data.embed import load_embeddings

    assert len(load_embeddings(tmp_path / "e.npz").paths) == 1


# ================================================================ 4. untrusted sizes are bounded

@pytest.mark.parametrize("key,shape", [("last_linear.weight", (1_000_000, 0)),
                                       ("last_linear.weight", (2 ** 31, 0)),
                                       ("logits.weight", (10 ** 9, 0))])
def test_absurd_shapes_in_a_weights_file(key, shape, good_sd, lfw, tmp_path):
    sd = dict(good_sd)
    sd[key] = torch.empty(shape)
    w = _save(sd, tmp_path / "bad.pt")
    lfw_dir, _ = lfw
    rc, out, err, rss = measured("compare", *sorted(lfw_dir.rglob("*.jpg"))[:2], "--weights", w)
    assert_clean_refusal(rc, out, err, rss, key)


def test_absurd_shape_through_pretrained_and_verify(good_sd, tmp_path):
    """The Python loaders: pretrained=PATH and the converter's verify path, in a child (RSS)."""
    sd = dict(good_sd)
    sd["last_linear.weight"] = torch.empty(1_000_000, 0)
    w = _save(sd, tmp_path / "bad.pt")
    code = ("import sys\nfrom facenet_tf2pt.models import InceptionResNetV1\nfrom facenet_tf2pt.converter.verify import load_weights, "
            "model_from_state_dict\nfrom facenet_tf2pt.converter.errors import ConversionError\n"
            f"try:\n    InceptionResNetV1(pretrained={str(w)!r})\nexcept ValueError as e:\n    print('A', e)\n"
            f"try:\n    model_from_state_dict(load_weights({str(w)!r}))\nexcept ConversionError as e:\n"
            "    print('B', e)\n")
    res = subprocess.run([sys.executable, "-c", _MEASURED, str(CASE_TIMEOUT), sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=CASE_TIMEOUT + 60, cwd=REPO)
    rss = int(res.stderr.rsplit("maxrss_kb=", 1)[1])
    assert "A " in res.stdout and "B " in res.stdout and res.stdout.count("last_linear.weight") == 2, res.stderr
    assert rss < RSS_LIMIT_KB


def test_compressed_zip_record_is_refused_before_loading(good_sd, tmp_path):
    """A deflated record could inflate to any size: torch.save never writes one."""
    from facenet_tf2pt.models.hub.serialization import load_state_dict_file

    plain = _save({"w": torch.zeros(1000)}, tmp_path / "plain.pt")
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    with pytest.raises(ValueError, match="compressed"):
        load_state_dict_file(bomb)


def test_safetensors_header_claiming_a_huge_tensor(tmp_path):
    from facenet_tf2pt.models.hub.serialization import load_state_dict_file

    header = json.dumps({"last_linear.weight": {"dtype": "F32", "shape": [2 ** 40, 1792],
                                                "data_offsets": [0, 16]}}).encode()
    f = tmp_path / "huge.safetensors"
    f.write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    with pytest.raises(ValueError, match="safetensors"):
        load_state_dict_file(f)


@pytest.mark.parametrize("args", [["--image-size", "4000"], ["--batch-size", "1000000000"],
                                  ["--image-size", "0"], ["--workers", "-1"], ["--margin", "-5"]])
def test_size_options_are_bounded_at_parse_time(args, weights128, lfw, tmp_path):
    lfw_dir, _ = lfw
    rc, out, err, rss = measured("embed", lfw_dir, "--weights", weights128, "-o", tmp_path / "e.npz", *args)
    assert_clean_refusal(rc, out, err, rss, args[0])
    assert not (tmp_path / "e.npz").exists()


def test_oversized_pairs_file_is_refused(weights128, lfw, tmp_path):
    lfw_dir, _ = lfw
    big = tmp_path / "pairs.txt"
    with open(big, "wb") as f:
        f.truncate(1 << 30)      # sparse: 1 GB of zeros on no disk
    rc, out, err, rss = measured("evaluate-lfw", lfw_dir, "--pairs", big, "--weights", weights128)
    assert_clean_refusal(rc, out, err, rss, "larger than")


def test_reference_file_claiming_a_huge_batch(weights128, tmp_path):
    h5py = pytest.importorskip("h5py", reason="reference files are HDF5")
    from facenet_tf2pt.converter.reference import FORMAT

    ref = tmp_path / "ref.h5"
    with h5py.File(ref, "w") as f:
        f.attrs.update(format=FORMAT, source_files="[]", end_points="[]", absent_end_points="[]", notes="[]")
        f.create_dataset("input", shape=(10 ** 6, 160, 160, 3), dtype="f4", chunks=(1, 160, 160, 3))
        f.create_dataset("embeddings", shape=(10 ** 6, 128), dtype="f4", chunks=(1, 128))
    assert ref.stat().st_size < 1 << 20
    rc, out, err, rss = measured("verify", "--reference", ref, weights128, module="facenet_tf2pt.converter")
    assert_clean_refusal(rc, out, err, rss, "outside the bounds")


# ====================================================================== 5. exit codes

@pytest.mark.parametrize("argv", [
    ["evaluate-lfw", "D", "--pairs", "P", "--folds", "0"], ["evaluate-lfw", "D", "--pairs", "P", "--folds", "1"],
    ["evaluate-lfw", "D", "--pairs", "P", "--far", "-1"], ["evaluate-lfw", "D", "--pairs", "P", "--far", "nan"],
    ["compare", "a", "b", "--threshold", "nan"], ["compare", "a", "b", "--threshold", "-inf"],
    ["embed", "D", "-o", "o.npz", "--workers", "-1"], ["embed", "D", "-o", "o.npz", "--image-size", "0"],
    ["embed", "D", "-o", "o.npz", "--batch-size", "0"]])
def test_bad_facenet_options_exit_2_before_any_work(argv, capsys):
    """Refused by the option's own check (its name in the message), before DIR is even looked at."""
    from facenet_tf2pt.models.cli.facenet import main

    assert in_process(main, argv)[0] == 2
    option = [a for a in argv if a.startswith("--")][-1]
    assert f"argument {option}" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["verify", "S", "W", "--atol", "nan"], ["verify", "S", "W", "--batch", "0"], ["verify", "S", "W", "--seed", "-1"],
    ["fixture", "D", "--embedding-size", "0"], ["fixture", "D", "--num-classes", "-3"],
    ["reference", "S", "-o", "r.h5", "--batch", "100000"], ["verify-mtcnn", "--atol", "inf"],
    ["report", "x.json", "--batch", "-1"], ["convert", "S", "-o", "o.pt", "--step", "-1"],
    ["export", "W", "-o", "m.onnx", "--atol", "nan"], ["export", "W", "-o", "m.pt2", "--image-size", "10"],
    ["check-export", "m.onnx", "W", "--seed", "-1"]])
def test_bad_convert_options_exit_2_before_any_work(argv, capsys):
    from facenet_tf2pt.converter.cli import main

    assert in_process(main, argv)[0] == 2
    option = [a for a in argv if a.startswith("--")][-1]
    assert f"argument {option}" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["name too long", "output is a directory", "parent is a file"])
def test_environment_faults_are_exit_2(case, fixture128, tmp_path, capsys):
    from facenet_tf2pt.converter.cli import main

    out = {"name too long": tmp_path / ("n" * 300 + ".pt"), "output is a directory": tmp_path / "d.pt",
           "parent is a file": tmp_path / "f" / "o.pt"}[case]
    (tmp_path / "d.pt").mkdir()
    (tmp_path / "f").write_text("a file")
    assert main(["convert", str(fixture128.directory), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("content", [b"\xff\xfe\x00binary", b"[1, 2]", b'{"layers": "x", "l2": "a", "max_abs": '
                                     b'null, "min_cosine": 1, "atol": "tol", "weights": 3}', b"{" * 100000])
def test_bad_report_json_is_exit_2(content, tmp_path, capsys):
    from facenet_tf2pt.converter.cli import main

    p = tmp_path / "p.json"
    p.write_bytes(content)
    assert main(["report", str(p), "--no-png", "-o", str(tmp_path / "out")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_nothing_embeddable_is_exit_2_and_writes_nothing(weights128, tmp_path, capsys):
    from facenet_tf2pt.models.cli.facenet import main

    for name in ("a.jpg", "b.png"):
        (tmp_path / "faces" / "x").mkdir(parents=True, exist_ok=True)
        (tmp_path / "faces" / "x" / name).write_bytes(b"")
    rc = main(["embed", str(tmp_path / "faces"), "--weights", str(weights128), "-o", str(tmp_path / "e.npz"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "no image could be embedded" in err and "Traceback" not in err
    assert not (tmp_path / "e.npz").exists()


def test_internal_errors_are_exit_3_not_1(tmp_path, monkeypatch, capsys):
    """1 means parity failed, nothing else: a bug is 3, with its traceback."""
    import facenet_tf2pt.converter.tf_graphs as tf_graphs
    from facenet_tf2pt.converter import cli

    def boom(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(tf_graphs, "write_fixture", boom)
    assert cli.main(["fixture", str(tmp_path / "out")]) == 3
    err = capsys.readouterr().err
    assert "internal error" in err and "RuntimeError: a bug" in err


def test_version_flags():
    from facenet_tf2pt.models.common.version import project_version

    version = project_version()
    for module, prog in (("facenet_tf2pt.models.cli", "facenet"), ("facenet_tf2pt.converter", "facenet-convert")):
        res = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, cwd=REPO,
                             timeout=120)
        assert res.returncode == 0 and res.stdout.strip() == f"{prog} {version}"
    from importlib.metadata import version as installed_version

    assert version == installed_version("facenet-tf2pt")    # pyproject's dynamic version reads the same attribute


# =================================================================== 6. no silent nonsense

@pytest.mark.parametrize("bad", ["nan", "inf", "complex", "int"])
def test_bad_weight_values_are_refused_by_every_loader(bad, good_sd, tmp_path):
    from facenet_tf2pt.converter.errors import ConversionError
    from facenet_tf2pt.converter.verify import load_weights
    from facenet_tf2pt.models import InceptionResNetV1
    from facenet_tf2pt.models.data.embed import load_model
    from facenet_tf2pt.models.hub.builder import ModelLoadError, model_from_state_dict
    from facenet_tf2pt.models.hub.serialization import load_state_dict_file

    key = "repeat_1.0.conv2d.weight"
    sd = dict(good_sd)
    t = sd[key].clone()
    if bad == "nan":
        t[0, 0, 0, 0] = float("nan")
    elif bad == "inf":
        t[-1, -1, 0, 0] = float("inf")
    elif bad == "complex":
        t = t.to(torch.complex64)
    else:
        t = t.to(torch.int32)
    sd[key] = t
    path = _save(sd, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=key):
        load_state_dict_file(path)
    with pytest.raises(ValueError, match=key):
        InceptionResNetV1(pretrained=str(path))
    with pytest.raises(ModelLoadError, match=key):
        load_model(weights=path)
    with pytest.raises(ConversionError, match=key):
        load_weights(path)
    with pytest.raises(ModelLoadError, match=key):
        model_from_state_dict(sd)      # an in-memory state_dict too


def test_nan_weights_make_compare_exit_2_not_print_nan(good_sd, lfw, tmp_path, capsys):
    from facenet_tf2pt.models.cli.facenet import main

    sd = dict(good_sd)
    sd["last_bn.running_var"] = torch.full_like(sd["last_bn.running_var"], float("nan"))
    w = _save(sd, tmp_path / "nan.pt")
    lfw_dir, _ = lfw
    rc = main(["compare", *map(str, sorted(lfw_dir.rglob("*.jpg"))[:2]), "--weights", str(w)])
    captured = capsys.readouterr()
    assert rc == 2 and "nan" not in captured.out and "last_bn.running_var" in captured.err


def test_nan_mtcnn_weights_are_refused(tmp_path):
    from facenet_tf2pt.models.detection.mtcnn import load_net
    from facenet_tf2pt.models.detection.mtcnn_nets import NETS

    sd = NETS["pnet"]().state_dict()
    sd = {k: v.clone() for k, v in sd.items()}
    next(iter(sd.values())).view(-1)[0] = float("nan")
    _save(sd, tmp_path / "pnet.pt")
    with pytest.raises(ValueError, match="NaN"):
        load_net("pnet", tmp_path)


def test_stale_unused_shard_is_not_in_the_report_sources(fixture128, tmp_path):
    from facenet_tf2pt.converter.convert import convert

    prefix = copy_checkpoint(fixture128, tmp_path / "src")
    stale = Path(f"{prefix}.data-00001-of-00002")
    stale.write_bytes(b"left over from an older save")
    result = convert(tmp_path / "src", tmp_path / "o.pt")
    names = [f["name"] for f in result.report["source"]["files"]]
    assert stale.name not in names and f"{prefix.name}.data-00000-of-00001" in names


def test_read_only_hub_cache_with_mirror_file_and_no_record(tmp_path, monkeypatch, capsys):
    """A shared cache this user cannot write: the file is used, its hash printed, nothing fails."""
    import copy

    import facenet_tf2pt.models.hub.pretrained as pretrained
    from facenet_tf2pt.models.hub.pretrained import Registry, find_inception_file

    raw = json.loads((REPO / "checkpoints" / "registry.json").read_text())
    entry = copy.deepcopy(next(d for d in raw["models"] if d["tag"] == "ci-fixture"))
    entry["weights"][0].update(file=None, sha256=None, size=None, reason="test")
    entry["mirrors"] = [dict(file="mirror.pt", sha256=None, size=None, provider="test", reason="test",
                             url="http://127.0.0.1:9/never.pt")]
    reg = Registry.from_dict({"format": raw["format"], "models": [entry]})
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "mirror.pt").write_bytes(b"weights")
    hub.chmod(stat.S_IRUSR | stat.S_IXUSR)
    monkeypatch.delenv("FACENET_HOME", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(pretrained, "checkpoints_dir", lambda: tmp_path / "pkg")
    _deny(monkeypatch, pretrained, "atomic_write_bytes", hub)
    try:
        found = find_inception_file(reg.get("ci-fixture"), download_missing=False)
    finally:
        hub.chmod(0o755)
    err = capsys.readouterr().err
    assert found == hub / "mirror.pt"
    assert "could not be recorded" in err and "unverified" in err
    assert not (hub / "mirror.pt.sha256").exists()
