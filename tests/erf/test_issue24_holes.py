"""Issue 24's single-run holes in ERF runs: a checkpoint naming an image outside the run, an empty weights file,
short writes on a full disk, a matrix linked out of its run folder, bounds refused before the model is built."""
from __future__ import annotations

import json

import numpy as np
import pytest

from erftools import ErftoolsError
from erftools._io import atomic_path, save_npy
from erftools.cli import main as cli_main
from erftools.erf import checkpoint
from erftools.erf.run import CHECKPOINT_DIR, run_erf
from erftools.images import select_images

from ._erf_helpers import tiny_resnet, write_image

SIZE = 48


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "imgs"
    for i in range(3):
        write_image(d / f"im{i}.png", (64, 64), seed=i)
    return d


def _images(folder):
    return select_images(folder, 3, "sequential", 0, size=SIZE)


def _run(out, folder, **kw):
    return run_erf(tiny_resnet(0), _images(folder), out, device="cpu", progress=False, plot=False, batch_size=1,
                   seed=0, **kw)


def _stop(_acc):
    raise KeyboardInterrupt


def test_a_checkpoint_naming_an_image_outside_the_run_is_refused(tmp_path, folder):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(out, folder, on_batch=_stop)
    rank = out / CHECKPOINT_DIR / "rank0.npz"
    with np.load(rank) as z:
        parts = {k: z[k] for k in z.files}
    names = json.loads(str(parts["names"]))
    names["processed"][0].append("elsewhere/intruder.png")  # a 3-image run that would be recorded as 4
    parts["names"] = np.array(json.dumps(names))
    parts["counts"] = parts["counts"] + 1
    with open(rank, "wb") as fh:
        np.savez(fh, **parts)
    calls = []
    with pytest.raises(ErftoolsError, match=r"rank0.npz names the image 'elsewhere/intruder.png', which is not one "
                                            r"of this run's 3 images.*overwrite=True"):
        _run(out, folder, on_batch=calls.append)
    assert not calls and rank.exists()


def test_an_empty_weights_file_gets_a_clear_message(tmp_path, capsys):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    rc = cli_main(["erf", "--model", "resnet18", "--weights", str(empty), "--size", "64", "--num-images", "1",
                   "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "is empty (0 bytes)" in err and "IndexError" not in err and "Traceback" not in err


@pytest.mark.parametrize("error", [OSError("1048576 requested and 262144 written"),
                                   OSError(28, "No space left on device")])
def test_short_writes_get_the_no_space_message_and_leave_nothing_half_written(tmp_path, error):
    target = tmp_path / "m.npy"

    def full(*_a, **_k):
        raise error

    with pytest.raises(ErftoolsError, match="no space left on the device while writing .*m.npy"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            full()
    assert not target.exists() and not list(tmp_path.glob(".*.tmp"))


def test_a_full_disk_during_a_run_keeps_it_resumable(tmp_path, folder, monkeypatch):
    out = tmp_path / "run"
    real, calls = np.savez, {"n": 0}

    def filling(fh, **arrays):  # numpy's own short write on the third checkpoint (the second image's)
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("1048576 requested and 262144 written")
        return real(fh, **arrays)

    monkeypatch.setattr(checkpoint.np, "savez", filling)
    with pytest.raises(ErftoolsError, match="no space left on the device .*a short write"):
        _run(out, folder)
    monkeypatch.setattr(checkpoint.np, "savez", real)
    rec = _run(out, folder)
    assert rec["complete"] and rec["resumed"] is True and rec["num_images"] == 3
    _run(tmp_path / "full", folder)
    np.testing.assert_allclose(np.load(out / "erf.npy"), np.load(tmp_path / "full" / "erf.npy"), rtol=1e-6,
                               atol=1e-12)


def test_a_short_write_of_the_matrix_gets_the_clean_message(tmp_path, monkeypatch):
    def short(fh, arr, *a, **k):
        raise OSError("1048576 requested and 4096 written")

    monkeypatch.setattr(np, "save", short)
    with pytest.raises(ErftoolsError, match="no space left"):
        save_npy(tmp_path / "erf.npy", np.zeros((4, 4)))
    assert not (tmp_path / "erf.npy").exists()


@pytest.mark.parametrize("command", ["analyze", "compare"])
def test_analyze_and_compare_refuse_a_matrix_linked_out_of_its_run(tmp_path, folder, command, capsys):
    out = tmp_path / "run"
    _run(out, folder)
    outside = tmp_path / "secret.npy"
    np.save(outside, np.ones((SIZE, SIZE)))
    (out / "erf.npy").unlink()
    (out / "erf.npy").symlink_to(outside)
    argv = ["analyze", str(out)] if command == "analyze" else ["compare", str(out), "--out", str(tmp_path / "c")]
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert "resolves outside the results folder" in err and "secret" not in err


@pytest.mark.parametrize("argv, words", [
    (["--size", "1000000"], "--size must be at most 4,096 (got 1,000,000)"),
    (["--size", "16"], "--size must be at least 32"),
    (["--num-images", "1000000000"], "--num-images must be at most 50,000"),
    (["--seed", "-1"], "--seed must be at least 0 (got -1)"),
    (["--batch-size", "100000"], "--batch-size must be at most 1,024"),
])
def test_bounds_are_refused_before_the_model_is_built(argv, words, tmp_path, capsys):
    rc = cli_main(["erf", "--model", "resnet18", "--weights", "random", "--out", str(tmp_path / "run"),
                   "--no-progress", *argv])
    assert rc == 1 and words in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_the_python_api_has_the_same_bounds(tmp_path, folder):
    with pytest.raises(ErftoolsError, match="size must be at most 4,096"):
        run_erf(tiny_resnet(0), select_images(folder, 1, "sequential", 0, size=5000), tmp_path / "r",
                device="cpu", progress=False)
    assert not (tmp_path / "r").exists()
