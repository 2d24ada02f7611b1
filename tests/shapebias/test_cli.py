"""End to end: `erftools shape-bias` on a few stimuli with a small random network, resume, decisions files."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from erftools import results
from erftools._io import ErftoolsError
from erftools.cli import main as cli_main
from erftools.shapebias import CSV_COLUMNS, load_stimuli, read_decisions, run_model, shape_bias
from erftools.shapebias.reference import REFERENCE_FILES

from .conftest import interrupt_second_batch

MODEL = "resnet18"  # a small timm model keeps the CPU test fast; resnet152 works the same way
# Random networks decide almost every image for one category. With seed 1, resnet18 decides cat1-airplane1.png
# for its texture (airplane, 1.3% ahead of the runner-up: far beyond fp32 noise), so the shape bias of the subset
# is defined (0.0); with seed 0 no image is decided for either cue and the shape bias is undefined (an error).
SEED = 1


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_model_run_writes_a_complete_folder(subset_dir, tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli_main(["shape-bias", "--model", MODEL, "--weights", "random", "--stimuli", str(subset_dir),
                   "--allow-incomplete", "--batch-size", "4", "--out", str(out), "--no-progress", "--seed", str(SEED),
                   "--bootstrap", "200", "--reference", "humans", "paper:resnet152-in1k"])
    assert rc == 0
    assert "shape bias" in capsys.readouterr().out
    rec = results.read_record(out, "shape-bias")
    assert rec["complete"] is True and rec["schema"] == 1 and rec["kind"] == "shape-bias"
    assert rec["label"] == MODEL and rec["model"]["name"] == MODEL and rec["weights"]["source"] == "random"
    assert rec["preprocessing"]["resize"] is None and rec["preprocessing"]["crop"] is None
    assert rec["preprocessing"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert rec["stimuli"]["n_images"] == 6 and rec["stimuli"]["complete"] is False
    assert rec["stimuli"]["n_missing"] == 1274 and len(rec["stimuli"]["sha256"]) == 64
    assert rec["num_trials"] == 6 and rec["n_no_conflict_trials"] == 2
    assert set(rec["per_category"]) == {"cat", "dog"}
    for v in rec["per_category"].values():
        assert {"shape_bias", "fraction_shape", "fraction_texture", "n"} <= set(v)
    assert len(rec["ci95"]) == 2 and "torch" in rec["versions"]
    assert rec["plots"] == ["shape_bias.png", "shape_bias_bars.png"]
    for p in rec["plots"]:
        assert (out / p).stat().st_size > 10_000
    rows = _csv(out / results.SB_DECISIONS)
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [r["trial"] for r in rows] == [str(i) for i in range(1, 7)]
    names = {s.name for s in load_stimuli(subset_dir, allow_incomplete=True).stimuli}
    assert {r["imagename"] for r in rows} == names
    probs = np.load(out / "probabilities_16class.npy")
    assert probs.shape == (6, 16)
    assert [r["object_response"] for r in rows] == [rec["categories"][i] for i in probs.argmax(1)]
    # the decisions file analysed on its own gives the same numbers
    again = shape_bias(read_decisions(out / results.SB_DECISIONS))
    assert again["fraction-correct-shape"] == rec["fraction_correct_shape"]
    assert not (out / ".decisions.partial.csv").exists()


def test_interrupted_run_resumes(subset_dir, tmp_path):
    from erftools.models import create_model

    stimuli = load_stimuli(subset_dir, allow_incomplete=True)
    full = run_model(MODEL, weights="random", out=tmp_path / "full", stimuli=stimuli, batch_size=2, n_boot=50,
                     progress=False, seed=SEED)

    out = tmp_path / "resumed"
    import torch

    torch.manual_seed(SEED)
    model = create_model(MODEL, weights="random")
    interrupt_second_batch(model)
    with pytest.raises(KeyboardInterrupt):
        run_model(MODEL, weights="random", out=out, stimuli=stimuli, batch_size=2, n_boot=50, progress=False,
                  model=model, seed=SEED)
    assert not (out / results.SB_RECORD).exists()
    # fingerprint line + header + one batch
    assert len((out / ".decisions.partial.csv").read_text().splitlines()) == 2 + 2

    torch.manual_seed(SEED)
    model = create_model(MODEL, weights="random")
    seen = []
    forward2 = model.forward
    model.forward = lambda x: (seen.append(len(x)), forward2(x))[1]
    rec = run_model(MODEL, weights="random", out=out, stimuli=stimuli, batch_size=2, n_boot=50, progress=False,
                    model=model, seed=SEED)
    assert sum(seen) == 4  # only the images not decided before the interruption
    assert rec["complete"] and rec["timing"]["reused_decisions"] is False
    assert _csv(out / "decisions.csv") == _csv(tmp_path / "full" / "decisions.csv")
    np.testing.assert_allclose(np.load(out / "probabilities_16class.npy"),
                               np.load(tmp_path / "full" / "probabilities_16class.npy"), rtol=1e-5, atol=1e-6)
    # a finished folder is only re-analysed
    rec2 = run_model(MODEL, weights="random", out=out, stimuli=stimuli, batch_size=2, n_boot=50, progress=False,
                     seed=SEED)
    assert rec2["timing"]["reused_decisions"] is True
    assert rec2["shape_bias"] == full["shape_bias"]  # a ratio of the same integer counts: exact


def test_non_imagenet_model_is_refused(subset_dir, tmp_path):
    from erftools.models import create_model

    model = create_model(MODEL, weights="random", num_classes=10)
    stimuli = load_stimuli(subset_dir, allow_incomplete=True)
    with pytest.raises(ErftoolsError, match="1000 classes"):
        run_model(MODEL, out=tmp_path / "x", stimuli=stimuli, model=model, progress=False)


def test_decisions_of_humans_and_networks(reference_dir, tmp_path, capsys):
    humans = sorted(reference_dir.glob("style-transfer-512-nomask-experiment/*subject-*.csv"))
    resnet = next(reference_dir / r for r in REFERENCE_FILES if r.endswith("resnet152_session-1.csv"))
    out = tmp_path / "refs"
    rc = cli_main(["shape-bias", "--decisions", *map(str, humans), str(resnet), "--out", str(out),
                   "--bootstrap", "200"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "humans: shape bias 0.9587" in text and "ResNet-152 (torchvision): shape bias 0.2562" in text
    index = json.loads((out / "combined.json").read_text())
    assert [r["label"] for r in index["runs"]] == ["humans", "ResNet-152 (torchvision)"]
    assert (out / "shape_bias.png").is_file() and (out / "shape_bias_bars.png").is_file()
    runs = results.find_runs(out, "shape-bias")
    assert len(runs) == 2 and all(r.complete for r in runs)
    h = results.read_record(out / "humans", "shape-bias")
    assert h["source"] == "decisions" and h["model"]["name"] == "humans" and len(h["subjects"]) == 10
    assert h["num_trials"] == 12800 and h["decisions_files"][0]["sha256"]
    assert h["shape_bias_mean_of_subjects"] == pytest.approx(0.95759, abs=1e-5)
    assert len(_csv(out / "humans" / "decisions.csv")) == 12800


def test_usage_errors(tmp_path, capsys):
    assert cli_main(["shape-bias"]) == 1
    assert "nothing to measure" in capsys.readouterr().err
    assert cli_main(["shape-bias", "--decisions", str(tmp_path / "none.csv")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["shape-bias", "--model", MODEL, "--weights", "random", "--reference", "nobody"]) == 1
    assert "unknown reference" in capsys.readouterr().err
    assert cli_main(["shape-bias", "--list-references"]) == 0
    assert "paper:replknet-31b-in1k" in capsys.readouterr().out


def test_replknet_conv_backend_option_gives_the_same_decisions(subset_dir, tmp_path):
    """`--conv-backend` reaches RepLKNet's large-kernel convolutions, and every backend decides alike."""
    probs = {}
    for backend in ("native", "fft"):
        out = tmp_path / backend
        assert cli_main(["shape-bias", "--model", "replknet-31B", "--weights", "random", "--stimuli",
                         str(subset_dir), "--allow-incomplete", "--batch-size", "6", "--out", str(out),
                         "--no-progress", "--bootstrap", "10", "--conv-backend", backend,
                         "--seed", "4"]) == 0  # seed 4: every image decided 'cat', so the shape bias is defined
        probs[backend] = np.load(out / "probabilities_16class.npy")
        assert results.read_record(out, "shape-bias")["conv_backend"] == [backend]
        rows = _csv(out / "decisions.csv")
        probs[backend + "_decisions"] = [r["object_response"] for r in rows]
    np.testing.assert_allclose(probs["fft"], probs["native"], rtol=1e-4, atol=1e-7)
    assert probs["fft_decisions"] == probs["native_decisions"]
