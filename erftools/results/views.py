"""Tables and comparisons computed from run records: what the report and the dashboard show.

* names and provenance of a run (:func:`run_title`, :func:`weights_text`, :func:`provenance`);
* ERF: the area ratio at any threshold recomputed from a matrix (:func:`area_ratio_at`, with the ERF engine's
  :func:`erftools.erf.analysis.area_ratios`), the radial profile, and the comparison with the paper's Table 10
  (:func:`table10_rows`);
* shape bias: the kind of each decision maker (:func:`classify`), the reference lines (humans, CNNs, the paper's
  Fig. 5, :func:`shapebias_reference`), one table row per decision maker (:func:`shape_bias_row`), and per-stimulus
  decisions (:func:`decisions_frame`, :func:`merge_decisions`; pandas);
* the number formatters both the report and the dashboard use (:func:`pct`, :func:`f3`, :func:`cell_text`).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._io import ErftoolsError
from ..erf.analysis import DEFAULT_THRESHOLDS, area_ratios, normalize, percent_text, radii_text
from ..erf.analysis import radial_profile as _radial_profile
from ..erf.objectives import label_with_variant
from ..erf.reference import norm_name, table10, table10_entry
from ..shapebias import reference as sb_reference
from ..shapebias.categories import CATEGORIES
from ..shapebias.stimuli import NUM_IMAGES, stimulus_file, texture_category
from .records import (HUMAN, HUMANS, MODEL, NETWORK, PUBLISHED, ErfRecord, Record, ResultError, ShapeBiasRecord,
                      maker_kind)
from .store import (Run, display_path, full_size, is_baseline_run, layer_entries, layer_entry, load_erf_matrix,
                    load_layer_matrix)

#: the thresholds of the paper's Table 10 (the ERF engine's defaults)
THRESHOLDS = tuple(DEFAULT_THRESHOLDS)
DECISION_CLASSES = ("shape", "texture", "other", "no conflict")
__all__ = ["CATEGORIES", "DECISION_CLASSES", "THRESHOLDS"]  # and the functions below


# ------------------------------------------------------------------------------------------------ formatters
#: an area ratio (a fraction) in percent: :func:`erftools.erf.analysis.percent_text` (one formatter)
pct = percent_text


def _num(v: Any, fmt: str = "{:.1f}") -> str:
    """``v`` formatted as a float; empty for None, as given when it is no number."""
    try:
        return "" if v is None else fmt.format(float(v))
    except (TypeError, ValueError):
        return str(v)


def f3(v: Any) -> str:
    """A number with three decimals; empty for None."""
    return _num(v, "{:.3f}")


def paper_pct(v: Any) -> str:
    """A percentage printed in the paper (one decimal); empty when the paper has none."""
    return "" if v is None else f"{float(v):.1f}"


def ci_text(ci: Any) -> str:
    """A 95% interval as ``[lo, hi]``; empty when unknown."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return ""
    return f"[{f3(ci[0])}, {f3(ci[1])}]"


def cell_text(v: Any) -> str:
    """A record value for a table cell: always text (a column never mixes types)."""
    return "" if v is None else str(v)


def ratio_text(side: Any, ratio: Any) -> str:
    """An area ratio in percent with the square's side: ``12.3% (45 px)``; no side when there is no square."""
    return pct(ratio) + (f" ({side} px)" if side else "")


def _dict(v: Any, default: Any = None) -> Any:
    return v if isinstance(v, dict) else default


# ------------------------------------------------------------------------------------------- names, provenance
def _recorded_weights(record: Record) -> tuple[bool, Any]:
    """``(recorded, value)``: the weights a record names (``model.weights``, or a shape-bias record's ``weights``)."""
    model = record.model or {}
    if "weights" in model:
        return True, model["weights"]
    own = getattr(record, "weights", None)
    return (own is not None), own


def is_untrained(record: Record) -> bool:
    """Whether the record says its weights were random. A record that names no weights (the published decisions of
    humans and trained networks, an older record) is not "random": :func:`weights_text` says what it is."""
    recorded, weights = _recorded_weights(record)
    text = json.dumps(weights).lower()
    return recorded and (weights in (None, "random", "none") or '"random"' in text or "random init" in text)


def partial_stimuli(record: Record) -> int | None:
    """The number of stimuli of a shape-bias run evaluated on fewer than the 1280 of the standard set, else None."""
    if not isinstance(record, ShapeBiasRecord) or record.source == "decisions":
        return None
    n = record.num_images
    return n if isinstance(n, int) and 0 < n < NUM_IMAGES else None


def run_title(run: Run) -> str:
    """A short title: the label, with its ERF variant when it is not the paper's (``(unit objective)``), plus
    ``(random init)`` for a run of untrained weights, ``(N of 1280 stimuli)`` for a shape bias of a subset and
    ``(incomplete)`` for an ERF run that has not finished; every figure, table and page names runs with it."""
    name = run.name
    if run.kind == "erf":
        name = label_with_variant(name, getattr(run.record, "objective", None),
                                  getattr(run.record, "reduction", None))
    low = name.lower()
    if is_untrained(run.record) and "untrained" not in low and "random" not in low:
        name += " (random init)"
    n = partial_stimuli(run.record)
    if n is not None:
        name += f" ({n} of {NUM_IMAGES} stimuli)"
    if run.kind == "erf" and run.record.complete is False:
        name += " (incomplete)"
    return name


