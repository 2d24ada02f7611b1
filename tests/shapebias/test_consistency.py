"""Error consistency (Cohen's kappa against human observers) against model-vs-human's own analysis code.

The golden values (tests/shapebias/data/error_consistency_golden.json) were computed by model-vs-human's
``ErrorConsistency`` on the reference decisions (see that folder's README and make_consistency_golden.py).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from erftools._io import ErftoolsError
from erftools.cli import main as cli_main
from erftools.shapebias import consistency as C
from erftools.shapebias.analysis import read_decisions

GOLDEN = json.loads((Path(__file__).parent / "data" / "error_consistency_golden.json").read_text(encoding="utf-8"))
TOL = 1e-12  # the same arithmetic on counts of 1280 trials; only summation order may differ


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _golden_pairs() -> dict[frozenset, dict]:
    return {frozenset((p["file_a"], p["file_b"])): p for p in GOLDEN["pairs"]}


def _check_reference_files(reference_dir: Path) -> list[Path]:
    files = [reference_dir / f for f in GOLDEN["files_sha256"]]
    missing = [str(f) for f in files if not f.is_file()]
    assert not missing, f"reference decisions missing: {missing}"
    return files


@pytest.fixture(scope="module")
def reference_run(reference_dir, tmp_path_factory):
    files = _check_reference_files(reference_dir)
    out = tmp_path_factory.mktemp("ec") / "runs"
    assert cli_main(["shape-bias", "--decisions", *map(str, files), "--out", str(out), "--bootstrap", "20",
                     "--individual-subjects"]) == 0
    return out, reference_dir


def _file_of(folder: Path, reference_dir: Path) -> dict[str, str]:
    """{label: reference file} of every run below ``folder``."""
    out = {}
    for summary in folder.glob("*/summary.json"):
        rec = json.loads(summary.read_text(encoding="utf-8"))
        if rec["decision_maker_kind"] == "humans":
            continue
        (f,) = rec["decisions_files"]
        out[rec["label"]] = Path(f["path"]).relative_to(reference_dir.resolve()).as_posix()
    return out


def test_every_pair_equals_model_vs_human(reference_run):
    out, ref = reference_run
    files = _file_of(out, ref)
    golden = _golden_pairs()
    rows = _csv(out / C.CSV_FILE)  # every pair of the combined run
    assert list(rows[0]) == list(C.CSV_COLUMNS)
    checked = 0
    for r in rows:
        key = frozenset((files[r["maker_a"]], files[r["maker_b"]]))
        if key not in golden:
            continue  # network against network: model-vs-human's matrix has it too, the golden file does not
        g = golden[key]
        assert int(r["trials"]) == g["trials"] == 1280
        for k in ("observed", "expected", "kappa"):
            assert float(r[k]) == pytest.approx(g[k], abs=TOL), (r, g)
        checked += 1
    assert checked == len(golden) == 155
    assert len(rows) == 21 * 20 // 2  # 11 networks + 10 observers, each pair once


def test_each_run_folder_has_its_kappas_and_the_human_ceiling(reference_run):
    out, ref = reference_run
    files = _file_of(out, ref)
    golden = _golden_pairs()
    by_file = {v: k for k, v in files.items()}
    for net, mean in GOLDEN["mean_vs_humans"].items():
        folder = next(p.parent for p in out.glob("*/summary.json")
                      if json.loads(p.read_text())["label"] == by_file[net])
        ec = json.loads((folder / "summary.json").read_text())["error_consistency"]
        assert ec["kappa_mean"] == pytest.approx(mean, abs=TOL)
        assert ec["human_ceiling"]["kappa_mean"] == pytest.approx(GOLDEN["humans_ceiling"], abs=TOL)
        assert ec["observers_source"] == C.FROM_FILES and len(ec["observers"]) == 10
        rows = _csv(folder / C.CSV_FILE)
        mine = [r for r in rows if by_file[net] in (r["maker_a"], r["maker_b"])]
        assert len(mine) == 10 and len(rows) == 10 + 45
        for r in mine:
            g = golden[frozenset((files[r["maker_a"]], files[r["maker_b"]]))]
            assert float(r["kappa"]) == pytest.approx(g["kappa"], abs=TOL)
    humans = json.loads((out / "humans" / "summary.json").read_text())["error_consistency"]
    assert humans["kappa_mean"] == pytest.approx(GOLDEN["humans_ceiling"], abs=TOL)
    combined = json.loads((out / "combined.json").read_text())["error_consistency"]
    assert combined["human_ceiling"]["kappa_mean"] == pytest.approx(GOLDEN["humans_ceiling"], abs=TOL)
    # an individual observer (--individual-subjects) is compared with the 9 others, never with itself
    s01 = json.loads((out / "subject-01" / "summary.json").read_text())["error_consistency"]
    assert sorted(s01["per_observer"]) == [f"subject-{i:02d}" for i in range(2, 11)]
    assert s01["kappa_mean"] == pytest.approx(humans["human_ceiling"]["per_observer"]["subject-01"], abs=TOL)


def test_a_network_alone_is_compared_with_the_shipped_observers(reference_dir, tmp_path):
    _check_reference_files(reference_dir)
    net = next(f for f in GOLDEN["mean_vs_humans"] if "resnet50" in f)
    out = tmp_path / "r50"
    assert cli_main(["shape-bias", "--decisions", str(reference_dir / net), "--out", str(out),
                     "--bootstrap", "10"]) == 0
    ec = json.loads((out / "summary.json").read_text())["error_consistency"]
    assert ec["observers_source"] == C.SHIPPED
    assert ec["kappa_mean"] == pytest.approx(GOLDEN["mean_vs_humans"][net], abs=TOL)
    assert ec["human_ceiling"]["kappa_mean"] == pytest.approx(GOLDEN["humans_ceiling"], abs=TOL)


def test_the_shipped_observers_are_the_reference_files(reference_dir):
    _check_reference_files(reference_dir)
    shipped = {m.label: m for m in C.shipped_observers()}
    assert len(shipped) == 10
    for f in GOLDEN["files_sha256"]:
        if "_subject-" not in f:
            continue
        rows = read_decisions(reference_dir / f)
        direct = C.maker_from_rows(rows[0]["subj"], rows)
        assert shipped[rows[0]["subj"]].correct == direct.correct
    assert C.build_human_decisions(reference_dir)["observers"] == C._shipped()["observers"]


# ----------------------------------------------------------------------------------------- the rules, by hand
def _rows(subj: str, answers: dict[str, str]) -> list[dict]:
    return [{"subj": subj, "object_response": resp, "category": name.split("-")[0].rstrip("0123456789"),
             "imagename": f"{i:04d}_x_{name}"} for i, (name, resp) in enumerate(answers.items())]


def test_kappa_by_hand_counts_every_trial_and_na_as_error():
    # 4 stimuli, one without a cue conflict (cat1-cat2) and one 'na': all count
    a = C.maker_from_rows("a", _rows("a", {"cat1-dog1.png": "cat", "cat1-cat2.png": "cat",
                                           "dog1-bird1.png": "bird", "dog2-cat1.png": "na"}))
    b = C.maker_from_rows("b", _rows("b", {"cat1-dog1.png": "cat", "cat1-cat2.png": "dog",
                                           "dog1-bird1.png": "bird", "dog2-cat1.png": "dog"}))
    p = C.pair(a, b)
    # correct a: 1 1 0 0 (p=.5); b: 1 0 0 1 (p=.5); agree on 2 of 4; expected .25 + .25
    assert p.trials == 4 and p.observed == pytest.approx(0.5) and p.expected == pytest.approx(0.5)
    assert p.kappa == pytest.approx(0.0)


def test_kappa_aligns_by_stimulus_and_is_one_for_identical_errors():
    a = C.maker_from_rows("a", _rows("a", {"cat1-dog1.png": "dog", "dog1-bird1.png": "dog", "bird1-cat1.png": "cat"}))
    b = C.maker_from_rows("b", [dict(r, imagename=r["imagename"].split("_")[-1]) for r in reversed(
        _rows("b", {"cat1-dog1.png": "dog", "dog1-bird1.png": "dog", "knife1-cat1.png": "knife"}))])
    p = C.pair(a, b)
    assert p.trials == 2 and p.observed == 1.0 and p.kappa == 1.0  # model-vs-human: 1 when observed == 1


def test_a_stimulus_decided_twice_is_refused():
    rows = _rows("a", {"cat1-dog1.png": "dog"}) + [dict(_rows("a", {"cat1-dog1.png": "cat"})[0],
                                                        imagename="0009_y_cat1-dog1.png")]
    with pytest.raises(ErftoolsError, match="decided twice"):
        C.maker_from_rows("a", rows)


def test_image_id_follows_model_vs_human():
    assert C.image_id("0001_s5n_s01_0_bird_00_bird3-clock2.png") == "bird3-clock2.png"
    assert C.image_id("bird3-clock2.png") == "bird3-clock2.png"
    assert C.image_id("0000_cl_s01_bw_boat_40_n02951358_5952.JPEG") == "n02951358_5952.JPEG"


def test_a_model_run_is_compared_with_the_observers_on_its_stimuli(subset_dir, reference_dir, tmp_path):
    """A model on 6 stimuli (--allow-incomplete): its kappa with each observer on those 6 trials, recomputed here
    from the decisions and the observers' raw files with the formula written out."""
    out = tmp_path / "run"
    assert cli_main(["shape-bias", "--model", "resnet18", "--weights", "random", "--stimuli", str(subset_dir),
                     "--allow-incomplete", "--out", str(out), "--no-progress", "--seed", "1",
                     "--bootstrap", "10"]) == 0
    ec = json.loads((out / "summary.json").read_text())["error_consistency"]
    mine = {r["imagename"]: r["object_response"] == r["category"] for r in _csv(out / "decisions.csv")}
    assert ec["trials"] == 6 and ec["observers_source"] == C.SHIPPED
    rows = {r["maker_b"]: r for r in _csv(out / C.CSV_FILE) if r["maker_a"] == "resnet18"}
    assert len(rows) == 10
    for f in GOLDEN["files_sha256"]:
        if "_subject-" not in f:
            continue
        human = {r["imagename"].split("_")[-1]: r["object_response"] == r["category"]
                 for r in read_decisions(reference_dir / f) if r["imagename"].split("_")[-1] in mine}
        keys = sorted(mine)
        a, b = [mine[k] for k in keys], [human[k] for k in keys]
        pa, pb = sum(a) / 6, sum(b) / 6
        expected = pa * pb + (1 - pa) * (1 - pb)
        observed = sum(x == y for x, y in zip(a, b)) / 6
        kappa = 1.0 if observed == 1 else (observed - expected) / (1 - expected)
        subj = read_decisions(reference_dir / f)[0]["subj"]
        r = rows[subj]
        assert int(r["trials"]) == 6
        assert float(r["observed"]) == pytest.approx(observed, abs=1e-12)
        assert float(r["expected"]) == pytest.approx(expected, abs=1e-12)
        assert float(r["kappa"]) == pytest.approx(kappa, abs=1e-12)
        assert ec["per_observer"][subj] == pytest.approx(kappa, abs=1e-12)
