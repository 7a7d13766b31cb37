"""The ``facenet`` console script: embed a folder, compare images, audit accuracy on LFW.

    facenet embed DIR -o OUT.npz (--weights FILE | --pretrained NAME) [--detect] [--batch-size 64]
                  [--workers N] [--device cpu|cuda] [--standardization fixed|prewhiten]
    facenet compare A.jpg B.jpg [...] (--weights FILE | --pretrained NAME) [--threshold T] [--metric ...]
    facenet evaluate-lfw LFW_DIR --pairs pairs.txt (--weights FILE | --pretrained NAME) [--roc roc.png]
    facenet align IN_DIR OUT_DIR [--image-size 182] [--margin 44] [--random-order] [--detect-multiple-faces]

Exit codes (models/cli/options.py): 0 ok; 2 bad input or environment fault (a one-line message on
stderr naming the file or option); 3 internal error (a bug). No output may be an input or another
output (models/common/paths.py). Images are face crops unless ``--detect`` (MTCNN) is given.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .options import finite, in_range, run_guarded
from ..common.malloc import tune_malloc
from ..common.paths import PathError, check_run_paths

# Squared L2 between unit-norm embeddings; "same person" when the distance is below it.
# FaceNet (Schroff et al. 2015, Fig. 1) illustrates 1.1 on this scale, and the thresholds Sandberg's
# 10-fold LFW protocol selects for his models lie around 1.1-1.25. `evaluate-lfw` prints the
# threshold selected for a given model: pass it to `compare --threshold`.
DEFAULT_THRESHOLD = 1.1


class InputError(Exception):
    """Bad input: the message names the file; exit code 2."""


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--weights", metavar="FILE", help="converted weights (.pt or .safetensors)")
    g.add_argument("--pretrained", metavar="NAME", help="a registry name, e.g. vggface2 or 20180402-114759")
    g.add_argument("--standardization", choices=("fixed", "prewhiten"), default=None,
                   help="input standardization (default: the registry entry's; 'fixed' for --weights)")
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    g.add_argument("--batch-size", type=in_range(int, 1, 1024), default=64, metavar="N",
                   help="images per batch (default 64)")
    g.add_argument("--engine", choices=("fused", "plain", "graph", "onnxruntime"), default="fused",
                   help="fused: model.fuse(), BatchNorm folded, same embeddings to ~1e-6, its engine chosen for "
                        "this CPU (default); plain: the model as converted; graph: oneDNN Graph, compiled per "
                        "batch shape (CPU); onnxruntime: the folded graph run by onnxruntime (CPU, the onnxruntime extra)")
    g.add_argument("--workers", type=in_range(int, 0, 256), default=None, metavar="N",
                   help="DataLoader worker processes (default: 0 on CPU, min(4, cores) with CUDA)")
    g.add_argument("--detect", action="store_true",
                   help="images are photos: crop the face with MTCNN first (default: images are face crops)")
    g.add_argument("--margin", type=in_range(int, 0, 1000), default=14, metavar="PX",
                   help="with --detect: margin around the box, in pixels of the crop (default 14)")
    g.add_argument("--image-size", type=in_range(int, 75, 512), default=160, metavar="PX",
                   help="crop size, 75 to 512 (default 160)")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from ..common.version import project_version

    parser = argparse.ArgumentParser(prog="facenet", description="FaceNet embeddings, comparisons and LFW audits.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {project_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("embed", help="embed every image under DIR into an .npz",
                       description="Embed every image under DIR (identity subfolders give the labels).")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz")
    p.add_argument("--flip", action="store_true", help="append the flipped image's embedding (2*D values)")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image (exit 2)")
    p.add_argument("--verbose", "-v", action="store_true", help="print the engine chosen and why")
    _add_model_args(p)

    p = sub.add_parser("compare", help="distance matrix and same/different for two or more images",
                       description="Pairwise distances between images and a same/different call for each pair.")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--metric", choices=("squared-l2", "angular"), default="squared-l2",
                   help="squared-l2 (default) or angular = arccos(cosine)/pi")
    p.add_argument("--threshold", type=finite(0.0), default=None,
                   help=f"same person if distance < T (default {DEFAULT_THRESHOLD} for squared-l2, its "
                        f"angular equivalent 0.351 for angular; evaluate-lfw prints a calibrated one)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_model_args(p)

    p = sub.add_parser("evaluate-lfw", help="Sandberg's 10-fold LFW protocol: accuracy, VAL@FAR, AUC, EER",
                       description="Verification accuracy on LFW pairs, as Sandberg's validate_on_lfw.py.")
    p.add_argument("lfw_dir", metavar="LFW_DIR", help="LFW images as LFW_DIR/Name/Name_0001.jpg (aligned crops, "
                                                      "or raw photos with --detect)")
    p.add_argument("--pairs", required=True, metavar="pairs.txt")
    p.add_argument("--folds", type=in_range(int, 2, 1000), default=10)
    p.add_argument("--metric", choices=("squared-l2", "angular"), default="squared-l2")
    p.add_argument("--flip", action="store_true", help="concatenate embeddings of the image and its mirror")
    p.add_argument("--subtract-mean", action="store_true", help="subtract the training folds' mean embedding")
    p.add_argument("--paper", action="store_true",
                   help="the settings of Sandberg's published 2018 figures: --metric angular --flip --subtract-mean")
    p.add_argument("--far", type=finite(0.0, 1.0), default=1e-3, help="target FAR for VAL, in (0, 1] (default 1e-3)")
    p.add_argument("--roc", metavar="ROC.png", help="write the ROC curve (needs matplotlib)")
    p.add_argument("--json", metavar="OUT.json", help="write the results as JSON")
    _add_model_args(p)

    from ..detection.align_dataset import add_align_command  # Sandberg's align_dataset_mtcnn.py (models/detection/align_dataset.py)

    add_align_command(sub)
    return parser


def _device(name):
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise InputError(f"--device {name}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    return name


def _embedder(args, flip: bool = False, selection_method: str | None = None):
    from ..data.embed import Embedder, ModelLoadError, load_model

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    device = _device(args.device)
    if args.weights is None and args.pretrained is None:
        raise InputError("no model: give --weights FILE (a converted .pt/.safetensors) or --pretrained NAME")
    if args.weights is not None and args.pretrained is not None:
        raise InputError("give --weights or --pretrained, not both")
    try:
        lm = load_model(weights=args.weights, pretrained=args.pretrained, device=device,
                        standardization=args.standardization)
    except ModelLoadError as e:
        raise InputError(str(e)) from e    # keeps guided()'s view of the cause
    workers = args.workers
    if workers is None:
        workers = 0 if device == "cpu" else min(4, os.cpu_count() or 1)
    emb = Embedder(lm.model, lm.standardization, device=device, batch_size=args.batch_size, num_workers=workers,
                   image_size=args.image_size, detect=args.detect, margin=args.margin, flip=flip,
                   selection_method=selection_method, engine=args.engine, progress=not args.quiet)
    if args.detect:
        try:
            emb.detector
        except ModelLoadError as e:
            raise InputError(str(e)) from e
    return emb, lm


def cmd_embed(args) -> int:
    from ..data.datasets import ImageLoadError, is_image_file
    from ..common.paths import walk_files

    if not os.path.isdir(args.dir):
        raise InputError(f"{args.dir}: not a directory")
    check_run_paths(inputs=[walk_files(args.dir, accept=is_image_file).files, args.weights],
                    outputs=[(args.output, (".npz",))])
    emb, lm = _embedder(args, flip=args.flip)
    if args.verbose:
        d = emb.engine_decision
        print(f"engine: {d['engine']} (batch {args.batch_size}, CPU class {d['isa_class']}): {d['reason']}")
    try:
        ds = emb.dataset(args.dir, strict=args.strict)
    except ImageLoadError as e:
        raise InputError(str(e)) from None
    if len(ds) == 0 and not ds.skipped:
        raise InputError(f"{args.dir}: no images found (looked for .jpg, .png, .bmp, .gif, .tif, .webp, ...)")
    try:
        res = emb.embed_dataset(ds)
    except ImageLoadError as e:
        raise InputError(str(e)) from None
    res.meta.update(model=lm.name)
    if not res.paths:   # nothing to save: say why, write nothing
        reasons = sorted({r for _, r in res.skipped})
        raise InputError(f"{args.dir}: no image could be embedded ({len(res.skipped)} skipped: "
                         f"{'; '.join(reasons[:3])}{'; ...' if len(reasons) > 3 else ''})")
    try:
        res.save(args.output)
    except OSError as e:
        raise InputError(f"{args.output}: cannot write ({e.strerror or e})") from None
    n_ids = len(set(res.labels))
    print(f"embedded {len(res.paths)} images ({n_ids} label{'s' if n_ids != 1 else ''}) -> {args.output}: "
          f"{res.embeddings.shape[1]}-d float32, standardization {lm.standardization}"
          f"{', MTCNN crops' if args.detect else ''}")
    if res.skipped:
        print(f"skipped {len(res.skipped)}:")
        for p, r in res.skipped[:20]:
            print(f"  {p}: {r}")
        if len(res.skipped) > 20:
            print(f"  ... and {len(res.skipped) - 20} more (skipped_paths / skipped_reasons in {args.output})")
    return 0


def cmd_compare(args) -> int:
    import numpy as np

    from ..data.datasets import ImageLoadError, load_image
    from ..data.lfw import pairwise_distances, squared_l2_to_angular

    if len(args.images) < 2:
        raise InputError("compare needs at least two images")
    for p in args.images:
        if not os.path.exists(p):
            raise InputError(f"{p}: no such file")
    check_run_paths(inputs=[args.images, args.weights])
    threshold = args.threshold
    if threshold is None:
        threshold = DEFAULT_THRESHOLD if args.metric == "squared-l2" else squared_l2_to_angular(DEFAULT_THRESHOLD)
    emb, _ = _embedder(args)
    emb.progress = False
    try:
        imgs = [load_image(p, max_pixels=emb.max_pixels) for p in args.images]
    except ImageLoadError as e:
        raise InputError(str(e)) from None
    if args.detect:
        faces = emb.detector(imgs)
        for p, f in zip(args.images, faces):
            if f is None:
                raise InputError(f"{p}: no face detected")
        from ..data.preprocessing import standardize
        import torch

        e = emb.embed_tensor(standardize(torch.stack(faces), emb.standardization))
    else:
        e = emb.embed_crops(imgs)
    d = pairwise_distances(e, args.metric)
    n = len(args.images)
    pairs = [(i, j, float(d[i, j]), bool(d[i, j] < threshold)) for i in range(n) for j in range(i + 1, n)]
    if args.json:
        print(json.dumps(dict(images=args.images, metric=args.metric, threshold=threshold,
                              distances=np.round(d, 6).tolist(),
                              pairs=[dict(a=args.images[i], b=args.images[j], distance=round(x, 6), same=s)
                                     for i, j, x, s in pairs]), indent=2))
        return 0
    print(f"distance: {args.metric}; same person if distance < {threshold:.3f}")
    w = max(7, len(str(n - 1)) + 2)
    print(" " * (w + 1) + "".join(f"{f'[{j}]':>{w}}" for j in range(n)))
    for i in range(n):
        print(f"{f'[{i}]':>{w}} " + "".join(f"{d[i, j]:>{w}.3f}" for j in range(n)) + f"   {args.images[i]}")
    print()
    for i, j, x, same in pairs:
        print(f"{args.images[i]}  {args.images[j]}  {x:.4f}  {'same' if same else 'different'}")
    return 0


def cmd_evaluate_lfw(args) -> int:
    import numpy as np

    from ..data.datasets import ImageLoadError
    from ..data.lfw import PairsFormatError, evaluate, plot_roc, read_pairs, resolve_pairs

    if not os.path.isdir(args.lfw_dir):
        raise InputError(f"{args.lfw_dir}: not a directory")
    if args.far <= 0:
        raise InputError(f"--far {args.far}: must be above 0 (a false accept rate in (0, 1])")
    if args.paper:
        args.metric, args.flip, args.subtract_mean = "angular", True, True
    try:
        pairs = read_pairs(args.pairs)
    except (FileNotFoundError, PairsFormatError) as e:
        raise InputError(str(e)) from None
    pp = resolve_pairs(args.lfw_dir, pairs)
    if pp.missing:
        print(f"skipped {len(pp.missing)} of {len(pairs)} pairs with a missing image, e.g. {pp.missing[0][1]}",
              file=sys.stderr)
    check_run_paths(inputs=[args.pairs, pp.unique_paths, args.weights],
                    outputs=[(args.json, (".json",)), (args.roc, (".png",))])
    if len(pp.issame) < args.folds:
        raise InputError(f"{args.pairs}: only {len(pp.issame)} pairs have both images under {args.lfw_dir}; "
                         f"need at least {args.folds}")
    if args.roc:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise InputError(f"--roc {args.roc}: needs matplotlib (pip install matplotlib)") from None
    # with --detect, pick the face as Sandberg aligned LFW: the biggest box near the image centre
    emb, lm = _embedder(args, flip=args.flip, selection_method="center_weighted_size")
    unique = pp.unique_paths
    try:
        res = emb.embed_paths(unique, strict=False)
    except ImageLoadError as e:
        raise InputError(str(e)) from None
    index = {p: i for i, p in enumerate(res.paths)}
    keep = [k for k in range(len(pp.issame)) if pp.paths1[k] in index and pp.paths2[k] in index]
    lost = len(pp.issame) - len(keep)
    if res.skipped:
        print(f"{len(res.skipped)} images could not be embedded ({lost} pairs dropped), e.g. "
              f"{res.skipped[0][0]}: {res.skipped[0][1]}", file=sys.stderr)
    if len(keep) < args.folds:
        raise InputError(f"{args.lfw_dir}: only {len(keep)} pairs could be embedded")
    e1 = res.embeddings[[index[pp.paths1[k]] for k in keep]]
    e2 = res.embeddings[[index[pp.paths2[k]] for k in keep]]
    result = evaluate(e1, e2, pp.issame[keep], n_folds=args.folds, metric=args.metric,
                      subtract_mean=args.subtract_mean, far_target=args.far,
                      skipped_pairs=len(pp.missing) + lost)
    print(f"model: {lm.name} (standardization {lm.standardization}{', flipped images' if args.flip else ''})")
    print(result.summary())
    if args.roc:
        plot_roc(result, args.roc)
        print(f"ROC curve -> {args.roc}")
    if args.json:
        d = result.to_dict(curves=True)
        d.update(model=lm.name, standardization=lm.standardization, flip=args.flip, lfw_dir=args.lfw_dir,
                 pairs_file=args.pairs)
        from ..common.atomic_io import atomic_write_bytes

        text = json.dumps(d, indent=2, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o))
        atomic_write_bytes(args.json, (text + "\n").encode())
        print(f"results -> {args.json}")
    return 0


def cmd_align(args) -> int:
    from ..detection.align_dataset import cmd_align as run

    try:
        return run(args)
    except ValueError as e:
        raise InputError(str(e)) from None


COMMANDS = {"embed": cmd_embed, "compare": cmd_compare, "evaluate-lfw": cmd_evaluate_lfw, "align": cmd_align}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # this process is ours: keep freed tensor memory for reuse (models/common/malloc.py)
    tuning = tune_malloc()
    if getattr(args, "verbose", False):
        print(tuning)
    from ..data.datasets import ImageLoadError
    from ..hub.builder import ModelLoadError
    from ..data.lfw import PairsFormatError

    return run_guarded(lambda: COMMANDS[args.command](args), prefix="facenet: error", first_line_only=True,
                       bad_input=(InputError, PathError, ModelLoadError, ImageLoadError, PairsFormatError))


if __name__ == "__main__":
    sys.exit(main())
