"""Shape-bias runs on disk: evaluate a model (resumable) or analyse decision files, and write a run folder.

A run folder (``erftools.results`` format, ``docs/shape-bias.md``) holds ``summary.json`` (``"kind":
"shape-bias"``; ``"complete": true`` is written last), ``decisions.csv`` (model-vs-human schema), for model runs
``probabilities_16class.npy``, and the plots ``shape_bias.png`` and ``shape_bias_bars.png``.

Resuming: while a model runs, each finished batch is appended to ``.decisions.partial.csv`` next to a fingerprint
(``.partial.json``: model, weights, seed, preprocessing, stimuli). Running the same command again skips the images
already decided; a finished folder with the same fingerprint is re-analysed without running the model again.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import results
from .._io import atomic_path, sha256_file, sha256_strings, write_json
from .analysis import (DEFAULT_BOOTSTRAP, DEFAULT_SEED, DecisionMaker, analyse_decision_maker,
                       group_decision_makers, read_decisions)
from .categories import CATEGORIES
from .decisions import Decision, decision_rows, evaluate, resolve_device, write_rows
from .plots import entry_from_record, plot_shape_bias, plot_shape_bias_bars
from .reference import get_reference, published_for
from .stimuli import StimuliReport, load_stimuli, manifest_sha256, parse_stimulus

log = logging.getLogger(__name__)

PLOT_MATRIX = "shape_bias.png"
PLOT_BARS = "shape_bias_bars.png"
PROBABILITIES = "probabilities_16class.npy"
COMBINED = "combined.json"
PARTIAL = ".decisions.partial.csv"
PARTIAL_META = ".partial.json"
PREPROCESSING_NOTE = ("224x224 stimuli used as they are (no resize, no crop), ToTensor ([0, 1]), then "
                      "(x - mean) / std with the model's own mean/std; softmax over the 1000 ImageNet logits; "
                      "16-class probability = mean over each category's ImageNet classes; decision = arg-max")


def slug(label: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-.")
    return s or "run"


# ------------------------------------------------------------------------------------------------ model runs
def _conv_backends(model) -> list[str] | None:
    """The backends set on the model's large-kernel convolutions (None for models without any)."""
    from ..ops import DepthwiseConv2d

    found = sorted({m.backend for m in model.modules() if isinstance(m, DepthwiseConv2d)})
    return found or None


def run_model(name: str, *, weights: str | None = "pretrained", out: str | os.PathLike,
              stimuli: StimuliReport | None = None, stimuli_dir: str | os.PathLike | None = None,
              allow_incomplete: bool = False, label: str | None = None, batch_size: int = 32,
              device: str | None = None, seed: int = DEFAULT_SEED, n_boot: int = DEFAULT_BOOTSTRAP,
              references: Sequence[str] = ("humans",), progress: bool = True, fresh: bool = False,
              model=None, conv_backend: str | None = None) -> dict:
    """Evaluate a model on the cue-conflict stimuli and write a complete run folder; return the record.

    ``weights``: as :func:`erftools.create_model` (``"random"`` weights are initialised after ``torch.manual_seed
    (seed)`` so an interrupted run resumes with the same network). ``model``: an already built model (skips
    ``create_model``; ``name`` is then only a label). ``conv_backend``: RepLKNet's large-kernel convolution backend
    (see :mod:`erftools.ops`; default ``auto``).
    """
    import torch

    from ..models import create_model, get_model_info

    out = Path(out)
    if stimuli is None:
        stimuli = load_stimuli(stimuli_dir, allow_incomplete=allow_incomplete)
    if model is None:
        torch.manual_seed(seed)
        model = create_model(name, weights=weights, conv_backend=conv_backend)
    info = get_model_info(model)
    label = label or info.name
    device = resolve_device(device)
    fingerprint = {"model": info.name, "arch": info.arch, "weights": info.weights,
                   "weights_sha256": info.weights_sha256, "seed": seed if info.weights == "random" else None,
                   "preprocessing": info.preprocessing.to_dict(), "stimuli_sha256": stimuli.sha256,
                   "stimuli": sha256_strings(s.relpath for s in stimuli.stimuli)}
    t0 = time.perf_counter()
    decisions = None if fresh else _reuse_complete(out, fingerprint, stimuli)
    reused = decisions is not None
    if decisions is None:
        _mark_incomplete(out)
        done = {} if fresh else _read_partial(out, fingerprint)
        if done:
            log.warning("resuming %s: %d of %d images already decided", out, len(done), len(stimuli.stimuli))
        _start_partial(out, fingerprint, keep=bool(done))
        decisions = evaluate(model, stimuli.stimuli, stimuli.root, batch_size=batch_size, device=device,
                             progress=progress, done=done, on_batch=lambda new: _append_partial(out, new))
    seconds = time.perf_counter() - t0
    rows = decision_rows(decisions, label)
    write_rows(out / results.SB_DECISIONS, rows)
    with atomic_path(out / PROBABILITIES) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.stack([d.probabilities for d in decisions]).astype(np.float32))
    dm = DecisionMaker(label, rows, "model", [label], [str(out / results.SB_DECISIONS)])
    analysis = analyse_decision_maker(dm, n_boot=n_boot, seed=seed)
    pub = published_for(info.name, info.weights)
    record = results.base_record(
        "shape-bias", label=label, source="model", decision_maker_kind="model", model=info.to_dict(),
        weights={"source": info.weights, "sha256": info.weights_sha256,
                 "seed": seed if info.weights == "random" else None},
        preprocessing=dict(info.preprocessing.to_dict(), resize=None, crop=None, note=PREPROCESSING_NOTE),
        stimuli=_stimuli_record(stimuli), decisions=results.SB_DECISIONS, probabilities=PROBABILITIES,
        categories=list(CATEGORIES), device=device, batch_size=batch_size, conv_backend=_conv_backends(model),
        timing={"seconds": None if reused else round(seconds, 3),
                "images_per_second": None if reused or not seconds else round(len(decisions) / seconds, 2),
                "reused_decisions": reused},
        published=pub, fingerprint=fingerprint)
    record.update(analysis)
    refs = list(references)
    if pub and pub["name"] not in refs:
        refs.append(pub["name"])  # the paper's value for these weights, drawn next to ours
    _finish(out, record, refs)
    _remove_partial(out)
    return record


