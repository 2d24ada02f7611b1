"""Fixtures for the dashboard tests: result folders built through the records module (tests/results/builders.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ..results import builders
from ..results.builders import (HTML_PAYLOAD, IMAGE_PAYLOAD, REPO, SECRET, erf_matrix, link,  # noqa: F401
                                make_erf_run, make_linked_results, make_outside, make_payload_results, make_sb_run,
                                make_stimuli, stimuli_names)


@pytest.fixture
def good_results(tmp_path) -> Path:
    return builders.good_results(tmp_path / "results")


def corrupt_record(path: Path, **fields) -> Path:
    """Overwrite fields of a written record with values of the wrong type (a folder edited by hand)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(fields)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def broken_results(tmp_path) -> Path:
    """One good run of each kind plus every way a folder can be wrong."""
    root = tmp_path / "broken"
    make_erf_run(root / "erf" / "ok", "resnet-152")
    make_erf_run(root / "erf" / "no-npy", "replknet-13").joinpath("erf.npy").unlink()
    bad = make_erf_run(root / "erf" / "bad-npy", "swin-B")
    (bad / "erf.npy").write_bytes(b"not an array")
    wrong = make_erf_run(root / "erf" / "wrong-shape", "replknet-31B")
    np.save(wrong / "erf.npy", np.ones((10, 10, 3), np.float32))
    make_erf_run(root / "erf" / "unfinished", "resnet-101", complete=False)
    (root / "erf" / "garbage").mkdir(parents=True)
    (root / "erf" / "garbage" / "erf.json").write_text("{ not json", encoding="utf-8")
    (root / "erf" / "wrong-kind").mkdir(parents=True)
    (root / "erf" / "wrong-kind" / "erf.json").write_text('{"kind": "other"}', encoding="utf-8")
    make_sb_run(root / "sb" / "ok", "vgg16")
    make_sb_run(root / "sb" / "no-csv", "alexnet", decisions=False)
    corrupt_record(make_sb_run(root / "sb" / "weird", "weird") / "summary.json", per_category="oops", ci95=None,
                   shape_bias="x")
    (root / "sb" / "garbage").mkdir(parents=True)
    (root / "sb" / "garbage" / "summary.json").write_text("[1, 2", encoding="utf-8")
    return root