def unique_titles(runs: list[Run], root) -> dict[str, Run]:
    """``{title: run}``; a repeated title gets the run's folder (relative to ``root``) appended."""
    out: dict[str, Run] = {}
    for run in runs:
        title = run_title(run)
        if title in out:
            title = f"{title} [{display_path(run.path, root)}]"
        out[title] = run
    return out


def weights_text(record: Record) -> str:
    """Where a run's weights come from, in words: ``random init (untrained)`` only when the record says so."""
    if isinstance(record, ShapeBiasRecord) and record.source == "decisions":
        return ("human observers" if is_human(record.maker_kind) else "trained network") + " (published decisions)"
    recorded, weights = _recorded_weights(record)
    if not recorded:
        return "not recorded"
    if isinstance(weights, dict):  # its first naming field, else the object itself
        named = next((str(weights[k]) for k in ("tag", "source", "description", "path", "url", "hf_hub_id")
                      if weights.get(k)), None)
        weights = json.dumps(weights)[:80] if named is None else named
    return "random init (untrained)" if weights is None or weights == "random" else str(weights)


def _short(value: Any) -> Any:
    if isinstance(value, dict):
        return value.get("name") or value.get("type") or json.dumps(value)[:60]
    return value


def provenance(record: Record) -> dict[str, Any]:
    """The fields that say where a number comes from (the metadata panel and the report)."""
    model = record.model or {}
    out: dict[str, Any] = {"model": model.get("name"), "weights": weights_text(record),
                           "weights sha256": model.get("weights_sha256")}
    if isinstance(record, ErfRecord):
        images = record.images or {}
        out.update({
            "image set": images.get("source"), "images sha256": images.get("sha256"),
            "sampler": images.get("sampler"), "seed": images.get("seed"),
            "size": "x".join(str(s) for s in record.size) if record.size else None,
            "objective": record.objective or "paper", "reduction": record.reduction or "relu",
            "images used": record.num_images, "images skipped": record.num_skipped,
            "stored downsample": record.stored_downsample,
        })
    elif isinstance(record, ShapeBiasRecord):
        stimuli = record.stimuli or {}
        out.update({"trials": record.num_trials, "stimuli sha256": stimuli.get("sha256")})
        prompts = (record.zero_shot or {}).get("prompts") or {}
        if prompts:  # zero-shot (open_clip) runs: which text classifier decided
            out["zero-shot prompts"] = (f"{prompts.get('set')}: {prompts.get('n')} template(s), sha256 "
                                        f"{str(prompts.get('sha256'))[:12]}")
    versions = record.versions or {}
    out.update({"device": _short(record.device), "created": record.created,
                "erftools": versions.get("erftools"), "torch": versions.get("torch")})
    return {k: v for k, v in out.items() if v not in (None, "", [])}


# ------------------------------------------------------------------------------------------------------- ERF
#: the paper's normalisation ``log10(M + 1) / max`` (:func:`erftools.erf.analysis.normalize`)
log_normalise = normalize


def linear_normalise(matrix: np.ndarray) -> np.ndarray:
    """``M / max``: the raw contributions on the same 0..1 scale."""
    m = np.asarray(matrix, dtype=np.float64)
    top = m.max() if m.size else 0.0
    return m / top if top > 0 else np.zeros_like(m)


def area_ratio_at(matrix: np.ndarray, threshold: float, downsample: int = 1,
                  full_size: tuple[int, int] | None = None) -> tuple[int | None, float | None]:
    """(side in full-resolution pixels, area ratio) of the high-contribution square of a mean matrix at any
    threshold, recomputed with :func:`erftools.erf.analysis.area_ratios`.

    On a downsampled matrix the square is found on the coarse grid, so the side is a multiple of ``downsample``
    (an approximation; the record's own area ratios were computed at full resolution by ``erftools erf``).
    """
    side = area_ratios(matrix, [threshold])[0].side
    if side is None:
        return None, None
    h, w = full_size or (matrix.shape[0] * downsample, matrix.shape[1] * downsample)
    side_full = side * downsample
    return side_full, side_full * side_full / float(h * w)


