"""Shared test fixtures: the golden data (tests/golden, and ../shared as a second, independent set) and helpers."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: golden data made with the official RepLKNet, UniRepLKNet and model-vs-human code by tests/golden/make_golden.py (committed)
GOLDEN = REPO / "tests" / "golden"
CUE_CONFLICT_MISSING = ("cue-conflict stimuli not found in {} (the shared folder's data/cue-conflict: the 1280 stimuli "
                        "that `erftools data fetch cue-conflict --dest PATH` downloads)")
MAKE_GOLDEN = ("python tests/golden/make_golden.py --replknet CLONE_OF_RepLKNet-pytorch "
               "--model-vs-human CLONE_OF_model-vs-human --unireplknet CLONE_OF_UniRepLKNet  (see tests/golden/README.md)")

# Tests never touch the network: huggingface_hub reads this once, at import, so set it before anything imports it.
os.environ["HF_HUB_OFFLINE"] = "1"


def shared_root() -> Path:
    return Path(os.environ.get("ERFTOOLS_SHARED", REPO.parent / "shared")).resolve()


def _require() -> bool:
    return os.environ.get("ERFTOOLS_REQUIRE_SHARED", "") not in ("", "0")


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ../shared folder (a second, independent set of golden data made with the official code, the 1280
    cue-conflict stimuli and model-vs-human's reference decisions); tests using it skip when it is absent, or fail
    when ERFTOOLS_REQUIRE_SHARED=1 (CI)."""
    root = shared_root()
    if not (root / "fixtures" / "MANIFEST.json").is_file():
        msg = (f"../shared not found at {root}: this check needs the project's shared folder (set ERFTOOLS_SHARED=PATH); "
               f"the comparisons with the official code also run on the committed tests/golden")
        if _require():
            pytest.fail(msg + " and ERFTOOLS_REQUIRE_SHARED=1")
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session", params=["golden", "shared"])
def fixtures_dir(request) -> Path:
    """A folder of golden data made with the official code: the committed ``tests/golden`` (always), then
    ``../shared/fixtures`` (an independent second set, made by another run of the official code; see ``shared``)."""
    if request.param == "golden":
        return GOLDEN
    return request.getfixturevalue("shared") / "fixtures"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The committed golden data only (tests that use the tiny official model as a model, not as a comparison)."""
    return GOLDEN


def golden_file(folder: Path, name: str) -> Path:
    """``folder/name`` (or ``name.gz``); a missing committed file skips, naming the command that makes it."""
    for cand in (folder / name, folder / (name + ".gz")):
        if cand.is_file():
            return cand
    msg = f"golden file {folder / name} is missing; make it with: {MAKE_GOLDEN}"
    if folder == GOLDEN and _require():
        pytest.fail(msg)
    pytest.skip(msg)


def load_golden_json(folder: Path, name: str):
    path = golden_file(folder, name)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's caches or the network from tests."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("ERFTOOLS_CACHE", str(cache / "erftools"))
    monkeypatch.setenv("TORCH_HOME", str(cache / "torch"))
    monkeypatch.setenv("HF_HOME", str(cache / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
