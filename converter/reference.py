"""Reference activations in HDF5: the TF side of verification, recorded once, checked any time later.

    facenet-convert reference SRC -o ref.h5 [--batch 5] [--seed 0]   # needs TensorFlow
    facenet-convert verify --reference ref.h5 WEIGHTS                # does not

`write_reference` runs only the TF graph of a source (as `verify` does) on the seeded batch and
stores, with h5py: `input` (N, H, W, 3 float32, standardized), `end_points/<name>` (every
Sandberg end point the graph has, as TF gives it: NHWC or (N, C)), `embeddings` (N, emb), and as
attributes the source files' sha256 and sizes, the TF version, the graph used, seed, batch and
the tool version. `verify_reference` runs the PyTorch model (float32 and float64) on the stored
input and compares with the very function `verify` uses, so it returns the same ParityReport. It
imports neither TensorFlow nor anything that does.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from ..models.cli.options import in_range
from ..models.common.paths import check_run_paths, require_regular

from .errors import ConversionError
from .writer import atomic_output

FORMAT = "facenet-tf2pt/reference/1"
STANDARDIZATION = "(uint8 - 127.5) / 128"


@dataclass
class ReferenceInfo:
    path: Path
    tf_graph: str
    tf_version: str
    batch: int
    seed: int
    end_points: list[str]
    absent_end_points: list[str]
    source_files: list[dict]
    notes: list[str]


def _hash_files(paths) -> list[dict]:
    from .writer import sha256_file

    seen, out = set(), []
    for p in paths:
        if p is None or p in seen or not Path(p).is_file():
            continue
        seen.add(p)
        out.append({"name": Path(p).name, "sha256": sha256_file(p), "size": Path(p).stat().st_size})
    return out


def write_reference(source, output, *, batch: int = 5, seed: int = 0, image_size: int = 160,
                    step: int | None = None, images=None, standardization: str | None = None) -> ReferenceInfo:
    """Run the TF graph of `source` on `make_batch(batch, seed)` (or on MTCNN face crops of the
    photos in the folder `images`, see face_batch.py) and write `output` (.h5) atomically."""
    import h5py

    from .sources import resolve_source
    from .tf_run import run_tf
    from .verify import make_batch

    if not 1 <= batch <= MAX_BATCH:
        raise ConversionError(f"--batch must be 1 to {MAX_BATCH}, got {batch}")
    output = Path(output)
    src = resolve_source(source, step=step)
    check_run_paths(inputs=[src.input_files(), images], outputs=[(output, (".h5", ".hdf5"))])
    faces, used = None, STANDARDIZATION
    if images is not None:
        faces = _face_batch(src, images, standardization, image_size, batch)
        pixels, used, batch = faces.images, faces.standardization, len(faces.files)
    else:
        pixels = make_batch(batch, seed, image_size)
    run = run_tf(src, pixels)
    names = [n for n in run.outputs if n != "embeddings"]
    files = _hash_files([*src.weight_files(), src.frozen_graph,
                         src.meta_graph])
    notes = list(src.notes) + list(run.notes) + ([faces.describe(images)] if faces else [])
    with atomic_output(output) as tmp:
        with h5py.File(tmp, "w") as f:
            attrs = {
                "format": FORMAT, "tool": "facenet-tf2pt", "tool_version": __version__,
                "tensorflow_version": run.tf_version, "numpy_version": np.__version__,
                "source": str(source), "source_kind": src.kind, "tf_graph": run.graph_used,
                "seed": seed, "batch": batch, "image_size": image_size, "standardization": used,
                "images": "" if faces is None else str(images),
                "image_files": json.dumps([] if faces is None else faces.files),
                "source_files": json.dumps(files), "end_points": json.dumps(names),
                "absent_end_points": json.dumps(run.absent), "notes": json.dumps(notes),
            }
            for k, v in attrs.items():
                f.attrs[k] = v
            f.create_dataset("input", data=pixels, track_times=False)
            group = f.create_group("end_points")
            for name in names:
                group.create_dataset(name, data=np.asarray(run.outputs[name], np.float32), track_times=False)
            f.create_dataset("embeddings", data=np.asarray(run.outputs["embeddings"], np.float32),
                             track_times=False)
    return ReferenceInfo(output, run.graph_used, run.tf_version, batch, seed, names, run.absent, files, notes)


def _face_batch(src, folder, standardization, image_size: int, limit: int):
    from .face_batch import face_batch, standardization_for
    from .loader import infer_sizes
    from .sources import read_variables

    if standardization is None:   # the model's own: from its embedding size
        embedding_size, _ = infer_sizes(read_variables(src), str(src.path), src.names)
        standardization = standardization_for(embedding_size)
    return face_batch(folder, standardization, image_size=image_size, limit=limit)


def read_reference(path) -> tuple[dict, np.ndarray, dict[str, np.ndarray]]:
    """(attributes, input batch NHWC, {end point: activation, ..., 'embeddings': ...})."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise ConversionError(f"{path}: no such reference file")
    require_regular(path, "reference file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ConversionError(f"{path}: not an HDF5 file ({e})") from e
    with f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        if attrs.get("format") != FORMAT:
            raise ConversionError(f"{path}: not a facenet-tf2pt reference file (format "
                                  f"{attrs.get('format')!r}, expected {FORMAT!r})")
        try:
            for key in ("source_files", "end_points", "absent_end_points", "notes"):
                attrs[key] = json.loads(attrs[key])
            if not all(isinstance(n, str) for n in attrs["end_points"]):
                raise ValueError("end_points must be a list of names")
        except (KeyError, ValueError, TypeError) as e:
            raise ConversionError(f"{path}: malformed reference attributes ({e})") from e
        try:
            datasets = {"input": f["input"], "embeddings": f["embeddings"]}
            datasets.update({name: f["end_points"][name] for name in attrs["end_points"]})
        except KeyError as e:
            raise ConversionError(f"{path}: incomplete reference file ({e})") from e
        except TypeError as e:
            raise ConversionError(f"{path}: malformed reference file ({e})") from e
        _check_sizes(path, datasets)   # shapes come from the file: checked before anything is read
        images = datasets.pop("input")[()]
        outputs = {name: d[()] for name, d in datasets.items() if name != "embeddings"}
        outputs["embeddings"] = datasets["embeddings"][()]
    return attrs, images.astype(np.float32), outputs


MAX_BATCH = 64
MAX_PIXELS = MAX_BATCH * 160 * 160      # the largest batch `reference --batch` writes
MAX_DATASET_BYTES = 256 << 20


def _check_sizes(path, datasets: dict) -> None:
    shape = datasets["input"].shape
    if len(shape) != 4 or shape[-1] != 3:
        raise ConversionError(f"{path}: input has shape {list(shape)}, expected N x H x W x 3")
    n, h, w, _ = shape
    if not (1 <= n <= MAX_BATCH and 75 <= h and 75 <= w and n * h * w <= MAX_PIXELS):
        raise ConversionError(f"{path}: input of shape {list(shape)} is outside the bounds a reference "
                              f"file has (batch <= {MAX_BATCH}, images >= 75 px, <= {MAX_PIXELS} pixels)")
    for name, d in datasets.items():
        nbytes = int(np.prod(d.shape, dtype=np.float64)) * d.dtype.itemsize
        if d.dtype.kind != "f" or nbytes > MAX_DATASET_BYTES:
            raise ConversionError(f"{path}: dataset {name} is {d.dtype} {list(d.shape)}; expected float "
                                  f"activations of at most {MAX_DATASET_BYTES >> 20} MB")


def verify_reference(reference, weights, *, atol: float | None = None, float64: bool = True):
    """Compare converted `weights` with the TF activations recorded in `reference`: a ParityReport,
    as `verify` makes, with no TensorFlow involved."""
    import torch

    from .verify import DEFAULT_ATOL, ParityReport, compare, load_weights, model_from_state_dict, \
        pytorch_end_points

    attrs, images, tf_outputs = read_reference(reference)
    model = model_from_state_dict(load_weights(weights))
    pt32 = pytorch_end_points(model, images)
    pt64 = pytorch_end_points(model, images, torch.float64) if float64 else None
    layers, emb = compare(tf_outputs, pt32, pt64)
    files = ", ".join(f"{f['name']} {f['sha256'][:12]}" for f in attrs["source_files"])
    notes = list(attrs["notes"]) + [f"TF side read from {Path(reference).name}, recorded with TensorFlow "
                                    f"{attrs['tensorflow_version']} from {attrs['source']} ({files})"]
    return ParityReport(
        source=str(attrs["source"]), weights=str(weights),
        tf_graph=f"{attrs['tf_graph']} (recorded in {Path(reference).name})",
        batch=int(attrs["batch"]), seed=int(attrs["seed"]), image_size=int(attrs["image_size"]),
        atol=DEFAULT_ATOL if atol is None else atol, layers=layers,
        absent_end_points=list(attrs["absent_end_points"]), notes=notes,
        images=attrs.get("images") or None, image_files=json.loads(attrs.get("image_files", "[]")),
        standardization="prewhiten" if attrs.get("standardization") == "prewhiten" else "fixed",
        versions={"tensorflow": f"{attrs['tensorflow_version']} (recorded)", "torch": torch.__version__,
                  "numpy": np.__version__},
        **emb)


# --------------------------------------------------------------------------------------- CLI

def _cmd_reference(args) -> int:
    info = write_reference(args.source, args.output, batch=args.batch, seed=args.seed, step=args.step,
                           images=args.images, standardization=args.standardization)
    for note in info.notes:
        print(f"note: {note}")
    print(f"ran {info.tf_graph} (TensorFlow {info.tf_version}) on {info.batch} images, seed {info.seed}")
    print(f"recorded {len(info.end_points)} end points + embeddings"
          + (f"; absent from this graph: {', '.join(info.absent_end_points)}" if info.absent_end_points else ""))
    for f in info.source_files:
        print(f"  {f['name']}  sha256 {f['sha256']}")
    print(f"wrote {info.path} ({info.path.stat().st_size} bytes)")
    return 0


def add_subcommands(sub) -> None:
    r = sub.add_parser("reference", help="record the TF graph's activations on a seeded batch in HDF5",
                       description="Run only the TensorFlow side of `verify` and store the input batch, "
                                   "every end point, the embeddings and the source hashes in an .h5 file; "
                                   "`verify --reference FILE WEIGHTS` then checks weights without TensorFlow.")
    r.add_argument("source", help="model directory, checkpoint prefix, or frozen .pb")
    r.add_argument("-o", "--output", required=True, help="the .h5 file to write")
    r.add_argument("--batch", type=in_range(int, 1, MAX_BATCH), default=5)
    r.add_argument("--seed", type=in_range(int, 0), default=0)
    r.add_argument("--step", type=in_range(int, 0), help="checkpoint step, when the directory holds several")
    from .cli import add_images_arguments

    add_images_arguments(r)
    r.set_defaults(func=_cmd_reference)
