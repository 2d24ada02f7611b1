"""Shape bias of the committed synthetic decision files against model-vs-human's own analysis of them
(tests/golden/expected_shape_bias.json, made by tests/golden/make_golden.py with the official ShapeBias.analysis)."""
from __future__ import annotations

import math

import pytest

from erftools.shapebias import CATEGORIES, analyse, read_decisions, shape_bias
from erftools.shapebias.analysis import mvh_per_category

from ..conftest import GOLDEN, load_golden_json

KEYS = ("fraction-correct-shape", "fraction-correct-texture", "shape-bias")


def _close(a, b):
    if b is None:
        return a is None or math.isnan(a)
    return a == pytest.approx(b, abs=1e-12)


def test_synthetic_decisions_match_model_vs_human():
    expected = load_golden_json(GOLDEN, "expected_shape_bias.json")
    assert expected["categories"] == list(CATEGORIES) and len(expected["files"]) == 3
    for name, e in expected["files"].items():
        rows = read_decisions(GOLDEN / e["path"])
        assert len(rows) == e["n_trials"]
        got = shape_bias(rows)
        for k in KEYS:
            assert _close(got[k], e[k]), (name, k)
        per = mvh_per_category(rows)
        for cat, ec in e["per_category"].items():
            for k in KEYS:
                assert _close(per[cat][k], ec[k]), (name, cat, k)
        a = analyse(rows, n_boot=50)
        assert a["shape_bias"] == pytest.approx(e["shape-bias"], abs=1e-12)
        for cat, ec in e["per_category"].items():
            assert _close(a["per_category"][cat]["shape_bias"], ec["shape-bias"])
            assert a["per_category"][cat]["n"] == ec["n_trials"]
