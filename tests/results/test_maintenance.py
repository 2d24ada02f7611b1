"""erftools.results.maintenance: shrinking ERF matrices and portable example folders (the only writer)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from erftools import results as R
from erftools.results.maintenance import finalize, main, portable, shrink_erf_run

from .builders import REPO, erf_matrix, link, make_erf_run, make_linked_results, make_outside, make_sb_run


def test_shrink_erf_run(tmp_path):
    full = erf_matrix(64, 8.0)
    folder = make_erf_run(tmp_path / "run", "replknet-13", size=64, matrix=full)
    before = json.loads((folder / "erf.json").read_text())
    assert shrink_erf_run(folder, side=16) == 4
    after = json.loads((folder / "erf.json").read_text())
    small = np.load(folder / "erf.npy")
    assert small.shape == (16, 16) and small.dtype == np.float32
    assert after == dict(before, stored_downsample=4)  # only the factor changed; full-resolution numbers kept
    # float32 block sums of 4096 values: relative error well under 1e-5
    np.testing.assert_allclose(small.sum(), full.astype(np.float64).sum(), rtol=1e-5)
    m, f = R.load_erf_matrix(R.load_run(folder, "erf"))
    assert f == 4
    np.testing.assert_allclose(m, full.astype(np.float64).reshape(16, 4, 16, 4).mean(axis=(1, 3)), rtol=1e-5)
    assert (folder / "erf.png").stat().st_size > 1000
    assert shrink_erf_run(folder, side=16) == 1  # already small: nothing to do
    assert R.load_record(folder, "erf").stored_downsample == 4


def test_live_square_on_the_coarse_grid_is_within_one_block(tmp_path):
    from erftools.results.views import area_ratio_at

    folder = make_erf_run(tmp_path / "run", "x", size=64, matrix=erf_matrix(64, 8.0))
    exact = next(r["side"] for r in json.loads((folder / "erf.json").read_text())["area_ratios"]
                 if r["threshold"] == 0.5)  # written by the test builder from its own definition
    shrink_erf_run(folder, side=16, figure=False)
    m, f = R.load_erf_matrix(R.load_run(folder, "erf"))
    side, _ = area_ratio_at(m, 0.5, f, (64, 64))
    assert abs(side - exact) <= 2 * f


def test_shrink_refuses_a_matrix_linked_outside(tmp_path):
    outside = make_erf_run(tmp_path / "outside", "secret", size=64)
    before = (outside / "erf.npy").read_bytes()
    run = make_erf_run(tmp_path / "run", "run", size=64)
    link(run / "erf.npy", outside / "erf.npy")
    with pytest.raises(R.ResultError, match="outside"):
        shrink_erf_run(run, side=16)
    assert (run / "erf.npy").is_symlink() and (outside / "erf.npy").read_bytes() == before


def test_portable_paths():
    assert portable(str(REPO / "data" / "images" / "a.jpg"), REPO) == "data/images/a.jpg"
    assert portable("/elsewhere/x/reference-decisions/style/a.csv", REPO) == "reference-decisions/style/a.csv"
    assert portable("/elsewhere/x/file.csv", REPO) == "file.csv"
    assert portable("relative/stays", REPO) == "relative/stays"


def test_finalize_makes_a_folder_fit_to_commit(tmp_path, capsys):
    root = tmp_path / "examples"
    make_erf_run(root / "erf" / "net", "net", size=64)
    sb = make_sb_run(root / "sb", "vgg16", plots=["own.png"], stimuli_dir=str(tmp_path / "cue-conflict"),
                     command=f"erftools shape-bias --out {tmp_path}/x")
    (sb / "own.png").write_bytes(b"plot")
    (root / "combined.json").write_text(json.dumps({"kind": R.COMBINED_KIND, "plots": ["c.png"]}))
    (root / "c.png").write_bytes(b"plot")
    assert main([str(root), "--side", "16"]) == 0
    out = capsys.readouterr().out
    assert "net: erf.npy block-summed by 4" in out and "combined plots removed" in out
    assert np.load(root / "erf" / "net" / "erf.npy").shape == (16, 16)
    rec = R.load_record(sb, "shape-bias")
    assert rec.plots == [] and "removed" in rec.plots_removed and not (sb / "own.png").exists()
    assert rec.stimuli["dir"] == "cue-conflict" and rec.extra["command"] == "erftools shape-bias --out x"
    assert not (root / "c.png").exists()
    assert str(tmp_path) not in "".join(p.read_text() for p in root.rglob("*.json"))


def test_finalize_deletes_only_plots_inside_the_run(tmp_path):
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"keep me")
    root = tmp_path / "examples"
    make_sb_run(root / "sb", "vgg16", plots=["../../victim.png", str(victim), "own.png"])
    (root / "sb" / "own.png").write_bytes(b"plot")
    finalize(root)
    assert victim.read_bytes() == b"keep me"
    assert not (root / "sb" / "own.png").exists()


def test_finalize_does_not_copy_outside_files_in(tmp_path):
    outside = make_outside(tmp_path / "outside")
    root = tmp_path / "examples"
    make_linked_results(root, outside)
    before = (outside / "erf-run" / "erf.npy").read_bytes()
    finalize(root, side=16)
    assert (outside / "erf-run" / "erf.npy").read_bytes() == before  # the outside file is untouched
    npy = root / "erf" / "npy-link" / "erf.npy"
    assert npy.is_symlink()  # not replaced by a copy of the outside matrix


def test_shrink_a_layered_run_shrinks_every_layer_by_the_same_factor(tmp_path):
    from erftools.results.store import load_layer_matrix

    from .builders import LAYERS, make_layered_run

    root = tmp_path / "results"
    folder = make_layered_run(root / "rlk", "replknet-31B", baseline=True)
    fulls = {name: np.load(folder / "layers" / f"{name}.npy").astype(np.float64) for name, _, _ in LAYERS}
    for name, _, _ in LAYERS:  # the engine writes a figure beside each layer matrix
        (folder / "layers" / f"{name}.png").write_bytes(b"old")
    record = json.loads((folder / "erf.json").read_text())
    for e in record["layers"]:
        e["figure"] = e["matrix"][:-4] + ".png"
    (folder / "erf.json").write_text(json.dumps(record))
    done = finalize(root, side=16, drop_run_plots=False)
    assert any("rlk: erf.npy block-summed by 4" in line for line in done)
    run = R.load_run(folder, "erf", root=root)
    assert run.record.stored_downsample == 4 and run.record.layers == record["layers"]  # numbers kept
    for name, full in fulls.items():
        m, f = load_layer_matrix(run, name)
        assert f == 4 and m.shape == (16, 16)
        # float32 storage of block sums: relative 1e-5 covers its rounding
        np.testing.assert_allclose(m, full.reshape(16, 4, 16, 4).mean(axis=(1, 3)), rtol=1e-5)
        assert (folder / "layers" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"  # redrawn
    base = R.load_run(folder / "baseline", "erf", root=root)  # the baseline is a run folder of its own: shrunk too
    assert base.record.stored_downsample == 4 and load_layer_matrix(base, "stages.0")[0].shape == (16, 16)


def test_shrink_refuses_layer_matrices_of_another_shape(tmp_path):
    from .builders import make_layered_run

    folder = make_layered_run(tmp_path / "rlk", "replknet-31B")
    np.save(folder / "layers" / "stages.0.npy", erf_matrix(32, 3.0))
    with pytest.raises(R.ResultError, match="differ in shape"):
        shrink_erf_run(folder, side=16)
    assert R.load_record(folder, "erf").stored_downsample == 1 and np.load(folder / "erf.npy").shape == (64, 64)


def test_finalize_drops_the_layer_and_growth_figures(tmp_path):
    from .builders import make_layered_run

    root = tmp_path / "results"
    folder = make_layered_run(root / "rlk", "replknet-31B", growth_figure="erf_growth.png")
    record = json.loads((folder / "erf.json").read_text())
    for e in record["layers"]:
        e["figure"] = e["matrix"][:-4] + ".png"
        (folder / e["figure"]).write_bytes(b"png")
    record["layers"][0]["figure"] = "../../keep.png"  # a name leading elsewhere is never deleted
    (tmp_path / "keep.png").write_bytes(b"png")
    (folder / "erf_growth.png").write_bytes(b"png")
    (folder / "erf.json").write_text(json.dumps(record))
    done = finalize(root, side=64)
    assert "rlk: layer figures removed" in done
    assert [p.name for p in (folder / "layers").glob("*.png")] == ["stages.0.png"]  # the one named elsewhere stays
    assert not (folder / "erf_growth.png").exists()
    assert (tmp_path / "keep.png").exists()
    after = R.load_record(folder, "erf")
    assert after.growth_figure is None and [e["figure"] for e in after.layers][1:] == [None] * 3
    assert "rlk: layer figures removed" not in finalize(root, side=64)  # nothing left to remove
