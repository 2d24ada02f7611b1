"""The erftools dashboard (Streamlit). Run it with ``erftools dashboard`` or ``streamlit run apps/dashboard.py``.

It reads result folders written by the CLI below one results root (``$ERFTOOLS_RESULTS``, else the committed
examples) and never runs a model or downloads anything. Pages:

* **ERF**: heatmaps of the chosen models side by side on one colour scale, a threshold slider drawing the
  high-contribution square, the area-ratio table next to the paper's Table 10, the radial profiles, the metadata.
* **Shape bias**: the category-by-category plot with humans and reference CNNs, a table with confidence intervals
  and the paper's Fig. 5 values, and a browser over the cue-conflict stimuli with each model's decision.
* **Study**: a study written by ``erftools study`` as one page: title, reference and tolerances, the comparison
  table coloured by verdict, the models' ERF maps side by side with their area ratios next to the paper's, the
  shape biases next to the paper's, the paper's values, and the models the study lists without running them.
* **Runs**: every run found, unfinished runs and unreadable folders.

Any missing, partial or malformed folder becomes a message in the page; the rest keeps working.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import streamlit as st

from .. import figures as F
from .. import results as R
from ..results import ResultError, Run, md_code, md_text
from ..results import views as V
from . import ENV_STIMULI, cache_stamp, run_folders
from .consistency import correlation_section, error_consistency_section

PAGES = {"ERF": "erf", "Shape bias": "shape-bias", "Study": "study", "Runs": "runs"}
SCALES = {"log (paper)": "log", "linear": "linear"}
COLOUR_MAPS = (F.PAPER_CMAP, "RdYlGn", "viridis", "magma")
MAX_DISPLAY_SIDE = 512
ZOOMS = (1, 2, 4, 8, 16)
PAGE_SIZE = 12
#: the pooled-shape-bias bars: their smallest text (plots.BAR_LABEL_PT) is then 14 px at the image's own width
BARS_DPI = 130
#: the per-category plot's width on the page (a full-width square plot would need two screens)
SHAPE_BIAS_PLOT_PX = 720
CLASS_COLOUR = {"shape": "green", "texture": "orange", "other": "gray", "no conflict": "blue"}


# ------------------------------------------------------------------------------------------------------- caching
@st.cache_data(max_entries=128, show_spinner=False)
def _matrix(folder: str, root: str, layer: str | None, stamps: tuple) -> tuple:
    """(mean matrix, downsample, full size) of an ERF run folder below the results folder ``root``, or of its layer
    ``layer``, reduced for display; cached (the engine rewrites the record whenever it writes a layer matrix, so the
    record's stamp is a layer's key)."""
    run = R.load_run(folder, "erf", root=root)
    if layer is None:
        m, f = R.load_erf_matrix(run, max_side=MAX_DISPLAY_SIDE)
    else:
        m, f = R.store.load_layer_matrix(run, layer, max_side=MAX_DISPLAY_SIDE)
    return m, f, R.store.full_size(run, m, f)


def _key(run: Run, layer: str | None = None) -> tuple:
    """The cache key of the matrix of ``layer`` of ``run`` (None: its main matrix): folder, results folder, layer
    and the stamps of its files (a re-run invalidates the cached arrays)."""
    files = (R.ERF_MATRIX, R.ERF_RECORD) if layer is None else (R.ERF_RECORD,)
    return (*run_folders(run), layer, tuple(cache_stamp(run.path / name) for name in files))


def erf_matrix(run: Run, layer: str | None = None):
    """The display matrix of ``layer`` of ``run`` (None: the run's main matrix)."""
    return _matrix(*_key(run, layer))


@st.cache_data(max_entries=32, show_spinner=False)
def _heatmap_png(keys: tuple, titles: tuple, scale: str, threshold: float, cmap: str, zoom: int = 1,
                 theoretical: tuple = ()) -> bytes:
    """The heatmaps of the matrices named by ``keys`` (:func:`_key`), with the threshold square and, where
    ``theoretical`` gives a side, the theoretical receptive field."""
    panels = []
    for key, title, theo in zip(keys, titles, tuple(theoretical) + (None,) * (len(keys) - len(theoretical))):
        m, f, full = _matrix(*key)
        panels.append(F.ErfPanel(title, m, f, V.area_ratio_at(m, threshold, f, full)[0], theo))
    return F.png_bytes(F.erf_heatmaps(panels, scale=scale, threshold=threshold, cmap=cmap, zoom=zoom))


@st.cache_data(max_entries=16, show_spinner=False)
def _growth_png(series_json: str, thresholds: tuple) -> bytes:
    return F.png_bytes(F.layer_growth(json.loads(series_json), thresholds=thresholds or None))


@st.cache_data(max_entries=32, show_spinner=False)
def _decisions(path: str, stamp_csv: tuple):
    return V.decisions_frame(R.load_decisions(path))


@st.cache_data(max_entries=32, show_spinner=False)
def _shape_bias_png(lines: tuple, bars: bool = False) -> bytes:
    """The per-category plot, or (``bars``) the pooled-shape-bias bars, of the rows given by :func:`_line`."""
    lines = [F.ShapeBiasLine(name=name, kind=kind, shape_bias=sb, per_category=dict(pc), ci95=ci)
             for name, pc, sb, kind, ci in lines]
    if bars:
        return F.png_bytes(F.shape_bias_bars(lines), dpi=BARS_DPI)
    return F.png_bytes(F.shape_bias_plot(lines), dpi=90)


@st.cache_data(max_entries=16, show_spinner=False)
def _radial_png(curves: tuple) -> bytes:
    return F.png_bytes(F.radial_profiles([(n, np.asarray(r), np.asarray(c)) for n, r, c in curves]))


# ------------------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def guard(what: str):
    """Show a problem with one run as a message in the page and carry on with the rest."""
    try:
        yield
    except ResultError as exc:
        st.error(f"{md_text(what)}: {md_text(exc)}")
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OSError) as exc:
        st.error(f"{md_text(what)}: malformed result ({type(exc).__name__}: {md_text(exc)})")


