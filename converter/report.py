"""Parity audit reports: what a reviewer reads before trusting a converted file.

Per converted model: the source and output hashes (from the conversion report written next to the
output, `<out>.json`), tool and library versions, the verifier's figures (L2 distance, max abs, min
cosine), the per-layer table with the float64 columns, and a PNG plot of each end point's max abs
difference on a log scale. Rendered as Markdown, and as HTML on request, from one list of blocks.

    facenet-convert report PARITY.json [...]            # parity reports (`verify --report`)
    facenet-convert report SOURCE --weights OUT.pt      # run the verifier first, then render

Figures are printed with 3 significant digits and the PNG carries no timestamp or version stamp,
so rendering the same reports twice gives the same bytes. matplotlib is imported only to draw.
"""
from __future__ import annotations

import html
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..models.cli.options import in_range
from ..models.common.paths import PathError, read_capped

from .errors import ConversionError
from .writer import atomic_write_bytes, json_bytes, sha256_file

PARITY_SUFFIX = ".parity.json"
CONVERSION_SUFFIX = ".conversion.json"


@dataclass
class RenderedReport:
    markdown: Path
    png: Path | None = None
    html: Path | None = None
    parity_json: Path | None = None

    def paths(self) -> list[Path]:
        return [p for p in (self.markdown, self.png, self.html, self.parity_json) if p is not None]


# ------------------------------------------------------------------------------ formatting

def sci(x) -> str:
    """3 significant digits, scientific: stable text for figures that vary in the last bits."""
    if x is None:
        return "–"
    if x == 0:
        return "0"
    return f"{x:.2e}"


