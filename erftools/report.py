"""``erftools report``: a Markdown report of the runs below a results folder, with figures, next to the paper.

The report holds, for the results of a study (``erftools study``), the study's comparison table; then the ERF
comparison figure and the area-ratio table (ours next to the paper's Table 10), the shape-bias plot and table (ours
next to the paper's Fig. 5 and the humans'), and the provenance of every run. Figures go to
``<folder of the report>/figures/`` and are linked with relative paths, so the report reads the same on GitHub, in
an editor, or in a copied folder.

It reads only through :mod:`erftools.results` (records, store, views) and draws only through
:mod:`erftools.figures`; it never imports the dashboard.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import quote

from . import figures as F
from ._io import save_figure, write_text
from .results import RECORD_FILES, ResultError, Run, list_runs, load_erf_matrix, md_code, md_text, slug
from .results import store as S
from .results import views as V

log = logging.getLogger(__name__)

FIGURES = "figures"
ERF_FIGURE = "erf_comparison.png"
RADIAL_FIGURE = "erf_radial_profiles.png"
GROWTH_FIGURE = "erf_growth.png"
SIZES_FIGURE = "erf_sizes.png"
LAYERS_FIGURE = "erf_layers_{}.png"
BASELINE_FIGURE = "erf_baseline_{}.png"
SB_FIGURE = "shape_bias.png"
SB_BARS = "shape_bias_bars.png"


# ----------------------------------------------------------------------------------------------------- the report
def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()


def _link(path: Path, start: Path) -> str:
    """A relative link target (percent-encoded: a folder name cannot end the link or start another)."""
    return quote(_rel(path, start))


class _Markdown(str):
    """A table cell written by us as Markdown (its parts from result files already escaped with md_text)."""


def _md_table(header: list[str], rows: list[list]) -> str:
    def cell(v) -> str:  # text from result files is shown as written, never as Markdown or HTML
        if isinstance(v, _Markdown):
            return str(v).replace("|", "\\|")
        return "" if v is None else md_text(v)

    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def _dict_table(rows: list[dict]) -> str:
    """A table of rows with the same keys (the first row's keys are the header), ending in a blank line."""
    header = list(rows[0])
    return _md_table(header, [[r[h] for h in header] for r in rows]) + "\n"


def _save(fig, path: Path, base: Path) -> str:
    """Save ``fig`` at ``path``, close it and return its link from ``base``."""
    save_figure(path, fig, dpi=100)
    F.close(fig)
    return _link(path, base)


def _figure(fig, path: Path, base: Path, alt: str) -> str:
    return f"![{alt}]({_save(fig, path, base)})\n"


def build_report(results: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the Markdown report ``out`` (and its figures) for the runs below ``results``; return ``out``."""
    results = Path(results)
    out = Path(out)
    if not results.is_dir():
        raise ResultError(f"results folder {results} does not exist")
    listing = list_runs(results)
    if not listing.erf and not listing.shape_bias:
        raise ResultError(f"no finished ERF or shape-bias run below {results}; write some with `erftools erf` "
                          "or `erftools shape-bias` first")
    figdir = out.parent / FIGURES
    base = out.parent
    parts = ["# erftools report\n",
             f"Results: {md_code(_rel(results, base))} ({len(listing.erf)} ERF runs, {len(listing.shape_bias)} "
             "shape-bias runs), written by `erftools report`. Reference: Ding et al., "
             "*Scaling Up Your Kernels to 31x31* (RepLKNet, CVPR 2022).\n"]
    if listing.problems or listing.incomplete or listing.interrupted:
        parts.append("> **Skipped:** " + "; ".join(
            [md_text(p.replace(str(results.resolve()), ".")) for p in listing.problems]
            + [f"{md_code(_rel(r.path, base))} is unfinished" for r in listing.incomplete]
            + [(f"{md_code(_rel(i.path, base))} is a failed {i.kind} run ({md_text(i.failed)}; the same command "
                "fails again until this is fixed)") if i.failed else
               f"{md_code(_rel(i.path, base))} is an interrupted {i.kind} run (the same command continues it)"
               for i in listing.interrupted]) + "\n")
    provenance: list[tuple[str, Run]] = []
    parts += _study_sections(results, base)
    if listing.erf:
        parts.append(_erf_section(V.main_erf_runs(listing.erf), figdir, base, provenance))
    if listing.shape_bias:
        parts.append(_shape_bias_section(listing.shape_bias, figdir, base, provenance))
    parts.append(_provenance_section(provenance, base))
    write_text(out, "\n".join(parts))
    return out


def _study_sections(results: Path, base: Path) -> list[str]:
    """A short section per study below ``results`` (``erftools study``): title, reference, tolerances and the
    comparison table; a study.json that cannot be read becomes a problem line."""
    studies, problems = S.find_studies(results)
    parts = []
    for study in studies:
        lines = [f"## Study {md_text(study.name)}" + (f": {md_text(study.title)}" if study.title else "") + "\n"]
        if study.reference:
            lines.append(f"Reference: {md_text(study.reference)}\n")
        lines.append(f"Folder {md_code(_rel(study.path, base))}. Tolerances (|ours - paper| <= max(abs, rel x "
                     f"paper)): {md_text(V.study_tolerances(study))}.\n")
        header = ["model", "measurement", "value", "ours", "paper", "difference", "tolerance", "verdict"]
        cells = [[r[h] for h in header[:-1]] + [r["verdict"] + (f" ({r['note']})" if r["note"] else "")]
                 for r in V.study_table(study)]
        lines.append(_md_table(header, cells) + "\n")
        lines.append(_correlation_part(study, base / FIGURES, base))
        parts.append("\n".join(lines))
    return parts + [f"> **Study skipped:** {md_text(p.replace(str(results.resolve()), '.'))}\n" for p in problems]


def _erf_section(runs: list[Run], figdir: Path, base: Path, provenance: list) -> str:
    panels, curves, good, errors = [], [], [], []
    try:
        table = V.paper_table10()
    except ResultError as exc:
        errors.append(str(exc))
        table = {"models": []}
    for run in runs:
        title = V.run_title(run)
        try:
            m, f = load_erf_matrix(run, max_side=512)
        except ResultError as exc:
            errors.append(str(exc))
            continue
        panels.append(F.ErfPanel(title, m, f))
        prof = V.radial_profile(run.record, m, f)
        if prof is not None:
            curves.append((title, prof[0], prof[1]))
        provenance.append((title, run))
        good.append((title, run))
    ours_rows = [[row.title] + [_table10_cell(row, t) for t in V.THRESHOLDS] + [row.paper_model or "not in Table 10"]
                 for row in V.table10_rows(good, table)]
    lines = ["## Effective receptive fields\n"]
    if panels:
        lines.append(_figure(F.erf_comparison(panels, thresholds=V.THRESHOLDS, panel_size=3.2), figdir / ERF_FIGURE,
                             base, "ERF comparison"))
        note = (" The committed examples store the matrices block-summed for display, so the squares in the figure "
                "are drawn on that coarser grid; the table's numbers were computed at full resolution."
                if any(p.downsample > 1 for p in panels) else "")
        thresholds = ", ".join(f"{t:.0%}" for t in V.THRESHOLDS[:-1]) + f" and {V.THRESHOLDS[-1]:.0%}"
        lines.append("*Log-normalised ERF maps (log10(M + 1) / max) on one colour scale, with the high-contribution "
                     f"squares at t = {thresholds} (inner to outer).{note}*\n")
    if any(V.is_untrained(run.record) for _, run in good):
        lines.append("> Runs marked *(random init)* are **untrained architectures**: their maps show what the "
                     "architecture alone does. The paper's numbers are for trained models.\n")
    lines.append("### Area ratio r (%) of the high-contribution square: ours (side) / paper Table 10\n")
    lines.append(_md_table(["model"] + [f"t = {t:.0%}" for t in V.THRESHOLDS] + ["paper model"], ours_rows) + "\n")
    if curves:
        lines.append(_figure(F.radial_profiles(curves), figdir / RADIAL_FIGURE, base, "radial profiles"))
        lines.append("*Share of the total contribution within a distance of the centre.*\n")
    lines += _layers_part(good, figdir, base, errors)
    lines += _sizes_part(good, figdir, base)
    lines += _statistics_part(good, errors)
    lines += _baseline_part(good, figdir, base, errors)
    lines += [f"> **Problem:** {md_text(e)}\n" for e in errors]
    return "\n".join(lines)


def _table10_cell(row: V.Table10Row, t: float) -> str:
    ours = V.ratio_text(row.sides.get(t), row.ours[t]) if t in row.ours else "n/a"
    return f"{ours} / {V.paper_pct(row.paper[t]) or '–'}"


def _figure_name(run: Run) -> str:
    """A figure name unique per run folder: its path below the results folder, as a slug."""
    root = run.root if run.root is not None else run.path.parent
    return slug(S.display_path(run.path, root).replace("/", "-"))


def _panel(title: str, run: Run, layer: str | None) -> F.ErfPanel:
    """The matrix of ``layer`` (None: the run's main matrix) with its theoretical receptive field."""
    m, f = S.load_layer_matrix(run, layer, max_side=256) if layer else load_erf_matrix(run, max_side=256)
    return F.ErfPanel(title, m, f, None, V.theoretical_side(V.layer_statistics(run, layer)))


def _layers_part(good: list[tuple[str, Run]], figdir: Path, base: Path, errors: list) -> list[str]:
    """Per layered run: its layers side by side (with the theoretical receptive field) and the per-layer table;
    then the growth-with-depth figure of all layered runs."""
    out: list[str] = []
    layered = []
    for title, run in good:
        try:
            names = V.layer_names(run)
            if not names:
                continue
            panels = [_panel(name, run, name) for name in names]
            thresholds = sorted(run.record.area_ratio_map()) or list(V.THRESHOLDS)
            rows = V.layer_rows(run, thresholds)
        except ResultError as exc:
            errors.append(str(exc))
            continue
        layered.append((title, run))
        if not out:
            out.append("### Layers\n")
        out.append(f"#### {md_text(title)}\n")
        path = figdir / LAYERS_FIGURE.format(_figure_name(run))
        out.append(_figure(F.erf_heatmaps(panels, scale="log", width=2.6), path, base,
                           f"ERF per layer of {md_text(title)}"))
        out.append("*Log-normalised ERF of the output of each layer on one colour scale; black dashed square: the "
                   "theoretical receptive field (clipped to the image).*\n")
        out.append(_dict_table(rows))
        out.append("*Area ratio r (%) of the high-contribution square (side in px) at each threshold the run "
                   "recorded (full resolution).*\n")
    try:
        series = V.growth_series(layered)
    except ResultError as exc:
        errors.append(str(exc))
        series = {}
    if series:
        out.append("### Growth with depth\n")
        out.append(_figure(F.layer_growth(series), figdir / GROWTH_FIGURE, base, "ERF growth with depth"))
        out.append("*Area ratio of the high-contribution square at each threshold against the layer (colour: "
                   "model, line style: threshold).*\n")
    return out


def _sizes_part(good: list[tuple[str, Run]], figdir: Path, base: Path) -> list[str]:
    """The input-size sweeps among the runs (``erftools erf --size A,B``, studies with ``size = [..]``): area ratio
    against input size, all sweeps in one figure, and a table per sweep and size."""
    series = V.size_series([run for _, run in good])
    if not series:
        return []
    out = ["### ERF against the input size\n",
           _figure(F.size_sweep(series), figdir / SIZES_FIGURE, base, "ERF area ratio against the input size"),
           "*Area ratio of the high-contribution square at each threshold against the input side (colour: model, "
           "line style: threshold); dotted with crosses: the theoretical receptive field's share of the image "
           "(clipped to it), the largest any square can reach; each size's own heatmap (erf.png in its folder) "
           "draws that field.*\n"]
    thresholds = sorted({round(float(r["threshold"]), 6) for pts in series.values() for p in pts
                         for r in p["area_ratios"]})
    rows = []
    for title, points in series.items():
        for p in points:
            got = {round(float(r["threshold"]), 6): r for r in p["area_ratios"]}
            rows.append([md_text(title), str(p["size"])] + [
                V.ratio_text(got[t].get("side"), got[t].get("area_ratio")) if t in got else "" for t in thresholds])
    out.append(_md_table(["model", "size (px)"] + [f"t = {t:.0%}" for t in thresholds], rows) + "\n")
    return out


def _statistics_part(good: list[tuple[str, Run]], errors: list) -> list[str]:
    items, without = [], []
    for title, run in good:
        try:
            found = [item for item in V.run_statistics_items(title, run) if item[2]]
        except ResultError as exc:
            errors.append(str(exc))
            continue
        items += found
        if not found:
            without.append(title)
    if not items:
        return []
    out = ["### ERF statistics\n", _dict_table(V.statistics_rows(items))]
    if without:
        out.append("No statistics recorded (runs of an erftools release before the statistics): "
                   + ", ".join(md_text(t) for t in without) + ".\n")
    out.append("\n".join(f"* **{name}**: {text}" for name, text in V.STATISTICS_HELP.items()) + "\n")
    return out


def _baseline_part(good: list[tuple[str, Run]], figdir: Path, base: Path, errors: list) -> list[str]:
    out: list[str] = []
    for title, run in good:
        if not run.record.baseline:
            continue
        try:
            untrained = S.load_baseline(run)
            layer = (V.layer_names(run) or [None])[-1]
            suffix = f", {layer}" if layer else ""
            trained = _panel(f"as run{suffix}", run, layer)
            b_layer = layer if layer in V.layer_names(untrained) else None
            baseline = _panel(f"untrained baseline{suffix}", untrained, b_layer)
            thresholds = sorted(run.record.area_ratio_map()) or list(V.THRESHOLDS)
            rows = [r.cells(thresholds) for r in V.baseline_rows(run)]
        except ResultError as exc:
            errors.append(str(exc))
            continue
        if not out:
            out.append("### Trained and untrained\n")
            out.append("The same architecture with seeded random initialisation (`erftools erf --baseline random`), "
                       "measured in the same run on the same images.\n")
        out.append(f"#### {md_text(title)}\n")
        out.append(_figure(F.trained_untrained(trained, baseline), figdir / BASELINE_FIGURE.format(_figure_name(run)),
                           base, f"ERF baseline of {md_text(title)}"))
        out.append(_dict_table(rows))
    return out


SB_COLUMNS = ["decision maker", "shape bias", "95% CI", "fraction shape", "fraction texture", "paper Fig. 5", "trials"]


def _sb_cells(row: V.ShapeBiasRow) -> list:
    cells = row.cells()
    out = [cells[c] for c in SB_COLUMNS]
    if out[2]:  # the interval is numbers we formatted: shown as [lo, hi], not escaped
        out[2] = _Markdown(out[2])
    return out


def _shape_bias_section(runs: list[Run], figdir: Path, base: Path, provenance: list) -> str:
    reference = V.shapebias_reference()
    titled = [(V.run_title(run), run) for run in V.shape_bias_order(runs)]
    provenance.extend(titled)
    lines_ = [V.shape_bias_row(title, run, reference) for title, run in titled]
    rows = [_sb_cells(row) for row in lines_]
    humans_sb = next((row.shape_bias for row in lines_ if V.is_human(row.kind)), None)
    for name, item in reference.get("paper", {}).items():
        label = name.replace("(paper)", "(paper Fig. 5)") if "(paper)" in name else f"{name} (paper Fig. 5)"
        rows.append([label, V.f3(item.get("shape_bias")), "", "", "", "", ""])
    first_human = next(iter(reference.get("humans", {}).items()), None)
    if humans_sb is None and first_human is not None:
        lines_.append(V.reference_row(*first_human))
        humans_sb = lines_[-1].shape_bias
        rows.append([f"{first_human[0]} (reference)", V.f3(humans_sb), "", "", "", "", ""])
    out = ["## Shape bias on cue-conflict images\n"]
    if lines_:
        out.append(_figure(F.shape_bias_plot(lines_), figdir / SB_FIGURE, base, "shape bias"))
        out.append("*Per category: shape decisions / (shape + texture decisions). Vertical lines: the pooled "
                   "shape bias of each decision maker.*\n")
        out.append(_figure(F.shape_bias_bars(lines_), figdir / SB_BARS, base, "shape bias with 95% intervals"))
    if humans_sb is not None:
        out.append(f"Humans (pooled): shape bias **{float(humans_sb):.3f}**.\n")
    out.append(_md_table(SB_COLUMNS, rows) + "\n")
    out.append(_consistency_part(titled, figdir, base))
    return "\n".join(out)


def _provenance_section(provenance: list[tuple[str, Run]], base: Path) -> str:
    out = ["## Provenance\n", "Every number above comes from these run folders (their records hold the full "
           "details: image lists, timings, library versions).\n"]
    for title, run in provenance:
        out.append(f"### {md_text(title)} ({run.kind})\n")
        out.append(f"Folder: [{md_text(_rel(run.path, base))}]({_link(run.path, base)}/{RECORD_FILES[run.kind]})\n")
        out.append(_md_table(["field", "value"], [[k, _Markdown(md_code(v)) if "sha256" in k else v]
                                                  for k, v in V.provenance(run.record).items()]) + "\n")
    return "\n".join(out)


# ------------------------------------------------------------------ error consistency; ERF against shape bias
EC_FIGURE = "error_consistency.png"
EC_MATRIX = "error_consistency_matrix.png"
CORR_FIGURE = "erf_vs_shape_bias_{}.png"


def _consistency_part(runs: list[tuple[str, Run]], figdir: Path, base: Path) -> str:
    """Each run's mean kappa with the human observers next to the human ceiling, and the kappa matrix."""
    from .results import consistency as EC

    view = EC.matrix_of(runs)
    rows = EC.summary_rows(runs, view)
    if not rows:
        return ""
    out = ["### Error consistency with humans\n",
           "Cohen's kappa of trial-by-trial correctness (correct = the shape category), trials aligned by stimulus, "
           "as model-vs-human's ErrorConsistency; the human ceiling is each observer's mean kappa with the other "
           "observers.\n"]
    makers = [r for r in rows if r.kind != "humans"]
    ceiling = next((r.ceiling for r in rows if r.ceiling is not None), None)
    if makers:
        fig = F.error_consistency_bars([r.name for r in makers], [r.kappa_mean for r in makers], ceiling,
                                       [list(r.per_observer.values()) for r in makers])
        out.append(_figure(fig, figdir / EC_FIGURE, base, "error consistency with humans"))
    out.append(_dict_table([r.cells() for r in rows]))
    out.append(_figure(F.error_consistency_matrix(view.labels, view.matrix, view.humans), figdir / EC_MATRIX, base,
                       "error-consistency matrix"))
    out += [f"> **Skipped:** {md_text(p)}\n" for p in view.problems]
    return "\n".join(out)


def _correlation_part(study, figdir: Path, base: Path) -> str:
    """A study measuring both: the scatter plot of r(t) against shape bias and the correlation tables."""
    from .results import correlation as CORR

    correlations = CORR.study_correlations(study)
    points, _ = CORR.study_points(study)
    figure = (_save(F.erf_vs_shape_bias(points, correlations, study.thresholds),
                    figdir / CORR_FIGURE.format(slug(study.name)), base) if points else None)
    return CORR.markdown(study, correlations, figure).replace("## ERF against shape bias",
                                                              "### ERF against shape bias", 1)