def radial_profile(record: ErfRecord, matrix: np.ndarray | None = None, downsample: int = 1
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """(radius in full-resolution pixels, cumulative share of the contribution): the record's, else computed."""
    prof = record.radial_profile
    if prof and prof.get("radius"):
        return np.asarray(prof["radius"], dtype=float), np.asarray(prof["cumulative"], dtype=float)
    if matrix is None:
        return None
    prof = _radial_profile(matrix)
    return np.asarray(prof["radius"], float) * downsample, np.asarray(prof["cumulative"], float)


def model_keys(record: Record) -> set[str]:
    """Normalised names a run may be known by (label, model name, timm name without its tag, arch, the subjects
    of a decision file), with and without a parenthesised remark such as "(torchvision)"."""
    model = record.model or {}
    subjects = model.get("subjects") if isinstance(model.get("subjects"), list) else []
    names = [str(v) for v in (model.get("name"), model.get("arch"), record.label, *subjects) if v]
    return {norm_name(k) for v in names for k in (v, v.split(".")[0], re.sub(r"\(.*?\)", "", v))} - {""}


def paper_table10() -> dict:
    """The paper's Table 10 (:func:`erftools.erf.reference.table10`, its one home); :class:`ResultError` when
    the shipped file is missing or unreadable."""
    try:
        return table10()
    except ErftoolsError as exc:
        raise ResultError(str(exc)) from exc


def paper_erf_entry(record: Record, table: dict | None = None) -> dict | None:
    """The Table 10 row for this run's model (:func:`erftools.erf.reference.table10_entry`), or None."""
    try:
        return table10_entry(model_keys(record), table or paper_table10())
    except ResultError:
        return None


@dataclass
class Table10Row:
    """One model's area ratios next to the paper's: ``ours`` and ``sides`` as recorded (full resolution; a
    threshold the run did not measure is absent), ``paper`` in percent."""
    title: str
    ours: dict[float, float | None]
    sides: dict[float, int | None]
    paper: dict[float, float | None]
    paper_model: str | None


def table10_rows(runs: list[tuple[str, Run]], table: dict | None = None) -> list[Table10Row]:
    """Our recorded area ratios at :data:`THRESHOLDS` next to the paper's Table 10, one row per ``(title, run)``."""
    rows = []
    for title, run in runs:
        rec: ErfRecord = run.record  # type: ignore[assignment]
        entry = paper_erf_entry(rec, table)
        paper = {t: (entry or {}).get("area_ratio_percent", {}).get(str(t)) for t in THRESHOLDS}
        rows.append(Table10Row(title, rec.area_ratio_map(), rec.side_map(), paper,
                               entry["name"] if entry else None))
    return rows


# ------------------------------------------------------------------------------------------------ shape bias
def classify(run: Run) -> str:
    """The decision maker's kind (:data:`erftools.results.records.MAKER_KINDS`); a run without a recorded kind
    whose name says human or subject counts as human."""
    rec: ShapeBiasRecord = run.record  # type: ignore[assignment]
    if maker_kind(rec.decision_maker_kind) is not None:
        return rec.maker_kind
    text = " ".join(str(x) for x in (rec.label, rec.model_name)).lower()
    return HUMANS if "human" in text or "subject" in text else rec.maker_kind


def is_human(kind: str) -> bool:
    return kind in (HUMAN, HUMANS)


_ORDER = {HUMANS: 0, HUMAN: 0, MODEL: 1, NETWORK: 2, PUBLISHED: 3}


def shape_bias_order(runs: list[Run]) -> list[Run]:
    """Humans first, then measured models, then the reference networks; by name within each group."""
    return sorted(runs, key=lambda r: (_ORDER.get(classify(r), 1), run_title(r).lower()))


def per_category(record: ShapeBiasRecord) -> dict[str, float | None]:
    """``{category: shape bias}`` of a shape-bias record."""
    return {c: (None if v is None else float(v)) for c, v in record.category_bias().items()}


def _ref_item(e: dict, key: str, kind: str) -> dict:
    pc = {str(k): (v.get("shape_bias") if isinstance(v, dict) else v) for k, v in (e.get("per_category") or {}).items()}
    return dict(e, key=key, per_category=pc, kind=kind)


def _load_reference(load) -> dict:
    try:
        return load()
    except (OSError, ValueError):
        return {}


def shapebias_reference() -> dict[str, dict[str, dict]]:
    """The reference shape-bias numbers of the shape-bias engine (:mod:`erftools.shapebias.reference`).

    ``{"paper": {label: entry}, "humans": {...}, "cnns": {...}, "other": {...}}``; every entry has ``shape_bias``,
    ``per_category`` ({category: shape bias}) and ``kind`` (one of the decision-maker kinds); paper entries also
    ``model`` and ``weights_tags``. ``humans`` holds the pooled observers, ``cnns`` the ImageNet-trained
    torchvision networks, ``other`` the single observers, the Caffe networks and the Open Images ResNet. Missing
    files give empty groups.
    """
    out: dict[str, dict[str, dict]] = {"paper": {}, "humans": {}, "cnns": {}, "other": {}}
    for key, e in (_load_reference(sb_reference.load_published).get("entries") or {}).items():
        if isinstance(e, dict) and "shape_bias" in e:
            out["paper"][e.get("label") or key] = _ref_item(e, key, PUBLISHED)
    for key, e in (_load_reference(sb_reference.load_summary).get("references") or {}).items():
        if not isinstance(e, dict) or "shape_bias" not in e:
            continue
        kind = maker_kind(e.get("kind")) or NETWORK
        cnn = kind == NETWORK and "trained-CNNs" in " ".join(e.get("files") or []) and "oidv2" not in key
        group = "humans" if kind == HUMANS else "cnns" if cnn else "other"
        out[group][e.get("label") or key] = _ref_item(e, key, kind)
    return out


def paper_fig5_entry(record: Record, reference: dict | None = None) -> tuple[str, dict] | None:
    """The paper's Fig. 5 line for this run: the one the shape-bias engine matched and recorded (``published``, by
    :func:`erftools.shapebias.reference.published_for`), so the views never show another paper value than the
    record holds; for a run without one (decision files, older runs): same model (and weight tag when it says
    which), humans for humans."""
    paper = (reference if reference is not None else shapebias_reference()).get("paper", {})
    published = getattr(record, "published", None)
    if isinstance(published, dict) and published.get("label") in paper:
        return published["label"], paper[published["label"]]
    keys = model_keys(record)
    if any("human" in k for k in keys):
        return next(((label, item) for label, item in paper.items()
                     if item.get("model") is None and "human" in label.lower()), None)
    weights = (record.model or {}).get("weights")
    tag = weights.get("tag") if isinstance(weights, dict) else weights
    candidates = [(label, item) for label, item in paper.items()
                  if item.get("model") and norm_name(item["model"]) in keys]
    tagged = [c for c in candidates if tag and tag in (c[1].get("weights_tags") or [])]
    default = [c for c in candidates if "22k" not in c[0].lower()]  # the ImageNet-1K line
    return next(iter(tagged + default + candidates), None)


@dataclass
class ShapeBiasRow:
    """One decision maker in the shape-bias table and plot (a run or a reference)."""
    name: str
    kind: str  # one of MAKER_KINDS
    shape_bias: float | None
    per_category: dict[str, float | None] = field(default_factory=dict)
    ci95: tuple | None = None
    fraction_shape: float | None = None
    fraction_texture: float | None = None
    accuracy_no_conflict: float | None = None
    num_trials: int | None = None
    paper: tuple[str, float | None] | None = None  # (the paper's label, its shape bias)

    def cells(self) -> dict[str, str]:
        """The table columns as text (the report shows a subset, the dashboard all)."""
        return {"decision maker": self.name, "shape bias": f3(self.shape_bias), "95% CI": ci_text(self.ci95),
                "fraction shape": f3(self.fraction_shape), "fraction texture": f3(self.fraction_texture),
                "accuracy (no conflict)": f3(self.accuracy_no_conflict), "trials": cell_text(self.num_trials),
                "paper Fig. 5": f"{f3(self.paper[1])} ({self.paper[0]})" if self.paper else ""}


def _ci(ci: Any) -> tuple | None:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and ci[0] is not None and ci[1] is not None:
        return float(ci[0]), float(ci[1])
    return None


def shape_bias_row(title: str, run: Run, reference: dict | None = None) -> ShapeBiasRow:
    """The row of a shape-bias run (with the paper's Fig. 5 value for its model when there is one)."""
    rec: ShapeBiasRecord = run.record  # type: ignore[assignment]
    paper = paper_fig5_entry(rec, reference)
    return ShapeBiasRow(title, classify(run), rec.shape_bias, per_category(rec), _ci(rec.ci95),
                        rec.fraction_correct_shape, rec.fraction_correct_texture, rec.accuracy_no_conflict,
                        rec.num_trials, (paper[0], paper[1].get("shape_bias")) if paper else None)


def reference_row(name: str, item: dict, kind: str | None = None) -> ShapeBiasRow:
    """The row of a reference entry of :func:`shapebias_reference`."""
    pc = {k: v for k, v in item.get("per_category", {}).items() if v is not None}
    return ShapeBiasRow(name, kind or maker_kind(item.get("kind")) or NETWORK, item.get("shape_bias"), pc,
                        _ci(item.get("ci95")), item.get("fraction_correct_shape"),
                        item.get("fraction_correct_texture"), item.get("accuracy_no_conflict"),
                        item.get("num_trials"))


# ------------------------------------------------------------------------------------------------- decisions
def decisions_frame(rows: list[dict]):
    """Decision rows (:func:`erftools.results.store.load_decisions`) as a DataFrame with the derived columns
    ``stimulus`` (file name), ``shape``, ``texture`` and ``decided`` (shape, texture, other or no conflict)."""
    import pandas as pd

    cols = ["subj", "object_response", "category", "imagename"]
    df = pd.DataFrame([{c: r.get(c, "") for c in cols} for r in rows], columns=cols)
    df["stimulus"] = df["imagename"].map(stimulus_file)
    df["shape"] = df["category"]
    df["texture"] = df["imagename"].map(texture_category)
    resp = df["object_response"]
    df["decided"] = np.select([df["shape"] == df["texture"], resp == df["shape"], resp == df["texture"]],
                              ["no conflict", "shape", "texture"], "other")
    return df


def merge_decisions(frames: dict[str, Any]):
    """One row per stimulus (shape category + file): per decision maker a decision column and a ``:: class``
    column. A pooled decision maker (the humans: several trials per stimulus) shows its most frequent answer and
    how many of its trials gave it, e.g. ``cat (7/10)``."""
    import pandas as pd

    merged = None
    for name, df in frames.items():
        counts = df.groupby(["shape", "stimulus", "object_response", "decided"], sort=False).size()
        counts = counts.reset_index(name="k").sort_values("k", ascending=False, kind="stable")
        total = df.groupby(["shape", "stimulus"], sort=False).size().rename("n").reset_index()
        top = counts.drop_duplicates(subset=["shape", "stimulus"]).merge(total, on=["shape", "stimulus"])
        top[name] = np.where(top["n"] > 1, top["object_response"] + " (" + top["k"].astype(str) + "/"
                             + top["n"].astype(str) + ")", top["object_response"])
        part = top[["shape", "stimulus", name, "decided"]].rename(columns={"decided": f"{name} :: class"})
        merged = part if merged is None else merged.merge(part, on=["shape", "stimulus"], how="outer")
    if merged is None:
        return pd.DataFrame(columns=["shape", "stimulus", "texture"])
    merged.insert(2, "texture", merged["stimulus"].map(texture_category))
    return merged.sort_values(["shape", "stimulus"]).reset_index(drop=True)


# ------------------------------------------------------------------------------ ERF layers, statistics, baseline
#: the name shown for the matrix of a run of the final feature map (no ``layers``)
FINAL_LAYER = "final feature map"
#: the statistics columns (:func:`statistics_cells`) with a one-line explanation each (the dashboard and the report)
STATISTICS_HELP = {
    "sigma x / y (px)": "standard deviations of the 2-D Gaussian fitted to the matrix, along the columns / rows",
    "sigma major / minor (px)": "the same along the principal axes of the fitted Gaussian (long and short side)",
    "orientation (deg)": "angle of the major axis from the x axis towards the y axis (empty: isotropic fit)",
    "R2": "coefficient of determination of the Gaussian fit (1: the ERF is exactly Gaussian)",
    "radius 50/90/99% (px)": "smallest disc around the centre holding 50, 90 and 99 % of the total contribution",
    "centre-of-mass offset (px)": "distance of the contribution-weighted mean position from the centre pixel",
    "theoretical RF (px)": "side of the theoretical receptive field (kernel sizes, strides and dilations); "
                           "empty for networks without one (global operations, attention)",
    "effective / theoretical": "side of the high-contribution square divided by the theoretical side itself (the "
                               "number beside it; when that exceeds the image the ratio is at most image side / "
                               "theoretical side), at the first recorded threshold, two significant digits",
}


def layer_names(run: Run) -> list[str]:
    """The layers of a layered ERF run in depth order; [] for a run of the final feature map."""
    return [e["layer"] for e in layer_entries(run)]


def layer_statistics(run: Run, layer: str | None = None) -> dict | None:
    """The statistics (:func:`erftools.erf.statistics.erf_statistics`) of one layer, or of the run's main matrix
    when ``layer`` is None."""
    return _dict(run.record.statistics if layer is None else layer_entry(run, layer).get("statistics"))


def _recorded_ratios(entries: Any) -> dict[float, tuple[int | None, float | None]]:
    return {round(float(r["threshold"]), 6): (r.get("side"), None if r.get("area_ratio") is None
                                              else float(r["area_ratio"]))
            for r in entries or [] if isinstance(r, dict) and r.get("threshold") is not None}


@dataclass
class LayerRatios:
    """A layer's high-contribution squares: ``{threshold: (side in px, area ratio)}`` and the thresholds that were
    recomputed from the layer matrix (not recorded by ``erftools erf``; on a downsampled matrix, approximate)."""
    layer: str
    ratios: dict[float, tuple[int | None, float | None]]
    recomputed: set[float] = field(default_factory=set)


def layer_area_ratios(run: Run, layer: str | None, thresholds) -> LayerRatios:
    """The area ratios of ``layer`` (None: the run's main matrix) at ``thresholds``: as recorded where the run
    measured that threshold (full resolution), otherwise recomputed from the layer's matrix, read through the
    results store (inside the results folder only)."""
    recorded = _recorded_ratios(run.record.area_ratios if layer is None else layer_entry(run, layer).get("area_ratios"))
    out = LayerRatios(layer or FINAL_LAYER, {})
    matrix = None
    for t in thresholds:
        t = round(float(t), 6)
        if t in recorded:
            out.ratios[t] = recorded[t]
            continue
        if matrix is None:
            matrix, f = load_erf_matrix(run) if layer is None else load_layer_matrix(run, layer)
            size = full_size(run, matrix, f)
        out.ratios[t] = area_ratio_at(matrix, t, f, size)
        out.recomputed.add(t)
    return out


def _side_text(side: Any) -> str:
    if side is None:
        return ""
    if isinstance(side, (list, tuple)):
        return str(side[0]) if len(side) == 2 and side[0] == side[1] else "x".join(str(s) for s in side)
    return str(side)


def layer_rows(run: Run, thresholds) -> list[dict[str, str]]:
    """One row per layer of a layered run (one row for the main matrix otherwise): the layer, its feature shape,
    its theoretical receptive field and the area ratio (%, side in px) at each threshold; ``*`` marks a value
    recomputed from the (possibly downsampled) matrix rather than recorded."""
    rows = []
    for e in layer_entries(run) or [None]:
        layer = None if e is None else e["layer"]
        stats = layer_statistics(run, layer) or {}
        shape = e.get("feature_shape") if e is not None else (run.record.target or {}).get("feature_shape")
        row = {"layer": layer or FINAL_LAYER,
               "feature map": "x".join(str(s) for s in shape[-2:]) if isinstance(shape, list) and shape else "",
               "theoretical RF (px)": _side_text((stats.get("theoretical_rf") or {}).get("side"))}
        lr = layer_area_ratios(run, layer, thresholds)
        for t, (side, ratio) in lr.ratios.items():
            row[f"t={t:.0%}"] = ratio_text(side, ratio) + (" *" if t in lr.recomputed else "")
        rows.append(row)
    return rows


def statistics_cells(stats: dict | None) -> dict[str, str]:
    """The statistics of one matrix as text, one cell per :data:`STATISTICS_HELP` column (empty where unknown;
    ``fit failed: ...`` when the Gaussian fit did not succeed)."""
    stats = _dict(stats, {})
    g, radii, com, theo, e2t = (_dict(stats.get(k), {}) for k in ("gaussian", "radii", "centre_of_mass",
                                                                   "theoretical_rf", "effective_to_theoretical"))
    fit_ok = bool(g.get("ok"))
    failed = "" if fit_ok or not g else f"fit failed: {g.get('reason') or 'unknown'}"
    t, value = next(iter(e2t.items()), (None, None))
    ratio = "" if value is None else f"{float(value):.2g} (t={float(t):.0%})"  # 0.0045, not 0.00
    return {
        "sigma x / y (px)": f"{_num(g.get('sigma_x'))} / {_num(g.get('sigma_y'))}" if fit_ok else failed,
        "sigma major / minor (px)": f"{_num(g.get('sigma_major'))} / {_num(g.get('sigma_minor'))}" if fit_ok else "",
        "orientation (deg)": _num(g.get("orientation_deg")) if fit_ok else "",
        "R2": _num(g.get("r2"), "{:.3f}") if fit_ok else "",
        "radius 50/90/99% (px)": radii_text(radii),
        "centre-of-mass offset (px)": _num(com.get("offset")),
        "theoretical RF (px)": _side_text(theo.get("side")),
        "effective / theoretical": ratio,
    }


def statistics_rows(items: list[tuple[str, str, dict | None]]) -> list[dict[str, str]]:
    """One table row per ``(model title, layer, statistics)``."""
    return [{"model": title, "layer": layer, **statistics_cells(stats)} for title, layer, stats in items]


def run_statistics_items(title: str, run: Run) -> list[tuple[str, str, dict | None]]:
    """``(title, layer, statistics)`` for every layer of a layered run, else for its main matrix."""
    entries = layer_entries(run)
    if not entries:
        return [(title, FINAL_LAYER, layer_statistics(run))]
    return [(title, e["layer"], _dict(e.get("statistics"))) for e in entries]


def growth_series(runs: list[tuple[str, Run]], thresholds=None) -> dict[str, list[tuple[str, list[dict]]]]:
    """``{title: [(layer, [{threshold, side, area_ratio}, ...]), ...]}`` for the layered runs among ``runs`` (the
    input of :func:`erftools.erf.plots.plot_layer_growth`); runs with fewer than two layers are left out. With
    ``thresholds`` the area ratios at those thresholds (recomputed from the layer matrices where not recorded)."""
    series = {}
    for title, run in runs:
        names = layer_names(run)
        if len(names) < 2:
            continue
        points = []
        for name in names:
            ratios = (_recorded_ratios(layer_entry(run, name).get("area_ratios")) if thresholds is None
                      else layer_area_ratios(run, name, thresholds).ratios)
            points.append((name, [dict(threshold=t, side=s, area_ratio=r) for t, (s, r) in ratios.items()]))
        series[title] = points
    return series


_SIZE_FOLDER = re.compile(r"^size-(\d+)$")


def _sweep_key(run: Run) -> tuple[str, str, int] | None:
    """(the sweep's folder, the sweep's label, this run's size) of a run that belongs to an input-size sweep: its
    record's ``sweep`` (``erftools erf --size A,B``, studies with ``size = [..]``), else a ``size-<N>`` folder
    (studies run under torchrun); None otherwise."""
    sweep = getattr(run.record, "sweep", None)
    size = run.record.size[0] if run.record.size else None
    if isinstance(sweep, dict) and isinstance(sweep.get("size"), int):
        return str(run.path.parent), str(sweep.get("label") or run.name), int(sweep["size"])
    m = _SIZE_FOLDER.match(run.path.name)
    if m and size == int(m.group(1)):
        return str(run.path.parent), run.name.removesuffix(f", {size} px"), size
    return None


def size_series(runs: list[Run]) -> dict[str, list[dict]]:
    """``{sweep label: [{"size", "area_ratios", "theoretical_rf"}, ...]}`` of the input-size sweeps among ``runs``
    (the input of :func:`erftools.erf.plots.plot_size_sweep`), grouped by the sweep's folder, sizes ascending;
    groups of fewer than two sizes are left out; a repeated label gets the sweep's folder name."""
    groups: dict[str, tuple[str, list]] = {}
    for run in runs:
        key = _sweep_key(run) if run.kind == "erf" else None
        if key is None:
            continue
        folder, label, size = key
        groups.setdefault(folder, (label, []))[1].append(
            {"size": size, "area_ratios": list(run.record.area_ratios or []),
             "theoretical_rf": _dict(run.record.statistics, {}).get("theoretical_rf")})
    out: dict[str, list[dict]] = {}
    for folder, (label, points) in sorted(groups.items()):
        if len({p["size"] for p in points}) < 2:
            continue
        title = label if label not in out else f"{label} [{Path(folder).name}]"
        out[title] = sorted(points, key=lambda p: p["size"])
    return out


@dataclass
class BaselineRow:
    """One line of the trained-versus-untrained table: a layer (or the main matrix) of a run or of its baseline."""
    layer: str
    which: str  # "as run" (the run's own weights) or "untrained baseline"
    weights: str
    ratios: dict[float, tuple[int | None, float | None]]
    statistics: dict | None

    def cells(self, thresholds) -> dict[str, str]:
        out = {"layer": self.layer, "run": self.which, "weights": self.weights}
        for t in thresholds:
            out[f"t={float(t):.0%}"] = ratio_text(*self.ratios.get(round(float(t), 6), (None, None)))
        cells = statistics_cells(self.statistics)
        return out | {k: cells[k] for k in ("sigma major / minor (px)", "radius 50/90/99% (px)",
                                            "effective / theoretical")}


def baseline_rows(run: Run) -> list[BaselineRow]:
    """Trained and untrained next to each other, per layer (or for the main matrix): the run's numbers and those
    of its untrained baseline (the ``baseline`` summary in ``erf.json``, written by ``erftools erf --baseline
    random``); [] when the run has no baseline."""
    summary = run.record.baseline
    if not isinstance(summary, dict):
        return []
    seed = summary.get("seed")
    untrained = "random init" + (f", seed {seed}" if seed is not None else "")
    own = weights_text(run.record)
    base_layers = {e.get("layer"): e for e in summary.get("layers") or [] if isinstance(e, dict)}
    pairs = [(e["layer"], e, base_layers.get(e["layer"], {})) for e in layer_entries(run)] or [
        (FINAL_LAYER, {"area_ratios": run.record.area_ratios, "statistics": run.record.statistics}, summary)]
    rows: list[BaselineRow] = []
    for layer, ours, base in pairs:
        rows.append(BaselineRow(layer, "as run", own, _recorded_ratios(ours.get("area_ratios")),
                                _dict(ours.get("statistics"))))
        rows.append(BaselineRow(layer, "untrained baseline", untrained, _recorded_ratios(base.get("area_ratios")),
                                _dict(base.get("statistics"))))
    return rows


def main_erf_runs(runs: list[Run]) -> list[Run]:
    """The ERF runs to list as models: every run except the untrained baselines of other runs in ``runs`` (shown
    next to their run instead)."""
    return [r for r in runs if not is_baseline_run(r, runs)]


def theoretical_side(stats: dict | None) -> int | None:
    """The side (px) of the theoretical receptive field in ``statistics``, when it is square and known."""
    side = _dict(_dict(stats, {}).get("theoretical_rf"), {}).get("side")
    if isinstance(side, (list, tuple)) and len(side) == 2:
        side = side[0] if side[0] == side[1] else max(side)
    try:
        return None if side is None else int(side)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------- studies
#: how each verdict of a study row is shown (a colour name the dashboard and the report share) and what it means
VERDICT_HELP = {
    "agrees": ("green", "ours is within the study's tolerance of the paper's value"),
    "DIFFERS": ("red", "ours is outside the tolerance (or the paper has a square where ours has none)"),
    "no paper value": ("gray", "the paper gives no value to compare with"),
    "not run": ("violet", "the model is not run (no public weights)"),
    "missing": ("orange", "the run is not computed yet or was interrupted: run the study again"),
    "failed": ("red", "the run failed in the last session: see the note"),
}


@dataclass
class StudyRuns:
    """The finished runs of a study's models, by measurement: ``(title, model, run)``; problems as messages."""
    erf: list = field(default_factory=list)
    shape_bias: list = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def study_runs(study) -> StudyRuns:
    """The finished runs of every model of ``study`` (a :class:`~erftools.results.store.StudyResult`), read
    through the ordinary run readers (files only from inside the results folder). A model with several ERF
    runs (samplers) gets the folder name in its title."""
    out = StudyRuns()
    for m in study.models:
        if m.unpublished:
            continue
        try:
            found = study.runs(m)
        except ResultError as exc:
            out.problems.append(str(exc))
            continue
        erf = [(folder, run) for folder, run, _ in found if run is not None and run.kind == "erf"]
        for folder, run, problem in found:
            if run is None:
                out.problems.append(f"{m.label} ({folder}): {problem}")
            elif run.kind == "erf":
                title = m.label if len(erf) == 1 else f"{m.label} ({folder.rsplit('/', 1)[-1]})"
                out.erf.append((title, m, run))
            else:
                out.shape_bias.append((m.label, m, run))
    return out


def _study_number(v: float | None, quantity: str, sign: str = "", unknown: str = "–") -> str:
    return unknown if v is None else f"{v:{sign}.{3 if quantity == 'shape bias' else 2}f}"


def study_table(study) -> list[dict[str, str]]:
    """The comparison rows of a study as text cells (the columns of ``erftools study``'s table)."""
    return [{"model": r.label or r.model, "measurement": r.measurement, "value": r.quantity,
             "ours": _study_number(r.ours, r.quantity), "paper": _study_number(r.paper, r.quantity),
             "difference": _study_number(r.diff, r.quantity, "+", ""), "tolerance": r.tolerance,
             "verdict": r.verdict, "note": r.note} for r in study.rows]


def study_tolerances(study) -> str:
    """The study's tolerances in words: ``ERF area ratio ±0.5 pp; shape bias ±0.02``."""
    parts = []
    for key, tol in study.tolerance.items():
        if not (study.measurements.get(key) or key not in ("erf", "shape_bias")):
            continue
        unit = " pp" if key == "erf" else ""
        what = "ERF area ratio" if key == "erf" else key.replace("_", " ")
        a, rel = tol.get("abs") or 0.0, tol.get("rel") or 0.0
        alternatives = ([f"±{a:g}{unit}"] if a else []) + ([f"±{rel:.0%} of the paper's value"] if rel else [])
        parts.append(f"{what} {' or '.join(alternatives) or 'exact'}")
    return "; ".join(parts)


def study_erf_rows(study, erf_runs: list) -> list[dict[str, str]]:
    """For each ERF run of the study: ours (recorded at full resolution, %) next to the paper's value at each of
    the study's thresholds."""
    thresholds = study.thresholds or list(THRESHOLDS)
    rows = []
    for title, model, run in erf_runs:
        ours = run.record.area_ratio_map()
        row = {"model": title}
        for t in thresholds:
            key = round(float(t), 6)
            row[f"ours t={t:.0%}"] = pct(ours[key]) if key in ours else "n/a"
            row[f"paper t={t:.0%}"] = paper_pct(model.paper_erf.get(key))
        row["paper source"] = model.erf_source or ""
        rows.append(row)
    return rows


def study_shape_bias_lines(sb_runs: list) -> list[ShapeBiasRow]:
    """The shape-bias runs of a study and, after each, the paper's value for that model (a ``published`` line
    without per-category values), for the shape-bias bar chart."""
    lines = []
    for title, model, run in sb_runs:
        lines.append(shape_bias_row(title, run, {"paper": {}}))
        if model.paper_shape_bias is not None:
            lines.append(ShapeBiasRow(f"{title} (paper)", PUBLISHED, model.paper_shape_bias))
    return lines


def study_shape_bias_rows(sb_runs: list) -> list[dict[str, str]]:
    """For each shape-bias run of the study: ours with its interval next to the paper's value and source."""
    rows = []
    for title, model, run in sb_runs:
        rec = run.record
        paper = model.paper_shape_bias
        rows.append({"model": title, "ours": f3(rec.shape_bias), "95% CI": ci_text(rec.ci95),
                     "paper": f3(paper), "difference": "" if paper is None or rec.shape_bias is None
                     else f"{rec.shape_bias - paper:+.3f}", "trials": cell_text(rec.num_trials),
                     "paper source": model.shape_bias_source or ""})
    return rows


def study_paper_rows(study) -> list[dict[str, str]]:
    """The paper's values the study compares with, one row per model (published or not)."""
    thresholds = study.thresholds or sorted({t for m in study.models for t in m.paper_erf})
    return [{"model": m.label,
             **{f"r t={t:.0%} (%)": paper_pct(m.paper_erf.get(round(float(t), 6))) for t in thresholds},
             "ERF source": m.erf_source or "", "shape bias": f3(m.paper_shape_bias),
             "shape-bias source": m.shape_bias_source or ""} for m in study.models]


def study_unpublished(study) -> list[dict[str, str]]:
    """The models the study lists without running them (no public weights) and those whose weights are
    downloaded by hand: their note and download link as plain text."""
    rows = []
    for m in study.models:
        if not (m.unpublished or m.download):
            continue
        d = m.download or {}
        rows.append({"model": m.label, "status": "no public weights" if m.unpublished else "download by hand",
                     "note": " ".join(x for x in (m.note, d.get("note") or "") if x), "download": d.get("url") or "",
                     "file": d.get("file") or ""})
    return rows
