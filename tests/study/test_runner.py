"""Running a study end to end: the tiny two-model study, an interrupted study resumed, sharded halves, refusals."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from erftools.results import read_record
from erftools.study import load_study, run_study
from erftools.study.compare import AGREES, DIFFERS, NO_PAPER, NOT_RUN
from erftools.study.spec import StudyError

RUNS = ["resnet18/erf-sequential", "resnet18/shape-bias", "replknet/erf-sequential", "replknet/shape-bias"]


def _runs(root: Path) -> list[str]:
    found = [p.parent for p in root.rglob("erf.json")] + [p.parent for p in root.rglob("summary.json")]
    return sorted(p.relative_to(root).as_posix() for p in found)


def _assert_same_results(a: Path, b: Path) -> None:
    """Two study folders hold the same runs: the same matrices (float32 sums in another order can differ in the
    last bits, so rtol 1e-5), the same decisions (categorical: exact) and the same comparison rows."""
    assert _runs(a) == _runs(b) == sorted(RUNS)
    for run in RUNS:
        if run.endswith("shape-bias"):
            assert (a / run / "decisions.csv").read_text() == (b / run / "decisions.csv").read_text()
            assert read_record(a / run, "shape-bias")["shape_bias"] == read_record(b / run, "shape-bias")["shape_bias"]
        else:
            np.testing.assert_allclose(np.load(a / run / "erf.npy"), np.load(b / run / "erf.npy"), rtol=1e-5,
                                       atol=1e-12)
            sides = [[r["side"] for r in read_record(x / run, "erf")["area_ratios"]] for x in (a, b)]
            assert sides[0] == sides[1]
    ra, rb = (json.loads((x / "study.json").read_text())["rows"] for x in (a, b))
    assert [(r["model"], r["quantity"], r["verdict"]) for r in ra] == [(r["model"], r["quantity"], r["verdict"])
                                                                        for r in rb]


def test_two_model_study_runs_end_to_end(reference_run):
    root, outcome = reference_run
    assert not outcome.failures and sorted(outcome.ran) == sorted(RUNS)
    assert _runs(root) == sorted(RUNS)
    erf = read_record(root / "resnet18/erf-sequential", "erf")
    assert erf["size"] == [64, 64] and erf["num_images"] == 2 and erf["images"]["sampler"] == "sequential"
    rep = read_record(root / "replknet/erf-sequential", "erf")
    assert rep["model_kwargs"]["channels"] == [16, 32, 64, 128] and rep["fingerprint"]["seed"] == 4
    sb = read_record(root / "replknet/shape-bias", "shape-bias")
    assert sb["num_trials"] == 6 and sb["weights"]["seed"] == 4 and sb["shape_bias"] == 0.0
    rows = {(r.model, r.quantity): r for r in outcome.rows}
    # ResNet-18's r at 20% against the study's 99.0 (a value no 64x64 random ERF reaches)
    r20 = rows[("resnet18", "r @ 20% (%)")]
    ratio = next(x for x in erf["area_ratios"] if abs(x["threshold"] - 0.2) < 1e-9)["area_ratio"]
    assert r20.ours == pytest.approx(100 * ratio) and r20.diff == pytest.approx(100 * ratio - 99.0)
    assert r20.verdict == DIFFERS
    assert rows[("resnet18", "r @ 30% (%)")].verdict == NO_PAPER
    assert rows[("resnet18", "shape bias")].verdict == AGREES  # 0.0 against 0.0
    assert rows[("replknet", "shape bias")].verdict == DIFFERS  # 0.0 against 0.5, tolerance 0.02
    assert rows[("replknet-3", "shape bias")].verdict == NOT_RUN and not (root / "replknet-3").exists()
    table = (root / "study.md").read_text()
    assert "narrow RepLKNet (random)" in table and "no public weights" in table
    report = (root / "report.md").read_text()
    assert outcome.report == root / "report.md" and "ResNet-18 (random)" in report
    assert (root / "study.toml").read_text() == outcome_study_text(root)


def outcome_study_text(root: Path) -> str:
    from .conftest import TINY_STUDY

    return TINY_STUDY


def test_the_study_runs_are_those_of_the_single_commands(reference_run, study_file, cli_main, capsys):
    """`erftools erf` / `erftools shape-bias` with the same settings find the study's runs finished (same
    fingerprint): nothing is recomputed, nothing refused."""
    root, _ = reference_run
    before = (root / "resnet18/erf-sequential/erf.json").read_text()
    assert cli_main(["erf", "--model", "resnet18", "--weights", "random", "--seed", "1", "--size", "64",
                     "--num-images", "2", "--sampler", "sequential", "--no-progress", "--device", "cpu",
                     "--label", "ResNet-18 (random)", "--out", str(root / "resnet18/erf-sequential")]) == 0
    assert (root / "resnet18/erf-sequential/erf.json").read_text() == before
    sb = root / "resnet18/shape-bias"
    rec = read_record(sb, "shape-bias")
    assert cli_main(["shape-bias", "--model", "resnet18", "--weights", "random", "--seed", "1", "--stimuli",
                     str(study_file.parent / "stimuli"), "--allow-incomplete", "--batch-size", "6", "--bootstrap",
                     "10", "--device", "cpu", "--no-progress", "--label", "ResNet-18 (random)", "--out",
                     str(sb)]) == 0
    assert read_record(sb, "shape-bias")["timing"]["reused_decisions"] is True
    assert read_record(sb, "shape-bias")["shape_bias"] == rec["shape_bias"]
    capsys.readouterr()


def test_interrupted_study_resumes_to_identical_results(reference_run, study_file, tmp_path):
    """A copy of the finished study without the RepLKNet's runs: resnet18's finished runs are kept as they are,
    the RepLKNet's ERF is interrupted after its first image, and running the study again completes it."""
    out = tmp_path / "results"
    shutil.copytree(reference_run[0], out)
    shutil.rmtree(out / "replknet")
    kept = (out / "resnet18/erf-sequential/erf.json").read_text()
    calls = []

    def interrupt(_acc):
        calls.append(1)
        raise KeyboardInterrupt  # the first batch computed this session: the RepLKNet's first image

    study = load_study(study_file)
    with pytest.raises(KeyboardInterrupt):
        run_study(study, results=out, progress=False, report=False, on_batch=interrupt)
    assert len(calls) == 1 and (out / "replknet/erf-sequential/.erf_checkpoint").is_dir()
    outcome = run_study(study, results=out, progress=False, report=False)
    assert not outcome.failures and sorted(outcome.ran) == sorted(RUNS)
    assert read_record(out / "replknet/erf-sequential", "erf")["resumed"] is True
    assert (out / "resnet18/erf-sequential/erf.json").read_text() == kept  # finished: not computed again
    _assert_same_results(out, reference_run[0])


