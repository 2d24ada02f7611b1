"""erftools.results.views: tables and comparisons computed from records, and the shared number formatters."""
from __future__ import annotations

import json

import numpy as np
import pytest

from erftools import results as R
from erftools.results import views as V

from .builders import (CATEGORIES, LAYERS, REPO, decision_rows, erf_matrix, make_erf_run, make_layered_run,
                       make_sb_run, reference_area_ratios, statistics, texture_of, write_decisions)


def test_the_shared_constants_are_the_engines():
    from erftools.erf.analysis import DEFAULT_THRESHOLDS
    from erftools.shapebias.categories import CATEGORIES as ENGINE_CATEGORIES

    assert V.THRESHOLDS == tuple(DEFAULT_THRESHOLDS) == (0.2, 0.3, 0.5, 0.99)
    assert V.CATEGORIES is ENGINE_CATEGORIES and tuple(V.CATEGORIES) == CATEGORIES


@pytest.mark.parametrize("value, text", [(None, "none"), (0, "0.0"), (0.15, "15.0"), (0.0123, "1.2"),
                                         (0.001, "0.1"), (0.0000234, "0.002")])
def test_pct(value, text):
    assert V.pct(value) == text


def test_other_formatters():
    assert V.f3(None) == "" and V.f3(0.25) == "0.250" and V.f3("n/a") == "n/a"
    assert V.paper_pct(None) == "" and V.paper_pct(15) == "15.0"
    assert V.ci_text([0.1, 0.25]) == "[0.100, 0.250]" and V.ci_text([None, None]) == "" and V.ci_text(None) == ""
    assert V.cell_text(None) == "" and V.cell_text(1280) == "1280"


def test_area_ratio_at_a_square_known_by_hand():
    # a 33x33 matrix, zero but a centred 5x5 block of 9 (log10(9 + 1) = 1): the 3x3 square holds 9/25 = 36% of the
    # total, the 5x5 square all of it
    m = np.zeros((33, 33))
    m[14:19, 14:19] = 9.0
    assert V.area_ratio_at(m, 0.2) == (3, 9 / 33 ** 2)
    assert V.area_ratio_at(m, 0.5) == (5, 25 / 33 ** 2)
    assert V.area_ratio_at(m, 0.99) == (5, 25 / 33 ** 2)
    # the same matrix stored at 1/3 (a coarse grid): the side is counted in full-resolution pixels
    assert V.area_ratio_at(m, 0.2, downsample=3, full_size=(99, 99)) == (9, 81 / 99 ** 2)


def test_area_ratio_at_matches_the_definition_at_any_threshold():
    m = erf_matrix(48, 5.0).astype(np.float64)
    for t in (0.05, 0.37, 0.8):
        expect = reference_area_ratios(m, [t])[0]
        assert V.area_ratio_at(m, t) == (expect["side"], pytest.approx(expect["area_ratio"]))


def test_table10_rows(tmp_path):
    runs = [(name, R.load_run(make_erf_run(tmp_path / name, name, spread=s), "erf"))
            for name, s in (("replknet-31B", 12.0), ("swin-B", 6.0))]
    rows = V.table10_rows(runs)
    assert [r.title for r in rows] == ["replknet-31B", "swin-B"]
    assert [r.paper_model for r in rows] == ["RepLKNet-31", None]
    table = json.loads((REPO / "data" / "paper_table10.json").read_text())
    assert rows[0].paper[0.2] == 15.0 and rows[0].paper[0.99] == table["models"][-1]["area_ratio_percent"]["0.99"]
    assert rows[1].paper == {t: None for t in V.THRESHOLDS}
    recorded = {r["threshold"]: r for r in reference_area_ratios(erf_matrix(64, 12.0))}
    assert rows[0].ours == {t: pytest.approx(recorded[t]["area_ratio"]) for t in V.THRESHOLDS}
    assert rows[0].sides == {t: recorded[t]["side"] for t in V.THRESHOLDS}