def round_sig(obj, digits: int = 4):
    """A copy of a JSON-like object with every float rounded to `digits` significant digits."""
    if isinstance(obj, float):
        if obj == 0 or not math.isfinite(obj):
            return obj
        return float(f"{obj:.{digits - 1}e}")
    if isinstance(obj, dict):
        return {k: round_sig(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [round_sig(v, digits) for v in obj]
    return obj


def reading(layer: dict) -> str:
    """What the float64 columns say about one end point's difference."""
    tf64, pt64, d = layer.get("tf_vs_f64"), layer.get("pt_vs_f64"), layer["max_abs"]
    if d == 0:
        return "identical"
    if tf64 is None or pt64 is None:
        return "–"
    # float32 rounding: TF is about as far from the float64 run as PyTorch float32 is.
    # A mapping error: PyTorch agrees with itself in float64, TF does not.
    if tf64 <= 10 * pt64 + 1e-12 * max(1.0, layer.get("max_abs_tf") or 0.0):
        return "float32 rounding"
    return "TF far from float64: check the mapping"


# ---------------------------------------------------------------------------------- blocks
# ("h1"|"h2"|"p", text) | ("table", header, rows) | ("ul", items) | ("img", alt, src)

def report_blocks(parity: dict, conversion: dict | None, *, title: str, png_name: str | None,
                  notes: list[str] | None = None) -> list[tuple]:
    passed = parity.get("passed", parity["max_abs"] <= parity["atol"])
    blocks: list[tuple] = [("h1", f"Parity audit: {title}")]
    blocks.append(("p", f"**{'PASS' if passed else 'FAIL'}**: the embeddings differ from TensorFlow's by at "
                        f"most {sci(parity['max_abs'])} (tolerance {parity['atol']:g})."))
    blocks.append(("table", ["", ""], [
        ["TF graph", parity["tf_graph"]],
        ["source", parity["source"]],
        ["weights", parity["weights"]],
        ["batch", f"{parity['batch']} random {parity['image_size']}×{parity['image_size']} images, seed "
                  f"{parity['seed']}, standardized (x − 127.5) / 128"],
    ]))

    blocks.append(("h2", "Files"))
    rows = []
    if conversion:
        for f in conversion.get("source", {}).get("files", []):
            rows.append(["source", f["name"], f"`{f['sha256']}`", str(f["size"])])
        out = conversion.get("output", {})
        if out:
            rows.append(["output", out["file"], f"`{out['sha256']}`", str(out["size"])])
    if rows:
        blocks.append(("table", ["role", "file", "sha256", "bytes"], rows))
        m = conversion.get("mapping") or {}
        if m:
            ignored = len(m.get("ignored_variables") or {})
            blocks.append(("p", f"Conversion: {m.get('mapped_variables')} TF variables mapped, "
                                f"{m.get('synthesized_tensors')} tensors synthesized, {ignored} ignored "
                                f"(listed in the conversion report); "
                                f"embedding {m.get('embedding_size')}, classes {m.get('num_classes') or 'none'}; "
                                f"weights read from {conversion['source'].get('weights_from')} "
                                f"by the {conversion['source'].get('reader')}."))
    else:
        blocks.append(("p", "No conversion report (`<weights>.json`) was found: source and output "
                            "hashes are not shown."))

    blocks.append(("h2", "Versions"))
    versions = {}
    if conversion:
        tool = conversion.get("tool", {})
        versions[tool.get("name", "facenet-tf2pt")] = tool.get("version", "?")
        versions.update({f"{k} (conversion)": v for k, v in sorted(conversion.get("libraries", {}).items())})
    versions.update({f"{k} (verification)": v for k, v in sorted((parity.get("versions") or {}).items())})
    blocks.append(("table", ["component", "version"], [[k, str(v)] for k, v in versions.items()]))

    blocks.append(("h2", "Embeddings"))
    blocks.append(("table", ["L2 ‖E_TF − E_PT‖ (whole batch)", "max abs", "min cosine", "tolerance", "result"],
                   [[sci(parity["l2"]), sci(parity["max_abs"]), f"{parity['min_cosine']:.9f}",
                     f"{parity['atol']:g}", "PASS" if passed else "FAIL"]]))
    if parity.get("l2_tf_vs_f64") is not None:
        blocks.append(("p", f"float32 rounding alone, against PyTorch float64: L2 ‖E_TF − E_f64‖ "
                            f"{sci(parity['l2_tf_vs_f64'])}, L2 ‖E_PT − E_f64‖ {sci(parity['l2_pt_vs_f64'])}."))

    blocks.append(("h2", "Per end point"))
    blocks.append(("p", "max abs TF−PT: TensorFlow vs PyTorch float32. TF−f64 and PT−f64: each float32 "
                        "result against PyTorch run in float64 on the same batch. When both are about "
                        "equally far from float64 the gap is float32 rounding; when only TF is far, "
                        "suspect the mapping."))
    rows = []
    for layer in parity["layers"]:
        rows.append([layer["name"], "×".join(map(str, layer["shape"])), sci(layer["max_abs"]),
                     sci(layer["max_abs_tf"]), sci(layer.get("tf_vs_f64")), sci(layer.get("pt_vs_f64")),
                     reading(layer)])
    for name in parity.get("absent_end_points", []):
        rows.append([name, "–", "not in this TF graph", "", "", "", ""])
    blocks.append(("table", ["end point", "shape", "max abs TF−PT", "max abs TF", "TF−f64", "PT−f64",
                             "reading"], rows))
    if png_name:
        blocks.append(("img", "per-layer max abs difference (log scale)", png_name))
    all_notes = list(parity.get("notes") or []) + list((conversion or {}).get("source", {}).get("notes") or [])
    all_notes += notes or []
    if all_notes:
        blocks.append(("h2", "Notes"))
        blocks.append(("ul", list(dict.fromkeys(all_notes))))
    return blocks


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[tuple]) -> str:
    out: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind == "h1":
            out += [f"# {b[1]}", ""]
        elif kind == "h2":
            out += [f"## {b[1]}", ""]
        elif kind == "p":
            out += [b[1], ""]
        elif kind == "ul":
            out += [f"- {item}" for item in b[1]] + [""]
        elif kind == "img":
            out += [f"![{b[1]}]({b[2]})", ""]
        elif kind == "table":
            header, rows = b[1], b[2]
            out.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            out.append("|" + "|".join("---" for _ in header) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _html_inline(text: str) -> str:
    """Escape, then the two Markdown inlines the blocks use: **bold** and `code`."""
    import re

    s = html.escape(str(text))
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", s)


def to_html(blocks: list[tuple], title: str) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.2em .5em;"
           "text-align:left}code{font-size:.85em}</style>", "</head><body>"]
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "p"):
            out.append(f"<{kind}>{_html_inline(b[1])}</{kind}>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "img":
            out.append(f'<p><img alt="{html.escape(b[1])}" src="{html.escape(b[2])}"></p>')
        elif kind == "table":
            out.append("<table><tr>" + "".join(f"<th>{_html_inline(h)}</th>" for h in b[1]) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{_html_inline(c)}</td>" for c in row) + "</tr>" for row in b[2]]
            out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------ plot

def plot_png(parity: dict, title: str) -> bytes:
    """Per-layer max abs differences on a log scale, as PNG bytes (no metadata stamps)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        from ..models.common.install import install_hint

        raise ConversionError(f"the report's plot needs matplotlib: {install_hint('report')} (or pass --no-png)") from e
    layers = parity["layers"]
    names = [layer["name"] for layer in layers]
    x = list(range(len(layers)))

    def series(key):  # 3 significant digits, as printed; zeros cannot sit on a log axis
        vals = [layer.get(key) for layer in layers]
        return [float(sci(v)) if v else float("nan") for v in vals]

    fig = Figure(figsize=(9, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(x, series("max_abs"), "o-", label="|TF − PyTorch float32|")
    if any(layer.get("tf_vs_f64") is not None for layer in layers):
        ax.plot(x, series("tf_vs_f64"), "s--", label="|TF − PyTorch float64|")
        ax.plot(x, series("pt_vs_f64"), "^:", label="|PyTorch float32 − float64|")
    ax.axhline(parity["atol"], color="0.5", linewidth=0.8, linestyle="-.",
               label=f"tolerance on embeddings ({parity['atol']:g})")
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("max abs difference")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


# ---------------------------------------------------------------------------------- render

def machine_line(machine: dict) -> str:
    """Where a per-run report's figures were measured (`make reports` records the machine)."""
    return (f"Measured on {machine['cpu']} ({machine['machine']}, {machine['isa_class']}"
            f"{', ' + machine['isa_restriction'] if machine['isa_restriction'] else ''}), "
            f"{machine['torch_threads']} torch threads, torch {machine['torch']}, numpy {machine['numpy']}, "
            f"Python {machine['python']}: the figures are this run's; the verdict is in manifest.json.")


def render_report(parity: dict, conversion: dict | None, out_dir, stem: str, *, title: str | None = None,
                  png: bool = True, html_too: bool = False, notes: list[str] | None = None) -> RenderedReport:
    """Write `<stem>.md` (+ `<stem>.png`, `<stem>.html`) into `out_dir`; returns their paths. A
    parity report that records its machine gets a note saying where it was measured."""
    out_dir = Path(out_dir)
    if parity.get("machine"):
        notes = [*(notes or []), machine_line(parity["machine"])]
    title = title or stem
    png_path = out_dir / f"{stem}.png" if png else None
    blocks = report_blocks(parity, conversion, title=title, png_name=png_path.name if png_path else None,
                           notes=notes)
    files = {out_dir / f"{stem}.md": to_markdown(blocks).encode()}
    if png_path:
        files[png_path] = plot_png(parity, f"{title}: per-layer max abs difference")
    html_path = out_dir / f"{stem}.html" if html_too else None
    if html_path:
        files[html_path] = to_html(blocks, f"Parity audit: {title}").encode()
    from .writer import atomic_write_files

    atomic_write_files(files)
    return RenderedReport(out_dir / f"{stem}.md", png_path, html_path)


def mtcnn_blocks(title: str, parity: dict, files: dict, sources: dict) -> list[tuple]:
    """MTCNN: hashes of det*.npy and of the three nets, and every output's max abs difference."""
    blocks: list[tuple] = [("h1", f"Parity audit: {title}"),
                           ("p", f"**{'PASS' if parity['ok'] else 'FAIL'}**: P-, R- and O-Net outputs vs "
                                 f"TensorFlow, seeded random inputs (seed {parity['seed']}), tolerance "
                                 f"{parity['atol']:g}.")]
    blocks.append(("h2", "Files"))
    rows = [["source", name, f"`{digest}`", "–"] for name, digest in sorted(sources.items())]
    rows += [["output", name, f"`{info['sha256']}`", str(info["size"])] for name, info in sorted(files.items())]
    blocks.append(("table", ["role", "file", "sha256", "bytes"], rows))
    blocks.append(("h2", "Outputs"))
    blocks.append(("table", ["net", "output", "shape", "max abs TF−PT", "ok"],
                   [[r["net"], r["output"], "×".join(map(str, r["shape"])), sci(r["max_abs"]),
                     "yes" if r["ok"] else "NO"] for r in parity["rows"]]))
    if parity.get("warnings"):
        blocks += [("h2", "Notes"), ("ul", list(parity["warnings"]))]
    return blocks


# ----------------------------------------------------------------------------- from files

MAX_JSON_BYTES = 64 << 20


def load_json(path) -> dict:
    try:
        return json.loads(read_capped(path, MAX_JSON_BYTES, "report JSON").decode("utf-8"))
    except FileNotFoundError as e:
        raise ConversionError(f"{path}: no such file") from e
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ConversionError(f"{path}: not JSON ({e})") from e


def _is_parity_dict(d) -> bool:
    return isinstance(d, dict) and {"layers", "l2", "max_abs", "min_cosine", "atol"} <= set(d)


def find_conversion(parity_path: Path | None, parity: dict, explicit=None) -> tuple[dict | None, str | None]:
    """The conversion report: `explicit`, else `<stem>.conversion.json` beside the parity report,
    else `<weights>.json` (as written, or relative to the parity report's folder); else the
    weights' own sha256 when the file is there."""
    if explicit:
        return load_json(explicit), None
    candidates = []
    if parity_path is not None:
        candidates.append(parity_path.with_name(_stem_of(parity_path) + CONVERSION_SUFFIX))
    weights = Path(parity["weights"] + ".json")
    candidates.append(weights)
    if parity_path is not None and not weights.is_absolute():
        candidates.append(parity_path.parent / weights)
    for c in candidates:
        if c.is_file():
            return load_json(c), None
    w = Path(parity["weights"])
    if w.is_file():
        return ({"output": {"file": w.name, "sha256": sha256_file(w), "size": w.stat().st_size}},
                f"no conversion report found ({weights}); output hash computed from {w}")
    return None, None


def _stem_of(path: Path) -> str:
    name = path.name
    for suffix in (PARITY_SUFFIX, ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def report_inputs(inputs, *, weights=None, conversion=None, out_dir=None, html_too=False, png=True,
                  title=None, batch=5, seed=0, step=None) -> list[RenderedReport]:
    """The `report` subcommand: each input is a parity JSON, or a TF source (then `weights` is
    required and the verifier runs first; its parity JSON is written beside the report)."""
    _check_report_paths(inputs, weights=weights, conversion=conversion, out_dir=out_dir, html_too=html_too,
                        png=png, step=step)
    results = []
    for item in inputs:
        path = Path(item)
        if path.suffix == ".json":
            parity = load_json(path)
            if not _is_parity_dict(parity):
                raise ConversionError(f"{path}: not a parity report (write one with `facenet-convert "
                                      f"verify ... --report PATH`)")
            try:
                conv, note = find_conversion(path, parity, conversion)
                target = Path(out_dir) if out_dir else path.parent
                rendered = render_report(parity, conv, target, _stem_of(path), title=title, png=png,
                                         html_too=html_too, notes=[note] if note else None)
            except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
                if isinstance(e, PathError):
                    raise
                raise ConversionError(f"{path}: malformed parity report ({type(e).__name__}: {e})") from None
        else:
            if weights is None:
                raise ConversionError(f"{item}: a TF source needs --weights (the converted file to check); "
                                      f"or give a parity JSON")
            from .verify import verify

            report = verify(item, weights, batch=batch, seed=seed, step=step)
            parity = report.to_dict()
            conv, note = find_conversion(None, parity, conversion)
            w = Path(weights)
            target = Path(out_dir) if out_dir else w.parent
            stem = _stem_of(w)
            rendered = render_report(parity, conv, target, stem, title=title or w.name, png=png,
                                     html_too=html_too, notes=[note] if note else None)
            rendered.parity_json = target / f"{stem}{PARITY_SUFFIX}"
            atomic_write_bytes(rendered.parity_json, json_bytes(parity))
        results.append(rendered)
    return results


def _check_report_paths(inputs, *, weights, conversion, out_dir, html_too, png, step) -> None:
    """The output rule for `report`, before any work: the files each input renders to must not be
    any file read (inputs, weights, conversion reports) nor each other."""
    from ..models.common.paths import check_run_paths

    read, written = [weights, conversion], []
    for item in inputs:
        path = Path(item)
        if path.suffix == ".json":
            target, stem = (Path(out_dir) if out_dir else path.parent), _stem_of(path)
            read.append(path)
        else:
            if weights is None:
                continue   # refused with its own message below
            from .sources import resolve_source

            read += resolve_source(item, step=step).input_files()
            target, stem = (Path(out_dir) if out_dir else Path(weights).parent), _stem_of(Path(weights))
            written.append((target / f"{stem}{PARITY_SUFFIX}", (".json",)))
        written.append((target / f"{stem}.md", (".md",)))
        written += [(target / f"{stem}.png", (".png",))] if png else []
        written += [(target / f"{stem}.html", (".html",))] if html_too else []
    check_run_paths(inputs=read, outputs=written)


# --------------------------------------------------------------------------------------- CLI

def _cmd_report(args) -> int:
    rendered = report_inputs(args.inputs, weights=args.weights, conversion=args.conversion,
                             out_dir=args.output_dir, html_too=args.html, png=not args.no_png,
                             title=args.title, batch=args.batch, seed=args.seed, step=args.step)
    for r in rendered:
        for p in r.paths():
            print(f"wrote {p}")
    return 0


def add_subcommands(sub) -> None:
    r = sub.add_parser("report", help="render parity audit reports (Markdown, PNG plot, HTML)",
                       description="Render a parity audit report per input: a parity JSON written by "
                                   "`verify --report` (or `make checkpoints`), or a TF source together "
                                   "with --weights (the verifier runs first).")
    r.add_argument("inputs", nargs="+", metavar="PARITY_JSON_OR_SOURCE")
    r.add_argument("--weights", help="converted .pt/.safetensors, for a SOURCE input")
    r.add_argument("--conversion", help="conversion report JSON (default: <stem>.conversion.json beside "
                                        "the parity report, else WEIGHTS.json)")
    r.add_argument("-o", "--output-dir", help="folder for the report files (default: beside the input)")
    r.add_argument("--title", help="report title (default: the file's stem)")
    r.add_argument("--html", action="store_true", help="also write HTML")
    r.add_argument("--no-png", action="store_true", help="no plot (no matplotlib needed)")
    r.add_argument("--batch", type=in_range(int, 1, 64), default=5, help="for a SOURCE input")
    r.add_argument("--seed", type=in_range(int, 0), default=0, help="for a SOURCE input")
    r.add_argument("--step", type=in_range(int, 0), help="for a SOURCE input")
    r.set_defaults(func=_cmd_report)
