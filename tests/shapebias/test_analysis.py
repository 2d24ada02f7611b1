"""Shape-bias analysis against model-vs-human's own analysis of every reference file (golden fixture)."""
from __future__ import annotations

import csv
import json
import math

import pytest

from erftools._io import ErftoolsError
from erftools.shapebias import analyse, read_decisions, shape_bias
from erftools.shapebias.analysis import (analyse_decision_maker, bootstrap_ci, group_decision_makers,
                                         mvh_per_category)
from erftools.shapebias.reference import REFERENCE_FILES, get_reference, list_references, load_summary, published_for

KEYS = ("fraction-correct-shape", "fraction-correct-texture", "shape-bias")


@pytest.fixture(scope="module")
def expected(shared):
    """model-vs-human's analysis of the real reference decisions (../shared; the committed tests/golden holds the
    same analysis of synthetic decision files: tests/shapebias/test_golden_decisions.py)."""
    return json.loads((shared / "fixtures" / "expected_shape_bias.json").read_text())


@pytest.fixture(scope="module")
def all_rows(reference_dir, expected):
    return {name: read_decisions(reference_dir / e["path"]) for name, e in expected["files"].items()}


def _close(a, b):
    if b is None:
        return a is None or math.isnan(a)
    return a == pytest.approx(b, abs=1e-12)


def test_every_reference_file_matches_model_vs_human(expected, all_rows):
    assert len(expected["files"]) == 21
    for name, e in expected["files"].items():
        rows = all_rows[name]
        assert len(rows) == e["n_trials"]
        got = shape_bias(rows)
        for k in KEYS:
            assert _close(got[k], e[k]), (name, k)
        per = mvh_per_category(rows)
        assert set(per) == set(e["per_category"])
        for cat, ec in e["per_category"].items():
            for k in KEYS:
                assert _close(per[cat][k], ec[k]), (name, cat, k)
        a = analyse(rows, n_boot=200)
        assert a["shape_bias"] == pytest.approx(e["shape-bias"], abs=1e-12)
        assert a["n_conflict_trials"] == e["n_cue_conflict_trials"]
        assert a["fraction_correct_shape"] == pytest.approx(e["fraction-correct-shape"], abs=1e-12)
        for cat, ec in e["per_category"].items():
            assert _close(a["per_category"][cat]["shape_bias"], ec["shape-bias"])
            assert a["per_category"][cat]["fraction_shape"] == pytest.approx(ec["fraction-correct-shape"], abs=1e-12)
            assert a["per_category"][cat]["n"] == ec["n_trials"]


def test_published_headline_values(expected, all_rows):
    want = {"resnet50": 0.2207, "resnet101": 0.2612, "resnet152": 0.2562, "densenet121": 0.2145, "vgg16": 0.0921}
    for name, e in expected["files"].items():
        if "trained-CNNs" in e["path"] and e["subj"] in want:
            assert shape_bias(all_rows[name])["shape-bias"] == pytest.approx(want[e["subj"]], abs=5e-5)


def test_humans_pooled_and_per_subject(expected, all_rows):
    rows = [r for name, rs in all_rows.items() if expected["files"][name]["kind"] == "human" for r in rs]
    dms = group_decision_makers(rows)
    assert [d.label for d in dms] == ["humans"]
    a = analyse_decision_maker(dms[0], n_boot=500)
    agg = expected["aggregates"]
    assert a["shape_bias"] == pytest.approx(agg["humans_pooled"]["shape-bias"], abs=1e-12)
    assert round(a["shape_bias"], 4) == 0.9587
    assert a["num_trials"] == agg["humans_pooled"]["n_trials"] == 12800
    assert a["shape_bias_mean_of_subjects"] == pytest.approx(agg["humans_mean_of_subjects"]["shape-bias"], abs=1e-12)
    for cat, ec in agg["humans_pooled"]["per_category"].items():
        assert a["per_category"][cat]["shape_bias"] == pytest.approx(ec["shape-bias"], abs=1e-12)
    assert len(a["subjects"]) == 10
    lo, hi = a["shape_bias_range_of_subjects"]
    assert (round(lo, 3), round(hi, 3)) == (0.919, 0.987)
    assert a["ci95"][0] < a["shape_bias"] < a["ci95"][1]
    # individuals kept as well on request; without pooling each subject is its own decision maker
    assert len(group_decision_makers(rows, keep_individuals=True)) == 11
    assert len(group_decision_makers(rows, pool_humans=False)) == 10


def test_bootstrap_is_seeded_and_sensible(all_rows):
    rows = next(rs for name, rs in all_rows.items() if "resnet50" in name)
    a = bootstrap_ci(rows, n_boot=2000, seed=0)
    assert a == bootstrap_ci(rows, n_boot=2000, seed=0)
    assert a != bootstrap_ci(rows, n_boot=2000, seed=1)
    sb = shape_bias(rows)["shape-bias"]
    assert a[0] < sb < a[1]
    assert 0.02 < a[1] - a[0] < 0.12  # ~1200 images: a few percentage points either side
    # all observers' trials on an image move together: 10 copies of one observer give the same interval width
    # as the interval of one copy would if images were the unit (not 10x narrower as with trials as the unit)
    tenfold = bootstrap_ci(rows * 10, n_boot=2000, seed=0)
    assert tenfold == pytest.approx(a, abs=1e-12)


