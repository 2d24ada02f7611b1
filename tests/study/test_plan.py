"""--dry-run plans: inputs, weights, run status and time estimates from the committed benchmarks."""
from __future__ import annotations

import json

import pytest

from erftools.results import source_root
from erftools.study import format_plan, load_study, make_plan


def test_estimates_come_from_the_committed_cpu_benchmarks():
    bench = source_root() / "reports" / "benchmarks"
    if not (bench / "erf_bench.json").is_file():
        pytest.skip("no committed benchmarks (not a source checkout)")
    erf = json.loads((bench / "erf_bench.json").read_text())["results"]
    sb = json.loads((bench / "shape_bias.json").read_text())["results"]
    per_image = {r["model"]: r["steady_seconds_per_image"] for r in erf if r["mode"] == "erftools" and not r["options"]}
    # erftools' default path: the prepared timing where measured, else the plain one (older rows)
    per_stimulus = {r["model"]: (r["prepared"] or r["plain"])["ms_per_image"] / 1000 for r in sb}
    plan = make_plan(load_study("replknet-table10"), device="cpu", results="unused")
    est = {(r.job.model.id, r.job.sampler): r.estimate_s for r in plan.runs}
    assert est[("resnet-152", "random")] == pytest.approx(50 * per_image["resnet-152"])
    assert est[("replknet-31", "sequential")] == pytest.approx(50 * per_image["replknet-31B"])  # same architecture
    assert plan.total_s == pytest.approx(sum(est.values()))
    fig5 = make_plan(load_study("replknet-fig5"), device="cpu", results="unused")
    swin = next(r for r in fig5.runs if r.job.model.id == "swin-b-in22k")
    assert swin.estimate_s == pytest.approx(swin.units * per_stimulus["swin-B"])
    halved = make_plan(load_study("replknet-fig5"), device="cpu", results="unused", nproc_per_node=2)
    assert halved.total_s == pytest.approx(fig5.total_s / 2)


def test_plan_of_a_finished_study_has_nothing_to_compute(reference_run, study_file):
    root, _ = reference_run
    plan = make_plan(load_study(study_file), results=root, device="cpu")
    assert [r.status for r in plan.runs] == ["done"] * 4 and plan.total_s == 0
    assert plan.ready and [m.id for m, _ in plan.not_run] == ["replknet-3"]
    text = format_plan(plan)
    assert "random (seeded), nothing to download" in text and "[not run] replknet-3: no public weights" in text


def test_plan_names_every_missing_input(tmp_path, monkeypatch):
    monkeypatch.delenv("ERFTOOLS_WEIGHTS_DIR", raising=False)
    plan = make_plan(load_study("replknet-table10"), device="cpu", results=tmp_path)
    assert not plan.ready
    assert [ok for _, _, ok in plan.inputs] == [False]
    missing = {mid: text for mid, text, ok in plan.weights if not ok}
    assert set(missing) == {"replknet-13", "replknet-31"}
    assert "1aQQiGfCoiBYSw2Ms506-ZFpnC9V6891s" in missing["replknet-31"] and "RepLKNet-31_ERF.pth" in missing["replknet-31"]
    (tmp_path / "RepLKNet-13_ERF.pth").write_bytes(b"x")
    plan = make_plan(load_study("replknet-table10"), device="cpu", results=tmp_path, weights_dir=tmp_path,
                     images=tmp_path)
    assert [ok for _, _, ok in plan.inputs] == [True]
    assert {mid for mid, _, ok in plan.weights if not ok} == {"replknet-31"}
