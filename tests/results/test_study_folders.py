"""Study folders (``erftools study``) in the results layer: discovery, the typed reader of study.json with its
checks, and the views of the dashboard's Study page, on a study run by the real study code."""
from __future__ import annotations

import json
import os

import pytest

from erftools.results import ResultError
from erftools.results import store as S
from erftools.results import views as V

from .builders import SECRET, copy_study, make_outside, reference_area_ratios, tiny_study


@pytest.fixture(scope="session")
def study_results(shared, tmp_path_factory):
    return tiny_study(shared, tmp_path_factory.mktemp("tiny-study"))


def test_the_study_is_found_and_read(study_results):
    studies, problems = S.find_studies(study_results.parent)  # found below the results root too
    assert problems == [] and len(studies) == 1
    study = studies[0]
    raw = json.loads((study_results / "study.json").read_text(encoding="utf-8"))
    assert (study.name, study.title, study.path) == ("tiny", "two random networks", study_results)
    assert [m.id for m in study.models] == ["resnet18", "replknet", "replknet-3"]
    assert study.model("replknet-3").unpublished and study.model("replknet-3").runs == []
    assert study.model("resnet18").paper_erf == {0.2: 99.0}  # "0.2" in the file, a threshold here
    assert study.thresholds == [0.2, 0.3, 0.5, 0.99]
    assert [r.verdict for r in study.rows] == [r["verdict"] for r in raw["rows"]]
    # a study of two random networks against the study file's made-up paper values: every verdict kind but
    # 'missing' / 'failed' occurs (15 rows: 2 x (4 ERF + 1 shape bias) + 5 not run for RepLKNet-3)
    assert {r.verdict for r in study.rows} == {"agrees", "DIFFERS", "no paper value", "not run"}
    assert len(study.rows) == 15


def test_study_runs_are_read_through_the_run_readers(study_results):
    study = S.read_study(study_results)
    runs = V.study_runs(study)
    assert runs.problems == []
    assert [(t, m.id, r.path.relative_to(study_results).as_posix()) for t, m, r in runs.erf] == [
        ("ResNet-18 (random)", "resnet18", "resnet18/erf-sequential"),
        ("narrow RepLKNet (random)", "replknet", "replknet/erf-sequential")]
    assert [m.id for _, m, _ in runs.shape_bias] == ["resnet18", "replknet"]
    # ours in the table is the recorded area ratio, and the recorded ratio is the paper's square found on the
    # stored matrix (the plain-loop definition in builders; both sums are float64, so the same square is found)
    rows = {(r.model, r.quantity): r for r in study.rows}
    for _, model, run in runs.erf:
        matrix, factor = S.load_erf_matrix(run)
        assert factor == 1 and matrix.shape == (64, 64)
        for ref in reference_area_ratios(matrix, study.thresholds):
            ours = rows[(model.id, f"r @ {ref['threshold']:.0%} (%)")].ours
            assert ours == pytest.approx(100 * ref["area_ratio"], abs=1e-9)  # side^2 / (H W): exact
    for _, model, run in runs.shape_bias:
        assert rows[(model.id, "shape bias")].ours == run.record.shape_bias


def test_study_views(study_results):
    study = S.read_study(study_results)
    runs = V.study_runs(study)
    table = V.study_table(study)
    assert table[0] == {"model": "ResNet-18 (random)", "measurement": "ERF (sequential)", "value": "r @ 20% (%)",
                        "ours": f"{study.rows[0].ours:.2f}", "paper": "99.00",
                        "difference": f"{study.rows[0].ours - 99.0:+.2f}", "tolerance": "±0.5 pp",
                        "verdict": "DIFFERS", "note": ""}
    assert V.study_tolerances(study) == "ERF area ratio ±0.5 pp; shape bias ±0.02"
    erf = V.study_erf_rows(study, runs.erf)
    assert erf[0]["paper t=20%"] == "99.0" and erf[0]["paper t=30%"] == "" and erf[1]["paper t=20%"] == ""
    sb = V.study_shape_bias_rows(runs.shape_bias)
    assert [r["paper"] for r in sb] == ["0.000", "0.500"]
    lines = V.study_shape_bias_lines(runs.shape_bias)
    assert [(x.name, x.kind) for x in lines] == [
        ("ResNet-18 (random)", "model"), ("ResNet-18 (random) (paper)", "published"),
        ("narrow RepLKNet (random)", "model"), ("narrow RepLKNet (random) (paper)", "published")]
    paper = {r["model"]: r for r in V.study_paper_rows(study)}
    assert paper["replknet-3"]["shape bias"] == "0.246"  # the paper's Fig. 5 value the study file names
    assert V.study_unpublished(study) == [{"model": "replknet-3", "status": "no public weights",
                                           "note": "no public weights", "download": "", "file": ""}]


