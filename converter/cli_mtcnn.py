"""The ``mtcnn`` and ``verify-mtcnn`` subcommands of ``facenet-convert``.

``converter/cli.py`` calls ``add_subcommands(subparsers)``; each subcommand sets ``func``, a
callable taking the parsed args and returning 0. Failures are raised -- ConversionError (bad
input, exit 2) and ParityError (outside tolerance, exit 1) -- for the CLI to turn into exit codes.
``python -m facenet_tf2pt.converter.cli_mtcnn ...`` runs the two subcommands on their own.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..models.cli.options import finite, in_range, run_guarded

from .errors import ConversionError, ParityError


def _convert(args: argparse.Namespace) -> int:
    from .mtcnn_convert import convert_mtcnn

    report = convert_mtcnn(args.src_dir, args.out_dir, safetensors=args.safetensors, strict=args.strict)
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        print("\n".join(line for line in report.to_text().splitlines() if not line.startswith("warning: ")))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ..models.common.paths import check_run_paths

    from .mtcnn_convert import DEFAULT_SOURCE_DIR, check, verify_mtcnn
    from .npy_source import SOURCE_FILES
    from .writer import atomic_write_json

    src = args.src_dir or DEFAULT_SOURCE_DIR
    weights = [f"{args.weights}/{net}{s}" for net in SOURCE_FILES for s in (".pt", ".safetensors")] \
        if args.weights else []
    check_run_paths(inputs=[f"{src}/{name}" for name in SOURCE_FILES.values()] + weights,
                    outputs=[(args.json, (".json",))])

    report = verify_mtcnn(args.src_dir, args.weights, seed=args.seed, atol=args.atol, strict=args.strict)
    print(report.to_text())
    if args.json:
        atomic_write_json(args.json, report.to_dict())
    check(report)  # raises ParityError when outside tolerance
    return 0


def add_subcommands(subparsers) -> None:
    """Register ``mtcnn`` and ``verify-mtcnn`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "mtcnn",
        help="convert Sandberg's MTCNN det1/det2/det3.npy to PyTorch",
        description="Read det1.npy, det2.npy, det3.npy from SRC_DIR (restricted unpickler: dicts, "
        "strings and numpy arrays only), check their sha256, and write pnet.pt, rnet.pt, onet.pt "
        "and manifest.json to OUT_DIR with facenet-pytorch 2.6.0's key names.",
    )
    p.add_argument("src_dir", metavar="SRC_DIR", help="folder holding det1.npy, det2.npy, det3.npy")
    p.add_argument("-o", "--out-dir", required=True, metavar="OUT_DIR", help="where to write the weights")
    p.add_argument("--safetensors", action="store_true", help="also write .safetensors files")
    p.add_argument("--strict", action="store_true",
                   help="refuse sources whose sha256 differs from Sandberg's release (default: warn)")
    p.add_argument("--json", action="store_true", help="print the conversion report as JSON")
    p.set_defaults(func=_convert)

    v = subparsers.add_parser(
        "verify-mtcnn",
        help="compare the PyTorch MTCNN nets with a TensorFlow build of the originals",
        description="Run P-, R- and O-Net in TensorFlow (weights from SRC_DIR's det*.npy) and in "
        "PyTorch (weights from --weights) on the same seeded random inputs; report the max abs "
        "difference of every output. Exit 0 within tolerance, 1 outside, 2 on bad input.",
    )
    v.add_argument("src_dir", metavar="SRC_DIR", nargs="?", default=None,
                   help="folder holding det*.npy (default: checkpoints/tf/mtcnn)")
    v.add_argument("--weights", metavar="DIR", default=None,
                   help="folder with pnet/rnet/onet .pt or .safetensors (default: the committed checkpoints/mtcnn)")
    v.add_argument("--seed", type=in_range(int, 0), default=0, help="seed of the random inputs (default: %(default)s)")
    v.add_argument("--atol", type=finite(0.0), default=1e-5, help="tolerance on max abs difference (default: %(default)g)")
    v.add_argument("--strict", action="store_true", help="refuse sources with an unknown sha256")
    v.add_argument("--json", metavar="PATH", default=None, help="also write the report as JSON to PATH")
    v.set_defaults(func=_verify)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facenet_tf2pt.converter.cli_mtcnn")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subcommands(sub)
    args = parser.parse_args(argv)
    from ..models.common.paths import PathError

    return run_guarded(lambda: args.func(args), prefix="error", bad_input=(ConversionError, PathError),
                       parity=ParityError)


if __name__ == "__main__":
    sys.exit(main())
