"""Input-size sweeps (``erftools erf --size A,B,C``) and the variant options in run folders."""
import json

import numpy as np
import pytest

from erftools import ErftoolsError
from erftools.cli import main
from erftools.erf.run import run_erf
from erftools.erf.sweep import SWEEP_FIGURE, SWEEP_RECORD, parse_sizes
from erftools.images import select_images
from erftools.results import ERF_MATRIX, find_runs, read_record

from ._erf_helpers import tiny_resnet

TINY = ["--weights", "random", "--num-images", "2", "--no-progress"]


def test_parse_sizes():
    assert parse_sizes("224, 512,1024") == [224, 512, 1024] and parse_sizes(96) == [96]
    for bad, what in (("224,abc", "not a whole number"), ("16", "at least 32"), ("64,64", "twice"), ("", "empty")):
        with pytest.raises(ErftoolsError, match=what):
            parse_sizes(bad)


def test_sweep_folders_record_resume_and_compare(tmp_path, capsys, monkeypatch):
    import erftools.erf.run as run_mod

    out = tmp_path / "r18"
    cmd = ["erf", "--model", "resnet18", *TINY, "--size", "64,96,128", "--out", str(out), "--reduce", "abs"]
    real_save = run_mod.checkpoint.save_state
    calls = {"n": 0}

    def stop_in_second_size(path, acc, gen):
        real_save(path, acc, gen)
        if path.name.startswith("rank") and "size-96" in str(path):
            calls["n"] += 1
            if calls["n"] == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(run_mod.checkpoint, "save_state", stop_in_second_size)
    assert main(cmd) == 130  # interrupted in the second size: the first is finished, the second checkpointed
    assert "continue with the same command" in capsys.readouterr().err
    first = read_record(out / "size-64", "erf")
    assert not json.loads((out / SWEEP_RECORD).read_text())["complete"]
    monkeypatch.setattr(run_mod.checkpoint, "save_state", real_save)
    assert main(cmd) == 0  # the same command continues
    capsys.readouterr()
    sweep = json.loads((out / SWEEP_RECORD).read_text())
    assert sweep["complete"] and sweep["sizes"] == [64, 96, 128] and sweep["reduction"] == "abs"
    assert [e["folder"] for e in sweep["runs"]] == ["size-64", "size-96", "size-128"]
    assert (out / SWEEP_FIGURE).stat().st_size > 1000
    assert read_record(out / "size-64", "erf")["created"] == first["created"]  # not computed again
    second = read_record(out / "size-96", "erf")
    assert second["resumed"] and second["num_images"] == 2
    for size in (64, 96, 128):
        rec = read_record(out / f"size-{size}", "erf")
        assert rec["size"] == [size, size] and np.load(out / f"size-{size}" / ERF_MATRIX).shape == (size, size)
        assert rec["sweep"] == {"size": size, "sizes": [64, 96, 128], "label": "resnet18 (abs reduction)"}
        assert rec["label"] == f"resnet18 (abs reduction), {size} px" and rec["reduction"] == "abs"
        assert (rec["statistics"]["theoretical_rf"] or {}).get("side") is not None  # drawn in each size's map
    assert len(find_runs(out, "erf")) == 3  # each size is an ordinary run for the store (dashboard, report)

    assert main(["erf", "--model", "resnet18", *TINY, "--size", "64,96", "--out", str(out)]) == 1
    assert "sweep over the sizes [64, 96, 128]" in capsys.readouterr().err  # another sweep: refused, named

    other = tmp_path / "r18b"
    assert main(["erf", "--model", "resnet18", *TINY, "--seed", "1", "--label", "seed 1", "--size", "64,96,128",
                 "--out", str(other)]) == 0
    capsys.readouterr()
    cmp_dir = tmp_path / "cmp"
    assert main(["compare", str(out), str(other), "--out", str(cmp_dir)]) == 0
    printed = capsys.readouterr().out
    assert "resnet18 (abs reduction), 128 px" in printed and "seed 1, 64 px" in printed
    assert (cmp_dir / "erf_compare_sizes.png").stat().st_size > 1000
    assert len(json.loads((cmp_dir / "erf_compare.json").read_text())["runs"]) == 6


def test_sweep_refuses_baseline(tmp_path, capsys):
    assert main(["erf", "--model", "resnet18", *TINY, "--size", "64,96", "--baseline", "random",
                 "--out", str(tmp_path / "x")]) == 1
    assert "--baseline is not available with several sizes" in capsys.readouterr().err