def metadata_panel(title: str, run: Run, root: Path) -> None:
    with st.expander(f"Run metadata: {md_text(title)}"):
        st.caption(f"folder: {md_code(R.display_path(run.path, root))}")
        prov = V.provenance(run.record)
        st.dataframe({"field": list(prov), "value": [str(v) for v in prov.values()]}, hide_index=True,
                     width="stretch")  # not st.table: it renders its cells as Markdown
        st.json(run.record.to_dict(), expanded=False)


# ----------------------------------------------------------------------------------------------------- ERF page
def erf_page(listing: R.Listing, root: Path) -> None:
    st.header("Effective receptive fields")
    if not listing.erf:
        st.info(f"No finished ERF run below {md_code(R.display_path(listing.root, root))}. Write one with "
                "`erftools erf --model replknet-31B --out results/erf/replknet-31B`.")
        return
    titles = V.unique_titles(V.main_erf_runs(listing.erf), root)  # a run's untrained baseline is shown beside it
    names = list(titles)
    chosen = st.multiselect("Models", names, default=names[:4], key="erf_models")
    c1, c2, c3, c4 = st.columns([1.2, 2, 0.9, 1])
    scale = SCALES[c1.radio("Colour scale", list(SCALES), horizontal=True, key="erf_scale")]
    threshold = c2.slider("Threshold t (share of the total contribution)", 0.05, 0.99, 0.20, 0.01,
                          key="erf_threshold")
    zoom = c3.select_slider("Zoom on the centre", ZOOMS, value=1, format_func=lambda z: f"{z}x", key="erf_zoom")
    cmap = c4.selectbox("Colour map", COLOUR_MAPS, key="erf_cmap")
    show_theoretical = st.checkbox("Draw the theoretical receptive field (black dashed square, where the network "
                                   "has one)", value=True, key="erf_theoretical")
    if not chosen:
        st.info("Choose one or more models.")
        return

    good: list[tuple[str, Run]] = []
    rows = []
    for title in chosen:
        run = titles[title]
        with guard(title):
            m, f, full = erf_matrix(run)
            side, ratio = V.area_ratio_at(m, threshold, f, full)
            good.append((title, run))
            rows.append({"model": title, "weights": V.weights_text(run.record),
                         "square side (px)": "none" if side is None else side,
                         f"area ratio at t={threshold:.2f} (%)": V.pct(ratio),
                         "computed on": f"{m.shape[0]}x{m.shape[1]}" + (f" (1/{f} of {full[0]}x{full[1]})"
                                                                      if f > 1 else "")})
    if not good:
        st.warning("None of the chosen runs could be read.")
        return

    keys = tuple(_key(r) for _, r in good)
    theo = tuple(V.theoretical_side(V.layer_statistics(r)) if show_theoretical else None for _, r in good)
    png = _heatmap_png(keys, tuple(t for t, _ in good), scale, float(threshold), cmap, int(zoom), theo)
    with st.container(key="erf-heatmap"):
        st.image(png, caption=f"ERF, {'log10(M+1)/max as in the paper' if scale == 'log' else 'M/max'}; "
                              f"dashed square: the high-contribution square at t = {threshold:.0%}"
                              + (f"; central 1/{zoom} of each map" if zoom > 1 else ""))
    if any(V.is_untrained(r.record) for _, r in good):
        st.caption("Runs marked *(random init)* are untrained architectures: their maps show what the architecture "
                   "alone does; the paper's numbers are for trained models.")

    st.subheader("Area ratio of the high-contribution square")
    st.dataframe(rows, hide_index=True, width="stretch")
    if any(erf_matrix(r)[1] > 1 for _, r in good):
        st.caption("On a downsampled matrix the live square is found on the coarse grid; the recorded values "
                   "below were computed at full resolution by `erftools erf`.")
    st.markdown("**Ours next to the paper (Table 10, trained models), area ratio r in %**")
    st.dataframe(table10_rows(good), hide_index=True, width="stretch")

    curves = []
    for title, run in good:
        with guard(f"{title} radial profile"):
            m, f, _ = erf_matrix(run)
            prof = V.radial_profile(run.record, m, f)
            if prof is not None:
                curves.append((title, tuple(map(float, prof[0])), tuple(map(float, prof[1]))))
    if curves:
        st.subheader("Radial profiles")
        with st.container(key="erf-radial"):
            st.image(_radial_png(tuple(curves)),
                     caption="share of the total contribution (raw matrix) within a distance of the centre")
    view = (scale, float(threshold), cmap, int(zoom), show_theoretical)
    layered = [(t, r) for t, r in good if _has_layers(t, r)]
    if layered:
        layers_section(layered, view)
        growth_section(layered)
    sizes_section(good)
    statistics_section(good)
    baseline_section(good, view)
    st.subheader("Provenance")
    for title, run in good:
        metadata_panel(title, run, root)


