"""``erftools report``: a Markdown report of the runs below a results folder, with figures, next to the paper.

The report holds the ERF comparison figure and the area-ratio table (ours next to the paper's Table 10), the
shape-bias plot and table (ours next to the paper's Fig. 5 and the humans'), and the provenance of every run.
Figures go to ``<folder of the report>/figures/`` and are linked with relative paths, so the report reads the
same on GitHub, in an editor, or in a copied folder.

It also has :func:`shrink_erf_run`, which block-sums a run's ``erf.npy`` for display (the committed examples),
keeping the full-resolution numbers already in its record.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import quote

import numpy as np

from . import results as R
from ._io import save_figure, save_npy, write_json, write_text
from .dashboard import data as D
from .dashboard import figures as F
from .results import ResultError, Run, md_code, md_text, plot_text

log = logging.getLogger(__name__)

FIGURES = "figures"
ERF_FIGURE = "erf_comparison.png"
RADIAL_FIGURE = "erf_radial_profiles.png"
SB_FIGURE = "shape_bias.png"
SB_BARS = "shape_bias_bars.png"


# ----------------------------------------------------------------------------------------------- shrinking runs
def shrink_erf_run(folder: str | os.PathLike, side: int = 256, figure: bool = True,
                   root: str | os.PathLike | None = None) -> int:
    """Block-sum ``erf.npy`` of an ERF run folder to at most ``side`` pixels a side, in place; return the factor.

    ``stored_downsample`` in ``erf.json`` is multiplied by the factor; the record's area ratios and radial profile
    (computed at full resolution) are kept. With ``figure`` the run's ``erf.png`` is redrawn small from the result.
    The record and the matrix are read only from inside ``root`` (default: the run folder itself), so a link to a
    file elsewhere is refused rather than copied into the folder.
    """
    folder = Path(folder)
    root = folder if root is None else Path(root)
    record = R.read_record(folder, "erf", root=root)
    run = Run("erf", folder, record, root=root)
    matrix = run.file(R.ERF_MATRIX)
    try:
        arr = np.load(matrix, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ResultError(f"{folder}: {R.ERF_MATRIX} is missing or unreadable ({exc})") from exc
    if arr.ndim != 2:
        raise ResultError(f"{folder}: {R.ERF_MATRIX} is not a 2-D matrix")
    f = 1
    while max(arr.shape) // f > side and arr.shape[0] % (2 * f) == 0 and arr.shape[1] % (2 * f) == 0:
        f *= 2
    if f > 1:
        small = D.block_reduce(arr.astype(np.float64), f).astype(np.float32)
        old = int(record.get("stored_downsample") or 1)
        record["stored_downsample"] = old * f
        record["complete"] = False  # a reader never sees the new matrix with the old factor as complete
        write_json(folder / R.ERF_RECORD, record)
        save_npy(folder / R.ERF_MATRIX, small)
        record["complete"] = True
        write_json(folder / R.ERF_RECORD, record)
    if figure:
        m, g = D.load_erf_matrix(Run("erf", folder, record, root=root))
        from .erf.plots import plot_erf

        plot_erf(m, title=plot_text(D.run_title(run)), path=folder / R.ERF_FIGURE, figsize=(4.0, 4.4), dpi=80)
    return f


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


def _pct(v) -> str:
    """An area ratio in percent: one decimal, more for the tiny squares of untrained ResNets."""
    if v is None:
        return "none"
    v = 100 * float(v)
    return f"{v:.1f}" if v >= 0.1 or v == 0 else f"{v:.3f}"


def _f3(v) -> str:
    try:
        return "" if v is None else f"{float(v):.3f}"
    except (TypeError, ValueError):
        return str(v)


def build_report(results: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the Markdown report ``out`` (and its figures) for the runs below ``results``; return ``out``."""
    results = Path(results)
    out = Path(out)
    if not results.is_dir():
        raise ResultError(f"results folder {results} does not exist")
    listing = D.list_runs(results)
    if not listing.erf and not listing.shape_bias:
        raise ResultError(f"no finished ERF or shape-bias run below {results}; write some with `erftools erf` "
                          "or `erftools shape-bias` first")
    figdir = out.parent / FIGURES
    base = out.parent
    parts = ["# erftools report\n",
             f"Results: {md_code(_rel(results, base))} ({len(listing.erf)} ERF runs, {len(listing.shape_bias)} "
             "shape-bias runs), written by `erftools report`. Reference: Ding et al., "
             "*Scaling Up Your Kernels to 31x31* (RepLKNet, CVPR 2022).\n"]
    if listing.problems or listing.incomplete:
        parts.append("> **Skipped:** " + "; ".join(
            [md_text(p.replace(str(results.resolve()), ".")) for p in listing.problems]
            + [f"{md_code(_rel(r.path, base))} is unfinished" for r in listing.incomplete]) + "\n")
    provenance: list[tuple[str, Run]] = []
    if listing.erf:
        parts.append(_erf_section(listing.erf, figdir, base, provenance))
    if listing.shape_bias:
        parts.append(_shape_bias_section(listing.shape_bias, figdir, base, provenance))
    parts.append(_provenance_section(provenance, base))
    write_text(out, "\n".join(parts))
    return out


