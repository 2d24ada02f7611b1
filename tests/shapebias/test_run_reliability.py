"""Fault injection on shape-bias runs: NaN outputs, undefined ratios, locks, other runs in the folder, torn rows,
full disks, bad decision files."""
from __future__ import annotations

import csv
import errno
import shutil

import numpy as np
import pytest
import torch

from erftools import results
from erftools._io import ErftoolsError
from erftools._lock import FolderLockedError, run_lock
from erftools.cli import main as cli_main
from erftools.models import create_model
from erftools.shapebias import load_stimuli, run_model
from erftools.shapebias import run as sbrun
from erftools.shapebias.analysis import read_decisions

from .conftest import interrupt_second_batch

MODEL = "resnet18"
SEED = 1  # see test_cli.py: with seed 1 the subset's shape bias is defined


def _model(seed=SEED):
    torch.manual_seed(seed)
    return create_model(MODEL, weights="random")


def _other_model():
    """Another network of the same name and seed: the head's bias moved by 1e-3 (the decisions stay defined)."""
    model = _model()
    with torch.no_grad():
        model.fc.bias += 1e-3
    return model


def _run(out, stimuli, model=None, **kw):
    kw.setdefault("seed", SEED)
    return run_model(MODEL, weights="random", out=out, stimuli=stimuli, batch_size=2, n_boot=20, progress=False,
                     model=model if model is not None else _model(kw["seed"]), **kw)


class _NanOn(torch.nn.Module):
    """The wrapped network, with NaN logits for the images whose batch position and call number are listed."""

    def __init__(self, net, nan_at):
        super().__init__()
        self.net, self.nan_at, self.calls = net, set(nan_at), 0
        self.erftools_info = net.erftools_info
        self.num_classes = 1000

    def forward(self, x):
        y = self.net(x).clone()
        for i in range(len(y)):
            if (self.calls, i) in self.nan_at:
                y[i, 7] = float("nan")
        self.calls += 1
        return y


@pytest.fixture()
def stimuli(subset_dir):
    return load_stimuli(subset_dir, allow_incomplete=True)


