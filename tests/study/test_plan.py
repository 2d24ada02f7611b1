"""--dry-run plans: inputs, weights, run status and time estimates from the committed benchmarks."""
from __future__ import annotations

import json
import shutil

import pytest

from erftools.images import default_image_dir

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
    # the GEMM rates recorded with the benchmarks (erf_bench.json records none: erf_lower_bound.json's, measured
    # with erftools' ERF on the same machine); a machine measured at 50 GFLOP/s now scales the times by rate / 50
    erf_gflops = json.loads((bench / "erf_lower_bound.json").read_text())["gemm"]["best_gflops"]
    sb_gflops = json.loads((bench / "shape_bias.json").read_text())["environment"]["gemm"]["best_gflops"]
    plan = make_plan(load_study("replknet-table10"), device="cpu", results="unused", machine_rate=50.0)
    est = {(r.job.model.id, r.job.sampler): r.estimate_s for r in plan.runs}
    assert est[("resnet-152", "random")] == pytest.approx(50 * per_image["resnet-152"] * erf_gflops / 50)
    assert est[("replknet-31", "sequential")] == pytest.approx(50 * per_image["replknet-31B"] * erf_gflops / 50)
    assert plan.total_s == pytest.approx(sum(est.values()))
    assert "fp32 GEMM rate now, 50 GFLOP/s" in format_plan(plan) and f"x{erf_gflops / 50:.2f}" in format_plan(plan)
    fig5 = make_plan(load_study("replknet-fig5"), device="cpu", results="unused", machine_rate=sb_gflops)
    swin = next(r for r in fig5.runs if r.job.model.id == "swin-b-in22k")
    assert swin.estimate_s == pytest.approx(swin.units * per_stimulus["swin-B"])  # the benchmark's own rate: x1
    halved = make_plan(load_study("replknet-fig5"), device="cpu", results="unused", nproc_per_node=2,
                       machine_rate=sb_gflops)
    assert halved.total_s == pytest.approx(fig5.total_s / 2)


def test_plan_of_a_finished_study_has_nothing_to_compute(reference_run, study_file):
    root, _ = reference_run
    plan = make_plan(load_study(study_file), results=root, device="cpu")
    assert [r.status for r in plan.runs] == ["done"] * 4 and plan.total_s == 0
    assert plan.scale_note == ""  # nothing to compute: nothing measured
    assert plan.ready and [m.id for m, _ in plan.not_run] == ["replknet-3"]
    text = format_plan(plan)
    assert "random (seeded), nothing to download" in text and "[not run] replknet-3: no public weights" in text


def test_plan_names_every_missing_input(tmp_path, monkeypatch):
    monkeypatch.delenv("ERFTOOLS_WEIGHTS_DIR", raising=False)
    plan = make_plan(load_study("replknet-table10"), device="cpu", results=tmp_path, machine_rate=100.0)
    assert not plan.ready
    assert [ok for _, _, ok in plan.inputs] == [False]
    missing = {mid: text for mid, text, mark in plan.weights if mark == "MISSING"}
    assert set(missing) == {"replknet-13", "replknet-31"}
    assert "1aQQiGfCoiBYSw2Ms506-ZFpnC9V6891s" in missing["replknet-31"] and "RepLKNet-31_ERF.pth" in missing["replknet-31"]
    images = tmp_path / "images"
    images.mkdir()
    for i in range(50):
        shutil.copy(default_image_dir() / "coffee.jpg", images / f"{i:02d}.jpg")
    (tmp_path / "RepLKNet-13_ERF.pth").write_bytes(b"x")  # there, but no checkpoint: the checks say so
    plan = make_plan(load_study("replknet-table10"), device="cpu", results=tmp_path / "r", weights_dir=tmp_path,
                     images=images, machine_rate=100.0)
    assert [ok for _, _, ok in plan.inputs] == [True]
    missing = {mid: text for mid, text, mark in plan.weights if mark == "MISSING"}
    assert set(missing) == {"replknet-13", "replknet-31"}
    assert "cannot read checkpoint" in missing["replknet-13"] and "RepLKNet-13_ERF.pth" in missing["replknet-13"]


def test_models_without_a_benchmark_are_estimated_by_their_flops():
    """Forward FLOPs counted on the meta device agree with the papers' multiply-accumulates x 2 (RepLKNet-31B 15.3 G,
    ResNet-152 11.5 G, UniRepLKNet-S 9.1 G at 224), and a model without a benchmark of its own takes a benchmarked
    one's time scaled by that count: the family's when there is one, else the median over the benchmarked models."""
    from erftools.study.plan import _flops, _rate

    cache: dict = {}
    for name, gmacs in (("replknet-31B", 15.3), ("resnet-152", 11.5), ("unireplknet-S", 9.1)):
        assert _flops(name, {}, cache) == pytest.approx(2 * gmacs * 1e9, rel=0.03), name
    table = {"replknet-31B": 10.0, "resnet-152": 4.0}
    assert _rate("replknet-31B", {}, table, cache) == (10.0, None)  # its own benchmark
    rate, source = _rate("unireplknet-S", {}, table, cache)
    per_flop = sorted([10.0 / _flops("replknet-31B", {}, cache), 4.0 / _flops("resnet-152", {}, cache)])
    assert source == "the benchmarked models' median"
    assert rate == pytest.approx(_flops("unireplknet-S", {}, cache) * sum(per_flop) / 2)
    rate, source = _rate("replknet-XL", {}, table, cache)
    assert source == "replknet-31B" and rate == pytest.approx(10.0 * _flops("replknet-XL", {}, cache)
                                                               / _flops("replknet-31B", {}, cache))
    assert rate > 10.0  # XL is the larger network
    assert _rate("no-such-model", {}, table, cache) == (None, None)
