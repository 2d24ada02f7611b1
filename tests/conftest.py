"""Shared test fixtures: the location of ../shared (golden data) and small helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Tests never touch the network: huggingface_hub reads this once, at import, so set it before anything imports it.
os.environ["HF_HUB_OFFLINE"] = "1"


def shared_root() -> Path:
    return Path(os.environ.get("ERFTOOLS_SHARED", REPO.parent / "shared")).resolve()


def _require() -> bool:
    return os.environ.get("ERFTOOLS_REQUIRE_SHARED", "") not in ("", "0")


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ../shared folder; tests using it skip when it is absent, or fail when ERFTOOLS_REQUIRE_SHARED=1."""
    root = shared_root()
    if not (root / "fixtures" / "MANIFEST.json").is_file():
        msg = f"golden data not found at {root} (set ERFTOOLS_SHARED)"
        if _require():
            pytest.fail(msg + " and ERFTOOLS_REQUIRE_SHARED=1")
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def fixtures_dir(shared) -> Path:
    return shared / "fixtures"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's caches or the network from tests."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("ERFTOOLS_CACHE", str(cache / "erftools"))
    monkeypatch.setenv("TORCH_HOME", str(cache / "torch"))
    monkeypatch.setenv("HF_HOME", str(cache / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
