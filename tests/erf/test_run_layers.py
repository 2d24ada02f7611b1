"""Layer-wise ERF runs: one folder with a matrix per layer, statistics in the record, resumable, the untrained
baseline beside the trained network."""
import json

import numpy as np
import pytest

from erftools import ErftoolsError
from erftools.cli import main
from erftools.erf import compute_erfs
from erftools.erf.run import CHECKPOINT_DIR, GROWTH_FIGURE, run_erf
from erftools.images import select_images
from erftools.results import ERF_MATRIX, read_record

from ._erf_helpers import fixture_model

SIZE = 64
STAGES = ["stages.0", "stages.1", "stages.2", "stages.3"]


class Stop(KeyboardInterrupt):
    pass


def _images(n=3):
    return select_images(None, n, "sequential", 0, size=SIZE)


def test_layer_run_writes_one_matrix_per_layer_equal_to_compute_erfs(golden_dir, tmp_path):
    out = tmp_path / "run"
    rec = run_erf(fixture_model(golden_dir), _images(), out, device="cpu", progress=False, layers="stages")
    assert [e["layer"] for e in rec["layers"]] == STAGES
    direct = compute_erfs(fixture_model(golden_dir), _images(), STAGES, device="cpu")
    for e in rec["layers"]:
        m = np.load(out / e["matrix"])
        # the same maps summed in the same order (float64 sums of float32 maps): equal to fp32 noise
        np.testing.assert_allclose(m, direct[e["layer"]].matrix, rtol=1e-6, atol=1e-9 * float(m.max()))
        assert e["statistics"]["schema"] == 1 and e["statistics"]["gaussian"] is not None
        assert e["statistics"]["theoretical_rf"]["side"] is not None
        assert (out / e["figure"]).is_file()
    # the deepest layer is also the run's erf.npy, so single-matrix tools keep working
    np.testing.assert_array_equal(np.load(out / ERF_MATRIX), np.load(out / rec["layers"][-1]["matrix"]))  # a copy
    assert rec["target"]["layer"] == "stages.3" and (out / GROWTH_FIGURE).is_file()
    report = rec["conv_backends_report"][0]  # what the large-kernel convolutions actually ran
    assert report["format"] == "erftools-backend-report/1"
    # the fixture's large kernels ran natively (input-gradient-only path, channels-last on CPU), and are listed
    from erftools.ops import DepthwiseConv2d

    large = {m.kernel_size[0] for n, m in fixture_model(golden_dir).named_modules()
             if isinstance(m, DepthwiseConv2d) and "lkb_origin" in n}
    assert large and large <= {r["kernel_size"] for r in report["runs"] if r["backend"] == "native"}
    # the ERF grows with depth: the 50% square of each stage is at least as large as the previous one's
    sides = [[r["side"] for r in e["area_ratios"] if r["threshold"] == 0.5][0] for e in rec["layers"]]
    assert sides == sorted(sides) and sides[-1] > sides[0]
    rfs = [e["statistics"]["theoretical_rf"]["side"][0] for e in rec["layers"]]
    assert rfs == sorted(rfs) and len(set(rfs)) == 4


def test_layer_run_resumes_and_refuses_other_layers(golden_dir, tmp_path):
    out = tmp_path / "run"
    full = run_erf(fixture_model(golden_dir), _images(), tmp_path / "full", device="cpu", progress=False,
                   layers=["stages.1", "stages.3"])

    def stop(acc):
        raise Stop()

    with pytest.raises(KeyboardInterrupt):
        run_erf(fixture_model(golden_dir), _images(), out, device="cpu", progress=False, layers=["stages.1", "stages.3"],
                on_batch=stop)
    assert (out / CHECKPOINT_DIR).is_dir()
    with pytest.raises(ErftoolsError, match="refusing to resume.*layer"):
        run_erf(fixture_model(golden_dir), _images(), out, device="cpu", progress=False, layers=["stages.2"])
    rec = run_erf(fixture_model(golden_dir), _images(), out, device="cpu", progress=False,
                  layers=["stages.1", "stages.3"])
    assert rec["resumed"] and rec["num_images"] == 3
    for a, b in zip(rec["layers"], full["layers"]):
        np.testing.assert_allclose(np.load(out / a["matrix"]), np.load(tmp_path / "full" / b["matrix"]), rtol=1e-6)
        assert a["area_ratios"] == b["area_ratios"]


def test_unknown_layer_is_a_clear_error(golden_dir, tmp_path):
    with pytest.raises(ErftoolsError, match="stages.9"):
        run_erf(fixture_model(golden_dir), _images(1), tmp_path / "x", device="cpu", progress=False, layers=["stages.9"])


def test_cli_layers_and_untrained_baseline(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["erf", "--model", "resnet18", "--weights", "random", "--size", "64", "--num-images", "2",
            "--no-progress", "--layers", "layer2,layer4", "--baseline", "random", "--seed", "3", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "resnet18 layer2" in text and "untrained layer4" in text and "statistics:" in text
    assert f"browse it: erftools dashboard --results {out}" in text
    rec = read_record(out, "erf")
    base = read_record(out / "baseline", "erf")
    assert rec["baseline"]["folder"] == "baseline" and base["baseline_of"] == ".."
    assert [e["layer"] for e in rec["baseline"]["layers"]] == ["layer2", "layer4"]
    assert base["model"]["weights"] == "random" and base["fingerprint"]["seed"] == 3
    assert json.loads((out / "erf.json").read_text())["complete"] is True
    # the same command again: both runs are finished, nothing is recomputed
    assert main(args) == 0
    assert read_record(out / "baseline", "erf")["created"] == base["created"]


def test_analyze_and_compare_layers(tmp_path, capsys):
    runs = []
    for seed in (0, 1):
        out = tmp_path / f"r{seed}"
        assert main(["erf", "--model", "resnet18", "--weights", "random", "--size", "64", "--num-images", "2",
                     "--no-progress", "--layers", "stages", "--seed", str(seed), "--out", str(out)]) == 0
        runs.append(out)
    capsys.readouterr()
    assert main(["analyze", str(runs[0])]) == 0
    text = capsys.readouterr().out
    assert text.count("== layer") == 4 and "2-D Gaussian fit" in text and "theoretical receptive field" in text
    assert main(["analyze", str(runs[0]), "--layer", "layer2"]) == 0
    assert "layer2" in capsys.readouterr().out
    assert main(["analyze", str(runs[0]), "--layer", "layer9"]) == 1
    assert "has no ERF of the layer 'layer9'" in capsys.readouterr().err
    cmp_dir = tmp_path / "cmp"
    assert main(["compare", *map(str, runs), "--layer", "layer3", "--labels", "a", "b", "--out", str(cmp_dir),
                 "--thresholds", "0.2", "0.4"]) == 0
    assert (cmp_dir / "erf_compare_growth.png").stat().st_size > 5000
    saved = json.loads((cmp_dir / "erf_compare.json").read_text())
    assert [r["label"] for r in saved["runs"]] == ["a", "b"]
