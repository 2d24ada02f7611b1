"""Labels that say where a number comes from (issue 23): a record without weights is not "random"; random-weight,
subset and unfinished runs say so wherever they are named; a failed run is not "interrupted"."""
from __future__ import annotations

import json

import pytest

from erftools.results import views as V
from erftools.results.records import FAILURE_FILE, HUMANS, NETWORK, RESUME_STATE
from erftools.results.store import Run, find_interrupted, load_record

from .builders import decision_rows, make_erf_run, make_sb_run, sb_record


def _sb_run(tmp_path, name, **kw) -> Run:
    folder = make_sb_run(tmp_path / name, name, **kw)
    return Run("shape-bias", folder, load_record(folder, "shape-bias"), tmp_path)


def test_published_decisions_are_not_random(tmp_path):
    humans = _sb_run(tmp_path, "humans", dm_kind=HUMANS)
    alexnet = _sb_run(tmp_path, "alexnet", dm_kind=NETWORK)
    for run in (humans, alexnet):
        assert not V.is_untrained(run.record) and "random" not in V.weights_text(run.record)
        assert "random" not in V.run_title(run) and "random" not in str(V.provenance(run.record))
    assert V.weights_text(humans.record) == "human observers (published decisions)"
    assert V.weights_text(alexnet.record) == "trained network (published decisions)"


def test_a_record_without_weights_says_not_recorded():
    rec = sb_record("x", decision_rows("x", 0.3, 0), model={"name": "x"}, weights=None)
    assert not V.is_untrained(rec) and V.weights_text(rec) == "not recorded"


def test_random_weight_subset_shape_bias_is_labelled(tmp_path):
    run = _sb_run(tmp_path, "resnet18", model={"name": "resnet18", "weights": "random"},
                  weights={"source": "random"}, num_images=32)
    assert V.is_untrained(run.record)
    assert V.run_title(run) == "resnet18 (random init) (32 of 1280 stimuli)"
    trained = _sb_run(tmp_path, "resnet50", num_images=1280)
    assert V.run_title(trained) == "resnet50"


def test_erf_titles_and_figure_titles_say_random(tmp_path):
    folder = make_erf_run(tmp_path / "r", "resnet-152", weights="random")
    run = Run("erf", folder, load_record(folder, "erf"), tmp_path)
    assert V.run_title(run) == "resnet-152 (random init)"
    folder = make_erf_run(tmp_path / "t", "replknet-31B", weights="pretrained:in1k")
    assert V.run_title(Run("erf", folder, load_record(folder, "erf"), tmp_path)) == "replknet-31B"


def test_compare_labels_and_folder(tmp_path, monkeypatch, capsys):
    from erftools.cli import main

    a = make_erf_run(tmp_path / "runs" / "a", "resnet-152", weights="random")
    b = make_erf_run(tmp_path / "runs" / "b", "replknet-31B", weights="pretrained:in1k")
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    folders = list((tmp_path / "results" / "compare").iterdir())
    assert len(folders) == 1 and not (tmp_path / "erf_compare.png").exists()
    table = json.loads((folders[0] / "erf_compare.json").read_text())
    assert [r["label"] for r in table["runs"]] == ["resnet-152 (random init)", "replknet-31B"]
    assert "resnet-152 (random init)" in (folders[0] / "erf_compare.md").read_text() and "random init" in out


def test_a_failed_run_is_not_interrupted(tmp_path):
    from erftools import _runfolder
    from erftools._dist import Dist

    folder = tmp_path / "sb"
    folder.mkdir()
    (folder / RESUME_STATE["shape-bias"]).write_text("stimulus,decision\n")  # partial decisions were kept
    with pytest.raises(ValueError):
        with _runfolder.held(folder, Dist(), "cpu", "shape-bias run"):
            raise ValueError("the shape bias is undefined for these 32 trials")
    assert json.loads((folder / FAILURE_FILE).read_text())["error"].startswith("ValueError: the shape bias")
    (found,) = find_interrupted(tmp_path)
    assert found.failed and "undefined" in found.failed
    with pytest.raises(KeyboardInterrupt):  # an interruption leaves no failure marker; a new attempt drops the old
        with _runfolder.held(folder, Dist(), "cpu", "shape-bias run"):
            raise KeyboardInterrupt
    assert not (folder / FAILURE_FILE).exists()
    (found,) = find_interrupted(tmp_path)
    assert found.failed is None


def test_report_defaults_to_results_in_the_working_folder(tmp_path, monkeypatch, capsys):
    from erftools.cli import main

    make_erf_run(tmp_path / "results" / "erf" / "a", "resnet-152", weights="random")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ERFTOOLS_RESULTS", raising=False)
    assert main(["report"]) == 0
    assert (tmp_path / "results" / "index.md").is_file()
    assert "resnet-152 (random init)" in (tmp_path / "results" / "index.md").read_text()
