import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from erftools import ErftoolsError
from erftools.erf.run import CHECKPOINT_DIR, run_erf
from erftools.images import select_images
from erftools.results import ERF_FIGURE, ERF_MATRIX, ERF_RECORD, find_runs, read_record

from ._erf_helpers import fixture_model

REPO = Path(__file__).resolve().parents[2]
SIZE = 64


def _images(n=4, size=SIZE):
    return select_images(None, n, "random", seed=0, size=size)


class Stop(KeyboardInterrupt):
    pass


def _interrupt_after(n):
    calls = {"n": 0}

    def cb(acc):
        calls["n"] += 1
        if calls["n"] == n:
            raise Stop()

    return cb


def test_run_folder_schema(golden_dir, tmp_path):
    out = tmp_path / "run"
    rec = run_erf(fixture_model(golden_dir), _images(3), out, device="cpu", progress=False, label="tiny")
    assert rec["complete"] is True and rec["kind"] == "erf" and rec["schema"] == 1
    on_disk = read_record(out, "erf")
    assert on_disk == json.loads(json.dumps(rec))
    m = np.load(out / ERF_MATRIX)
    assert m.dtype == np.float32 and m.shape == (SIZE, SIZE)
    assert (out / ERF_FIGURE).stat().st_size > 1000
    assert not (out / CHECKPOINT_DIR).exists()
    for key in ("label", "model", "images", "size", "num_images", "num_skipped", "area_ratios", "radial_profile",
                "stored_downsample", "prepared", "timings", "device", "versions", "created"):
        assert key in rec, key
    assert rec["size"] == [SIZE, SIZE] and rec["num_images"] == 3 and rec["stored_downsample"] == 1
    assert rec["images"]["source"] == "bundled" and len(rec["images"]["files"]) == 3
    assert set(rec["images"]) >= {"source", "files", "sha256", "sampler", "seed", "num_requested"}
    assert [r["threshold"] for r in rec["area_ratios"]] == [0.2, 0.3, 0.5, 0.99]
    assert all(set(r) == {"threshold", "side", "area_ratio"} for r in rec["area_ratios"])
    assert len(rec["radial_profile"]["radius"]) <= 256
    assert rec["prepared"]["fuse_bn"] is True
    assert "weights" in rec["model"] and "weights_sha256" in rec["model"]
    assert [r.path for r in find_runs(tmp_path, "erf")] == [out]


def test_resume_equals_uninterrupted(golden_dir, tmp_path):
    images = _images(4)
    full = run_erf(fixture_model(golden_dir), images, tmp_path / "full", device="cpu", progress=False)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        run_erf(fixture_model(golden_dir), _images(4), out, device="cpu", progress=False, on_batch=_interrupt_after(2))
    assert (out / CHECKPOINT_DIR).is_dir() and not (out / ERF_RECORD).exists()
    # a second interruption, after one more batch, then the rest
    with pytest.raises(KeyboardInterrupt):
        run_erf(fixture_model(golden_dir), _images(4), out, device="cpu", progress=False, resume=True,
                on_batch=_interrupt_after(1))
    seen = []
    rec = run_erf(fixture_model(golden_dir), _images(4), out, device="cpu", progress=False, resume=True,
                  on_batch=lambda acc: seen.append(len(acc.processed)))
    assert seen == [1]  # only the last image was left
    assert rec["resumed"] is True and rec["num_images"] == 4
    assert rec["processed"] == full["processed"]
    np.testing.assert_allclose(np.load(out / ERF_MATRIX), np.load(tmp_path / "full" / ERF_MATRIX), rtol=1e-6,
                               atol=0)
    assert rec["area_ratios"] == full["area_ratios"]
    assert not (out / CHECKPOINT_DIR).exists()


def test_resume_refuses_other_settings_and_guards_finished_runs(golden_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_erf(fixture_model(golden_dir), _images(3), out, device="cpu", progress=False, on_batch=_interrupt_after(1))
    with pytest.raises(ErftoolsError, match="refusing to resume.*size"):
        run_erf(fixture_model(golden_dir), _images(3, size=96), out, device="cpu", progress=False)
    with pytest.raises(ErftoolsError, match="num_images: 3 -> 2"):
        run_erf(fixture_model(golden_dir), _images(2), out, device="cpu", progress=False, resume=True)
    with pytest.raises(ErftoolsError, match="contradict"):
        run_erf(fixture_model(golden_dir), _images(3), out, device="cpu", progress=False, resume=True, overwrite=True)
    rec = run_erf(fixture_model(golden_dir), _images(3), out, device="cpu", progress=False)  # continues
    assert rec["complete"] and rec["resumed"]
    with pytest.raises(ErftoolsError, match="already holds a finished ERF run with other settings.*overwrite=True"):
        run_erf(fixture_model(golden_dir), _images(2), out, device="cpu", progress=False)
    again = run_erf(fixture_model(golden_dir), _images(3), out, device="cpu", progress=False, resume=True)
    assert again["created"] == rec["created"]  # nothing to do
    other = run_erf(fixture_model(golden_dir), _images(2), out, device="cpu", progress=False, overwrite=True)
    assert other["num_images"] == 2 and read_record(out, "erf")["num_images"] == 2
    with pytest.raises(ErftoolsError, match="nothing to resume"):
        run_erf(fixture_model(golden_dir), _images(2), tmp_path / "new", device="cpu", progress=False, resume=True)


def test_unreadable_images_are_skipped_with_reasons(golden_dir, tmp_path):
    from ._erf_helpers import CONVERTED, SKIPPED, write_problem_images

    folder = write_problem_images(tmp_path / "imgs")
    images = select_images(folder, 10, "sequential", size=SIZE)
    rec = run_erf(fixture_model(golden_dir), images, tmp_path / "run", device="cpu", progress=False, batch_size=2)
    assert rec["num_images"] == 3 and rec["num_skipped"] == 3
    reasons = {s["file"]: s["reason"] for s in rec["skipped"]}
    assert set(reasons) == set(SKIPPED)
    assert "tiny" in reasons["tiny.png"] and "truncated" in reasons["trunc.jpg"]
    assert {c["file"]: c["from_mode"] for c in rec["converted"]} == CONVERTED


@pytest.mark.slow
def test_two_processes_equal_one(golden_dir, tmp_path):
    """torchrun with 2 CPU processes (gloo) gives the single-process matrix."""
    single = run_erf(fixture_model(golden_dir), _images(5), tmp_path / "one", device="cpu", progress=False,
                     batch_size=2)
    worker = Path(__file__).with_name("_dist_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(worker),
           str(golden_dir), str(tmp_path / "two"), str(SIZE), "5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    rec = read_record(tmp_path / "two", "erf")
    assert rec["complete"] and rec["world_size"] == 2 and rec["num_images"] == 5
    assert rec["processed"] == single["processed"]
    # the workers run 1 thread each (oneDNN picks other summation orders): equal to float32 rounding
    ref = np.load(tmp_path / "one" / ERF_MATRIX)
    np.testing.assert_allclose(np.load(tmp_path / "two" / ERF_MATRIX), ref, rtol=1e-5, atol=1e-6 * ref.max())
    assert rec["area_ratios"] == single["area_ratios"]
