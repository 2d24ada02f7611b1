"""ERF against shape bias over a study's models: Spearman's rho and its bootstrap interval, checked against
scipy.stats.spearmanr computed here independently; the tiny study's table says honestly that 2 models are too few."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from erftools.results import correlation as CORR
from erftools.results import read_study

THRESHOLDS = [0.2, 0.3, 0.5, 0.99]


def craft_study(root: Path, models: list[tuple[str, float | None, dict]], name: str = "crafted") -> Path:
    """A study folder as ``erftools study`` writes it: study.json and per model an ERF and a shape-bias run
    (records only). ``models``: ``(id, shape bias or None for no run, {threshold: area ratio or None})``."""
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for mid, sb, ratios in models:
        runs = []
        if ratios:
            folder = root / mid / "erf-random"
            folder.mkdir(parents=True)
            (folder / "erf.json").write_text(json.dumps({
                "kind": "erf", "schema": 1, "complete": True, "label": mid, "size": [64, 64],
                "area_ratios": [{"threshold": t, "side": None if r is None else 8, "area_ratio": r}
                                for t, r in ratios.items()]}))
            yy, xx = np.mgrid[-32:32, -32:32]
            np.save(folder / "erf.npy", np.exp(-(xx ** 2 + yy ** 2) / 32.0).astype(np.float32))  # a map to draw
            runs.append(f"{mid}/erf-random")
        if sb is not None:
            folder = root / mid / "shape-bias"
            folder.mkdir(parents=True)
            (folder / "summary.json").write_text(json.dumps({
                "kind": "shape-bias", "schema": 1, "complete": True, "label": mid, "shape_bias": sb}))
            runs.append(f"{mid}/shape-bias")
        entries.append({"id": mid, "name": mid, "label": f"Model {mid}", "runs": runs, "paper": {}})
    (root / "study.json").write_text(json.dumps({
        "kind": "study", "schema": 1, "name": name, "title": "", "models": entries, "rows": [],
        "measurements": {"erf": {"thresholds": THRESHOLDS, "samplers": ["random"]}, "shape_bias": {"precision": "fp32"}}}))
    return root


def _independent_bootstrap(x, y, n_boot, seed):
    """The documented resampling, with scipy.stats.spearmanr on every resample (no code of the module)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    vals = []
    for row in idx:
        xs, ys = np.asarray(x)[row], np.asarray(y)[row]
        if len(set(xs)) < 2 or len(set(ys)) < 2:
            continue
        vals.append(stats.spearmanr(xs, ys).statistic)
    return np.quantile(vals, [0.025, 0.975]), len(vals)


def _models(rng, n):
    out = []
    for i in range(n):
        sb = float(rng.uniform(0.1, 0.6))
        ratios = {t: float(np.clip(0.4 * sb + rng.normal(0, 0.05) + t / 10, 0.001, 1)) for t in THRESHOLDS}
        out.append((f"m{i:02d}", sb, ratios))
    return out


def test_rho_and_interval_equal_scipy(tmp_path):
    rng = np.random.default_rng(7)
    models = _models(rng, 9)
    models[3][2][0.5] = models[4][2][0.5]  # a tie in the area ratio
    models[5] = (models[5][0], models[6][1], models[5][2])  # a tie in the shape bias
    models[2][2][0.99] = None  # no square holds 99%: left out at that threshold
    study = read_study(craft_study(tmp_path / "s", models))
    cors = {c.threshold: c for c in CORR.study_correlations(study, n_boot=2000, seed=3)}
    for t in THRESHOLDS:
        have = [m for m in models if m[2][t] is not None]
        x, y = [m[2][t] for m in have], [m[1] for m in have]
        ref = stats.spearmanr(x, y)
        c = cors[t]
        assert c.n == len(have) == (8 if t == 0.99 else 9)
        assert c.rho == pytest.approx(ref.statistic, abs=1e-12)
        assert c.p_value == pytest.approx(ref.pvalue, rel=1e-9)
        ci, valid = _independent_bootstrap(x, y, 2000, 3)
        assert c.n_boot_valid == valid
        assert c.ci95 == pytest.approx(list(ci), abs=1e-12)
    assert "Model m02" in cors[0.99].note and "left out" in cors[0.99].note