def test_paper_matching():
    from .builders import erf_record

    def rec(name, **model):
        r = erf_record(name)
        r.model = {"name": name, **model}
        return r

    assert V.paper_erf_entry(rec("resnet-152"))["name"] == "ResNet-152"
    assert V.paper_erf_entry(rec("resnet101.tv_in1k"))["name"] == "ResNet-101"
    assert V.paper_erf_entry(rec("replknet-31B"))["name"] == "RepLKNet-31"
    assert V.paper_erf_entry(rec("swin-B")) is None
    ref = V.shapebias_reference()
    # the paper's Fig. 5 values (docs/protocol.md, data/shapebias/published_fig5.json)
    assert V.paper_fig5_entry(rec("swin-B"), ref)[1]["shape_bias"] == pytest.approx(0.2216)
    assert V.paper_fig5_entry(rec("swin-B", weights={"tag": "ms_in22k_ft_in1k"}), ref)[1]["shape_bias"] == \
        pytest.approx(0.3154)
    assert V.paper_fig5_entry(rec("ResNet-152 (torchvision)", subjects=["resnet152"]), ref)[0].startswith("ResNet-152")
    assert V.paper_fig5_entry(rec("humans"), ref)[1]["shape_bias"] == pytest.approx(0.9587)
    assert V.paper_fig5_entry(rec("vgg16"), ref) is None


def test_shapebias_reference_groups_and_kinds():
    ref = V.shapebias_reference()
    assert set(ref) == {"paper", "humans", "cnns", "other"}
    assert all(v["kind"] == R.PUBLISHED for v in ref["paper"].values())
    assert [v["kind"] for v in ref["humans"].values()] == [R.HUMANS]
    humans = next(iter(ref["humans"].values()))
    assert humans["shape_bias"] == pytest.approx(0.9587, abs=5e-5)  # Geirhos et al.'s 10 observers pooled
    assert len(ref["cnns"]) == 7 and all(v["kind"] == R.NETWORK for v in ref["cnns"].values())
    assert {v["kind"] for v in ref["other"].values()} == {R.HUMAN, R.NETWORK}


def test_classify_and_order(tmp_path):
    runs = [R.load_run(make_sb_run(tmp_path / n, n, dm_kind=k), "shape-bias")
            for n, k in (("zeta-net", "model"), ("alexnet", "cnn"), ("humans", "humans"), ("alpha-net", "model"),
                         ("subject-01", "human"))]
    assert [V.classify(r) for r in runs] == ["model", "network", "humans", "model", "human"]
    assert [r.name for r in V.shape_bias_order(runs)] == ["humans", "subject-01", "alpha-net", "zeta-net",
                                                          "alexnet"]


def test_shape_bias_row(tmp_path):
    run = R.load_run(make_sb_run(tmp_path / "r", "replknet-31B", p_shape=0.4, seed=3), "shape-bias")
    row = V.shape_bias_row("RLK", run, V.shapebias_reference())
    rows = decision_rows("replknet-31B", 0.4, 3)
    conflict = [r for r in rows if r["category"] != texture_of(r["imagename"])]
    s = sum(r["object_response"] == r["category"] for r in conflict)
    t = sum(r["object_response"] == texture_of(r["imagename"]) for r in conflict)
    assert row.kind == "model" and row.shape_bias == pytest.approx(s / (s + t)) and row.num_trials == 64
    assert row.paper == ("RepLKNet-31B, ImageNet-1K (paper)", pytest.approx(0.2995))
    cells = row.cells()
    assert cells["decision maker"] == "RLK" and cells["shape bias"] == f"{s / (s + t):.3f}"
    assert cells["paper Fig. 5"] == "0.299 (RepLKNet-31B, ImageNet-1K (paper))" and cells["trials"] == "64"
    assert cells["95% CI"].startswith("[") and set(row.per_category) == set(CATEGORIES)
    humans = next(iter(V.shapebias_reference()["humans"].items()))
    ref = V.reference_row(*humans)
    assert ref.kind == "humans" and ref.ci95 is not None and ref.paper is None


