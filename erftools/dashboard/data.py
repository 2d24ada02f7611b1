"""Reading what the dashboard and the report show: result folders, reference numbers, decisions, stimuli.

Nothing here imports Streamlit. Every problem with a result folder is raised as
:class:`erftools.results.ResultError` whose message names the folder and what is wrong, so the page can show it and
carry on with the other runs.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import results as R
from .._paths import data_dir
from ..results import ResultError, Run

PAPER_TABLE10 = "paper_table10.json"
THRESHOLDS = (0.2, 0.3, 0.5, 0.99)  # the paper's Table 10 thresholds
CATEGORIES = ("airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat", "chair", "clock", "dog",
              "elephant", "keyboard", "knife", "oven", "truck")
DECISION_CLASSES = ("shape", "texture", "other", "no conflict")
_STIMULUS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.png$")


# ----------------------------------------------------------------------------------------------------- locations
def source_root() -> Path:
    """The repository root of a source checkout (the folder holding ``erftools/``)."""
    return Path(__file__).resolve().parents[2]


def default_results_dir() -> Path:
    """The example results committed in ``reports/examples`` of the source checkout."""
    path = source_root() / "reports" / "examples"
    if not path.is_dir():
        raise ResultError(
            f"the example results are not here ({path}): they ship with a source checkout of erftools. "
            "Pass --results DIR with a folder written by `erftools erf` / `erftools shape-bias`.")
    return path


def results_root(explicit: str | os.PathLike | None = None) -> Path:
    """The results root: ``explicit``, else ``$ERFTOOLS_RESULTS``, else the committed examples."""
    from . import ENV_RESULTS

    chosen = explicit or os.environ.get(ENV_RESULTS)
    if chosen:
        path = Path(chosen).expanduser().resolve()
        if not path.is_dir():
            raise ResultError(f"results folder {path} does not exist")
        return path
    return default_results_dir().resolve()


def display_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when inside it (never show absolute paths of the server needlessly)."""
    try:
        rel = Path(path).resolve().relative_to(Path(root).resolve())
        return "." if str(rel) == "." else rel.as_posix()
    except ValueError:
        return Path(path).name


# ------------------------------------------------------------------------------------------------------- listing
@dataclass
class Listing:
    """The runs below a results folder, the ones that are not finished, and the problems found."""
    root: Path
    erf: list[Run]
    shape_bias: list[Run]
    incomplete: list[Run]
    problems: list[str]


def list_runs(root: str | os.PathLike, include_incomplete: bool = False) -> Listing:
    """Scan ``root``; malformed records become ``problems`` (messages), unfinished runs go to ``incomplete``."""
    root = Path(root)
    runs, problems = R.scan(root)
    done = [r for r in runs if r.complete or include_incomplete]
    incomplete = [r for r in runs if not r.complete]
    rel = [p.replace(str(root.resolve()), ".").replace(str(root), ".") for p in problems]
    return Listing(root, [r for r in done if r.kind == "erf"], [r for r in done if r.kind == "shape-bias"],
                   incomplete, rel)


def run_title(run: Run) -> str:
    """A short unique-ish title: the label, plus ``(random init)`` for untrained weights."""
    name = run.name
    if run.kind == "erf" and is_untrained(run.record) and "untrained" not in name.lower() \
            and "random" not in name.lower():
        name += " (random init)"
    return name


def is_untrained(record: dict) -> bool:
    weights = (record.get("model") or {}).get("weights")
    text = json.dumps(weights).lower() if weights is not None else "null"
    return weights in (None, "random", "none") or '"random"' in text or "random init" in text


def weights_text(record: dict) -> str:
    weights = (record.get("model") or {}).get("weights")
    if weights is None or weights == "random":
        return "random init (untrained)"
    if isinstance(weights, dict):
        for key in ("tag", "source", "description", "path", "url", "hf_hub_id"):
            if weights.get(key):
                text = str(weights[key])
                return ("random init (untrained)" if text == "random" else text)
        return json.dumps(weights)[:80]
    return str(weights)


