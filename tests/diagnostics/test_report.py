"""HTML reports: contents, self-containment, and how they look in headless Chromium."""

import json
import re

import pytest
from browser import render, require_browser, screenshot_is_not_blank

import bigmali
from bigmali import cli
from bigmali.diagnostics.report import write_comparison, write_report


@pytest.fixture(scope="module")
def report(nuts_run, prior, tmp_path_factory):
    return write_report(nuts_run, tmp_path_factory.mktemp("report"), prior=prior, ppc_draws=60)


def test_report_is_self_contained_and_complete(report):
    html = report["html"].read_text()
    assert "<img" in html and not re.search(r'<img[^>]+src="(?!data:image/png;base64,)', html)  # every image inline
    for heading in ("Posterior and recovery of the truth", "Convergence", "Posterior predictive check", "PSIS-LOO"):
        assert heading in html, heading
    names = {p.name for p in report["images"]}
    assert {"trace.png", "rank.png", "pair.png", "ppc.png", "loo_khat.png"} <= names
    assert all(p.stat().st_size > 5_000 for p in report["images"])
    summary = json.loads((report["html"].parent / "summary.json").read_text())
    assert 0 <= summary["ppc_p_value"] <= 1 and summary["parameters"]["alpha1"]["truth"] is not None


def test_report_renders_in_headless_chromium(report, tmp_path):
    require_browser()
    seen = render(report["html"], tmp_path / "shot.png")
    assert seen["title"].startswith("bigmali report")
    assert len(seen["images"]) == len(report["images"])
    for image in seen["images"]:
        assert image["complete"] and image["width"] > 100 and image["height"] > 100, image
    assert seen["page_height"] > 2000
    assert screenshot_is_not_blank(seen["screenshot"]) > 0.05


def test_weighted_run_report_and_comparison_render(small_mock, nuts_run, prior, tmp_path):
    require_browser()
    weighted = bigmali.fit(small_mock, prior=prior, method="is_proposal", n_hyper=600, progress=False, mass_draws=0)
    out = write_report(weighted, tmp_path / "weighted", prior=prior, ppc_draws=40)
    html = out["html"].read_text()
    assert "Importance weights" in html and "trace.png" not in {p.name for p in out["images"]}
    seen = render(out["html"], tmp_path / "weighted.png")
    assert all(i["complete"] and i["width"] > 100 for i in seen["images"]) and len(seen["images"]) == len(out["images"])
    cmp = write_comparison(
        [nuts_run, weighted],
        tmp_path / "cmp",
        labels=["nuts", "is_proposal"],
        truth="hyperseed",
        prior=prior,
        ppc_draws=40,
    )
    seen = render(cmp["html"], tmp_path / "cmp.png")
    assert "is_proposal" in cmp["html"].read_text()
    assert seen["images"] and all(i["complete"] and i["width"] > 100 for i in seen["images"])
    assert screenshot_is_not_blank(seen["screenshot"]) > 0.05


def test_cli_report_and_its_errors(nuts_run, tmp_path, capsys):
    path = bigmali.save_run(nuts_run, tmp_path / "run.nc")
    assert (
        cli.main(["report", str(path), "-o", str(tmp_path / "rep"), "--truth", "hyperseed", "--ppc-draws", "40"]) == 0
    )
    assert "wrote" in capsys.readouterr().out and (tmp_path / "rep" / "report.html").exists()
    assert cli.main(["report", "-o", str(tmp_path / "x")]) == 1
    assert "give one run" in capsys.readouterr().err
    assert cli.main(["report", "--compare", str(path), "-o", str(tmp_path / "x")]) == 1
    assert "at least two" in capsys.readouterr().err