def test_sharded_halves_give_the_same_folder_as_one_run(reference_run, study_file, tmp_path):
    study = load_study(study_file)
    out = tmp_path / "shared"
    first = run_study(study, results=out, shard="1/2", progress=False, report=False)
    assert sorted(first.ran) == ["resnet18/erf-sequential", "resnet18/shape-bias"]
    assert {r.verdict for r in first.rows if r.model == "replknet"} == {"missing"}
    second = run_study(study, results=out, shard="2/2", progress=False, report=False)
    assert sorted(second.ran) == ["replknet/erf-sequential", "replknet/shape-bias"]
    _assert_same_results(out, reference_run[0])  # the second shard's table reads the first shard's runs too


def test_missing_weights_stop_the_study_before_anything_is_computed(cue_conflict, tmp_path):
    from .conftest import TINY_STUDY, make_study_dir

    text = TINY_STUDY.replace('weights = "random"\nseed = 4',
                              'download = { url = "https://drive.google.com/file/d/X/view", file = "tiny.pth" }')
    path = make_study_dir(tmp_path / "s", cue_conflict, text)
    study = load_study(path)
    with pytest.raises(StudyError) as exc:
        run_study(study, results=tmp_path / "out", progress=False)
    msg = str(exc.value)
    assert "replknet: weights needed" in msg and "https://drive.google.com/file/d/X/view" in msg
    assert "tiny.pth" in msg and "skip_missing=True" in msg
    assert not (tmp_path / "out").exists()
    with pytest.raises(StudyError, match="not a model id"):
        run_study(study, results=tmp_path / "out", weights_files={"nope": str(path)})


def test_a_study_record_with_a_wrong_typed_field_is_never_written(reference_run, monkeypatch, tmp_path):
    """The writer runs the reader's check (results.store.study_from_dict) on what it is about to write."""
    import erftools.study.runner as runner
    from erftools.results import ResultError

    root, _ = reference_run
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    before = (copy / "study.json").read_text()
    real = runner._study_record

    def wrong(study, rows):
        data = real(study, rows)
        data["rows"][0]["ours"] = "12"  # a number written as text
        return data

    monkeypatch.setattr(runner, "_study_record", wrong)
    with pytest.raises(ResultError, match=r"about to be written.*rows\[0\]: the field 'ours' should be a number"):
        runner.write_outputs(load_study(copy / "study.toml"), copy, report=False)
    assert (copy / "study.json").read_text() == before
