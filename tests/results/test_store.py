"""erftools.results.store: paths confined to the results folder, run discovery, a run's files."""
from __future__ import annotations

import json

import pytest

import numpy as np

from erftools import results as R
from erftools.results import ResultError, checked_path, safe_path
from erftools.results.store import load_decisions, load_erf_matrix, load_layer_matrix, stimulus_path

from .builders import (REPO, decision_rows, erf_matrix, erf_record, link, make_erf_run, make_sb_run, write_decisions,
                       write_record)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "results"
    (root / "run").mkdir(parents=True)
    (root / "run" / "a.txt").write_text("inside")
    (tmp_path / "secret.txt").write_text("outside")
    link(root / "run" / "out.txt", tmp_path / "secret.txt")
    link(root / "run" / "in.txt", root / "run" / "a.txt")
    link(root / "outdir", tmp_path)
    return root


def test_safe_path_inside(tree):
    assert safe_path(tree, "run/a.txt") == (tree / "run" / "a.txt").resolve()
    assert safe_path(tree, "run/in.txt") == (tree / "run" / "a.txt").resolve()  # a link staying inside is fine
    assert safe_path(tree, ".") == tree.resolve()
    assert safe_path(tree, "run/../run/a.txt").read_text() == "inside"


@pytest.mark.parametrize("relative", ["run/out.txt", "outdir/secret.txt", "outdir", "..", "../secret.txt",
                                      "run/../../secret.txt", "/etc/passwd"])
def test_safe_path_refuses_everything_leading_out(tree, relative):
    with pytest.raises(ResultError, match="outside the results folder") as err:
        safe_path(tree, relative)
    assert str(tree.parent) not in str(err.value)  # the message does not tell where the link leads


def test_checked_path_takes_joined_paths_and_a_linked_root(tree, tmp_path):
    alias = link(tmp_path / "alias", tree)  # the results folder itself reached through a link
    assert checked_path(alias, alias / "run" / "a.txt") == (tree / "run" / "a.txt").resolve()
    with pytest.raises(ResultError, match="refusing to read run/out.txt"):
        checked_path(alias, alias / "run" / "out.txt")


def test_run_files_are_confined(tree, tmp_path):
    run = R.Run("erf", tree / "run", erf_record("r"), root=tree)
    assert run.file("a.txt").read_text() == "inside"
    with pytest.raises(ResultError, match="outside"):
        run.file("out.txt")
    with pytest.raises(ResultError, match="outside"):
        R.Run("erf", tree / "run", erf_record("r")).file("../../secret.txt")  # without a root: the run folder


def test_read_record_with_a_root_refuses_a_linked_record(tmp_path):
    outside = make_erf_run(tmp_path / "outside", "secret")
    run = make_erf_run(tmp_path / "results" / "run", "mine")
    link(run / "erf.json", outside / "erf.json")
    with pytest.raises(ResultError, match="outside"):
        R.read_record(run, "erf", root=tmp_path / "results")
    assert R.read_record(run, "erf")["label"] == "secret"  # without a root: as before (the writers' own reads)


def test_scan_names_links_leading_out(tmp_path):
    outside = make_erf_run(tmp_path / "outside", "secret")
    root = tmp_path / "results"
    make_erf_run(root / "mine", "mine")
    link(root / "linked-run", outside)
    link(root / "inner-alias", root / "mine")  # a link inside the folder: skipped silently (no duplicate)
    runs, problems = R.scan(root)
    assert [r.record.label for r in runs] == ["mine"] and runs[0].root == root
    assert len(problems) == 1 and "linked-run" in problems[0] and "outside the results folder" in problems[0]


def test_scan_reads_typed_records_and_names_malformed_ones(tmp_path):
    root = tmp_path / "results"
    make_erf_run(root / "erf" / "a", "a")
    make_sb_run(root / "sb" / "b", "b")
    bad = make_erf_run(root / "erf" / "bad", "bad")
    data = json.loads((bad / "erf.json").read_text())
    data["size"] = [64]  # not [height, width]
    (bad / "erf.json").write_text(json.dumps(data))
    (root / "newer").mkdir()
    newer = erf_record("newer").to_dict()
    newer["schema"] = R.SCHEMA + 1
    (root / "newer" / "erf.json").write_text(json.dumps(newer))
    runs, problems = R.scan(root)
    assert [(r.kind, r.name) for r in runs] == [("erf", "a"), ("shape-bias", "b")]
    assert isinstance(runs[0].record, R.ErfRecord) and isinstance(runs[1].record, R.ShapeBiasRecord)
    assert len(problems) == 2
    assert any("erf/bad/erf.json: field 'size'" in p and "[height, width]" in p for p in problems)
    assert any("newer/erf.json has schema 2" in p and "upgrade erftools" in p for p in problems)
    listing = R.list_runs(root)
    assert [r.name for r in listing.erf] == ["a"] and all(str(tmp_path) not in p for p in listing.problems)