# ---- 2. NaN weights ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["conv1", "head_bias"])
def test_nan_weights_fail_with_the_cause_and_no_result(subset_dir, tmp_path, where, capsys):
    model = _model()
    with torch.no_grad():
        if where == "conv1":
            model.conv1.weight.fill_(float("nan"))
        else:
            model.fc.bias[3] = float("nan")
    ckpt = tmp_path / "nan.pth"
    torch.save(model.state_dict(), ckpt)
    out = tmp_path / "run"
    rc = cli_main(["shape-bias", "--model", MODEL, "--weights", str(ckpt), "--stimuli", str(subset_dir),
                   "--allow-incomplete", "--out", str(out), "--no-progress", "--bootstrap", "10"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "6 of 6 stimuli gave non-finite (NaN or infinite) logits" in err and "Check the checkpoint" in err
    assert "shape bias 0.0" not in err
    assert not (out / results.SB_RECORD).exists()


def test_a_few_nan_images_are_skipped_and_counted(stimuli, tmp_path):
    full = _run(tmp_path / "full", stimuli)
    out = tmp_path / "nan"
    rec = _run(out, stimuli, model=_NanOn(_model(), {(1, 0)}), max_nonfinite_fraction=0.5)
    skipped = stimuli.stimuli[2].relpath  # batch size 2: the first image of the second batch
    assert rec["num_nonfinite"] == 1 and rec["nonfinite"][0]["file"] == skipped
    assert "NaN" in rec["nonfinite"][0]["reason"]
    assert rec["num_trials"] == 5 and np.load(out / "probabilities_16class.npy").shape == (5, 16)
    rows = list(csv.DictReader(open(out / "decisions.csv")))
    assert skipped.split("/")[-1] not in {r["imagename"] for r in rows}
    full_rows = [r for r in csv.DictReader(open(tmp_path / "full" / "decisions.csv"))
                 if r["imagename"] != skipped.split("/")[-1]]
    assert [r["object_response"] for r in rows] == [r["object_response"] for r in full_rows]
    assert full["num_nonfinite"] == 0
    # more than the allowed share: the run fails, naming the images
    with pytest.raises(ErftoolsError, match=r"1 of 6 stimuli gave non-finite .*more than the 1%"):
        _run(tmp_path / "strict", stimuli, model=_NanOn(_model(), {(1, 0)}))


def test_undefined_shape_bias_is_an_error_not_nan(reference_dir, tmp_path, capsys):
    src = sorted(reference_dir.glob("style-transfer-512-nomask-experiment/*subject-01*.csv"))[0]
    rows = list(csv.DictReader(open(src)))
    all_na = tmp_path / "all_na.csv"
    with open(all_na, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows([dict(r, object_response="na") for r in rows])
    single = tmp_path / "single.csv"
    nc = next(r for r in rows if r["imagename"].split("_")[-1].split("-")[0].rstrip("0123456789")
              == r["imagename"].split("-")[-1].split(".")[0].rstrip("0123456789"))  # a no-conflict trial
    with open(single, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerow(nc)
    for f in (all_na, single):
        assert cli_main(["shape-bias", "--decisions", str(f), "--out", str(tmp_path / f.stem),
                         "--bootstrap", "10"]) == 1
        err = capsys.readouterr().err
        assert "shape bias is undefined" in err and "nan" not in err.lower().replace("no answer", "")


# ---- 4. one writer per folder, no replacing another run, no mixing --------------------------------------------------
def test_locked_folder_is_refused(stimuli, tmp_path):
    out = tmp_path / "run"
    with run_lock(out):
        with pytest.raises(FolderLockedError, match="being written by process"):
            _run(out, stimuli)


def test_finished_run_of_another_model_is_not_replaced_without_overwrite(stimuli, tmp_path, capsys):
    out = tmp_path / "run"
    first = _run(out, stimuli)
    with pytest.raises(ErftoolsError, match="already holds a finished shape-bias run of resnet18.*overwrite=True"):
        _run(out, stimuli, model=_other_model())
    assert results.read_record(out, "shape-bias")["created"] == first["created"]
    again = _run(out, stimuli)  # the same settings: only re-analysed
    assert again["timing"]["reused_decisions"] is True
    other = _run(out, stimuli, model=_other_model(), overwrite=True)
    assert other["fingerprint"]["parameters_sha256"] != first["fingerprint"]["parameters_sha256"]


def test_partial_decisions_of_another_model_are_refused(stimuli, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(out, stimuli, model=interrupt_second_batch(_model()))
    with pytest.raises(ErftoolsError, match="partial decisions of another run.*parameters_sha256.*overwrite=True"):
        _run(out, stimuli, model=_other_model())
    rec = _run(out, stimuli, model=_other_model(), overwrite=True)
    assert rec["complete"] and rec["timing"]["reused_decisions"] is False


# ---- 7. a torn last row is detected, dropped and recomputed ---------------------------------------------------------
def test_torn_last_row_is_dropped_and_recomputed(stimuli, tmp_path, caplog):
    full = _run(tmp_path / "full", stimuli)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(out, stimuli, model=interrupt_second_batch(_model()))
    part = out / sbrun.PARTIAL
    text = part.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[1]
    cut = last.rsplit(",", 3)[0][:-2]  # inside the last probability: a silently shorter number if accepted
    part.write_text(text[: text.rindex(last)] + cut)
    seen = []
    model = _model()
    fwd = model.forward
    model.forward = lambda x: (seen.append(len(x)), fwd(x))[1]
    with caplog.at_level("WARNING"):
        rec = _run(out, stimuli, model=model)
    assert "1 damaged or cut-off row(s) dropped" in caplog.text
    assert sum(seen) == 5  # the torn row's image and the 4 never decided
    # same network, same images: the same decisions, probabilities equal to fp32 noise
    np.testing.assert_allclose(np.load(out / "probabilities_16class.npy"),
                               np.load(tmp_path / "full" / "probabilities_16class.npy"), rtol=1e-5, atol=1e-7)
    assert rec["shape_bias"] == full["shape_bias"]


# ---- 6. a full disk leaves a verifiable partial file and a one-line error ------------------------------------------
def test_full_disk_while_saving_decisions(stimuli, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_fsync, calls = sbrun.os.fsync, {"n": 0}

    def fsync(fd):  # the disk fills up while the second batch of decisions is saved
        if sbrun.os.readlink(f"/proc/self/fd/{fd}").endswith(sbrun.PARTIAL):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(sbrun.os, "fsync", fsync)
    with pytest.raises(ErftoolsError, match=r"no space left on the device while saving decisions to .*partial.*"
                                            r"intact.*run the same command again"):
        _run(out, stimuli)
    monkeypatch.setattr(sbrun.os, "fsync", real_fsync)
    lines = (out / sbrun.PARTIAL).read_text().splitlines()
    assert len(lines) == 2 + 2  # fingerprint, header, the first batch only: the failed batch was cut back
    fp = sbrun.json.loads((out / sbrun.PARTIAL_META).read_text())
    fp.pop(sbrun.STIMULI_FILES)  # the meta also records each stimulus's file (size, time): not the fingerprint
    assert len(sbrun._read_partial(out, fp, stimuli)) == 2
    rec = _run(out, stimuli)
    assert rec["complete"] and rec["num_trials"] == 6


# ---- 6 and 9. decision files -----------------------------------------------------------------------------------------
def test_decision_file_problems_get_clear_errors(reference_dir, tmp_path, capsys, caplog):
    src = next(reference_dir.glob("style-transfer-512-nomask-experiment/*subject-01*.csv"))
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(src.read_bytes().replace(b"subject-01", b"subj\xe9ct-01", 1))
    with pytest.raises(ErftoolsError, match=r"latin1.csv is not UTF-8 text .*save it as UTF-8"):
        read_decisions(latin)
    with pytest.raises(ErftoolsError, match=r"is a folder, not a decisions file; pass the CSV files inside"):
        read_decisions(tmp_path)
    doubled = tmp_path / "doubled.csv"
    text = src.read_text()
    doubled.write_text(text + text.split("\n", 1)[1])
    with pytest.raises(ErftoolsError, match=r"lines 2 and \d+: subject-01 decides on .* twice"):
        read_decisions(doubled)
    copy = tmp_path / "copy.csv"
    shutil.copy(src, copy)
    with caplog.at_level("WARNING"):
        dms = sbrun.load_decision_makers([src, src, copy])
    assert [len(d.rows) for d in dms] == [1280] and caplog.text.count("counted once") == 2


# ---- issue 11: shape bias on several processes, bf16 with its cost recorded, prepared models -----------------------
def test_torchrun_two_processes_write_what_one_process_writes(subset_dir, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    one = tmp_path / "one"
    two = tmp_path / "two"
    args = ["shape-bias", "--model", MODEL, "--weights", "random", "--seed", str(SEED), "--stimuli",
            str(subset_dir), "--allow-incomplete", "--batch-size", "2", "--no-progress", "--bootstrap", "20"]
    assert cli_main(args + ["--out", str(one)]) == 0
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "erftools.cli", *args, "--out", str(two), "--device", "cpu"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("shape bias") == 1  # rank 0 reports
    a, b = results.read_record(one, "shape-bias"), results.read_record(two, "shape-bias")
    assert b["world_size"] == 2 and b["complete"]
    # the same network on the same images: identical decisions, probabilities equal to fp32 noise
    assert list(csv.DictReader(open(one / "decisions.csv"))) == list(csv.DictReader(open(two / "decisions.csv")))
    np.testing.assert_allclose(np.load(two / "probabilities_16class.npy"), np.load(one / "probabilities_16class.npy"),
                               rtol=1e-5, atol=1e-7)
    assert a["shape_bias"] == b["shape_bias"]
    assert not list(two.glob(".decisions.partial*")) and not (two / ".erftools.lock").exists()


def test_bf16_records_how_many_decisions_change(stimuli, tmp_path):
    rec = _run(tmp_path / "bf16", stimuli, precision="bf16")
    check = rec["precision_check"]
    assert rec["precision"] == "bf16" and check["reference"] == "fp32" and check["compared"] == 6
    assert 0 <= check["changed_decisions"] <= 6 and len(check["changed"]) == check["changed_decisions"]
    # bf16 keeps ~3 significant digits: the 16-class probabilities (each ~1/16) move by far less than 1e-2
    assert 0 < check["max_abs_probability_diff"] < 1e-2
    fp32 = _run(tmp_path / "fp32", stimuli)
    assert fp32["precision"] == "fp32" and fp32["precision_check"] is None
    assert fp32["fingerprint"]["precision"] != rec["fingerprint"]["precision"]


def test_prepared_and_unprepared_models_decide_alike(stimuli, tmp_path):
    a = _run(tmp_path / "prepared", stimuli)
    b = _run(tmp_path / "plain", stimuli, prepare=False)
    assert a["prepared"]["fuse_bn"] is True and b["prepared"] is None
    # BN folding changes the logits by float rounding only (~1e-6 relative)
    np.testing.assert_allclose(np.load(tmp_path / "prepared" / "probabilities_16class.npy"),
                               np.load(tmp_path / "plain" / "probabilities_16class.npy"), rtol=1e-4, atol=1e-6)
