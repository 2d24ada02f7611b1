"""Helpers for the shape-bias tests: a small subset of the cue-conflict stimuli, an interrupted forward pass."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ..conftest import CUE_CONFLICT_MISSING

# 2 images per category for two categories, including one no-conflict image per category
SUBSET = ["cat/cat1-airplane1.png", "cat/cat1-cat3.png", "cat/cat1-bird1.png",
          "dog/dog1-bird1.png", "dog/dog1-dog2.png", "dog/dog4-bottle2.png"]


@pytest.fixture(scope="session")
def cue_conflict(shared) -> Path:
    root = shared / "data" / "cue-conflict"
    if not (root / "SHA256SUMS").is_file():
        pytest.skip(CUE_CONFLICT_MISSING.format(root))
    return root


@pytest.fixture(scope="session")
def reference_dir(shared) -> Path:
    return shared / "data" / "reference-decisions"


@pytest.fixture
def subset_dir(cue_conflict, tmp_path) -> Path:
    """A temp copy of a few stimuli (layout <shape>/<file>)."""
    dest = tmp_path / "stimuli"
    for rel in SUBSET:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cue_conflict / rel, dest / rel)
    return dest


def interrupt_second_batch(model):
    """``model`` whose second forward call raises KeyboardInterrupt (Ctrl-C after the first batch); returns it."""
    calls = {"n": 0}
    forward = model.forward

    def failing(x):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return forward(x)

    model.forward = failing
    return model