def provenance(record: dict) -> dict[str, Any]:
    """The fields that say where a number comes from (for the metadata panel and the report)."""
    model = record.get("model") or {}
    out: dict[str, Any] = {"model": model.get("name"), "weights": weights_text(record),
                           "weights sha256": model.get("weights_sha256")}
    if record.get("kind") == "erf":
        images = record.get("images") or {}
        size = record.get("size")
        out.update({
            "image set": images.get("source"), "images sha256": images.get("sha256"),
            "sampler": images.get("sampler"), "seed": images.get("seed"),
            "size": "x".join(str(s) for s in size) if isinstance(size, (list, tuple)) else size,
            "images used": record.get("num_images"), "images skipped": record.get("num_skipped"),
            "stored downsample": record.get("stored_downsample", 1),
        })
    else:
        stimuli = record.get("stimuli") or {}
        out.update({"trials": record.get("num_trials"), "stimuli sha256": stimuli.get("sha256") if
                    isinstance(stimuli, dict) else None})
    versions = record.get("versions") or {}
    out.update({"device": _short(record.get("device")), "created": record.get("created"),
                "erftools": versions.get("erftools"), "torch": versions.get("torch")})
    return {k: v for k, v in out.items() if v not in (None, "", [])}


def _short(value: Any) -> Any:
    if isinstance(value, dict):
        return value.get("name") or value.get("type") or json.dumps(value)[:60]
    return value