def test_decisions_frame_and_merge(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("subj,session,trial,rt,object_response,category,condition,imagename\n"
                   "s1,1,1,1,cat,cat,0,0001_x_cat_00_cat1-dog2.png\n"
                   "s2,1,1,1,dog,cat,0,0001_x_cat_00_cat1-dog2.png\n"
                   "s3,1,1,1,cat,cat,0,0001_x_cat_00_cat1-dog2.png\n"
                   "s1,1,2,1,knife,bear,0,0002_x_bear_00_bear3-bear1.png\n")
    df = V.decisions_frame(R.load_decisions(csv))
    assert list(df["decided"]) == ["shape", "texture", "shape", "no conflict"]
    assert list(df["stimulus"]) == ["cat1-dog2.png"] * 3 + ["bear3-bear1.png"]
    merged = V.merge_decisions({"humans": df})
    row = merged[merged["stimulus"] == "cat1-dog2.png"].iloc[0]
    assert row["humans"] == "cat (2/3)" and row["humans :: class"] == "shape" and row["texture"] == "dog"
    other = V.decisions_frame(R.load_decisions(write_decisions(tmp_path / "n.csv", decision_rows("net", 0.3, 0))))
    both = V.merge_decisions({"humans": df, "net": other})  # the 64 stimuli of net and the 2 others of humans
    assert len(both) == 64 + 2 and {"humans :: class", "net :: class"} <= set(both.columns)


def test_provenance_and_titles(tmp_path):
    run = R.load_run(make_erf_run(tmp_path / "a", "swin-B"), "erf")
    assert V.run_title(run) == "swin-B (random init)" and V.weights_text(run.record) == "random init (untrained)"
    prov = V.provenance(run.record)
    assert prov["size"] == "64x64" and prov["images used"] == 2 and prov["device"] == "cpu"
    trained = R.load_run(make_erf_run(tmp_path / "b", "net", weights={"tag": "in1k"}), "erf")
    assert V.run_title(trained) == "net" and V.weights_text(trained.record) == "in1k"
    sb = R.load_run(make_sb_run(tmp_path / "c", "net"), "shape-bias")
    assert V.provenance(sb.record)["trials"] == 64
    titles = V.unique_titles([run, R.load_run(make_erf_run(tmp_path / "d", "swin-B"), "erf")], tmp_path)
    assert list(titles) == ["swin-B (random init)", "swin-B (random init) [d]"]


# ------------------------------------------------------------------------------ layers, statistics, baseline
def _layered(tmp_path, name="replknet-31B", **kw):
    root = tmp_path / "results"
    make_layered_run(root / R.slug(name), name, **kw)
    return R.load_run(root / R.slug(name), "erf", root=root)


def test_layer_area_ratios_recorded_where_measured_recomputed_elsewhere(tmp_path):
    run = _layered(tmp_path, thresholds=(0.2, 0.5))
    layer_matrix = np.load(run.path / "layers" / "stages.1.npy")
    want = {d["threshold"]: (d["side"], d["area_ratio"]) for d in reference_area_ratios(layer_matrix, (0.2, 0.3, 0.5))}
    lr = V.layer_area_ratios(run, "stages.1", (0.2, 0.3, 0.5))
    assert lr.recomputed == {0.3}  # 0.2 and 0.5 were recorded by the run
    assert set(lr.ratios) == {0.2, 0.3, 0.5}
    for t, (side, ratio) in lr.ratios.items():
        assert side == want[t][0]
        assert ratio == pytest.approx(want[t][1], rel=1e-12)  # side^2 / (H W) of integers: float rounding only
    main = V.layer_area_ratios(run, None, (0.3,))  # the run's main matrix (the deepest layer)
    deep = reference_area_ratios(np.load(run.path / "layers" / "stages.3.npy"), (0.3,))[0]
    assert main.layer == V.FINAL_LAYER and main.ratios[0.3][0] == deep["side"]


def test_layer_rows_one_per_layer_with_theoretical_rf_and_marks(tmp_path):
    run = _layered(tmp_path, thresholds=(0.2, 0.5))
    rows = V.layer_rows(run, (0.2, 0.3))
    assert [r["layer"] for r in rows] == [name for name, _, _ in LAYERS]
    assert [r["theoretical RF (px)"] for r in rows] == [str(theo) for _, _, theo in LAYERS]
    assert [r["feature map"] for r in rows] == ["16x16", "8x8", "4x4", "2x2"]
    for row, (name, _, _) in zip(rows, LAYERS):
        rec = reference_area_ratios(np.load(run.path / "layers" / f"{name}.npy"), (0.2,))[0]
        assert row["t=20%"] == f"{V.pct(rec['area_ratio'])} ({rec['side']} px)"
        assert row["t=30%"].endswith(" *")  # not recorded: recomputed from the matrix


def test_layer_rows_of_a_run_without_layers(tmp_path):
    make_erf_run(tmp_path / "res" / "plain", "plain")
    run = R.load_run(tmp_path / "res" / "plain", "erf", root=tmp_path / "res")
    rows = V.layer_rows(run, (0.2,))
    assert len(rows) == 1 and rows[0]["layer"] == V.FINAL_LAYER
    assert not rows[0]["t=20%"].endswith("*")  # recorded
    assert V.layer_names(run) == [] and V.growth_series([("plain", run)]) == {}


def test_statistics_cells_show_the_recorded_numbers():
    cells = V.statistics_cells(statistics(4.0, 29))
    assert list(cells) == list(V.STATISTICS_HELP)  # one explanation per column
    assert cells["sigma x / y (px)"] == "4.0 / 4.0" and cells["sigma major / minor (px)"] == "4.0 / 4.0"
    assert cells["R2"] == "1.000" and cells["orientation (deg)"] == ""  # isotropic: no orientation
    # radii of an isotropic Gaussian: sigma * sqrt(-2 ln(1 - s)) = 4.71, 8.58, 12.14 for s = 0.5, 0.9, 0.99
    assert cells["radius 50/90/99% (px)"] == "4.7 / 8.6 / 12.1"
    assert cells["centre-of-mass offset (px)"] == "0.0"
    assert cells["theoretical RF (px)"] == "29" and cells["effective / theoretical"] == "0.24 (t=20%)"
    # a theoretical field far beyond the image (RepLKNet-31B: 9011 px): 7/9011, two significant digits, never "0.00"
    assert V.statistics_cells(statistics(4.0, 9011))["effective / theoretical"] == "0.00078 (t=20%)"


def test_statistics_cells_of_a_failed_fit_and_missing_statistics():
    failed = V.statistics_cells(statistics(4.0, None, ok=False))
    assert failed["sigma x / y (px)"] == "fit failed: the matrix is all zero"
    assert failed["R2"] == "" and failed["theoretical RF (px)"] == "" and failed["effective / theoretical"] == ""
    assert set(V.statistics_cells(None).values()) == {""}
    assert V.statistics_rows([("m", "stages.0", None)])[0]["model"] == "m"


def test_growth_series_overlays_several_runs(tmp_path):
    rlk = _layered(tmp_path)
    r50 = _layered(tmp_path, "resnet-50", layers=(("layer1", 2.0, 35), ("layer2", 3.0, 91)))
    single = _layered(tmp_path, "one-layer", layers=(("layer4", 2.0, 35),))
    series = V.growth_series([("rlk", rlk), ("r50", r50), ("single", single)])
    assert list(series) == ["rlk", "r50"]  # a run of one layer has no growth
    assert [layer for layer, _ in series["r50"]] == ["layer1", "layer2"]
    for layer, ratios in series["rlk"]:
        want = reference_area_ratios(np.load(rlk.path / "layers" / f"{layer}.npy"))
        assert [(r["threshold"], r["side"]) for r in ratios] == [(w["threshold"], w["side"]) for w in want]
    at = V.growth_series([("rlk", rlk)], thresholds=(0.4,))["rlk"]
    want = reference_area_ratios(np.load(rlk.path / "layers" / "stages.0.npy"), (0.4,))[0]
    assert at[0][1][0]["side"] == want["side"]  # a threshold the run did not record: from the layer matrix


def test_baseline_rows_pair_trained_and_untrained_per_layer(tmp_path):
    run = _layered(tmp_path, weights={"tag": "in1k"}, baseline=True)
    rows = V.baseline_rows(run)
    assert [(r.layer, r.which) for r in rows] == [(name, w) for name, _, _ in LAYERS
                                                  for w in ("as run", "untrained baseline")]
    assert rows[0].weights == "in1k" and rows[1].weights == "random init, seed 0"
    base = json.loads((run.path / "baseline" / "erf.json").read_text())
    own = json.loads((run.path / "erf.json").read_text())
    cells = [r.cells((0.2,)) for r in rows[:2]]
    for cell, layer in zip(cells, (own["layers"][0], base["layers"][0])):
        r = layer["area_ratios"][0]
        assert cell["t=20%"] == f"{V.pct(r['area_ratio'])} ({r['side']} px)"
    # the baseline's ERFs were built 1.5 times as wide (builders.make_layered_run): sigma 2.0 -> 3.0
    assert cells[0]["sigma major / minor (px)"] == "2.0 / 2.0" and cells[1]["sigma major / minor (px)"] == "3.0 / 3.0"
    assert V.baseline_rows(_layered(tmp_path, "no-baseline")) == []


def test_main_erf_runs_hide_a_baseline_beside_its_run(tmp_path):
    _layered(tmp_path, baseline=True)
    runs = R.find_runs(tmp_path / "results")
    assert len(runs) == 2
    assert [r.path.name for r in V.main_erf_runs(runs)] == ["replknet-31B"]


def test_theoretical_side():
    assert V.theoretical_side(statistics(2.0, 13)) == 13
    assert V.theoretical_side(statistics(2.0, None)) is None and V.theoretical_side(None) is None
