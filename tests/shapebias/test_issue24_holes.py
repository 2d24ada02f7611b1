"""Issue 24's single-run holes in shape-bias runs: a stimulus that fails to decode mid-run, stimuli changed after
an interruption, an empty weights file."""
from __future__ import annotations

import shutil
import struct
import zlib

import numpy as np
import pytest

from erftools.cli import main as cli_main
from erftools.shapebias import load_stimuli
from erftools.shapebias import run as sbrun

from .conftest import interrupt_second_batch
from .test_run_reliability import _model, _run


def _garble_pixels(path):
    """Keep the PNG's chunks valid (fixed CRC) but scramble the compressed pixels: the header check passes, the
    decoder fails (the probe of issue 24)."""
    b = bytearray(path.read_bytes())
    i = b.index(b"IDAT")
    n = struct.unpack(">I", b[i - 4:i])[0]
    data = bytearray(b[i + 4:i + 4 + n])
    for k in range(50, min(n, 4000)):
        data[k] ^= 0x5A
    b[i + 4:i + 4 + n] = data
    b[i + 4 + n:i + 8 + n] = struct.pack(">I", zlib.crc32(b"IDAT" + bytes(data)) & 0xFFFFFFFF)
    path.write_bytes(bytes(b))


def test_a_stimulus_that_fails_to_decode_is_skipped_and_counted(subset_dir, tmp_path):
    _garble_pixels(subset_dir / "cat/cat1-bird1.png")
    stimuli = load_stimuli(subset_dir, allow_incomplete=True)
    assert len(stimuli.stimuli) == 6 and not stimuli.malformed  # passes the up-front check
    rec = _run(tmp_path / "run", stimuli)
    assert rec["complete"] and rec["num_unreadable"] == 1 and rec["num_trials"] == 5
    assert rec["unreadable"][0]["file"] == "cat/cat1-bird1.png"
    assert "unreadable image" in rec["unreadable"][0]["reason"] and rec["num_nonfinite"] == 0


def test_stimuli_changed_after_an_interruption_keep_the_unchanged_decisions(subset_dir, tmp_path, cue_conflict,
                                                                              caplog):
    full = _run(tmp_path / "full", load_stimuli(subset_dir, allow_incomplete=True))
    out = tmp_path / "run"
    _garble_pixels(subset_dir / "cat/cat1-bird1.png")  # batch 1: cat1-airplane1 decided, cat1-bird1 unreadable
    with pytest.raises(KeyboardInterrupt):
        _run(out, load_stimuli(subset_dir, allow_incomplete=True), model=interrupt_second_batch(_model()))
    shutil.copy2(cue_conflict / "cat/cat1-bird1.png", subset_dir / "cat/cat1-bird1.png")  # fixed
    seen = []
    model = _model()
    fwd = model.forward
    model.forward = lambda x: (seen.append(len(x)), fwd(x))[1]
    with caplog.at_level("WARNING"):
        rec = _run(out, load_stimuli(subset_dir, allow_incomplete=True), model=model)
    assert "the stimuli changed since the run" in caplog.text
    assert "1 file(s) changed, added or removed: cat/cat1-bird1.png" in caplog.text
    assert "the 1 decisions of the unchanged stimuli are kept" in caplog.text  # cat1-airplane1
    assert sum(seen) == 5 and rec["complete"] and rec["num_trials"] == 6 and rec["num_unreadable"] == 0
    np.testing.assert_allclose(np.load(out / "probabilities_16class.npy"),
                               np.load(tmp_path / "full" / "probabilities_16class.npy"), rtol=1e-5, atol=1e-7)
    assert rec["shape_bias"] == full["shape_bias"]


def test_an_empty_weights_file_gets_a_clear_message(subset_dir, tmp_path, capsys):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    rc = cli_main(["shape-bias", "--model", "resnet18", "--weights", str(empty), "--stimuli", str(subset_dir),
                   "--allow-incomplete", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "is empty (0 bytes)" in err and "IndexError" not in err and "Traceback" not in err


@pytest.mark.parametrize("argv, words", [
    (["--seed", "-1"], "--seed must be at least 0 (got -1)"),
    (["--bootstrap", "1000000000"], "--bootstrap must be at most 1,000,000"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
])
def test_bounds_are_refused_before_the_model_runs(argv, words, subset_dir, tmp_path, capsys):
    rc = cli_main(["shape-bias", "--model", "resnet18", "--weights", "random", "--stimuli", str(subset_dir),
                   "--allow-incomplete", "--out", str(tmp_path / "run"), "--no-progress", *argv])
    assert rc == 1 and words in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_partial_meta_records_the_stimuli_files(subset_dir, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "run", load_stimuli(subset_dir, allow_incomplete=True),
             model=interrupt_second_batch(_model()))
    import json

    meta = json.loads((tmp_path / "run" / sbrun.PARTIAL_META).read_text())
    assert sorted(meta[sbrun.STIMULI_FILES]) == sorted(p.relative_to(subset_dir).as_posix()
                                                        for p in subset_dir.rglob("*.png"))