def _has_layers(title: str, run: Run) -> bool:
    with guard(f"{title} layers"):
        return bool(V.layer_names(run))
    return False


def layers_section(layered: list[tuple[str, Run]], view: tuple) -> None:
    """The layer selector: the chosen layer's heatmap, the per-layer area-ratio table and the layer's statistics."""
    scale, threshold, cmap, zoom, show_theoretical = view
    st.subheader("Layers")
    st.caption("Runs of `erftools erf --layers`: the ERF of the output of each chosen layer (module name), "
               "measured with the same images.")
    c1, c2 = st.columns(2)
    title = c1.selectbox("Run", [t for t, _ in layered], key="layer_run")
    run = dict(layered)[title]
    names = V.layer_names(run)
    layer = c2.selectbox("Layer", names, index=len(names) - 1, key="erf_layer")
    stats = V.layer_statistics(run, layer)
    with guard(f"{title}, layer {layer}"):
        erf_matrix(run, layer)  # a problem with the file shows here, before the figure
        theo = (V.theoretical_side(stats) if show_theoretical else None,)
        png = _heatmap_png((_key(run, layer),), (f"{title} - {layer}",), scale, threshold, cmap, zoom, theo)
        with st.container(key="erf-layer-heatmap"):
            st.image(png, caption=f"ERF of the output of {md_text(layer)}; dashed square: the high-contribution "
                                  f"square at t = {threshold:.0%}; black: the theoretical receptive field")
    thresholds = sorted(set(V.THRESHOLDS) | set(run.record.area_ratio_map()) | {round(threshold, 6)})
    with guard(f"{title} layer table"):
        st.markdown("**Area ratio r (%) of each layer** (side of the square in px; * recomputed from the matrix: "
                    "a threshold the run did not record)")
        st.dataframe(V.layer_rows(run, thresholds), hide_index=True, width="stretch")
    st.markdown(f"**Statistics of {md_text(layer)}**")
    st.dataframe(V.statistics_rows([(title, layer, stats)]), hide_index=True, width="stretch")