def test_variant_recorded_fingerprinted_and_older_records_count_as_paper(tmp_path):
    images = select_images(None, 2, "random", seed=0, size=64)
    out = tmp_path / "run"
    rec = run_erf(tiny_resnet(), images, out, device="cpu", progress=False, objective="unit", reduction="l2")
    assert rec["objective"] == "unit" and rec["reduction"] == "l2"
    assert rec["fingerprint"]["objective"] == "unit" and rec["fingerprint"]["reduction"] == "l2"
    assert rec["label"] == "resnet18 (unit objective, l2 reduction)"
    with pytest.raises(ErftoolsError, match="other settings.*objective: 'unit' -> 'paper'"):
        run_erf(tiny_resnet(), images, out, device="cpu", progress=False, reduction="l2")

    paper = tmp_path / "paper"
    rec = run_erf(tiny_resnet(), images, paper, device="cpu", progress=False)
    assert rec["objective"] == "paper" and rec["label"] == "resnet18"
    older = json.loads((paper / "erf.json").read_text())  # as written before the options existed
    for key in ("objective", "reduction"):
        del older["fingerprint"][key], older[key]
    (paper / "erf.json").write_text(json.dumps(older))
    again = run_erf(tiny_resnet(), images, paper, device="cpu", progress=False)  # the same settings: nothing to do
    assert again["created"] == older["created"]
    with pytest.raises(ErftoolsError, match="reduction: 'relu' -> 'abs'"):
        run_erf(tiny_resnet(), images, paper, device="cpu", progress=False, reduction="abs")


def test_size_series_of_the_results_store(tmp_path, capsys):
    """The report's and the dashboard's series: grouped by sweep folder, sizes ascending, from the ``sweep`` key,
    or from ``size-<N>`` folders alone (study runs under torchrun); the theoretical field's share of the image."""
    from erftools.erf.plots import theoretical_area_ratio
    from erftools.results.views import size_series

    out = tmp_path / "sweep"
    assert main(["erf", "--model", "resnet18", *TINY, "--num-images", "1", "--size", "96,64", "--out", str(out),
                 "--objective", "unit"]) == 0
    capsys.readouterr()
    assert main(["analyze", str(out)]) == 0  # a sweep folder: every size, with the variant in the label
    printed = capsys.readouterr().out
    assert printed.index("== size 64 px") < printed.index("== size 96 px")
    assert "resnet18 (unit objective), 96 px" in printed
    series = size_series(find_runs(tmp_path, "erf"))
    assert list(series) == ["resnet18 (unit objective)"]
    points = series["resnet18 (unit objective)"]
    assert [p["size"] for p in points] == [64, 96]
    assert points[0]["area_ratios"] == read_record(out / "size-64", "erf")["area_ratios"]
    side = points[0]["theoretical_rf"]["side"][0]
    assert side > 96 and theoretical_area_ratio(points[0]["theoretical_rf"], 64) == 1.0  # clipped to the image
    assert theoretical_area_ratio({"side": [33, 33]}, 66) == 0.25 and theoretical_area_ratio({"side": None}, 64) is None

    for size in (64, 96):  # as a study under torchrun writes them: no sweep key, the label ends in the size
        rec_path = out / f"size-{size}" / "erf.json"
        rec = json.loads(rec_path.read_text())
        del rec["sweep"]
        rec_path.write_text(json.dumps(rec))
    series = size_series(find_runs(tmp_path, "erf"))
    assert list(series) == ["resnet18 (unit objective)"] and len(series["resnet18 (unit objective)"]) == 2


def test_two_models_three_sizes_are_one_command_and_one_figure(tmp_path, capsys):
    out = tmp_path / "two"
    assert main(["erf", "--model", "resnet18,convnext_atto", *TINY, "--num-images", "1", "--size", "64,96,128",
                 "--out", str(out)]) == 0
    assert "2 models at 3 sizes: one figure" in capsys.readouterr().out
    assert (out / SWEEP_FIGURE).stat().st_size > 1000
    for model in ("resnet18", "convnext_atto"):
        sweep = json.loads((out / model / SWEEP_RECORD).read_text())
        assert sweep["complete"] and sweep["sizes"] == [64, 96, 128] and sweep["label"] == model
    assert len(find_runs(out, "erf")) == 6
    for bad, what in ((["--size", "64"], "give several sizes"), (["--size", "64,96", "--label", "x"], "--label"),
                      (["--size", "64,96", "--weights", "w.pth"], "a weights file fits one model")):
        argv = ["erf", "--model", "resnet18,convnext_atto", *TINY, "--out", str(tmp_path / "bad"), *bad]
        assert main(argv) == 1
        assert what in capsys.readouterr().err