def _stimuli_record(st: StimuliReport) -> dict:
    d = st.to_dict()
    for key in ("missing", "unexpected", "modified"):
        d[f"n_{key}"] = len(d[key])
        if len(d[key]) > 50:
            d[key] = d[key][:50] + [f"... ({len(d[key]) - 50} more)"]
    d["dir"] = str(Path(st.root).resolve())
    d["standard_sha256"] = manifest_sha256()
    return d


def _mark_incomplete(out: Path) -> None:
    rec = out / results.SB_RECORD
    if rec.is_file():
        try:
            data = json.loads(rec.read_text(encoding="utf-8"))
            if data.get("complete"):
                data["complete"] = False
                write_json(rec, data)
        except (OSError, ValueError):
            pass


def _reuse_complete(out: Path, fingerprint: dict, stimuli: StimuliReport) -> list[Decision] | None:
    """Decisions of a finished run with the same fingerprint (so a re-run only re-analyses), else None."""
    try:
        rec = results.read_record(out, "shape-bias")
    except results.ResultError:
        return None
    if not rec.get("complete") or rec.get("fingerprint") != fingerprint:
        return None
    try:
        probs = np.load(out / PROBABILITIES)
        with open(out / results.SB_DECISIONS, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, ValueError):
        return None
    if len(rows) != len(stimuli.stimuli) or probs.shape != (len(rows), len(CATEGORIES)):
        return None
    out_ = []
    for s, r, p in zip(stimuli.stimuli, rows, probs):
        if r.get("imagename") != s.name or r.get("category") != s.shape:
            return None
        out_.append(Decision(s, r["object_response"], p.astype(np.float64)))
    return out_