def test_unfinished_runs_are_listed_apart(tmp_path):
    make_erf_run(tmp_path / "done", "done")
    make_erf_run(tmp_path / "half", "half", complete=False)
    listing = R.list_runs(tmp_path)
    assert [r.name for r in listing.erf] == ["done"] and [r.name for r in listing.incomplete] == ["half"]
    assert [r.name for r in R.list_runs(tmp_path, include_incomplete=True).erf] == ["done", "half"]


def test_load_erf_matrix_undoes_the_stored_downsampling(tmp_path):
    full = erf_matrix(64, 8.0)
    folder = make_erf_run(tmp_path / "run", "x", size=64, matrix=full, downsample=4)
    m, f = load_erf_matrix(R.load_run(folder, "erf"))
    assert f == 4 and m.shape == (16, 16)
    # per-pixel means again; float32 block sums of 16 values: relative error well under 1e-5
    np.testing.assert_allclose(m, full.astype(np.float64).reshape(16, 4, 16, 4).mean(axis=(1, 3)), rtol=1e-5)
    m2, f2 = load_erf_matrix(R.load_run(folder, "erf"), max_side=8)  # reduced further for display
    assert f2 == 8 and m2.shape == (8, 8)
    np.testing.assert_allclose(m2, full.astype(np.float64).reshape(8, 8, 8, 8).mean(axis=(1, 3)), rtol=1e-5)


def test_load_erf_matrix_checks_the_record(tmp_path):
    folder = make_erf_run(tmp_path / "run", "x", size=32)
    write_record(folder / "erf.json", erf_record("x", size=32, downsample=2))  # the matrix is not 16x16
    with pytest.raises(ResultError, match="stored downsampled by 2"):
        load_erf_matrix(R.load_run(folder, "erf"))
    write_record(folder / "erf.json", erf_record("x", size=32))
    np.save(folder / "erf.npy", np.full((32, 32), np.nan, np.float32))
    with pytest.raises(ResultError, match="NaN"):
        load_erf_matrix(R.load_run(folder, "erf"))
    data = erf_record("x", size=32).to_dict()
    data["stored_downsample"] = "two"
    (folder / "erf.json").write_text(json.dumps(data))
    with pytest.raises(ResultError, match="field 'stored_downsample' should be integer"):
        R.load_run(folder, "erf")


def test_load_decisions_uses_the_engines_reader(tmp_path):
    run = R.load_run(make_sb_run(tmp_path / "sb", "net", p_shape=0.5), "shape-bias")
    rows = load_decisions(run)
    expect = decision_rows("net", 0.5, 0)
    assert [r["object_response"] for r in rows] == [r["object_response"] for r in expect]
    bad = [dict(r) for r in expect]
    bad[3]["category"] = "unicorn"
    write_decisions(run.path / "decisions.csv", bad)
    with pytest.raises(ResultError, match=r"^sb/decisions.csv, line 5: unknown category 'unicorn'") as err:
        load_decisions(run)
    assert str(tmp_path) not in str(err.value)  # named by its run folder, not the server's path
    (run.path / "decisions.csv").unlink()
    with pytest.raises(ResultError, match="decisions.csv is missing"):
        load_decisions(run)


def test_stimulus_paths_are_checked(tmp_path):
    stim = tmp_path / "stim"
    (stim / "cat").mkdir(parents=True)
    (stim / "cat" / "cat1-dog2.png").write_bytes(b"png")
    (tmp_path / "secret.png").write_bytes(b"x")
    allowed = {("cat", "cat1-dog2.png"), ("cat", "../secret.png"), ("..", "secret.png")}
    assert stimulus_path(stim, "cat", "cat1-dog2.png", allowed) == (stim / "cat" / "cat1-dog2.png").resolve()
    with pytest.raises(ResultError, match="not an image named in the decisions"):
        stimulus_path(stim, "dog", "cat1-dog2.png", allowed)
    for shape, name in (("cat", "../secret.png"), ("..", "secret.png")):
        with pytest.raises(ResultError, match="refusing"):
            stimulus_path(stim, shape, name, allowed)


