"""ERF statistics on synthetic matrices whose answers are known in closed form."""
import json
import math

import numpy as np
import pytest

from erftools.erf.analysis import EmptyErfWarning
from erftools.erf.statistics import centre_of_mass, contribution_radii, erf_statistics, gaussian_fit

N = 129  # centre (64, 64)


def _gaussian(x0, y0, s_major, s_minor, angle_deg, n=N, amp=3.0):
    """amp * exp(-d^T C^-1 d / 2) with C = R diag(s_major^2, s_minor^2) R^T, R the rotation by angle_deg."""
    yy, xx = np.indices((n, n)).astype(np.float64)
    t = math.radians(angle_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    cov = rot @ np.diag([s_major ** 2, s_minor ** 2]) @ rot.T
    p = np.linalg.inv(cov)
    dx, dy = xx - x0, yy - y0
    return amp * np.exp(-0.5 * (p[0, 0] * dx * dx + 2 * p[0, 1] * dx * dy + p[1, 1] * dy * dy)), cov


def _box(half=20, n=N):
    m = np.zeros((n, n))
    m[n // 2 - half:n // 2 + half + 1, n // 2 - half:n // 2 + half + 1] = 1.0
    return m


# The fits below are of noise-free samples of the model itself, so least squares recovers the parameters up to
# its convergence tolerance (~1e-9 relative); 1e-5 leaves room for any BLAS / thread count.
FIT = 1e-5


def test_isotropic_gaussian():
    m, _ = _gaussian(64, 64, 6.0, 6.0, 0.0)
    g = gaussian_fit(m)
    assert g["ok"] and g["r2"] == pytest.approx(1.0, abs=1e-9)
    for key, value in (("sigma_x", 6), ("sigma_y", 6), ("sigma_major", 6), ("sigma_minor", 6), ("centre_x", 64),
                       ("centre_y", 64), ("amplitude", 3)):
        assert g[key] == pytest.approx(value, rel=FIT), key
    assert g["orientation_deg"] is None  # isotropic: no direction
    com = centre_of_mass(m)
    assert com["offset"] == pytest.approx(0.0, abs=1e-9)
    # continuous answer r_p = sigma * sqrt(-2 ln(1 - p)); the matrix counts whole pixels (centres inside the disc),
    # which moves the radius by less than half a pixel
    radii = contribution_radii(m)
    for p in (0.5, 0.9, 0.99):
        assert radii[str(p)] == pytest.approx(6.0 * math.sqrt(-2 * math.log(1 - p)), abs=0.5)


def test_shifted_gaussian():
    m, _ = _gaussian(70.5, 58.25, 5.0, 5.0, 0.0)
    com = centre_of_mass(m)
    # a sampled Gaussian's mean is the continuous one (the tails cut at the border weigh < 1e-20)
    assert com["x"] == pytest.approx(70.5, abs=1e-6) and com["y"] == pytest.approx(58.25, abs=1e-6)
    assert com["offset_x"] == pytest.approx(6.5, abs=1e-6) and com["offset_y"] == pytest.approx(-5.75, abs=1e-6)
    assert com["offset"] == pytest.approx(math.hypot(6.5, 5.75), abs=1e-6)
    g = gaussian_fit(m)
    assert g["centre_x"] == pytest.approx(70.5, rel=FIT) and g["centre_y"] == pytest.approx(58.25, rel=FIT)
    # radii are measured from the image centre, not the Gaussian's: the shift makes them larger
    assert contribution_radii(m)["0.5"] > 8.0


def test_anisotropic_rotated_gaussian():
    m, cov = _gaussian(64, 64, 10.0, 4.0, 30.0)
    g = gaussian_fit(m)
    assert g["sigma_major"] == pytest.approx(10.0, rel=FIT) and g["sigma_minor"] == pytest.approx(4.0, rel=FIT)
    assert g["orientation_deg"] == pytest.approx(30.0, abs=1e-3)
    # marginal spreads: sqrt(10^2 cos^2 30 + 4^2 sin^2 30) and sqrt(10^2 sin^2 30 + 4^2 cos^2 30)
    assert g["sigma_x"] == pytest.approx(math.sqrt(75 + 4), rel=FIT)
    assert g["sigma_y"] == pytest.approx(math.sqrt(25 + 12), rel=FIT)
    m2, _ = _gaussian(64, 64, 10.0, 4.0, -60.0)  # major axis towards the upper right
    assert gaussian_fit(m2)["orientation_deg"] == pytest.approx(-60.0, abs=1e-3)


def test_box():
    m = _box(20)  # a uniform 41 x 41 square
    # share within radius r of a uniform square of half-side a (pixel areas: a = 20.5) is pi r^2 / (4 a^2) while
    # r <= a, so the 50 % radius is 2 a sqrt(0.5 / pi); pixel counting moves it by under half a pixel
    radii = contribution_radii(m, (0.5, 1.0))
    assert radii["0.5"] == pytest.approx(2 * 20.5 * math.sqrt(0.5 / math.pi), abs=0.5)
    assert radii["1.0"] == pytest.approx(20 * math.sqrt(2), abs=1e-12)  # the corner pixel (a distance of pixels)
    assert centre_of_mass(m)["offset"] == pytest.approx(0.0, abs=1e-12)
    g = gaussian_fit(m)
    assert g["ok"] and g["r2"] < 0.9  # a box is not a Gaussian, and R^2 says so
    stats = erf_statistics(m.astype(np.float32))
    # log10(1 + 1) / max is 1 inside the box: the 50 % square is the first odd side s with s^2 > 0.5 * 41^2: 29
    half = next(r for r in stats["area_ratios"] if r["threshold"] == 0.5)
    assert half["side"] == 29
    stats = erf_statistics(m, theoretical={"side": [41, 41], "stride": [1, 1], "target": "x", "reason": None})
    assert stats["effective_to_theoretical"]["0.5"] == pytest.approx(29 / 41)
    big = erf_statistics(m, theoretical={"side": [999, 999], "stride": [1, 1], "target": "x", "reason": None})
    assert big["effective_to_theoretical"]["0.5"] == pytest.approx(29 / 999)  # against the field, not the image


def test_statistics_dict_is_json_and_complete():
    m, _ = _gaussian(64, 64, 8.0, 5.0, 10.0)
    stats = erf_statistics(m.astype(np.float32))
    back = json.loads(json.dumps(stats))
    assert back["schema"] == 1 and back["shape"] == [N, N] and back["centre"] == [64, 64] and not back["empty"]
    assert set(back["gaussian"]) >= {"sigma_x", "sigma_y", "orientation_deg", "r2", "ok"}
    assert set(back["radii"]) == {"0.5", "0.9", "0.99"}
    assert back["theoretical_rf"] is None and back["effective_to_theoretical"] is None
    assert back["gaussian"]["orientation_deg"] == pytest.approx(10.0, abs=1e-2)  # float32 input


def test_all_zero_matrix_warns_and_is_reported_empty():
    m = np.zeros((33, 33), np.float32)
    with pytest.warns(EmptyErfWarning, match="target does not depend on the input around the centre"):
        stats = erf_statistics(m)
    assert stats["empty"] and stats["warnings"] and "all zero" in stats["warnings"][0]
    assert not stats["gaussian"]["ok"] and stats["radii"]["0.5"] is None and stats["centre_of_mass"]["x"] is None
    assert all(r["side"] is None for r in stats["area_ratios"])
    with pytest.raises(ValueError, match="shares"):
        contribution_radii(m, (0.0,))