# ----------------------------------------------------------------------------------------------------- ERF arrays
def load_erf_matrix(run: Run, max_side: int | None = None) -> tuple[np.ndarray, int]:
    """The run's contribution matrix as a per-pixel mean (float64) and the factor it is downsampled by.

    ``erf.npy`` may have been block-summed by ``stored_downsample`` = f (the committed examples): it is divided by
    f*f here so that every pixel is again a mean contribution. With ``max_side`` the matrix is block-averaged further
    for display (the factor returned includes it).
    """
    path = run.file(R.ERF_MATRIX)  # refused when it leads outside the results folder
    if not path.is_file():
        raise ResultError(f"{run.path.name}: {R.ERF_MATRIX} is missing (the run did not finish?)")
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise ResultError(f"{run.path.name}: {R.ERF_MATRIX} is unreadable ({exc})") from exc
    if arr.ndim != 2 or min(arr.shape) < 3 or arr.dtype.kind not in "fiu":
        raise ResultError(f"{run.path.name}: {R.ERF_MATRIX} should be a 2-D numeric matrix, "
                          f"got shape {arr.shape} dtype {arr.dtype}")
    f = run.record.get("stored_downsample") or 1
    try:
        f = int(f)
        if f < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise ResultError(f"{run.path.name}: stored_downsample={run.record.get('stored_downsample')!r} is not a "
                          "positive integer") from None
    m = np.asarray(arr, dtype=np.float64) / float(f * f)
    if not np.all(np.isfinite(m)):
        raise ResultError(f"{run.path.name}: {R.ERF_MATRIX} contains NaN or inf values")
    size = run.record.get("size")
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) for s in size):
        expect = (size[0] // f, size[1] // f)
        if m.shape != expect:
            raise ResultError(f"{run.path.name}: {R.ERF_MATRIX} has shape {m.shape} but the record says size "
                              f"{size} stored downsampled by {f} ({expect})")
    if max_side and max(m.shape) > max_side:
        g = int(math.ceil(max(m.shape) / max_side))
        m = block_reduce(m, g) / float(g * g)
        f *= g
    return m, f


def block_reduce(m: np.ndarray, f: int) -> np.ndarray:
    """Sum ``f`` x ``f`` blocks (rows/columns beyond a multiple of ``f`` are dropped symmetrically)."""
    if f <= 1:
        return np.asarray(m)
    h, w = (m.shape[0] // f) * f, (m.shape[1] // f) * f
    top, left = (m.shape[0] - h) // 2, (m.shape[1] - w) // 2
    m = np.asarray(m)[top:top + h, left:left + w]
    return m.reshape(h // f, f, w // f, f).sum(axis=(1, 3))


# ---------------------------------------------------------------------------------------------------- ERF analysis
# The analysis itself is the ERF engine's (erftools.erf.analysis); these wrappers adapt it to display matrices.
def log_normalise(matrix: np.ndarray) -> np.ndarray:
    """The paper's normalisation ``log10(M + 1) / max`` (:func:`erftools.erf.analysis.normalize`)."""
    from ..erf.analysis import normalize

    return normalize(matrix)


def linear_normalise(matrix: np.ndarray) -> np.ndarray:
    """``M / max``: the raw contributions on the same 0..1 scale."""
    m = np.asarray(matrix, dtype=np.float64)
    top = m.max() if m.size else 0.0
    return m / top if top > 0 else np.zeros_like(m)


def area_ratio_at(matrix: np.ndarray, threshold: float, downsample: int = 1,
                  full_size: tuple[int, int] | None = None) -> tuple[int | None, float | None]:
    """(side in full-resolution pixels, area ratio) of the high-contribution square of a mean matrix.

    Uses :func:`erftools.erf.analysis.area_ratios`. On a downsampled matrix the square is found on the coarse grid,
    so the side is a multiple of ``downsample`` (an approximation; the record's own area ratios were computed at
    full resolution by ``erftools erf``).
    """
    from ..erf.analysis import area_ratios

    side = area_ratios(matrix, [threshold])[0].side
    if side is None:
        return None, None
    h, w = full_size or (matrix.shape[0] * downsample, matrix.shape[1] * downsample)
    side_full = side * downsample
    return side_full, side_full * side_full / float(h * w)


def recorded_area_ratios(record: dict) -> dict[float, float | None]:
    """``{threshold: area ratio}`` from the record (None where the record says no square was found)."""
    out: dict[float, float | None] = {}
    for row in record.get("area_ratios") or []:
        try:
            t = round(float(row["threshold"]), 6)
        except (KeyError, TypeError, ValueError):
            continue
        v = row.get("area_ratio")
        out[t] = None if v is None else float(v)
    return out


def recorded_sides(record: dict) -> dict[float, int | None]:
    """``{threshold: side in pixels}`` from the record."""
    out: dict[float, int | None] = {}
    for row in record.get("area_ratios") or []:
        try:
            out[round(float(row["threshold"]), 6)] = None if row.get("side") is None else int(row["side"])
        except (KeyError, TypeError, ValueError):
            continue
    return out


def radial_profile(record: dict, matrix: np.ndarray | None = None, downsample: int = 1
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """(radius in full-resolution pixels, cumulative share of the contribution) from the record, else computed."""
    prof = record.get("radial_profile") or {}
    try:
        r = np.asarray(prof["radius"], dtype=float)
        c = np.asarray(prof["cumulative"], dtype=float)
        if r.ndim == 1 and r.shape == c.shape and r.size:
            return r, c
    except (KeyError, TypeError, ValueError):
        pass
    if matrix is None:
        return None
    from ..erf.analysis import radial_profile as compute

    prof = compute(matrix)
    return np.asarray(prof["radius"], float) * downsample, np.asarray(prof["cumulative"], float)


# ----------------------------------------------------------------------------------------------- paper references
def _norm(name: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name or "").lower())


def model_keys(record: dict) -> set[str]:
    """Normalised names a run may be known by (label, model name, timm name without its tag, arch, the subjects
    of a decision file), with and without a parenthesised remark such as "(torchvision)"."""
    model = record.get("model") or {}
    keys = set()
    subjects = model.get("subjects") if isinstance(model.get("subjects"), list) else []
    for v in (model.get("name"), model.get("arch"), record.get("label"), *subjects):
        if v:
            keys.add(_norm(v))
            keys.add(_norm(str(v).split(".")[0]))
            keys.add(_norm(re.sub(r"\(.*?\)", "", str(v))))
    keys.discard("")
    return keys


def paper_table10() -> dict:
    path = data_dir() / PAPER_TABLE10
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultError(f"the paper's Table 10 ({path.name}) is missing or unreadable: {exc}") from exc


def paper_erf_entry(record: dict, table: dict | None = None) -> dict | None:
    """The Table 10 row for this run's model, or None."""
    try:
        table = table or paper_table10()
    except ResultError:
        return None
    keys = model_keys(record)
    for row in table.get("models", []):
        names = {_norm(row.get("name"))} | {_norm(a) for a in row.get("aliases", [])}
        if keys & names:
            return row
    return None


FIG5_FILE = "published_fig5.json"
REFERENCE_FILE = "reference_decisions_summary.json"


def shapebias_reference() -> dict[str, dict[str, dict]]:
    """Reference shape-bias numbers shipped in ``data/shapebias`` by the shape-bias engine.

    ``{"paper": {label: entry}, "humans": {...}, "cnns": {...}, "other": {...}}``; every entry has ``shape_bias``
    and ``per_category`` ({category: shape bias}); paper entries also ``model`` and ``weights_tags``. ``humans``
    holds the pooled observers, ``cnns`` the ImageNet-trained torchvision networks, ``other`` the single observers,
    the Caffe networks and the Open Images ResNet. Missing files give empty groups.
    """
    out: dict[str, dict[str, dict]] = {"paper": {}, "humans": {}, "cnns": {}, "other": {}}
    folder = data_dir() / "shapebias"
    fig5 = _read_json(folder / FIG5_FILE)
    for key, e in (fig5.get("entries") or {}).items():
        if isinstance(e, dict) and "shape_bias" in e:
            out["paper"][e.get("label") or key] = _ref_item(e, key)
    refs = _read_json(folder / REFERENCE_FILE)
    for key, e in (refs.get("references") or {}).items():
        if not isinstance(e, dict) or "shape_bias" not in e:
            continue
        kind = e.get("kind")
        label = e.get("label") or key
        files = " ".join(e.get("files") or [])
        if kind == "humans":
            group = "humans"
        elif kind == "network" and "trained-CNNs" in files and "oidv2" not in key:
            group = "cnns"
        else:
            group = "other"
        out[group][label] = _ref_item(e, key)
    return out


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _ref_item(e: dict, key: str) -> dict:
    pc = e.get("per_category") or {}
    item = dict(e)
    item["key"] = key
    item["per_category"] = {str(k): (v.get("shape_bias") if isinstance(v, dict) else v) for k, v in pc.items()}
    return item


def paper_fig5_entry(record: dict, reference: dict | None = None) -> tuple[str, dict] | None:
    """The paper's Fig. 5 line for this run: same model (and weight tag when it says which), humans for humans."""
    reference = reference if reference is not None else shapebias_reference()
    paper = reference.get("paper", {})
    keys = model_keys(record)
    if any("human" in k for k in keys):
        for label, item in paper.items():
            if item.get("model") is None and "human" in label.lower():
                return label, item
        return None
    weights = (record.get("model") or {}).get("weights")
    tag = weights.get("tag") if isinstance(weights, dict) else weights
    candidates = [(label, item) for label, item in paper.items() if item.get("model") and _norm(item["model"]) in keys]
    for label, item in candidates:
        if tag and tag in (item.get("weights_tags") or []):
            return label, item
    for label, item in candidates:  # default: the ImageNet-1K line
        if "22k" not in label.lower():
            return label, item
    return candidates[0] if candidates else None


# ------------------------------------------------------------------------------------------------------ decisions
def classify(run: Run) -> str:
    """``"human"``, ``"cnn"`` (a reference CNN from the published decision files) or ``"model"``."""
    rec = run.record
    kind = rec.get("decision_maker_kind")
    if kind in ("humans", "human"):
        return "human"
    if kind == "network" and rec.get("source") == "decisions":  # published decisions of a network
        return "cnn"
    model = rec.get("model") or {}
    text = " ".join(str(x) for x in (rec.get("label"), model.get("name"))).lower()
    return "human" if ("human" in text or "subject" in text) else "model"


def shape_bias_order(runs: list[Run]) -> list[Run]:
    """Humans first, then measured models, then the reference networks; by name within each group."""
    rank = {"human": 0, "model": 1, "cnn": 2}
    return sorted(runs, key=lambda r: (rank[classify(r)], run_title(r).lower()))


def per_category(record: dict) -> dict[str, float | None]:
    """``{category: shape bias}`` from a shape-bias record (raises TypeError/ValueError when malformed)."""
    pc = record.get("per_category") or {}
    if not isinstance(pc, dict):
        raise TypeError(f"per_category should be a mapping, got {type(pc).__name__}")
    out: dict[str, float | None] = {}
    for cat, v in pc.items():
        val = v.get("shape_bias") if isinstance(v, dict) else v
        out[str(cat)] = None if val is None else float(val)
    return out


def load_decisions(source: Run | str | os.PathLike):
    """A decisions.csv as a DataFrame with the derived columns ``stimulus``, ``shape``, ``texture``, ``decided``.

    ``source`` is a shape-bias run (its ``decisions.csv``, refused when it leads outside the results folder) or the
    path of a decisions file.
    """
    import pandas as pd

    path = source.file(R.SB_DECISIONS) if isinstance(source, Run) else Path(source)
    if not path.is_file():
        raise ResultError(f"{path.parent.name}: {path.name} is missing")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises many kinds
        raise ResultError(f"{path.parent.name}: {path.name} is not a readable CSV ({exc})") from exc
    need = {"object_response", "category", "imagename"}
    if not need <= set(df.columns):
        raise ResultError(f"{path.parent.name}: {path.name} lacks the columns {sorted(need - set(df.columns))} "
                          "(expected the model-vs-human schema subj,session,trial,rt,object_response,category,"
                          "condition,imagename)")
    df = df.copy()
    df["stimulus"] = df["imagename"].map(lambda s: str(s).rsplit("_", 1)[-1])
    df["shape"] = df["category"].str.strip().str.lower()
    df["texture"] = df["stimulus"].map(texture_of)
    resp = df["object_response"].str.strip().str.lower()
    df["decided"] = np.where(df["shape"] == df["texture"], "no conflict",
                             np.where(resp == df["shape"], "shape", np.where(resp == df["texture"], "texture", "other")))
    return df


def texture_of(stimulus: str) -> str:
    stem = str(stimulus).rsplit(".", 1)[0]
    return re.sub(r"\d+", "", stem.rsplit("-", 1)[-1]).lower()


def merge_decisions(frames: dict[str, Any]):
    """One row per stimulus (shape category + file): per decision maker a decision column and a ``:: class``
    column. A pooled decision maker (the humans: several trials per stimulus) shows its most frequent answer and
    how many of its trials gave it, e.g. ``cat (7/10)``."""
    import pandas as pd

    merged = None
    for name, df in frames.items():
        g = df.groupby(["shape", "stimulus"], sort=False)
        counts = df.groupby(["shape", "stimulus", "object_response", "decided"], sort=False).size()
        counts = counts.reset_index(name="k").sort_values("k", ascending=False, kind="stable")
        top = counts.drop_duplicates(subset=["shape", "stimulus"]).copy()
        total = g.size().rename("n").reset_index()
        top = top.merge(total, on=["shape", "stimulus"])
        top[name] = np.where(top["n"] > 1, top["object_response"] + " (" + top["k"].astype(str) + "/"
                             + top["n"].astype(str) + ")", top["object_response"])
        part = top[["shape", "stimulus", name, "decided"]].rename(columns={"decided": f"{name} :: class"})
        merged = part if merged is None else merged.merge(part, on=["shape", "stimulus"], how="outer")
    if merged is None:
        return pd.DataFrame(columns=["shape", "stimulus", "texture"])
    merged.insert(2, "texture", merged["stimulus"].map(texture_of))
    return merged.sort_values(["shape", "stimulus"]).reset_index(drop=True)


# -------------------------------------------------------------------------------------------------------- stimuli
def stimuli_dir_for(override: str | os.PathLike | None = None) -> Path | None:
    """The cue-conflict stimuli folder: the operator's ``override`` (``erftools dashboard --stimuli``), else the
    ``erftools data fetch cue-conflict`` cache; None when neither exists.

    A folder named inside a run's record (``stimuli.dir`` in ``summary.json``) is never used: whoever wrote the
    result folder could point it anywhere on the server.
    """
    candidates: list[Path] = []
    if override:
        candidates.append(Path(override).expanduser())
    try:  # where `erftools data fetch cue-conflict` puts the stimuli
        from ..shapebias.stimuli import default_stimuli_dir

        candidates.append(default_stimuli_dir())
    except Exception:  # pragma: no cover - shape-bias engine missing
        pass
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    return None


def stimulus_path(stimuli_dir: Path, shape: str, stimulus: str, allowed: set[tuple[str, str]]) -> Path:
    """The file of one stimulus, only if (shape, stimulus) is a decision row's image and it lies inside the folder."""
    if (shape, stimulus) not in allowed:
        raise ResultError(f"refusing to show {shape}/{stimulus}: not an image named in the decisions")
    if not re.fullmatch(r"[a-z]+", shape) or not _STIMULUS_NAME.match(stimulus):
        raise ResultError(f"refusing to show {shape}/{stimulus}: not a cue-conflict file name")
    path = R.safe_path(stimuli_dir, Path(shape) / stimulus)
    if not path.is_file():
        flat = R.safe_path(stimuli_dir, stimulus)  # a flat folder of stimuli
        if flat.is_file():
            return flat
        raise ResultError(f"{shape}/{stimulus} is not in the stimuli folder")
    return path
