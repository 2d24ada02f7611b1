"""Stimulus parsing and the completeness / integrity check of a cue-conflict folder."""
from __future__ import annotations

import shutil

import pytest
from PIL import Image

from erftools._io import ErftoolsError
from erftools.shapebias import canonical_stimuli, check_stimuli, load_stimuli, parse_stimulus, texture_category
from erftools.shapebias.stimuli import load_image, read_manifest, shape_category, stimulus_file


def test_parse_names():
    s = parse_stimulus("cat/cat7-elephant1.png")
    assert (s.shape, s.texture, s.conflict, s.name) == ("cat", "elephant", True, "cat7-elephant1.png")
    assert not parse_stimulus("airplane/airplane10-airplane1.png").conflict
    for bad in ("cat/dog1-cat1.png", "cat/cat1.png", "cat1-dog1.png", "cat/cat1-zebra1.png"):
        with pytest.raises(ValueError):
            parse_stimulus(bad)
    human = "0001_s5n_s01_0_bird_00_bird3-clock2.png"
    assert (stimulus_file(human), texture_category(human), shape_category(human)) == ("bird3-clock2.png", "clock",
                                                                                       "bird")
    assert texture_category("knife10-elephant3.png") == "elephant"


def test_manifest_matches_shared_sha256sums(cue_conflict):
    ours = read_manifest()
    theirs = read_manifest(cue_conflict / "SHA256SUMS")
    assert ours == theirs
    stims = canonical_stimuli()
    assert len(stims) == 1280
    assert sum(not s.conflict for s in stims) == 80
    assert {s.shape for s in stims} == {s.texture for s in stims} and len({s.shape for s in stims}) == 16
    assert all(sum(s.shape == c for s in stims) == 80 for c in {s.shape for s in stims})


def test_full_shared_set_is_complete_and_verified(cue_conflict):
    rep = check_stimuli(cue_conflict)
    assert rep.ok, rep.problems()
    assert len(rep.stimuli) == 1280 and rep.verified
    assert [s.relpath for s in rep.stimuli] == [s.relpath for s in canonical_stimuli()]


def test_problems_are_reported_exactly(subset_dir):
    rep = check_stimuli(subset_dir)
    assert len(rep.stimuli) == 6 and not rep.complete and not rep.ok
    assert len(rep.missing) == 1274 and "airplane/airplane1-bicycle2.png" in rep.missing
    # a modified file, a resized one, a grey one, a bad name, a stray file that is ignored
    with open(subset_dir / "cat/cat1-airplane1.png", "ab") as fh:
        fh.write(b"\0")
    Image.new("RGB", (256, 256)).save(subset_dir / "cat/cat1-bird1.png")
    Image.new("L", (224, 224)).save(subset_dir / "dog/dog1-bird1.png")
    shutil.copy2(subset_dir / "dog/dog1-dog2.png", subset_dir / "dog/cat9-dog1.png")
    (subset_dir / "README.txt").write_text("not an image")
    rep = check_stimuli(subset_dir)
    assert rep.modified == ["cat/cat1-airplane1.png"]
    text = " ".join(rep.malformed)
    assert "cat/cat1-bird1.png: 256x256 pixels, expected 224x224" in text
    assert "dog/dog1-bird1.png: image mode L, expected RGB" in text
    assert "dog/cat9-dog1.png" in text and "folder 'dog'" in text
    assert "cat/cat1-bird1.png" not in rep.missing  # present but malformed, not missing
    msg = rep.problems(limit=2)
    assert "1274 missing" in msg and "modified" in msg and "malformed" in msg
    with pytest.raises(ErftoolsError, match="cannot use"):
        load_stimuli(subset_dir, allow_incomplete=True)


def test_load_stimuli_refuses_incomplete_unless_allowed(subset_dir, tmp_path):
    with pytest.raises(ErftoolsError, match="allow_incomplete=True"):
        load_stimuli(subset_dir)
    rep = load_stimuli(subset_dir, allow_incomplete=True)
    assert len(rep.stimuli) == 6
    with pytest.raises(ErftoolsError, match="erftools data fetch cue-conflict"):
        load_stimuli()  # the (empty, test-isolated) user cache
    with pytest.raises(ErftoolsError, match="does not exist"):
        load_stimuli(tmp_path / "nope")


def test_set_hash_identifies_content(subset_dir):
    a = check_stimuli(subset_dir).sha256
    assert a == check_stimuli(subset_dir, verify=False).sha256
    (subset_dir / "cat/cat1-cat3.png").unlink()
    assert check_stimuli(subset_dir).sha256 != a


def test_load_image_is_unresized_totensor(subset_dir):
    import numpy as np

    x = load_image(subset_dir / "cat/cat1-cat3.png")
    raw = np.asarray(Image.open(subset_dir / "cat/cat1-cat3.png").convert("RGB"))
    assert tuple(x.shape) == (3, 224, 224)
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), raw / 255.0, atol=1e-7)