def _erf_section(runs: list[Run], figdir: Path, base: Path, provenance: list) -> str:
    panels, curves, ours_rows, errors = [], [], [], []
    try:
        table = D.paper_table10()
    except ResultError as exc:
        errors.append(str(exc))
        table = {"models": []}
    untrained = False
    for run in runs:
        title = D.run_title(run)
        try:
            m, f = D.load_erf_matrix(run, max_side=512)
            panels.append(F.ErfPanel(title, m, f))
            prof = D.radial_profile(run.record, m, f)
            if prof is not None:
                curves.append((title, prof[0], prof[1]))
        except ResultError as exc:
            errors.append(str(exc))
            continue
        untrained |= D.is_untrained(run.record)
        provenance.append((title, run))
        rec = D.recorded_area_ratios(run.record)
        sides = D.recorded_sides(run.record)
        paper = D.paper_erf_entry(run.record, table)
        row = [title]
        for t in D.THRESHOLDS:
            pv = (paper or {}).get("area_ratio_percent", {}).get(str(t))
            ours = _pct(rec[t]) if t in rec else "n/a"
            if sides.get(t):
                ours += f" ({sides[t]} px)"
            row.append(f"{ours} / {'–' if pv is None else f'{pv:.1f}'}")
        row.append(paper["name"] if paper else "not in Table 10")
        ours_rows.append(row)
    lines = ["## Effective receptive fields\n"]
    if panels:
        from .erf.plots import plot_comparison

        fig = plot_comparison([p.matrix for p in panels], [plot_text(p.title) for p in panels],
                              thresholds=D.THRESHOLDS, panel_size=3.2)
        save_figure(figdir / ERF_FIGURE, fig, dpi=100)
        lines.append(f"![ERF comparison]({_link(figdir / ERF_FIGURE, base)})\n")
        note = (" The committed examples store the matrices block-summed for display, so the squares in the figure "
                "are drawn on that coarser grid; the table's numbers were computed at full resolution."
                if any(p.downsample > 1 for p in panels) else "")
        lines.append("*Log-normalised ERF maps (log10(M + 1) / max) on one colour scale, with the high-contribution "
                     f"squares at t = 20%, 30%, 50% and 99% (inner to outer).{note}*\n")
    if untrained:
        lines.append("> Runs marked *(random init)* are **untrained architectures**: their maps show what the "
                     "architecture alone does. The paper's numbers are for trained models.\n")
    lines.append("### Area ratio r (%) of the high-contribution square: ours (side) / paper Table 10\n")
    lines.append(_md_table(["model"] + [f"t = {t:.0%}" for t in D.THRESHOLDS] + ["paper model"], ours_rows) + "\n")
    if curves:
        fig = F.radial_profiles(curves)
        save_figure(figdir / RADIAL_FIGURE, fig, dpi=100)
        F.close(fig)
        lines.append(f"![radial profiles]({_link(figdir / RADIAL_FIGURE, base)})\n")
        lines.append("*Share of the total contribution within a distance of the centre.*\n")
    for e in errors:
        lines.append(f"> **Problem:** {md_text(e)}\n")
    return "\n".join(lines)