@st.cache_data(max_entries=16, show_spinner=False)
def _sizes_png(series_json: str) -> bytes:
    return F.png_bytes(F.size_sweep(json.loads(series_json)))


def sizes_section(good: list[tuple[str, Run]]) -> None:
    """Input-size sweeps among the chosen runs: area ratio at each threshold against the input size."""
    with guard("ERF against the input size"):
        series = V.size_series([r for _, r in good])
        if not series:
            return
        st.subheader("ERF against the input size")
        with st.container(key="erf-sizes"):
            st.image(_sizes_png(json.dumps(series)),
                     caption="area ratio of the high-contribution square at each threshold against the input side "
                             "(colour: model, line style: threshold); dotted with crosses: the theoretical "
                             "receptive field's share of the image")
        rows = [{"model": title, "size (px)": str(p["size"]),
                 **{f"t={float(r['threshold']):.0%}": V.pct(r.get("area_ratio")) for r in p["area_ratios"]}}
                for title, points in series.items() for p in points]
        st.dataframe(rows, hide_index=True, width="stretch")


def growth_section(layered: list[tuple[str, Run]]) -> None:
    """How the ERF grows with depth: area ratio at each threshold against layer, the chosen runs overlaid."""
    with guard("growth with depth"):
        series = V.growth_series(layered)
        if not series:
            return
        st.subheader("Growth with depth")
        options = sorted({float(r["threshold"]) for pts in series.values() for _, rs in pts for r in rs})
        chosen = st.multiselect("Thresholds", options, default=options, format_func=lambda t: f"{t:.0%}",
                                key="growth_thresholds")
        if not chosen:
            st.info("Choose one or more thresholds.")
            return
        with st.container(key="erf-growth"):
            st.image(_growth_png(json.dumps(series), tuple(chosen)),
                     caption="area ratio of the high-contribution square at each threshold against the layer "
                             "(colour: model, line style: threshold)")
        rows = [{"model": title, "layer": layer, **{f"t={float(r['threshold']):.0%}": V.pct(r["area_ratio"])
                                                     for r in ratios if float(r["threshold"]) in chosen}}
                for title, points in series.items() for layer, ratios in points]
        st.dataframe(rows, hide_index=True, width="stretch")


def statistics_section(good: list[tuple[str, Run]]) -> None:
    """The ERF statistics of every chosen run (every layer of a layered run), with a line explaining each."""
    items, without = [], []
    for title, run in good:
        with guard(f"{title} statistics"):
            found = [item for item in V.run_statistics_items(title, run) if item[2]]
            items += found
            if not found:
                without.append(title)
    if not items:
        return
    st.subheader("ERF statistics")
    with st.container(key="erf-statistics"):
        st.dataframe(V.statistics_rows(items), hide_index=True, width="stretch")
        if without:
            st.caption("No statistics recorded (runs of an erftools release before the statistics): "
                       + ", ".join(md_text(t) for t in without))
        st.markdown("\n".join(f"- **{name}**: {text}" for name, text in V.STATISTICS_HELP.items()))