def test_results_root(tmp_path, monkeypatch):
    monkeypatch.delenv(R.ENV_RESULTS, raising=False)
    assert R.results_root(tmp_path) == tmp_path.resolve()
    monkeypatch.setenv(R.ENV_RESULTS, str(tmp_path))
    assert R.results_root() == tmp_path.resolve()
    with pytest.raises(ResultError, match="does not exist"):
        R.results_root(tmp_path / "missing")
    monkeypatch.delenv(R.ENV_RESULTS)
    if (REPO / "reports" / "examples").is_dir():
        assert R.results_root() == (REPO / "reports" / "examples").resolve()


def test_committed_examples_load():
    """Every folder committed under reports/examples reads as a typed record, loses nothing on the way back to
    JSON, and its files load."""
    examples = REPO / "reports" / "examples"
    if not examples.is_dir():
        pytest.skip("no reports/examples")
    listing = R.list_runs(examples)
    assert not listing.problems and not listing.incomplete
    assert len(listing.erf) == 5 and len(listing.shape_bias) == 8  # 4 final-layer runs and a layered run
    for run in listing.erf + listing.shape_bias:
        raw = json.loads((run.path / R.RECORD_FILES[run.kind]).read_text(encoding="utf-8"))
        assert run.record.to_dict() == raw and list(run.record.to_dict()) == list(raw)
        assert run.record.extra == {}  # every field of today's writers is a known field
    for run in listing.erf:
        m, f = load_erf_matrix(run)
        size = run.record.size[0]
        assert f == run.record.stored_downsample == 4 and m.shape == (size // 4, size // 4)
        for entry in run.record.layers or []:
            assert load_layer_matrix(run, entry["layer"])[0].shape == m.shape
    humans = next(r for r in listing.shape_bias if r.path.name == "humans")
    assert len(load_decisions(humans)) == 12800 and humans.record.maker_kind == R.HUMANS


def test_interrupted_runs_are_found(tmp_path):
    from erftools._lock import run_lock

    root = tmp_path / "results"
    (root / "erf" / "cut" / R.ERF_CHECKPOINT).mkdir(parents=True)  # an ERF run stopped before its record
    half = make_sb_run(root / "sb" / "half", "half", complete=False)
    (half / R.SB_PARTIAL).write_text("# partial\n")
    done = make_sb_run(root / "sb" / "done", "done")
    (done / R.SB_PARTIAL).write_text("# left over\n")  # a finished run is finished
    make_erf_run(root / "erf" / "plain", "plain")
    found = R.find_interrupted(root)
    assert [(i.kind, i.path.relative_to(root).as_posix(), i.running) for i in found] == [
        ("erf", "erf/cut", False), ("shape-bias", "sb/half", False)]
    with run_lock(root / "erf" / "cut", what="test run"):
        assert R.find_interrupted(root)[0].running
    listing = R.list_runs(root)
    assert [i.path.name for i in listing.interrupted] == ["cut", "half"] and [r.name for r in listing.incomplete] == ["half"]


def test_interrupted_state_linked_from_outside_is_ignored(tmp_path):
    outside = tmp_path / "outside" / R.ERF_CHECKPOINT
    outside.mkdir(parents=True)
    link(tmp_path / "results" / "run" / R.ERF_CHECKPOINT, outside)
    assert R.find_interrupted(tmp_path / "results") == []


# ------------------------------------------------------------------------------------ layers and the baseline
def _layered(tmp_path, **kw):
    from .builders import make_layered_run

    root = tmp_path / "results"
    make_layered_run(root / "rlk", "replknet-31B", **kw)
    return root, R.load_run(root / "rlk", "erf", root=root)


def test_load_layer_matrix_reads_the_layer_file(tmp_path):
    from erftools.results.store import layer_entries, load_layer_matrix

    root, run = _layered(tmp_path)
    assert [e["layer"] for e in layer_entries(run)] == ["stages.0", "stages.1", "stages.2", "stages.3"]
    m, f = load_layer_matrix(run, "stages.1")
    saved = np.load(root / "rlk" / "layers" / "stages.1.npy")
    assert f == 1 and m.shape == saved.shape
    np.testing.assert_array_equal(m, saved.astype(np.float64))  # a load and a float32 -> float64 cast: exact


def test_load_layer_matrix_undoes_the_stored_downsample(tmp_path):
    from erftools.results.store import load_layer_matrix

    root, run = _layered(tmp_path)
    full = np.load(root / "rlk" / "layers" / "stages.2.npy").astype(np.float64)
    np.save(root / "rlk" / "layers" / "stages.2.npy", full.reshape(32, 2, 32, 2).sum(axis=(1, 3)).astype(np.float32))
    run.record.stored_downsample = 2
    m, f = load_layer_matrix(run, "stages.2")
    assert f == 2 and m.shape == (32, 32)
    # the block means of the full matrix; float32 storage of the sums: relative 1e-6 is float32 rounding
    np.testing.assert_allclose(m, full.reshape(32, 2, 32, 2).mean(axis=(1, 3)), rtol=1e-6)


def test_unknown_layer_names_the_layers_there_are(tmp_path):
    from erftools.results.store import load_layer_matrix

    _, run = _layered(tmp_path)
    with pytest.raises(ResultError, match=r"no layer 'stages\.9'.*stages\.0, stages\.1, stages\.2, stages\.3"):
        load_layer_matrix(run, "stages.9")
    _, plain = None, R.load_run(make_erf_run(tmp_path / "r2" / "plain", "plain"), "erf", root=tmp_path / "r2")
    with pytest.raises(ResultError, match="final feature map"):
        load_layer_matrix(plain, "stages.0")


@pytest.mark.parametrize("name", ["../../outside.npy", "/etc/passwd", "layers/../erf.json", "other/stages.0.npy",
                                  "layers/sub/stages.0.npy"])
def test_a_layer_file_name_from_the_record_must_be_a_plain_file_in_layers(tmp_path, name):
    from erftools.results.store import load_layer_matrix

    root, run = _layered(tmp_path)
    run.record.layers[0]["matrix"] = name
    with pytest.raises(ResultError, match="layers/<name>.npy"):
        load_layer_matrix(run, "stages.0")


def test_a_linked_layer_matrix_leading_out_is_refused(tmp_path):
    from erftools.results.store import load_layer_matrix

    root, run = _layered(tmp_path)
    np.save(tmp_path / "outside.npy", erf_matrix(64, 3.0))
    link(root / "rlk" / "layers" / "stages.0.npy", tmp_path / "outside.npy")
    with pytest.raises(ResultError, match="outside"):
        load_layer_matrix(run, "stages.0")


def test_load_baseline(tmp_path):
    from erftools.results.store import is_baseline_run, load_baseline

    root, run = _layered(tmp_path, baseline=True)
    base = load_baseline(run)
    assert base.path == root / "rlk" / "baseline" and base.record.baseline_of == ".."
    assert base.record.label == "replknet-31B (untrained, seed 0)"
    runs = R.find_runs(root)
    assert [is_baseline_run(r, runs) for r in runs] == [False, True]  # sorted by path: rlk, rlk/baseline
    assert not is_baseline_run(base, [base])  # its run is not listed: it stands on its own
    _, plain = None, R.load_run(make_erf_run(tmp_path / "r2" / "plain", "plain"), "erf", root=tmp_path / "r2")
    assert load_baseline(plain) is None


@pytest.mark.parametrize("folder", ["..", "../x", "/tmp", "", 3])
def test_the_baseline_folder_must_be_a_sub_folder_name(tmp_path, folder):
    from erftools.results.store import load_baseline

    _, run = _layered(tmp_path, baseline=True)
    run.record.baseline["folder"] = folder
    with pytest.raises(ResultError, match="sub-folder name"):
        load_baseline(run)


def test_a_missing_baseline_folder_is_named(tmp_path):
    import shutil

    from erftools.results.store import load_baseline

    root, run = _layered(tmp_path, baseline=True)
    shutil.rmtree(root / "rlk" / "baseline")
    with pytest.raises(ResultError, match="baseline run baseline/ is missing"):
        load_baseline(run)