def test_a_perfect_ranking_and_undefined_cases(tmp_path):
    mono = [(f"m{i}", 0.1 * i, {t: 0.01 * i * i for t in THRESHOLDS}) for i in range(1, 6)]
    c = CORR.study_correlations(read_study(craft_study(tmp_path / "a", mono)), n_boot=500)[0]
    assert c.rho == pytest.approx(1.0) and c.ci95 == pytest.approx([1.0, 1.0])
    flat = [(f"m{i}", 0.3, {t: 0.01 * i for t in THRESHOLDS}) for i in range(1, 5)]
    c = CORR.study_correlations(read_study(craft_study(tmp_path / "b", flat)))[0]
    assert c.rho is None and c.ci95 is None and "same shape bias" in c.note
    two = mono[:2] + [("m9", None, {t: 0.1 for t in THRESHOLDS}), ("m8", 0.4, {})]
    study = read_study(craft_study(tmp_path / "c", two))
    c = CORR.study_correlations(study)[0]
    assert c.n == 2 and c.rho is None and "at least 3 models" in c.note
    _, left_out = CORR.study_points(study)
    assert any("Model m9" in x and "shape bias" in x for x in left_out)
    assert any("Model m8" in x and "ERF" in x for x in left_out)
    text = CORR.markdown(study)
    assert "a rank correlation needs at least 3 models" in text and "Not in the correlation" in text


def test_the_dashboard_rows_are_text(tmp_path):
    study = read_study(craft_study(tmp_path / "d", _models(np.random.default_rng(1), 4)))
    rows = CORR.correlation_rows(CORR.study_correlations(study, n_boot=200))
    assert [r["threshold"] for r in rows] == ["20%", "30%", "50%", "99%"]
    assert all(isinstance(v, str) for r in rows for v in r.values())
    points = CORR.point_rows(study)
    assert len(points) == 4 and points[0]["r @ 20% (%)"] != "n/a"


def test_tiny_study_shows_the_correlation_table(reference_run):
    """The suite's two-model study: its study.md and report say the correlation is undefined with 2 models."""
    root, _ = reference_run
    table = (root / "study.md").read_text()
    assert "## ERF against shape bias" in table
    assert "a rank correlation needs at least 3 models with both measurements, this has 2" in table
    assert "ResNet-18 (random)" in table.split("## ERF against shape bias")[1]
    assert (root / "figures" / "erf_vs_shape_bias_tiny.png").stat().st_size > 1000
    report = (root / "report.md").read_text()
    assert "### ERF against shape bias" in report and "this has 2" in report


def test_the_builtin_study_names_models_that_exist():
    """erf-vs-shape-bias: at least 15 models of the families the issue names; every timm name exists in the
    installed timm with the written weight tag (an ImageNet-1k head); registry names resolve (UniRepLKNet once it
    is registered: until then --dry-run lists it as missing)."""
    import timm

    from erftools.models._registry import REGISTRY
    from erftools.study import load_study

    study = load_study("erf-vs-shape-bias")
    assert len(study.models) >= 15 and study.erf.num_images == 50 and study.erf.size == 1024
    assert study.shape_bias is not None and study.shape_bias.allow_incomplete is False
    names = [m.name for m in study.models]
    for family in ("resnet", "convnext", "replknet", "unireplknet", "swin", "vit", "mambaout", "inception_next"):
        assert any(n.lower().startswith(family) for n in names), family
    for m in study.models:
        if m.name.lower() in REGISTRY or m.name.lower().startswith("unireplknet"):
            continue
        assert timm.is_model(m.name), m.name
        assert f"{m.name}.{m.weights}" in timm.list_pretrained(f"{m.name}.*"), (m.name, m.weights)
        assert timm.get_pretrained_cfg(f"{m.name}.{m.weights}").num_classes == 1000
        assert timm.get_pretrained_cfg(m.name).tag  # timm has a default pretrained tag for it