def _start_partial(out: Path, fingerprint: dict, keep: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if not keep:
        (out / PARTIAL).unlink(missing_ok=True)
        with open(out / PARTIAL, "w", encoding="utf-8", newline="") as fh:
            fh.write(",".join(["relpath", "object_response"] + list(CATEGORIES)) + "\n")
    write_json(out / PARTIAL_META, fingerprint)


def _append_partial(out: Path, new: Sequence[Decision]) -> None:
    with open(out / PARTIAL, "a", encoding="utf-8", newline="") as fh:
        for d in new:
            fh.write(",".join([d.stimulus.relpath, d.response] + [repr(float(x)) for x in d.probabilities]) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _read_partial(out: Path, fingerprint: dict) -> dict[str, Decision]:
    meta, part = out / PARTIAL_META, out / PARTIAL
    if not meta.is_file() or not part.is_file():
        return {}
    try:
        if json.loads(meta.read_text(encoding="utf-8")) != fingerprint:
            log.warning("%s holds partial results of another model/weights/stimuli; starting again", out)
            return {}
        done = {}
        with open(part, encoding="utf-8") as fh:
            next(fh)
            for line in fh:
                parts = line.rstrip("\n").split(",")
                if len(parts) != 2 + len(CATEGORIES):
                    continue  # a line cut short by the interruption
                try:
                    stim = parse_stimulus(parts[0])
                    probs = np.array([float(x) for x in parts[2:]], dtype=np.float64)
                except ValueError:
                    continue
                done[stim.relpath] = Decision(stim, parts[1], probs)
        return done
    except (OSError, ValueError, StopIteration):
        return {}


def _remove_partial(out: Path) -> None:
    (out / PARTIAL).unlink(missing_ok=True)
    (out / PARTIAL_META).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------- decisions files
def load_decision_makers(paths: Sequence[str | os.PathLike], *, pool_humans: bool = True,
                         keep_individuals: bool = False) -> list[DecisionMaker]:
    rows: list[dict] = []
    for p in paths:
        rows += read_decisions(p)
    return group_decision_makers(rows, pool_humans=pool_humans, keep_individuals=keep_individuals,
                                 file_labels=known_file_labels(paths))


def known_file_labels(paths: Sequence[str | os.PathLike]) -> dict[str, str]:
    """``{path: display label}`` for the files that are (byte for byte) reference files of texture-vs-shape."""
    from .._paths import data_file
    from .reference import REFERENCE_FILES
    from .stimuli import read_manifest

    by_hash = {h: rel for rel, h in read_manifest(data_file("shapebias", "reference-decisions.sha256")).items()}
    out = {}
    for p in paths:
        rel = by_hash.get(sha256_file(p))
        if rel in REFERENCE_FILES:
            out[str(Path(p))] = REFERENCE_FILES[rel][1]
    return out


def run_decision_maker(dm: DecisionMaker, *, out: str | os.PathLike, stimuli_dir: str | os.PathLike | None = None,
                       seed: int = DEFAULT_SEED, n_boot: int = DEFAULT_BOOTSTRAP,
                       references: Sequence[str] = ("humans",)) -> dict:
    """Analyse existing per-trial decisions (ours, model-vs-human's, or the human data) into a run folder."""
    out = Path(out)
    _mark_incomplete(out)
    analysis = analyse_decision_maker(dm, n_boot=n_boot, seed=seed)
    write_rows(out / results.SB_DECISIONS, dm.rows)
    files = [{"path": str(Path(f).resolve()), "sha256": sha256_file(f)} for f in dm.files]
    record = results.base_record(
        "shape-bias", label=dm.label, source="decisions", decision_maker_kind=dm.kind,
        model={"name": dm.label, "subjects": dm.members}, weights=None,
        preprocessing=None, decisions=results.SB_DECISIONS, decisions_files=files, categories=list(CATEGORIES),
        stimuli={"dir": str(Path(stimuli_dir).resolve()) if stimuli_dir else None, "sha256": manifest_sha256(),
                 "note": "decisions refer to the standard cue-conflict set; image file = <dir>/<category>/<the "
                         "part of imagename after its last '_'>"})
    record.update(analysis)
    _finish(out, record, references)
    return record


# ------------------------------------------------------------------------------------------------ outputs
def reference_entries(names: Sequence[str]) -> list[dict]:
    out = []
    for n in names:
        if not n or n.lower() == "none":
            continue
        ref = get_reference(n)
        e = {"label": ref["label"], "shape_bias": ref["shape_bias"], "ci95": ref.get("ci95"),
             "per_category": ref["per_category"], "kind": ref["kind"]}
        if ref.get("subjects"):
            e["subjects"] = ref["subjects"]
        out.append(e)
    return out


def _finish(out: Path, record: dict, references: Sequence[str]) -> None:
    """Write plots, then the record with ``complete: true`` (last)."""
    entries = [entry_from_record(record)]
    entries += [e for e in reference_entries(references) if e["label"] != entries[0]["label"]]
    plot_shape_bias(entries, out / PLOT_MATRIX, title=f"Shape bias: {record['label']}")
    plot_shape_bias_bars(entries, out / PLOT_BARS, title=f"Shape bias: {record['label']}")
    _close_figures()
    record["plots"] = [PLOT_MATRIX, PLOT_BARS]
    record["references"] = [r for r in references if r and r.lower() != "none"]
    record["complete"] = True
    write_json(out / results.SB_RECORD, record)


def write_combined(out: str | os.PathLike, records: Sequence[dict], folders: Sequence[str],
                   references: Sequence[str] = ("humans",)) -> dict:
    """The combined plots of several decision makers at the top of ``out`` and ``combined.json`` (an index)."""
    out = Path(out)
    entries = [entry_from_record(r) for r in records]
    labels = {e["label"] for e in entries}
    entries += [e for e in reference_entries(references) if e["label"] not in labels]
    plot_shape_bias(entries, out / PLOT_MATRIX, title="Shape bias on cue-conflict stimuli")
    plot_shape_bias_bars(entries, out / PLOT_BARS, title="Shape bias on cue-conflict stimuli")
    _close_figures()
    index = {"kind": "shape-bias-combined", "schema": results.SCHEMA, "plots": [PLOT_MATRIX, PLOT_BARS],
             "references": [r for r in references if r and r.lower() != "none"],
             "runs": [{"folder": f, "label": r["label"], "shape_bias": r["shape_bias"], "ci95": r["ci95"]}
                      for f, r in zip(folders, records)]}
    write_json(out / COMBINED, index)
    return index


def _close_figures() -> None:
    import matplotlib.pyplot as plt

    plt.close("all")