def test_texture_rule_and_na_answers(tmp_path):
    path = tmp_path / "d.csv"
    lines = ["subj,session,trial,rt,object_response,category,condition,imagename",
             "subject-01,1,1,1.0,cat,cat,0,0001_s5n_s01_0_cat_00_cat1-dog2.png",  # shape
             "subject-01,1,2,1.0,dog,cat,0,0002_s5n_s01_0_cat_00_cat2-dog10.png",  # texture
             "subject-01,1,3,1.0,na,cat,0,0003_s5n_s01_0_cat_00_cat3-bird1.png",  # no answer
             "subject-01,1,4,1.0,cat,cat,0,0004_s5n_s01_0_cat_00_cat4-cat2.png"]  # no conflict
    path.write_text("\n".join(lines) + "\n")
    rows = read_decisions(path)
    a = analyse(rows, n_boot=100)
    assert (a["n_shape"], a["n_texture"], a["n_no_answer"], a["num_trials"]) == (1, 1, 1, 4)
    assert a["shape_bias"] == 0.5
    assert a["fraction_correct_shape"] == 0.25  # the denominator includes no-conflict and 'na' trials
    assert a["accuracy_no_conflict"] == 1.0


@pytest.mark.parametrize("bad,match", [
    ("subject-01,1,1,1.0,cat,zebra,0,x_zebra1-cat1.png", "unknown category"),
    ("subject-01,1,1,1.0,tiger,cat,0,x_cat1-dog1.png", "unknown object_response"),
    ("subject-01,1,1,1.0,cat,cat,0,x_cat1.png", "texture category"),
    ("subject-01,1,1,1.0,cat,cat,0,x_dog1-cat1.png", "shows a 'dog' shape"),
])
def test_bad_rows_are_reported_with_line(tmp_path, bad, match):
    path = tmp_path / "d.csv"
    path.write_text("subj,session,trial,rt,object_response,category,condition,imagename\n" + bad + "\n")
    with pytest.raises(ErftoolsError, match=match) as exc:
        read_decisions(path)
    assert "line 2" in str(exc.value)


def test_missing_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("subj,object_response,category\nx,cat,cat\n")
    with pytest.raises(ErftoolsError, match="imagename"):
        read_decisions(path)


def test_model_vs_human_bare_imagenames_give_same_result(reference_dir, tmp_path):
    rel = next(r for r in REFERENCE_FILES if "resnet50" in r)
    src = reference_dir / rel
    with open(src, newline="") as fh:
        rows = list(csv.DictReader(fh))
    dst = tmp_path / "mvh.csv"
    with open(dst, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow(dict(r, imagename=r["imagename"].split("_")[-1], condition="NaN"))
    assert shape_bias(read_decisions(dst)) == shape_bias(read_decisions(src))


def test_shipped_reference_summary_matches_fixture(expected):
    refs = load_summary()["references"]
    by_path = {e["path"]: e for e in expected["files"].values()}
    assert len(refs) == 22  # humans + 10 subjects + 11 networks
    for rel, (name, _, _) in REFERENCE_FILES.items():
        e = by_path[rel]
        assert refs[name]["shape_bias"] == pytest.approx(e["shape-bias"], abs=1e-12)
        for cat, ec in e["per_category"].items():
            assert _close(refs[name]["per_category"][cat]["shape_bias"], ec["shape-bias"])
        lo, hi = refs[name]["ci95"]
        assert lo < refs[name]["shape_bias"] < hi
    assert refs["humans"]["shape_bias"] == pytest.approx(expected["aggregates"]["humans_pooled"]["shape-bias"],
                                                         abs=1e-12)


def test_shipped_summary_is_reproducible(reference_dir):
    """The shipped summary is what build_reference_summary computes (checked on a cheap bootstrap)."""
    from erftools.shapebias.reference import build_reference_summary

    rebuilt = build_reference_summary(reference_dir, n_boot=10)
    shipped = load_summary()
    for name, e in rebuilt["references"].items():
        assert shipped["references"][name]["shape_bias"] == e["shape_bias"]
        assert shipped["references"][name]["per_category"].keys() == e["per_category"].keys()


def test_published_fig5_and_lookup():
    names = {r["name"] for r in list_references()}
    assert {"humans", "resnet152", "subject-01", "paper:replknet-31b-in1k", "paper:humans"} <= names
    assert get_reference("paper:replknet-31b-in1k")["shape_bias"] == 0.2995
    assert get_reference("paper:swin-b-in22k")["per_category"]["clock"] == 0.768
    assert get_reference("Humans")["shape_bias"] == pytest.approx(0.9587, abs=5e-5)
    assert published_for("replknet-31B", "pretrained:in22k-ft-in1k")["shape_bias"] == 0.4106
    assert published_for("replknet-31B", "pretrained:in1k")["shape_bias"] == 0.2995
    assert published_for("resnet-152", "random") is None
    with pytest.raises(ErftoolsError, match="unknown reference"):
        get_reference("resnet-9000")
