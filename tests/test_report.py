"""Parity audit reports: Markdown with hashes, versions, figures and the per-layer table (float64
columns), a log-scale PNG plot, HTML on request; the same input renders the same bytes."""
import json

import pytest

from facenet_tf2pt.converter.report import reading, render_report, report_inputs, round_sig, sci
from facenet_tf2pt.converter.verify import verify
from tests.helpers import run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def parity_json(fixture512, converted512, tmp_path_factory):
    report = verify(fixture512.directory, converted512.output, batch=2)
    path = tmp_path_factory.mktemp("parity") / "fx512.parity.json"
    report.write(path)
    return path


def test_report_from_parity_json_finds_the_conversion_report(parity_json, converted512, fixture512, tmp_path):
    (r,) = report_inputs([parity_json], out_dir=tmp_path, html_too=True)
    md = r.markdown.read_text()
    assert r.markdown == tmp_path / "fx512.md"
    # hashes: source files and output, from <weights>.json
    assert converted512.sha256 in md
    for f in converted512.report["source"]["files"]:
        assert f["sha256"] in md
    # versions of the tool and the libraries
    assert "| facenet-tf2pt | 0.1.0 |" in md and "tensorflow (verification)" in md and "torch (conversion)" in md
    # the verifier's figures and the per-layer table with its float64 columns
    assert "L2 ‖E_TF − E_PT‖" in md and "min cosine" in md and "**PASS**" in md
    header = "| end point | shape | max abs TF−PT | max abs TF | TF−f64 | PT−f64 | reading |"
    assert header in md
    table = md.split(header)[1].split("\n\n")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows][:2] == ["Conv2d_1a_3x3", "Conv2d_2a_3x3"]
    assert len(rows) == 15 and all("float32 rounding" in row for row in rows)
    assert "![per-layer max abs difference (log scale)](fx512.png)" in md
    assert r.png.read_bytes().startswith(PNG_MAGIC) and r.png.stat().st_size < 200_000
    html = r.html.read_text()
    assert "<table>" in html and 'src="fx512.png"' in html and converted512.sha256 in html
    # rendering again gives the same bytes (no time stamps, figures at 3 significant digits)
    before = {p: p.read_bytes() for p in r.paths()}
    (again,) = report_inputs([parity_json], out_dir=tmp_path, html_too=True)
    assert {p: p.read_bytes() for p in again.paths()} == before


def test_cli_report_from_source_runs_the_verifier(fixture512, converted512, tmp_path):
    res = run_cli("report", fixture512.frozen_graph, "--weights", converted512.output, "-o", tmp_path,
                  "--batch", "1", "--no-png")
    assert res.returncode == 0, res.stderr
    md = (tmp_path / "fx512.md").read_text()
    parity = json.loads((tmp_path / "fx512.parity.json").read_text())
    assert parity["batch"] == 1 and parity["passed"] and sci(parity["max_abs"]) in md
    assert not (tmp_path / "fx512.png").exists()


def test_cli_report_errors_exit_2(tmp_path):
    junk = tmp_path / "x.json"
    junk.write_text('{"a": 1}')
    res = run_cli("report", junk)
    assert res.returncode == 2 and "not a parity report" in res.stderr
    res = run_cli("report", tmp_path)
    assert res.returncode == 2 and "--weights" in res.stderr


def _synthetic(tf_vs_f64):
    layer = dict(name="Mixed_6b", shape=[1, 896, 8, 8], max_abs=3e-2, max_abs_tf=6.0,
                 tf_vs_f64=tf_vs_f64, pt_vs_f64=1e-5)
    return dict(source="s", weights="w.pt", tf_graph="g", batch=1, seed=0, image_size=160, atol=1e-5,
                l2=0.1, max_abs=2e-2, min_cosine=0.99, layers=[layer], passed=False)


def test_reading_tells_rounding_from_a_mapping_error(tmp_path):
    wrong = _synthetic(3e-2)
    assert reading(wrong["layers"][0]) == "TF far from float64: check the mapping"
    assert reading(dict(wrong["layers"][0], max_abs=2e-5, tf_vs_f64=2e-5)) == "float32 rounding"
    r = render_report(wrong, None, tmp_path, "bad", png=False)
    md = r.markdown.read_text()
    assert "**FAIL**" in md and "check the mapping" in md and "No conversion report" in md


def test_round_sig():
    assert round_sig({"a": [1.23456789e-6, 0.0, 3]}, 3) == {"a": [1.23e-6, 0.0, 3]}


def test_committed_sample_report_is_what_the_renderer_makes(tmp_path):
    """checkpoints/reports/ (the CI fixture's audit, committed for reviewers) re-renders to the same
    Markdown from its committed parity and conversion JSON."""
    from tests.helpers import REPO

    reports = REPO / "checkpoints" / "reports"
    stem = "inception_resnet_v1.ci-fixture"
    (r,) = report_inputs([reports / f"{stem}.parity.json"], out_dir=tmp_path)
    assert r.markdown.read_text() == (reports / f"{stem}.md").read_text()
    assert (reports / f"{stem}.png").read_bytes().startswith(PNG_MAGIC)


def test_committed_sample_report_agrees_with_tensorflow_here(fixture512, converted512):
    """Beside the byte golden above: the committed figures are what TensorFlow gives on this
    machine. A fresh verification of the same fixture (same batch and seed) must pass, name the
    same end points and shapes, and see the same TF activation magnitudes (deterministic up to
    float32 noise); its TF-PyTorch differences are float32 noise like the committed ones (within
    a factor 10: they depend on the CPU's kernels), and the Markdown names the converted file's
    sha256, which this checkout's conversion reproduces."""
    from tests.helpers import REPO

    reports = REPO / "checkpoints" / "reports"
    stem = "inception_resnet_v1.ci-fixture"
    committed = json.loads((reports / f"{stem}.parity.json").read_text())
    fresh = verify(fixture512.directory, converted512.output, batch=committed["batch"], seed=committed["seed"])
    assert committed["passed"] and fresh.passed
    now = fresh.to_dict()
    assert [(x["name"], x["shape"]) for x in now["layers"]] == [(x["name"], x["shape"]) for x in committed["layers"]]
    for was, got in zip(committed["layers"], now["layers"]):
        assert got["max_abs_tf"] == pytest.approx(was["max_abs_tf"], rel=1e-3), was["name"]
        assert was["max_abs"] / 10 <= got["max_abs"] <= max(was["max_abs"] * 10, 1e-6), was["name"]
    assert converted512.sha256 in (reports / f"{stem}.md").read_text()
