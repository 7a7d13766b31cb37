"""`facenet-convert`: thin command line over the converter. Exit codes: 0 ok, 1 parity outside
tolerance (and nothing else), 2 bad input or environment fault (one line naming the file, variable
or option), 3 internal error (a bug: the traceback is printed)."""
from __future__ import annotations

import argparse
import sys
import time

from ..models.cli.options import finite, in_range, run_guarded
from ..models.common.paths import PathError, check_run_paths

from .errors import ConversionError, ParityError

EXIT_OK, EXIT_PARITY, EXIT_BAD_INPUT = 0, 1, 2


def _cmd_convert(args) -> int:
    from .convert import convert  # torch-free: verify (torch, TensorFlow) is imported only for --verify

    t0 = time.perf_counter()
    result = convert(args.source, args.output, report_path=args.report, step=args.step,
                     reader=args.reader, progress=not args.quiet, strict=args.strict)
    for note in result.source.notes:
        print(f"note: {note}", file=sys.stderr)
    for warning in result.report["source"]["known_hashes"]["mismatched"]:
        print(f"warning: {warning}", file=sys.stderr)
    m = result.load_report
    print(f"converted {len(m.mapped)} variables ({len(m.ignored)} ignored, {len(m.synthesized)} tensors "
          f"synthesized) from {result.report['source']['weights_from']}: embedding {m.embedding_size}, "
          f"classes {m.num_classes or 'none'}  [{time.perf_counter() - t0:.2f} s]")
    print(f"wrote {result.output} ({result.size} bytes)")
    print(f"sha256 {result.sha256}")
    print(f"report {result.report_path}")
    if args.verify:
        from .verify import verify

        return _print_parity(verify(args.source, result.output, step=args.step), None)
    return EXIT_OK


def _print_parity(report, path) -> int:
    print(report.format_table())
    if path:
        report.write(path)
        print(f"parity report {path}")
    return EXIT_OK if report.passed else EXIT_PARITY


def _cmd_verify(args) -> int:
    from .sources import resolve_source

    if args.reference:  # the TF side recorded in an .h5 file: no TensorFlow needed
        from .reference import verify_reference

        if args.source is None or args.weights is not None:
            raise ConversionError("verify --reference REF.h5 takes WEIGHTS only (the TF side is in REF.h5)")
        check_run_paths(inputs=[args.reference, args.source], outputs=[(args.report, (".json",))])
        return _print_parity(verify_reference(args.reference, args.source, atol=args.atol), args.report)
    if args.source is None or args.weights is None:
        raise ConversionError("verify needs SOURCE and WEIGHTS (or --reference REF.h5 WEIGHTS)")
    check_run_paths(inputs=[resolve_source(args.source, step=args.step).input_files(), args.weights, args.images],
                    outputs=[(args.report, (".json",))])
    from .verify import verify

    report = verify(args.source, args.weights, batch=args.batch, seed=args.seed, atol=args.atol,
                    step=args.step, images=args.images, standardization=args.standardization)
    return _print_parity(report, args.report)


def _cmd_fixture(args) -> int:
    from .tf_graphs import write_fixture

    check_run_paths(output_dirs=[args.out_dir])

    fx = write_fixture(args.out_dir, embedding_size=args.embedding_size,
                       num_classes=args.num_classes or None, seed=args.seed, name=args.name)
    print(f"wrote Sandberg-format model directory {fx.directory}")
    for p in sorted(fx.directory.iterdir()):
        print(f"  {p.name}")
    return EXIT_OK


def _cmd_export(args) -> int:
    from .export import export, export_format

    export_format(args.output)   # a bad suffix is refused before any weights are looked up
    report = export(args.weights, args.output, classify=args.classify, image_size=args.image_size,
                    seed=args.seed, atol=args.atol, progress=not args.quiet)
    print(report.format_table())
    if not report.passed:
        print(f"not written: {args.output} (the exported graph differs from the PyTorch model)", file=sys.stderr)
        return EXIT_PARITY
    print(f"wrote {report.artifact} ({report.format}, {report.size} bytes): input (N, 3, {report.image_size}, "
          f"{report.image_size}) float32 standardized '{report.standardization}', output {report.output_name} "
          f"(N, {report.num_classes if args.classify else report.embedding_size})  [{report.seconds:.1f} s]")
    print(f"sha256 {report.sha256}")
    return EXIT_OK


def _cmd_check_export(args) -> int:
    from .export import check_export

    report = check_export(args.artifact, args.weights, classify=args.classify, image_size=args.image_size,
                          seed=args.seed, atol=args.atol, progress=not args.quiet)
    print(report.format_table())
    return EXIT_OK if report.passed else EXIT_PARITY