def baseline_section(good: list[tuple[str, Run]], view: tuple) -> None:
    """Trained and untrained side by side for the runs made with ``--baseline random``."""
    scale, threshold, cmap, zoom, show_theoretical = view
    with_baseline = [(t, r) for t, r in good if r.record.baseline]
    if not with_baseline:
        return
    st.subheader("Trained and untrained")
    st.caption("The same architecture with seeded random initialisation, measured in the same run on the same "
               "images: how much of the ERF is the architecture and how much is training.")
    for i, (title, run) in enumerate(with_baseline):
        with guard(f"{title} baseline"):
            base = R.store.load_baseline(run)
            names = V.layer_names(run)
            layer = (st.selectbox(f"Layer ({md_text(title)})", names, index=len(names) - 1, key=f"baseline_layer_{i}")
                     if names else None)
            base_layer = layer if layer in V.layer_names(base) else None
            erf_matrix(run, layer)
            erf_matrix(base, base_layer)
            theo = tuple(V.theoretical_side(V.layer_statistics(r, lay)) if show_theoretical else None
                         for r, lay in ((run, layer), (base, base_layer)))
            suffix = f", {layer}" if layer else ""
            png = _heatmap_png((_key(run, layer), _key(base, base_layer)),
                               (f"as run{suffix}", f"untrained baseline{suffix}"), scale, threshold, cmap, zoom, theo)
            with st.container(key=f"erf-baseline-{i}"):
                st.image(png, caption=f"{md_text(title)}, left: the run's weights; right: random initialisation "
                                      "(one colour scale)")
            thresholds = sorted(run.record.area_ratio_map()) or list(V.THRESHOLDS)
            st.dataframe([r.cells(thresholds) for r in V.baseline_rows(run)], hide_index=True, width="stretch")


def table10_rows(good: list[tuple[str, Run]]) -> list[dict]:
    try:
        table = V.paper_table10()
    except ResultError as exc:
        st.warning(md_text(exc))
        table = {"models": []}
    rows = []
    for r in V.table10_rows(good, table):
        row = {"model": r.title}
        for t in V.THRESHOLDS:
            row[f"ours t={t:.0%}"] = V.pct(r.ours[t]) if t in r.ours else "n/a"
            row[f"paper t={t:.0%}"] = V.paper_pct(r.paper[t])
        row["paper model"] = r.paper_model or "(not in Table 10)"
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------- shape-bias page
def _line(row: V.ShapeBiasRow) -> tuple:
    """A row as a hashable tuple (the cache key of the plots)."""
    return (row.name, tuple(sorted((k, v) for k, v in row.per_category.items() if v is not None)), row.shape_bias,
            row.kind, row.ci95)


def shape_bias_page(listing: R.Listing, root: Path) -> None:
    st.header("Shape bias on cue-conflict images")
    reference = V.shapebias_reference()
    runs = V.unique_titles(V.shape_bias_order(listing.shape_bias), root)
    names = list(runs)
    refs = {**{f"{k} (reference)": v for group in ("humans", "cnns", "other") for k, v in reference[group].items()},
            **{k if "paper" in k.lower() else f"{k} (paper)": v for k, v in reference["paper"].items()}}
    if not names and not refs:
        st.info(f"No finished shape-bias run below {md_code(R.display_path(listing.root, root))}. Write one with "
                "`erftools shape-bias --model replknet-31B --out results/shape-bias/replknet-31B`.")
        return
    default = names if len(names) <= 8 else [n for n in names if V.classify(runs[n]) != R.NETWORK][:8]
    chosen = st.multiselect("Decision makers (runs)", names, default=default, key="sb_models")
    run_keys = set().union(*(V.model_keys(runs[n].record) for n in chosen)) if chosen else set()
    featured = list(reference["humans"].values()) + list(reference["cnns"].values())
    ref_default = [k for k, v in refs.items() if any(v is f for f in featured)
                   and not ({V.norm_name(v.get("key")), V.norm_name(v.get("label"))} & run_keys)]
    chosen_refs = st.multiselect("Humans and reference networks (published decisions; paper Fig. 5 lines)",
                                 list(refs), default=ref_default, key="sb_refs")

    lines, table, chosen_runs = [], [], []
    for title in chosen:
        with guard(title):
            row = V.shape_bias_row(title, runs[title], reference)
            lines.append(_line(row))
            table.append(row.cells())
            chosen_runs.append((title, runs[title]))
    for name in chosen_refs:
        row = V.reference_row(name, refs[name])
        lines.append(_line(row))
        table.append(dict(row.cells(), **{"paper Fig. 5": ""}))
    if lines:  # one above the other: side by side the bars' labels were unreadable (7 px)
        with st.container(key="shape-bias-plot"):
            st.image(_shape_bias_png(tuple(lines)), width=SHAPE_BIAS_PLOT_PX,
                     caption="per category: shape decisions / (shape + texture decisions); vertical lines: the "
                             "pooled shape bias of each decision maker (humans in red)")
        with st.container(key="shape-bias-bars"):
            st.image(_shape_bias_png(tuple(lines), bars=True), caption="pooled shape bias with 95% bootstrap intervals")
    else:
        st.info("Choose one or more decision makers.")
    if table:
        st.subheader("Shape bias")
        humans = next(iter(reference["humans"].values()), None)
        if humans:
            st.caption(f"Humans (10 observers pooled): {humans['shape_bias']:.3f}. Confidence intervals: "
                       "bootstrap over stimuli.")
        st.dataframe(table, hide_index=True, width="stretch")
    if reference["paper"]:
        with st.expander("The paper's Fig. 5 (RepLKNet, CVPR 2022)"):
            st.dataframe([{"decision maker": k, "shape bias": V.f3(v.get("shape_bias")),
                           **{c: V.f3(v["per_category"].get(c)) for c in V.CATEGORIES}}
                          for k, v in reference["paper"].items()], hide_index=True, width="stretch")
    else:
        st.caption("The paper's Fig. 5 values are not installed (data/shapebias/published_fig5.json).")
    error_consistency_section(chosen_runs)
    for title, run in chosen_runs:
        metadata_panel(title, run, root)
    stimuli_browser(chosen_runs, root)