def test_a_missing_run_is_named(study_results, tmp_path):
    root = copy_study(study_results, tmp_path / "copy")
    (root / "replknet" / "shape-bias" / "summary.json").unlink()
    runs = V.study_runs(S.read_study(root))
    assert [m.id for _, m, _ in runs.shape_bias] == ["resnet18"]
    assert runs.problems == ["narrow RepLKNet (random) (replknet/shape-bias): not computed yet (no record in the "
                             "folder)"]


@pytest.mark.parametrize("folder", ["../outside/erf-run", "/etc", "resnet18/../../outside", "link"])
def test_run_folders_leading_outside_are_refused(study_results, tmp_path, folder):
    outside = make_outside(tmp_path / "outside")
    root = copy_study(study_results, tmp_path / "results" / "study", model_0={"runs": [folder]})
    os.symlink(outside / "erf-run", root / "link")  # a plain name, but a link leading out of the results folder
    with pytest.raises(ResultError, match="refusing to read") as info:
        S.read_study(root, tmp_path / "results")
    assert str(tmp_path) not in str(info.value) and SECRET not in str(info.value)
    studies, problems = S.find_studies(tmp_path / "results")
    assert studies == [] and len(problems) == 1 and "refusing to read" in problems[0]


@pytest.mark.parametrize("change, message", [
    ({"rows": "none"}, "'rows' should be a list"),
    ({"row_2": {"verdict": "maybe"}}, "rows\\[2\\]: verdict 'maybe' should be one of agrees, DIFFERS"),
    ({"row_0": {"ours": "12"}}, "rows\\[0\\]: the field 'ours' should be a number, got str"),
    ({"model_1": {"paper": {"erf": {"twenty": 1.0}}}}, "model 'replknet': paper.erf key 'twenty'"),
    ({"model_0": {"runs": "resnet18"}}, "model 'resnet18': the field 'runs' should be a list"),
    ({"schema": 7}, "schema 7, newer than this erftools reads .*upgrade erftools"),
    ({"models": None}, "the field 'models' is missing"),
])
def test_malformed_study_json_is_named(study_results, tmp_path, change, message):
    root = copy_study(study_results, tmp_path / "copy", **change)
    with pytest.raises(ResultError, match=message):
        S.read_study(root)
    studies, problems = S.find_studies(tmp_path)
    assert studies == [] and len(problems) == 1 and "copy/study.json" in problems[0]


def test_study_json_of_another_kind_is_not_a_study(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "study.json").write_text('{"kind": "notes"}', encoding="utf-8")
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "study.json").write_text("{ not json", encoding="utf-8")
    studies, problems = S.find_studies(tmp_path)
    assert studies == [] and len(problems) == 1 and "y/study.json is unreadable or not valid JSON" in problems[0]
    with pytest.raises(ResultError, match="x/study.json is not a study record \\(kind='notes'"):
        S.read_study(tmp_path / "x", tmp_path)


def test_study_json_linked_outside_is_refused(study_results, tmp_path):
    outside = copy_study(study_results, tmp_path / "outside", title=SECRET)
    (tmp_path / "results" / "s").mkdir(parents=True)
    os.symlink(outside / "study.json", tmp_path / "results" / "s" / "study.json")
    studies, problems = S.find_studies(tmp_path / "results")
    assert studies == [] and len(problems) == 1
    assert "refusing to read s/study.json" in problems[0] and SECRET not in problems[0]
    with pytest.raises(ResultError, match="outside the results folder"):
        S.read_study(tmp_path / "results" / "s", tmp_path / "results")