def _add_export_parsers(sub) -> None:
    for name, help_text in (("export", "converted weights -> ONNX (.onnx), torch.export (.pt2) or TorchScript "
                                       "(.ts), checked for parity"),
                            ("check-export", "parity of an exported .onnx against weights (exit 1 when they differ)")):
        e = sub.add_parser(name, help=help_text)
        if name == "export":
            e.add_argument("weights", metavar="WEIGHTS", help="converted .pt / .safetensors, or a registry name")
            e.add_argument("-o", "--output", required=True, help="OUT.onnx, OUT.pt2 or OUT.ts (format from the suffix)")
            e.set_defaults(func=_cmd_export)
        else:
            e.add_argument("artifact", metavar="MODEL.onnx", help="an exported .onnx (run by onnxruntime)")
            e.add_argument("weights", metavar="WEIGHTS", help="converted .pt / .safetensors, or a registry name")
            e.set_defaults(func=_cmd_check_export)
        e.add_argument("--classify", action="store_true", help="the graph returns the logits (models with Logits)")
        e.add_argument("--image-size", type=in_range(int, 75, 1024), default=160, help="input height and width")
        e.add_argument("--seed", type=in_range(int, 0), default=0, help="seed of the parity batch")
        e.add_argument("--atol", type=finite(0.0), default=1e-5,
                       help="max abs difference allowed (embeddings; logits: times their largest magnitude)")
        e.add_argument("-q", "--quiet", action="store_true", help="no download progress bar")


def add_images_arguments(p) -> None:
    """--images DIR: real faces instead of the random batch (verify and reference)."""
    p.add_argument("--images", metavar="DIR",
                   help="take the batch from the photos in DIR (MTCNN face crops, at most --batch of them) "
                        "instead of random pixels")
    p.add_argument("--standardization", choices=("prewhiten", "fixed"),
                   help="with --images (default: prewhiten for 128-d models (2017), fixed for 512-d (2018))")


def build_parser() -> argparse.ArgumentParser:
    from ..models.common.version import project_version

    p = argparse.ArgumentParser(prog="facenet-convert", description=" ".join(__doc__.split()))
    p.add_argument("--version", action="version", version=f"%(prog)s {project_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="TF model dir / checkpoint / frozen .pb -> .pt or .safetensors")
    c.add_argument("source", help="model directory, checkpoint prefix, or frozen .pb")
    c.add_argument("-o", "--output", required=True, help="OUT.pt or OUT.safetensors")
    c.add_argument("--report", help="conversion report JSON (default: OUTPUT + '.json')")
    c.add_argument("--step", type=in_range(int, 0), help="checkpoint step, when the directory holds several")
    c.add_argument("--reader", choices=("auto", "pure", "tf"), default="auto",
                   help="checkpoint reader: pure Python (auto, no TensorFlow needed) or TensorFlow's")
    c.add_argument("--verify", action="store_true", help="then run both graphs and check parity")
    c.add_argument("--strict", action="store_true",
                   help="a source file whose sha256 differs from the registry's known hash of that "
                        "file (Sandberg's releases) is an error, not a warning")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=_cmd_convert)

    v = sub.add_parser("verify", help="run the TF graph and the PyTorch weights on one batch",
                       usage="%(prog)s [options] SOURCE WEIGHTS | --reference REF.h5 WEIGHTS")
    v.add_argument("source", nargs="?", help="model directory, checkpoint prefix, or frozen .pb")
    v.add_argument("weights", nargs="?", help="converted .pt / .safetensors")
    v.add_argument("--reference", metavar="REF.h5",
                   help="compare with TF activations recorded by `reference` (no TensorFlow needed); "
                        "then give WEIGHTS only")
    v.add_argument("--batch", type=in_range(int, 1, 64), default=5, help="(with --reference: as recorded)")
    v.add_argument("--seed", type=in_range(int, 0), default=0, help="(with --reference: as recorded)")
    v.add_argument("--atol", type=finite(0.0), default=1e-5, help="max abs embedding difference allowed")
    v.add_argument("--step", type=in_range(int, 0))
    add_images_arguments(v)
    v.add_argument("--report", help="write the parity report as JSON")
    v.set_defaults(func=_cmd_verify)

    f = sub.add_parser("fixture", help="write a Sandberg-format model directory with random weights")
    f.add_argument("out_dir")
    f.add_argument("--embedding-size", type=in_range(int, 1, 4096), default=512)
    f.add_argument("--num-classes", type=in_range(int, 0, 20000), default=17, help="Logits classes (0: no Logits)")
    f.add_argument("--seed", type=in_range(int, 0), default=0)
    f.add_argument("--name", help="model name (default fixture-<emb>d-seed<seed>)")
    f.set_defaults(func=_cmd_fixture)

    _add_export_parsers(sub)
    for register in _plugins():
        register(sub)
    return p


def _plugins():
    """Subcommands defined beside their code (MTCNN, reports)."""
    from . import cli_mtcnn, reference, report

    return [cli_mtcnn.add_subcommands, report.add_subcommands, reference.add_subcommands]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: args.func(args), prefix="error", bad_input=(ConversionError, PathError),
                       parity=ParityError)


if __name__ == "__main__":
    sys.exit(main())