def stimuli_browser(chosen: list[tuple[str, Run]], root: Path) -> None:
    st.subheader("Cue-conflict stimuli and decisions")
    if not chosen:
        st.info("Choose decision makers above to browse their decisions.")
        return
    frames = {}
    for title, run in chosen:
        with guard(f"{title} decisions"):
            path = run.file(R.SB_DECISIONS)  # its real path, refused when it leads outside the results folder
            frames[title] = _decisions(str(path), cache_stamp(path))
    if not frames:
        return
    merged = V.merge_decisions(frames)
    sdir = R.stimuli_dir_for(os.environ.get(ENV_STIMULI))  # the operator's folder; never one named by a record
    c1, c2, c3 = st.columns(3)
    by = c1.selectbox("Filter by the decision of", list(frames), key="stim_by")
    cls = c2.radio("Decided by", ["all", "shape", "texture", "other", "no conflict"], horizontal=True,
                   key="stim_class")
    cat = c3.selectbox("Shape category", ["all", *V.CATEGORIES], key="stim_cat")
    rows = merged
    if cls != "all":
        rows = rows[rows[f"{by} :: class"] == cls]
    if cat != "all":
        rows = rows[rows["shape"] == cat]
    counts = merged[f"{by} :: class"].value_counts().to_dict()
    st.caption(f"{md_text(by)}: " + ", ".join(f"{k} {counts.get(k, 0)}" for k in V.DECISION_CLASSES)
               + f"; showing {len(rows)} stimuli")
    if sdir is None:
        st.info("The stimuli folder is not known, so only the decisions are listed. Start the "
                "dashboard with `erftools dashboard --stimuli DIR` (the cue-conflict folder from "
                "`erftools data fetch`) to see the images.")
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    page = st.number_input("Page", 1, pages, 1, key="stim_page") if pages > 1 else 1
    part = rows.iloc[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    if sdir is None:
        st.dataframe(part.drop(columns=[c for c in part.columns if c.endswith(":: class")]), hide_index=True,
                     width="stretch")
        return
    allowed = set(zip(merged["shape"], merged["stimulus"]))
    cols = st.columns(4)
    for i, (_, row) in enumerate(part.iterrows()):
        with cols[i % 4]:
            try:
                path = R.stimulus_path(sdir, row["shape"], row["stimulus"], allowed)
                st.image(path.read_bytes(), width="stretch")
            except (ResultError, OSError) as exc:
                st.warning(md_text(exc))
            lines = [f"**{md_text(row['stimulus'])}**  shape *{md_text(row['shape'])}*, "
                     f"texture *{md_text(row['texture'])}*"]
            for name in frames:
                decided = row.get(f"{name} :: class")
                if decided in CLASS_COLOUR:
                    lines.append(f"{md_text(name)}: :{CLASS_COLOUR[decided]}[{md_text(row[name])} ({decided})]")
            st.markdown("  \n".join(lines))


# ---------------------------------------------------------------------------------------------------- study page
def _verdict_style(verdict: str) -> str:
    colour = V.VERDICT_HELP.get(verdict, ("gray", ""))[0]
    return f"color: {colour}; font-weight: bold" if verdict in ("DIFFERS", "failed") else f"color: {colour}"


def verdict_table(rows: list[dict]):
    """The comparison rows as a table whose verdict column is coloured (a pandas Styler; cells stay plain text)."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.style.map(_verdict_style, subset=["verdict"])


def study_page(folder: Path, root: Path) -> None:
    st.header("Study")
    studies, problems = R.store.find_studies(folder)
    for msg in problems:
        st.error(f"Skipped a study that could not be read: {md_text(str(msg).replace(str(root), '<results root>'))}")
    if not studies:
        where = R.display_path(folder, root)
        st.info(f"No study below {md_code(where)}" + ("" if where in (".", "") else " of the results folder")
                + ". A study is a TOML file run with `erftools study STUDY.toml --results DIR` (docs/study.md).")
        return
    names = {f"{R.display_path(s.path, root)}: {s.name}": s for s in studies}
    study = names[st.selectbox("Study", list(names), key="study_pick")] if len(names) > 1 else studies[0]
    st.subheader(f"{md_text(study.name)}: {md_text(study.title)}" if study.title else md_text(study.name))
    if study.reference:
        st.markdown(f"**Reference:** {md_text(study.reference)}")
    if study.description.strip():
        st.markdown(md_text(study.description.strip()))
    st.markdown(f"**Tolerances** (|ours - paper| <= max(abs, rel x paper)): {md_text(V.study_tolerances(study))}")
    st.caption(f"folder: {md_code(R.display_path(study.path, root))}")

    st.subheader("Comparison with the paper")
    counts = Counter(r.verdict for r in study.rows)
    st.markdown(", ".join(f":{V.VERDICT_HELP[v][0]}[{v}] {counts[v]}" for v in V.VERDICT_HELP if v in counts)
                or "No rows yet.")
    with st.container(key="study-table"):
        st.dataframe(verdict_table(V.study_table(study)), hide_index=True, width="stretch")
    st.caption("; ".join(f"{v}: {text}" for v, (_, text) in V.VERDICT_HELP.items() if v in counts))

    runs = V.study_runs(study)
    for msg in runs.problems:
        st.warning(md_text(str(msg).replace(str(root), "<results root>")))
    study_erf_section(study, runs.erf)
    study_shape_bias_section(runs.shape_bias)
    correlation_section(study)
    st.subheader("The paper's values")
    st.dataframe(V.study_paper_rows(study), hide_index=True, width="stretch")
    unpublished = V.study_unpublished(study)
    if unpublished:
        st.subheader("Models not run here")
        st.caption("Listed by the study with their note and where their weights are (plain text; nothing is "
                   "downloaded by the dashboard).")
        with st.container(key="study-unpublished"):
            st.dataframe(unpublished, hide_index=True, width="stretch")


def study_erf_section(study, erf_runs: list) -> None:
    if not erf_runs:
        return
    st.subheader("Effective receptive fields")
    thresholds = study.thresholds or list(V.THRESHOLDS)
    c1, c2, c3 = st.columns([1.2, 2, 1])
    scale = SCALES[c1.radio("Colour scale", list(SCALES), horizontal=True, key="study_scale")]
    threshold = c2.select_slider("Threshold t of the square drawn", thresholds, value=thresholds[0],
                                 format_func=lambda t: f"{t:.0%}", key="study_threshold")
    cmap = c3.selectbox("Colour map", COLOUR_MAPS, key="study_cmap")
    good = []
    for title, _, run in erf_runs:
        with guard(title):
            erf_matrix(run)  # a problem with a matrix shows here, before the figure
            good.append((title, run))
    if good:
        png = _heatmap_png(tuple(_key(r) for _, r in good), tuple(t for t, _ in good), scale, float(threshold),
                           cmap)
        with st.container(key="study-heatmap"):
            st.image(png, caption="the study's models on one colour scale; dashed square: the high-contribution "
                                  f"square at t = {threshold:.0%}")
    st.markdown("**Area ratio r (%): ours (recorded at full resolution) next to the paper's**")
    st.dataframe(V.study_erf_rows(study, erf_runs), hide_index=True, width="stretch")


def study_shape_bias_section(sb_runs: list) -> None:
    if not sb_runs:
        return
    st.subheader("Shape bias")
    lines = V.study_shape_bias_lines(sb_runs)
    with st.container(key="study-shape-bias"):
        st.image(_shape_bias_png(tuple(_line(row) for row in lines), bars=True),
                 caption="pooled shape bias of each model with its 95% bootstrap interval, next to the paper's value")
    st.dataframe(V.study_shape_bias_rows(sb_runs), hide_index=True, width="stretch")


# ----------------------------------------------------------------------------------------------------- runs page
def runs_page(listing: R.Listing, root: Path) -> None:
    st.header("Runs")
    runs = listing.erf + listing.shape_bias
    if runs:
        st.dataframe([{"kind": run.kind, "name": V.run_title(run), "folder": R.display_path(run.path, root),
                       "created": V.cell_text(run.record.created), "weights / data": V.weights_text(run.record)}
                      for run in runs], hide_index=True, width="stretch")
    else:
        st.info(f"No finished run below {md_code(R.display_path(listing.root, root))}.")
    for run in runs:
        metadata_panel(V.run_title(run), run, root)


# ---------------------------------------------------------------------------------------------------------- main
def main() -> None:
    st.set_page_config(page_title="erftools dashboard", layout="wide")
    try:
        root = R.results_root()
    except ResultError as exc:
        st.title("erftools dashboard")
        st.error(md_text(exc))
        return

    slugs = list(PAGES.values())
    wanted = st.query_params.get("page", "erf")
    with st.sidebar:
        st.title("erftools")
        label = st.radio("Page", list(PAGES), index=slugs.index(wanted) if wanted in slugs else 0, key="page")
        sub = st.text_input("Results folder (relative to the results root)", value="", key="subdir",
                            help="A folder inside the results root; paths outside it are refused.")
        include_incomplete = st.checkbox("show unfinished runs", value=False, key="incomplete")
        st.caption(f"results root: {md_code(root.name)}")
    if st.query_params.get("page") != PAGES[label]:
        st.query_params["page"] = PAGES[label]

    try:
        folder = R.safe_path(root, sub.strip() or ".")
        listing = R.list_runs(folder, include_incomplete=include_incomplete)
    except ResultError as exc:
        st.error(md_text(str(exc).replace(str(root), "<results root>")))
        return
    for msg in listing.problems:
        st.warning(f"Skipped a malformed result folder: {md_text(msg)}")
    if listing.incomplete and not include_incomplete:
        st.warning("Unfinished runs (interrupted or still running) are hidden: "
                   + ", ".join(md_code(R.display_path(r.path, root)) for r in listing.incomplete))
    interrupted = [i for i in listing.interrupted if not i.failed]
    if interrupted:
        st.warning("Interrupted runs (their partial results are kept; the same command continues them): "
                   + ", ".join(f"{md_code(R.display_path(i.path, root))} ({i.kind}"
                               + (", running now)" if i.running else ")") for i in interrupted))
    for i in listing.interrupted:
        if i.failed:
            st.error(f"Failed run {md_code(R.display_path(i.path, root))} ({i.kind}): {md_text(i.failed)} "
                     "(the same command fails again until this is fixed; its partial results are kept)")

    if PAGES[label] == "study":
        study_page(folder, root)
    else:
        {"erf": erf_page, "shape-bias": shape_bias_page, "runs": runs_page}[PAGES[label]](listing, root)

