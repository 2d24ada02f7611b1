import numpy as np
import pytest

from erftools.erf import area_ratios, format_table, normalize, radial_profile
from erftools.erf.analysis import AreaRatio, EmptyErfWarning

from ._erf_helpers import fixture_data


def test_area_ratios_reproduce_official_analysis(fixtures_dir):
    d = fixture_data(fixtures_dir)
    got = area_ratios(d["matrix"], list(d["thresholds"]) + list(d["extra_thresholds"]))
    sides = np.concatenate([d["side_lengths"], d["extra_side_lengths"]])
    ratios = np.concatenate([d["area_ratios"], d["extra_area_ratios"]])
    for r, side, ratio in zip(got, sides, ratios):
        if np.isnan(side):
            assert r.side is None and r.area_ratio is None
        else:
            assert r.side == int(side)
            assert r.area_ratio == ratio  # exactly
    assert got[-1].side is None  # the last extra threshold: no square qualifies (the official script crashes there)


def test_normalize_matches_official(fixtures_dir):
    d = fixture_data(fixtures_dir)
    np.testing.assert_allclose(normalize(d["matrix"]), d["normalized"], rtol=1e-6, atol=1e-7)
    assert normalize(d["matrix"]).max() == pytest.approx(1.0)


def test_area_ratios_edge_cases():
    m = np.zeros((33, 33), np.float32)
    with pytest.warns(EmptyErfWarning, match="does not depend on the input"):
        assert [r.side for r in area_ratios(m)] == [None] * 4  # nothing at all: no square
    m[16, 16] = 5.0
    r = area_ratios(m, (0.5, 1.0))
    assert r[0].side == 3 and r[0].area_ratio == pytest.approx(9 / 33 ** 2)
    assert r[1].side is None  # "exceeds 100 %" never happens
    with pytest.raises(ValueError):
        area_ratios(m, (0.0,))
    with pytest.raises(ValueError):
        area_ratios(np.ones((4, 4, 4)))
    with pytest.raises(ValueError):
        area_ratios(np.full((8, 8), np.nan))
    with pytest.raises(ValueError):
        area_ratios(-np.ones((8, 8)))


def test_uniform_map_square_grows_with_threshold():
    m = np.ones((65, 65), np.float32)
    r = area_ratios(m, (0.2, 0.5, 0.9))
    sides = [x.side for x in r]
    assert sides == sorted(sides) and all(s % 2 == 1 for s in sides)
    for x in r:  # uniform: the share of a square is its area share
        assert x.area_ratio > x.threshold
        assert ((x.side - 2) / 65) ** 2 <= x.threshold


def test_radial_profile(fixtures_dir):
    d = fixture_data(fixtures_dir)
    prof = radial_profile(d["matrix"])
    c = np.array(prof["cumulative"])
    assert len(prof["radius"]) == len(c) <= 256
    assert np.all(np.diff(c) >= -1e-9) and c[-1] == pytest.approx(1.0, abs=1e-5)
    r = prof["radius_for_share"]
    assert 0 < r["0.5"] < r["0.9"] < r["0.99"]
    point = np.zeros((21, 21))
    point[10, 10] = 1
    assert radial_profile(point)["cumulative"][0] == pytest.approx(1.0)


def test_format_table():
    rows = [("m", [AreaRatio(0.2, 103, 0.0101), AreaRatio(0.99, None, None)])]
    text = format_table(rows)
    assert "t=20%" in text and "1.0 (103 px)" in text and "none" in text
    assert format_table(rows, markdown=False).splitlines()[0].startswith("model")
