"""Fault injection on ERF runs: resume fingerprints, folder locks, damaged checkpoints, symlink loops, bad inputs."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from erftools import ErftoolsError
from erftools._lock import LOCK_NAME, FolderLockedError, run_lock
from erftools.erf.run import CHECKPOINT_DIR, load_matrix, run_erf
from erftools.images import find_images, select_images
from erftools.results import ERF_MATRIX, ERF_RECORD

from ._erf_helpers import tiny_resnet, write_image

REPO = Path(__file__).resolve().parents[2]
SIZE = 48


class Stop(KeyboardInterrupt):
    pass


def _stop_after_first(acc):
    raise Stop()


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "imgs"
    for i in range(3):
        write_image(d / f"im{i}.png", (64, 64), seed=i)
    return d


def _images(folder, n=3, size=SIZE, mean=(0.485, 0.456, 0.406)):
    return select_images(folder, n, "sequential", 0, size=size, mean=mean)


def _interrupted(out, folder, **kw):
    with pytest.raises(KeyboardInterrupt):
        run_erf(tiny_resnet(0), _images(folder), out, device="cpu", progress=False, plot=False, batch_size=1,
                seed=0, on_batch=_stop_after_first, **kw)
    assert (out / CHECKPOINT_DIR).is_dir()


def _resume(out, model, images, **kw):
    kw.setdefault("seed", 0)
    return run_erf(model, images, out, device="cpu", progress=False, plot=False, batch_size=1, resume=True, **kw)


# ---- 3. the resume fingerprint holds everything that changes the matrix -------------------------------------------
@pytest.mark.parametrize("change, field", [
    ("weights_seed", "parameters_sha256"),   # another random network of the same architecture and name
    ("seed", "seed"),
    ("model_kwargs", "model_kwargs"),
    ("mean", "mean"),
    ("size", "size"),
    ("dtype", "dtype"),
    ("conv_backend", "conv_backend"),
    ("prepare", "prepare"),
    ("image_list", "num_images: 3 -> 2"),  # the list is a subset: the count says it plainest
    ("image_root", "images_root"),
    ("image_content", "images_files_sha256"),
])
def test_resume_refuses_any_change_that_alters_the_matrix(tmp_path, folder, change, field):
    out = tmp_path / "run"
    _interrupted(out, folder)
    model, images, kw = tiny_resnet(0), _images(folder), {}
    if change == "weights_seed":
        model = tiny_resnet(1)
    elif change == "seed":
        kw["seed"] = 4
    elif change == "model_kwargs":
        kw["model_kwargs"] = {"drop_rate": 0.1}
    elif change == "mean":
        images = _images(folder, mean=(0.5, 0.5, 0.5))
    elif change == "size":
        images = _images(folder, size=SIZE + 16)
    elif change == "dtype":
        model = model.double()
    elif change == "conv_backend":
        kw["conv_backend"] = "fft"
    elif change == "prepare":
        kw["prepare"] = False
    elif change == "image_list":
        images = _images(folder, n=2)
    elif change == "image_root":
        copy = tmp_path / "copy"
        shutil.copytree(folder, copy)
        images = _images(copy)
    elif change == "image_content":
        write_image(folder / "im2.png", (80, 80), seed=9)  # same name, another picture
        images = _images(folder)
    with pytest.raises(ErftoolsError, match=f"refusing to resume.*{field}"):
        _resume(out, model, images, **kw)
    if change != "image_content":  # the interrupted run is intact and still resumes with its own settings
        rec = _resume(out, tiny_resnet(0), _images(folder))
        assert rec["complete"] and rec["num_images"] == 3 and rec["resumed"]


def test_resumed_random_network_equals_the_uninterrupted_one(tmp_path, folder):
    full = run_erf(tiny_resnet(3), _images(folder), tmp_path / "full", device="cpu", progress=False, plot=False,
                   batch_size=1, seed=3)
    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        run_erf(tiny_resnet(3), _images(folder), out, device="cpu", progress=False, plot=False, batch_size=1,
                seed=3, on_batch=_stop_after_first)
    rec = _resume(out, tiny_resnet(3), _images(folder), seed=3)
    assert rec["fingerprint"] == full["fingerprint"]
    t = rec["timings"]  # this session computed 2 of the 3 images; the whole run's computation holds the first too
    assert t["images_computed_this_session"] == 2 and t["run_compute_s"] > t["compute_s"] > 0
    # both are rounded (4 and 3 decimals): equal to 3e-4 s
    assert t["run_seconds_per_image"] == pytest.approx(t["run_compute_s"] / 3, abs=3e-4)
    assert full["timings"]["run_compute_s"] == pytest.approx(full["timings"]["compute_s"], abs=2e-3)
    # float64 sums of the same float32 maps in the same order: equal up to the last bit of the float32 output
    np.testing.assert_allclose(np.load(out / ERF_MATRIX), np.load(tmp_path / "full" / ERF_MATRIX), rtol=1e-6)



def test_an_interrupted_growth_continues_and_loses_nothing(tmp_path, folder):
    """A finished 2-image run grown to 3, interrupted after its first new image, then continued: the 2 finished
    images are still in the sum (never recomputed), and the matrix is that of the 3 images."""
    kw = dict(device="cpu", progress=False, plot=False, batch_size=1, seed=0)
    run_erf(tiny_resnet(0), _images(folder, n=3), tmp_path / "full", **kw)
    out = tmp_path / "g"
    run_erf(tiny_resnet(0), _images(folder, n=2), out, **kw)
    with pytest.raises(KeyboardInterrupt):
        run_erf(tiny_resnet(0), _images(folder), out, on_batch=_stop_after_first, **kw)
    assert not (out / ERF_RECORD).exists() and (out / CHECKPOINT_DIR).is_dir()  # an interrupted run now
    rec = _resume(out, tiny_resnet(0), _images(folder))
    assert rec["num_images"] == 3 and rec["timings"]["images_computed_this_session"] == 0
    np.testing.assert_allclose(np.load(out / ERF_MATRIX), np.load(tmp_path / "full" / ERF_MATRIX), rtol=1e-5)


# ---- 4. one writer per folder ---------------------------------------------------------------------------------------
def test_second_run_into_a_locked_folder_is_refused_naming_the_holder(tmp_path, folder):
    out = tmp_path / "run"
    with run_lock(out):
        with pytest.raises(FolderLockedError, match=rf"being written by process {os.getpid()} on host"):
            run_erf(tiny_resnet(0), _images(folder), out, device="cpu", progress=False, plot=False, overwrite=True)
        with pytest.raises(ErftoolsError, match="being written right now"):
            load_matrix(out)
    assert not (out / LOCK_NAME).exists()  # released
    rec = run_erf(tiny_resnet(0), _images(folder), out, device="cpu", progress=False, plot=False)
    assert rec["complete"] and not (out / LOCK_NAME).exists()


def test_concurrent_overwrite_runs_one_wins_one_is_refused(tmp_path, folder):
    """Two processes: while the first holds the folder, the second fails at once with a message; no crash, no mix."""
    out = tmp_path / "run"
    script = (
        "import sys, time, torch\n"
        "sys.path.insert(0, sys.argv[3])\n"
        "from _erf_helpers import tiny_resnet\n"
        "from erftools.images import select_images\n"
        "from erftools.erf.run import run_erf\n"
        "imgs = select_images(sys.argv[1], 3, 'sequential', 0, size=48)\n"
        "from pathlib import Path\n"
        "def slow(acc):  # hold the folder until the test says so\n"
        "    t = time.time()\n"
        "    while not Path(sys.argv[4]).exists() and time.time() - t < 120:\n"
        "        time.sleep(0.05)\n"
        "run_erf(tiny_resnet(0), imgs, sys.argv[2], device='cpu', progress=False, plot=False, batch_size=1,\n"
        "        overwrite=True, on_batch=slow)\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    args = [sys.executable, "-c", script, str(folder), str(out), str(Path(__file__).parent)]
    release = tmp_path / "release"
    first = subprocess.Popen(args + [str(release)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.time() + 120
    while not (out / LOCK_NAME).exists() and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run(args + [str(folder)], env=env, capture_output=True, text=True, timeout=300)
    release.touch()
    _, err1 = first.communicate(timeout=300)
    assert first.returncode == 0, err1[-3000:]
    assert second.returncode != 0 and "is being written by process" in second.stderr, second.stderr[-3000:]
    rec = json.loads((out / ERF_RECORD).read_text())
    assert rec["complete"] and rec["num_images"] == 3
    assert not (out / LOCK_NAME).exists() and not list(out.glob(".*.tmp"))


def test_stale_lock_of_a_dead_process_is_taken_over_and_temporaries_removed(tmp_path, folder, caplog):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (out / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                             "started": time.time() - 60, "command": "erftools erf"}))
    (out / ".erf.npy.abcd1234.tmp").write_bytes(b"half a file")
    with caplog.at_level("WARNING"):
        rec = run_erf(tiny_resnet(0), _images(folder), out, device="cpu", progress=False, plot=False)
    assert rec["complete"]
    assert "no longer running" in caplog.text and "temporary file" in caplog.text
    assert not (out / ".erf.npy.abcd1234.tmp").exists()


# ---- 6. damaged checkpoints are refused when they are loaded, before any computation ------------------------------
@pytest.mark.parametrize("damage, message", [
    ("nan", "non-finite"), ("shape", "shape"), ("garbage", "unreadable"), ("count", "inconsistent")])
def test_damaged_checkpoint_is_refused_at_load(tmp_path, folder, damage, message):
    out = tmp_path / "run"
    _interrupted(out, folder)
    rank = out / CHECKPOINT_DIR / "rank0.npz"
    with np.load(rank) as z:
        parts = {k: z[k] for k in z.files}
    if damage == "nan":
        parts["total_0"] = parts["total_0"].copy()
        parts["total_0"][3, 3] = np.nan
    elif damage == "shape":
        parts["total_0"] = np.zeros((7, 7))
    elif damage == "count":
        parts["counts"] = np.array([5], dtype=np.int64)
    if damage == "garbage":
        rank.write_bytes(b"not a checkpoint")
    else:
        with open(rank, "wb") as fh:
            np.savez(fh, **parts)
    calls = []
    with pytest.raises(ErftoolsError, match=rf"checkpoint file .*rank0.npz.*{message}.*overwrite"):
        _resume(out, tiny_resnet(0), _images(folder), on_batch=calls.append)
    assert not calls and rank.exists()  # nothing recomputed, nothing deleted


# ---- 9. a run that computed nothing leaves no 'interrupted run' behind ---------------------------------------------
def test_only_unreadable_images_leave_no_checkpoint(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"\x00garbage")
    (bad / "b.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "run"
    for _ in range(2):  # the second attempt must fail the same way, not ask for --resume
        with pytest.raises(ErftoolsError) as err:
            run_erf(tiny_resnet(0), select_images(bad, 2, "sequential", size=SIZE), out, device="cpu",
                    progress=False, plot=False)
        assert "--resume" not in str(err.value)
        assert not (out / CHECKPOINT_DIR).exists()


# ---- 8. symbolic-link loops and duplicate paths ---------------------------------------------------------------------
def test_symlink_loop_and_duplicate_links_list_each_image_once(tmp_path, caplog):
    root = tmp_path / "imgs"
    write_image(root / "a" / "x.png", (40, 40))
    write_image(root / "b" / "y.png", (40, 40), seed=1)
    (root / "a" / "loop").symlink_to("..")
    (root / "b" / "same.png").symlink_to(root / "a" / "x.png")
    with caplog.at_level("WARNING"):
        files = find_images(root)
    assert files == ["a/x.png", "b/y.png"]
    assert caplog.text.count("symbolic links") == 1 and "already listed" in caplog.text


# ---- 9. messages for the wrong file ---------------------------------------------------------------------------------
def test_analyze_names_what_the_file_really_is(tmp_path):
    text = tmp_path / "notes.npy"
    text.write_text("this is not an array\n")
    with pytest.raises(ErftoolsError, match="is a text file, not an ERF matrix"):
        load_matrix(text)
    many = tmp_path / "two.npz"
    np.savez(many, a=np.zeros((4, 4)), b=np.ones((5, 5)))
    with pytest.raises(ErftoolsError, match=r"\.npz archive with a \(4, 4\), b \(5, 5\)"):
        load_matrix(many)
    one = tmp_path / "one.npz"
    np.savez(one, erf=np.arange(9.0).reshape(3, 3), note=np.array(1))
    m, rec = load_matrix(one)
    assert m.shape == (3, 3) and rec is None and m[2, 2] == 8.0  # a copy of stored values: exact
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((3, 3), np.nan))
    with pytest.raises(ErftoolsError, match="NaN"):
        load_matrix(nan)
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(ErftoolsError, match="erf.json is missing"):
        load_matrix(tmp_path / "dir.npy")


def test_precision_is_recorded_and_part_of_the_fingerprint(tmp_path, folder):
    out = tmp_path / "run"
    rec = run_erf(tiny_resnet(0), _images(folder), out, device="cpu", progress=False, plot=False, precision="tf32")
    assert rec["precision_requested"] == "tf32" and rec["precision"] == "fp32"  # TF32 exists on CUDA only
    assert "CUDA" in rec["precision_note"] and rec["fingerprint"]["precision"] == "tf32"
    with pytest.raises(ErftoolsError, match="allow_low_precision=True"):  # bf16 moved a square when measured
        run_erf(tiny_resnet(0), _images(folder), out, device="cpu", progress=False, plot=False, precision="bf16")
    with pytest.raises(ErftoolsError, match="precision"):  # allowed, but not a resume of the tf32 run
        run_erf(tiny_resnet(0), _images(folder), out, device="cpu", progress=False, plot=False, precision="bf16",
                allow_low_precision=True)
    with pytest.raises(ErftoolsError, match="unknown precision"):
        run_erf(tiny_resnet(0), _images(folder), tmp_path / "x", device="cpu", progress=False, precision="fp8")