def _shape_bias_section(runs: list[Run], figdir: Path, base: Path, provenance: list) -> str:
    reference = D.shapebias_reference()
    lines_ = []
    rows = []
    humans_sb = None
    for run in D.shape_bias_order(runs):
        rec = run.record
        title = D.run_title(run)
        kind = D.classify(run)
        try:
            sb = None if rec.get("shape_bias") is None else float(rec["shape_bias"])
            pc = D.per_category(rec)
        except (TypeError, ValueError, AttributeError) as exc:
            rows.append([title, f"malformed record ({exc})", "", "", "", "", ""])
            continue
        provenance.append((title, run))
        ci = rec.get("ci95") or [None, None]
        lines_.append(F.ShapeBiasLine(title, pc, sb, kind, tuple(ci) if ci[0] is not None else None))
        if kind == "human" and humans_sb is None:
            humans_sb = sb
        paper = D.paper_fig5_entry(rec, reference)
        ci_text = _Markdown(f"[{md_text(_f3(ci[0]))}, {md_text(_f3(ci[1]))}]") if ci[0] is not None else ""
        rows.append([title, _f3(sb), ci_text,
                     _f3(rec.get("fraction_correct_shape")), _f3(rec.get("fraction_correct_texture")),
                     f"{_f3(paper[1].get('shape_bias'))} ({paper[0]})" if paper else "", rec.get("num_trials")])
    for name, item in reference.get("paper", {}).items():
        label = name.replace("(paper)", "(paper Fig. 5)") if "(paper)" in name else f"{name} (paper Fig. 5)"
        rows.append([label, _f3(item.get("shape_bias")), "", "", "", "", ""])
    if humans_sb is None:
        for name, item in reference.get("humans", {}).items():
            humans_sb = item.get("shape_bias")
            lines_.append(F.ShapeBiasLine(name, item["per_category"], humans_sb, "human"))
            rows.append([f"{name} (reference)", _f3(humans_sb), "", "", "", "", ""])
            break
    out = ["## Shape bias on cue-conflict images\n"]
    if lines_:
        fig = F.shape_bias_plot(lines_)
        save_figure(figdir / SB_FIGURE, fig, dpi=100)
        F.close(fig)
        out.append(f"![shape bias]({_link(figdir / SB_FIGURE, base)})\n")
        out.append("*Per category: shape decisions / (shape + texture decisions). Vertical lines: the pooled "
                   "shape bias of each decision maker.*\n")
        fig = F.shape_bias_bars(lines_)
        save_figure(figdir / SB_BARS, fig, dpi=100)
        F.close(fig)
        out.append(f"![shape bias with 95% intervals]({_link(figdir / SB_BARS, base)})\n")
    if humans_sb is not None:
        out.append(f"Humans (pooled): shape bias **{float(humans_sb):.3f}**.\n")
    out.append(_md_table(["decision maker", "shape bias", "95% CI", "fraction shape", "fraction texture",
                          "paper Fig. 5", "trials"], rows) + "\n")
    return "\n".join(out)


def _provenance_section(provenance: list[tuple[str, Run]], base: Path) -> str:
    out = ["## Provenance\n", "Every number above comes from these run folders (their records hold the full "
           "details: image lists, timings, library versions).\n"]
    for title, run in provenance:
        prov = D.provenance(run.record)
        out.append(f"### {md_text(title)} ({run.kind})\n")
        out.append(f"Folder: [{md_text(_rel(run.path, base))}]({_link(run.path, base)}/{R.RECORD_FILES[run.kind]})\n")
        out.append(_md_table(["field", "value"], [[k, _Markdown(md_code(v)) if "sha256" in k else v]
                                                  for k, v in prov.items()]) + "\n")
    return "\n".join(out)
