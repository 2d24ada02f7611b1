"""Dashboard sections for error consistency (Shape-bias page) and ERF against shape bias (Study page).

Everything is read through :mod:`erftools.results` (records, decisions files inside the results folder) and drawn
through :mod:`erftools.figures`; text from result files is shown as text.
"""
from __future__ import annotations

import streamlit as st

from .. import figures as F
from .. import results as R
from ..results import ResultError, Run, md_text
from ..results import consistency as EC
from ..results import correlation as CORR
from . import cache_stamp, run_folders


@st.cache_data(max_entries=16, show_spinner=False)
def _view(keys: tuple) -> tuple[bytes, list, bytes | None, list]:
    """The kappa matrix figure, the table rows, the bars figure and the problems of the chosen runs."""
    runs = [(title, R.load_run(folder, R.SB_KIND, root=root)) for title, folder, root, _ in keys]
    view = EC.matrix_of(runs)
    matrix_png = F.png_bytes(F.error_consistency_matrix(view.labels, view.matrix, view.humans), dpi=90)
    rows = EC.summary_rows(runs, view)
    makers = [r for r in rows if r.kind != R.HUMANS]
    bars = None
    if makers:
        ceiling = next((r.ceiling for r in rows if r.ceiling is not None), None)
        bars = F.png_bytes(F.error_consistency_bars([r.name for r in makers], [r.kappa_mean for r in makers],
                                                    ceiling, [list(r.per_observer.values()) for r in makers]),
                           dpi=90)
    return matrix_png, [r.cells() for r in rows], bars, view.problems


def error_consistency_section(chosen: list[tuple[str, Run]]) -> None:
    """The kappa matrix of the chosen decision makers and the human observers, and each one's mean kappa with
    the observers against the human ceiling."""
    if not chosen:
        return
    st.subheader("Error consistency with humans")
    st.caption("Cohen's kappa of trial-by-trial correctness (a trial is correct when the decision is the shape "
               "category), trials aligned by stimulus, as model-vs-human's ErrorConsistency; 0 = independent "
               "errors, 1 = identical. The human ceiling: each observer's mean kappa with the other observers.")
    try:
        keys = tuple((t, *run_folders(run), cache_stamp(run.path / R.SB_DECISIONS)) for t, run in chosen)
        matrix_png, rows, bars, problems = _view(keys)
    except ResultError as exc:
        st.warning(md_text(exc))
        return
    for msg in problems:
        st.warning(md_text(msg))
    with st.container(key="error-consistency"):
        left, right = st.columns([3, 2])
        with left:
            st.image(matrix_png, caption="kappa matrix of the chosen decision makers and the human observers "
                                         "(observers' names in red)")
        with right:
            if bars is not None:
                st.image(bars, caption="mean kappa with the human observers (dots: each observer); red line: "
                                       "the human ceiling")
        st.dataframe(rows, hide_index=True, width="stretch")


@st.cache_data(max_entries=8, show_spinner=False)
def _scatter_png(points: tuple, correlations: tuple, thresholds: tuple) -> bytes:
    pts: dict = {}
    for model, label, sampler, sb, ratios in points:
        pts.setdefault(sampler, []).append(CORR.ModelPoint(model, label, sampler, sb, dict(ratios)))
    cors = [CORR.Correlation(s, t, n, rho, None, list(ci) if ci else None) for s, t, n, rho, ci in correlations]
    return F.png_bytes(F.erf_vs_shape_bias(pts, cors, list(thresholds)), dpi=90)


def correlation_section(study) -> None:
    """A study measuring both: each model's r(t) against its shape bias, a scatter plot, Spearman's rho."""
    m = study.measurements or {}
    if not (m.get("erf") and m.get("shape_bias")):
        return
    st.subheader("ERF against shape bias")
    points, left_out = CORR.study_points(study)
    correlations = CORR.study_correlations(study)
    with st.container(key="study-correlation"):
        if points:
            key_points = tuple((p.model, p.label, p.sampler, p.shape_bias, tuple(sorted(p.area_ratios.items())))
                               for ps in points.values() for p in ps)
            key_cors = tuple((c.sampler, c.threshold, c.n, c.rho, tuple(c.ci95) if c.ci95 else None)
                             for c in correlations)
            st.image(_scatter_png(key_points, key_cors, tuple(study.thresholds)),
                     caption="each model's ERF area ratio r(t) against its shape bias; title: Spearman's rho and "
                             "its 95% bootstrap interval over models")
            st.dataframe(CORR.point_rows(study), hide_index=True, width="stretch")
        st.markdown("**Spearman rank correlation of r(t) and shape bias over models** (scipy; 95% percentile "
                    f"bootstrap over models, {CORR.N_BOOT} resamples)")
        st.dataframe(CORR.correlation_rows(correlations), hide_index=True, width="stretch")
        if left_out:
            st.caption("Not in the correlation: " + md_text("; ".join(left_out)))
