"""A tiny two-model study: random resnet18 and a narrow random RepLKNet-31B (kernels 31,29,27,13, one block per
stage, channels 16-128) at 64x64 on two bundled photographs, shape bias on six cue-conflict stimuli."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from erftools import cli

from ..conftest import CUE_CONFLICT_MISSING

# 2 images per category for two categories, including one no-conflict image per category (as tests/shapebias)
SUBSET = ["cat/cat1-airplane1.png", "cat/cat1-cat3.png", "cat/cat1-bird1.png",
          "dog/dog1-bird1.png", "dog/dog1-dog2.png", "dog/dog4-bottle2.png"]

# Random networks decide almost every stimulus for one category, so most seeds leave the shape bias of six stimuli
# undefined (nothing decided for shape or texture). Seed 1 gives resnet18 one texture decision (tests/shapebias:
# 1.3% ahead of the runner-up); seed 4 makes the narrow RepLKNet decide 'airplane' everywhere, 3% ahead of the
# runner-up, i.e. one texture decision (cat1-airplane1): both shape biases are defined (0.0), far beyond fp32 noise.
TINY_STUDY = """\
[study]
name = "tiny"
title = "two random networks"
device = "cpu"

[erf]
images = "bundled"
num_images = 2
size = 64
samplers = ["sequential"]
seed = 0

[shape_bias]
stimuli = "stimuli"
allow_incomplete = true
batch_size = 6
bootstrap = 10

[tolerance.erf]
abs = 0.5
[tolerance.shape_bias]
abs = 0.02

[[model]]
id = "resnet18"
name = "resnet18"
label = "ResNet-18 (random)"
weights = "random"
seed = 1
paper.erf = { "0.2" = 99.0 }
paper.shape_bias = 0.0

[[model]]
id = "replknet"
name = "replknet-31B"
label = "narrow RepLKNet (random)"
weights = "random"
seed = 4
model_kwargs = { layers = [1, 1, 1, 1], channels = [16, 32, 64, 128] }
paper.shape_bias = 0.5

[[model]]
id = "replknet-3"
name = "replknet-3"
weights = "unpublished"
note = "no public weights"
paper.shape_bias = "fig5:paper:replknet-3-in1k"
"""


def make_study_dir(root: Path, cue_conflict: Path, text: str = TINY_STUDY) -> Path:
    """A folder with the study file and its six stimuli; returns the study file."""
    root.mkdir(parents=True, exist_ok=True)
    for rel in SUBSET:
        (root / "stimuli" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cue_conflict / rel, root / "stimuli" / rel)
    path = root / "study.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def cue_conflict(shared) -> Path:
    root = shared / "data" / "cue-conflict"
    if not (root / "SHA256SUMS").is_file():
        pytest.skip(CUE_CONFLICT_MISSING.format(root))
    return root


@pytest.fixture(scope="session")
def study_file(cue_conflict, tmp_path_factory) -> Path:
    return make_study_dir(tmp_path_factory.mktemp("study"), cue_conflict)


@pytest.fixture(scope="session")
def reference_run(study_file, tmp_path_factory):
    """The tiny study run once, uninterrupted, in one process (shared by the tests; they only read it, or re-run it unchanged)."""
    from erftools.study import load_study, run_study

    out = tmp_path_factory.mktemp("reference") / "results"
    outcome = run_study(load_study(study_file), results=out, progress=False, report=True)
    return out, outcome


@pytest.fixture
def cli_main():
    """erftools.cli.main (the study command is registered in cli.COMMAND_MODULES)."""
    assert "study" in cli.COMMAND_MODULES
    return cli.main
