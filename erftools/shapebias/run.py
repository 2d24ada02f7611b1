"""Shape-bias runs on disk: evaluate a model (resumable) or analyse decision files, and write a run folder.

A run folder (``erftools.results`` format, ``docs/shape-bias.md``) holds ``summary.json`` (``"kind":
"shape-bias"``; ``"complete": true`` is written last), ``decisions.csv`` (model-vs-human schema), for model runs
``probabilities_16class.npy``, and the plots ``shape_bias.png`` and ``shape_bias_bars.png``.

Resuming: while a model runs, each finished batch is appended to ``.decisions.partial.csv``. Its first line names
the run's fingerprint (a hash of model, weights, the network's tensors, seed, preprocessing and stimuli, spelled out
in ``.partial.json``) and every row ends with a CRC-32 of itself, so a row torn by an interruption or a full disk
is detected, dropped and recomputed. Running the same command again skips the images already decided; a resume
with another model or other settings is refused (``overwrite=True``/``--overwrite`` discards the partial file). A
finished folder with the same fingerprint is re-analysed without running the model again; a finished run of
another model is never replaced without ``overwrite``. While a run writes its folder it holds the folder's lock
(:mod:`erftools._lock`).

Images whose logits are not finite (NaN/inf weights, say) are skipped and counted (``num_nonfinite`` and
``nonfinite`` in the record); when more than ``max_nonfinite_fraction`` of the stimuli (1% by default) are
skipped, the run fails: a shape bias is never computed from NaN.
"""
from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import json
import logging
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import _runfolder
from ..results import records as results
from .._io import ErftoolsError, atomic_path, is_no_space, sha256_file, sha256_strings, write_json
from .._lock import run_lock
from .analysis import (DEFAULT_BOOTSTRAP, DEFAULT_SEED, DecisionMaker, analyse_decision_maker,
                       group_decision_makers, read_decisions)
from . import consistency
from .categories import CATEGORIES
from .decisions import (PRECISIONS, Decision, decision_rows, evaluate, new_precision_check, prepare_for_inference,
                        resolve_device, write_rows)
from .plots import entry_from_record, plot_shape_bias, plot_shape_bias_bars
from .reference import get_reference, published_for
from .stimuli import StimuliReport, load_stimuli, manifest_sha256, parse_stimulus

log = logging.getLogger(__name__)

PLOT_MATRIX = "shape_bias.png"
PLOT_BARS = "shape_bias_bars.png"
PROBABILITIES = "probabilities_16class.npy"
PARTIAL = results.SB_PARTIAL
PARTIAL_META = results.SB_PARTIAL_META
PARTIAL_MAGIC = "# erftools shape-bias partial decisions, fingerprint "
#: a run fails when more than this share of the stimuli give non-finite logits
MAX_NONFINITE_FRACTION = 0.01
PREPROCESSING_NOTE = ("224x224 stimuli used as they are (no resize, no crop), ToTensor ([0, 1]), then "
                      "(x - mean) / std with the model's own mean/std; softmax over the 1000 ImageNet logits; "
                      "16-class probability = mean over each category's ImageNet classes; decision = arg-max")


# ------------------------------------------------------------------------------------------------ model runs
def _conv_backends(model) -> list[str] | None:
    """The backends set on the model's large-kernel convolutions (None for models without any)."""
    from ..ops import DepthwiseConv2d

    found = sorted({m.backend for m in model.modules() if isinstance(m, DepthwiseConv2d)})
    return found or None


def model_fingerprint(model, info, stimuli: StimuliReport, *, seed: int, precision: str, prepare: bool) -> dict:
    """Everything that changes a model's decisions: model, weights, the network's tensors (and the seed of random
    weights), preprocessing, the stimuli, precision and preparation."""
    from ..models.prepare import parameters_sha256

    return {"model": info.name, "arch": info.arch, "weights": info.weights,
            "weights_sha256": info.weights_sha256, "seed": seed if info.weights == "random" else None,
            "parameters_sha256": parameters_sha256(model),
            "preprocessing": info.preprocessing.to_dict(), "stimuli_sha256": stimuli.sha256,
            "stimuli": sha256_strings(s.relpath for s in stimuli.stimuli),
            "precision": precision, "prepare": bool(prepare)}


@dataclass
class _ModelRun:
    """One model's shape-bias run: its settings, and what the steps find out."""
    model: object
    info: object
    label: str
    out: Path
    stimuli: StimuliReport
    fingerprint: dict
    dist: object
    device: str
    resume: bool | None
    overwrite: bool
    options: dict  # batch_size, seed, n_boot, references, progress, max_nonfinite_fraction, precision, prepare, workers
    t0: float = field(default_factory=time.perf_counter)
    unreadable: list = field(default_factory=list)  # stimuli that failed to decode (rank 0: every process's)


def run_model(name: str, *, weights: str | None = "pretrained", out: str | os.PathLike,
              stimuli: StimuliReport | None = None, stimuli_dir: str | os.PathLike | None = None,
              allow_incomplete: bool = False, label: str | None = None, batch_size: int = 32,
              device: str | None = None, seed: int = DEFAULT_SEED, n_boot: int = DEFAULT_BOOTSTRAP,
              references: Sequence[str] = ("humans",), progress: bool = True, overwrite: bool = False,
              fresh: bool | None = None, resume: bool | None = None, model=None, conv_backend: str | None = None,
              max_nonfinite_fraction: float = MAX_NONFINITE_FRACTION, precision: str = "fp32",
              prepare: bool = True, workers: int | None = None, prompts: Sequence[str] | None = None) -> dict:
    """Evaluate a model on the cue-conflict stimuli and write a complete run folder; return the record.

    ``weights``: as :func:`erftools.create_model` (``"random"`` weights are initialised after ``torch.manual_seed
    (seed)`` so an interrupted run resumes with the same network). ``model``: an already built model (skips
    ``create_model``; ``name`` is then only a label). ``conv_backend``: RepLKNet's large-kernel convolution backend
    (see :mod:`erftools.ops`; default ``auto``). ``overwrite``: discard a partial or finished run of other settings
    in ``out`` (``fresh`` is its former name); ``resume=True``: there must be an interrupted or finished run of these
    settings to continue (without it one is continued when present). ``max_nonfinite_fraction``: the largest share
    of stimuli that may be skipped for non-finite logits before the run fails. ``precision``: ``fp32`` (default, the
    protocol's) or ``bf16`` (every batch is also run in fp32 and the changed decisions are recorded).
    ``prepare``: re-parameterise, fold BatchNorms and use channels-last first (see
    :func:`erftools.shapebias.decisions.prepare_for_inference`). ``workers``: image-decoding processes.
    ``prompts``: for ``openclip:`` models, the templates of the text classifier (default: the 80 CLIP ImageNet
    templates; see :mod:`erftools.shapebias.zeroshot`).

    Under ``torchrun`` the stimuli are split across the processes; rank 0 writes the same files as one process.
    The folder follows the run-folder protocol (:mod:`erftools._runfolder`); the steps are :func:`_open_state`,
    :func:`_evaluate_share`, :func:`_model_record`, :func:`_finish`.
    """
    import torch

    from .._dist import Dist
    from .._limits import check_bound
    from ..models import create_model, get_model_info

    overwrite = bool(overwrite or fresh)
    if resume and overwrite:
        raise ErftoolsError("resume and overwrite contradict each other; choose one")
    for quantity, value, what in (("seed", seed, "seed"), ("bootstrap", n_boot, "n_boot"),
                                  ("batch_size", batch_size, "batch_size")):
        check_bound(quantity, value, what)
    if precision not in PRECISIONS:
        raise ErftoolsError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if stimuli is None:
        stimuli = load_stimuli(stimuli_dir, allow_incomplete=allow_incomplete)
    if model is None:
        torch.manual_seed(seed)
        model = create_model(name, weights=weights, conv_backend=conv_backend)
    info = get_model_info(model)
    device = resolve_device(device)
    fingerprint = model_fingerprint(model, info, stimuli, seed=seed, precision=precision, prepare=prepare)
    from .zeroshot import prepare_zero_shot

    model, zero_shot = prepare_zero_shot(model, prompts, device, fingerprint["parameters_sha256"])
    if zero_shot:  # open_clip: the prompts, class names and text classifier are part of what a resume must match
        fingerprint["zero_shot"] = zero_shot
    run = _ModelRun(model, info, label or info.name, Path(out), stimuli, fingerprint, Dist(), device, resume,
                    overwrite, dict(batch_size=batch_size, seed=seed, n_boot=n_boot, references=references,
                                    progress=progress, max_nonfinite_fraction=max_nonfinite_fraction,
                                    precision=precision, prepare=prepare, workers=workers))
    with _runfolder.held(run.out, run.dist, torch.device(run.device), "shape-bias run"):
        return _run_model_steps(run)


def _partial_fingerprint(out: Path, fingerprint: dict) -> dict | None:
    """The fingerprint the partial decisions in ``out`` were written with (None: there are none, or only files of an
    older erftools, which are discarded): ``.partial.json``, else what the first file's header hash says."""
    files = _partial_files(out)
    if not files:
        return None
    with contextlib.suppress(OSError, ValueError):
        meta = json.loads((out / PARTIAL_META).read_text(encoding="utf-8"))
        if isinstance(meta, dict):
            meta.pop(STIMULI_FILES, None)
            return meta
    try:
        with open(files[0], encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
    except OSError:
        return None
    if not first.startswith(PARTIAL_MAGIC):
        return None
    return fingerprint if first[len(PARTIAL_MAGIC):].strip() == _fingerprint_hash(fingerprint) else {}


def _open_state(run: _ModelRun) -> dict:
    """(Rank 0) the protocol's answer for the folder: the decisions of the finished run of these settings (reused,
    re-analysed), or the partial decisions to continue, with the partial file started. Partial decisions made
    before the stimuli changed keep those of the unchanged stimuli (:func:`_after_stimuli_change`)."""
    folder = _runfolder.RunFolder(run.out, SB_RUN, run.fingerprint, resume=run.resume, overwrite=run.overwrite)
    interrupted = None if run.overwrite else _partial_fingerprint(run.out, run.fingerprint)
    changed = set(_runfolder.differences(interrupted, run.fingerprint)) if interrupted else set()
    kept = _after_stimuli_change(run, interrupted) if changed and changed <= STIMULI_KEYS else None
    if kept is not None:
        interrupted = None
    state, existing = folder.decide(interrupted)
    decisions, nonfinite = (_reuse_complete(run.out, run.fingerprint, run.stimuli) if state == _runfolder.FINISHED
                            else (None, []))
    done = {}
    if decisions is None:
        _mark_incomplete(run.out)
        done = _read_partial(run.out, run.fingerprint, run.stimuli) if interrupted is not None else (kept or {})
        if done:
            log.info("resuming %s: %d of %d images already decided", run.out, len(done), len(run.stimuli.stimuli))
        _start_partial(run.out, run.fingerprint, run.stimuli, keep=interrupted is not None and bool(done))
        if kept:
            _append_partial(run.out / PARTIAL, list(kept.values()))
    return {"reused": decisions is not None, "done": done, "decisions": decisions, "nonfinite": nonfinite,
            "unreadable": list((existing or {}).get("unreadable") or []) if decisions is not None else []}


#: the fingerprint keys that say which stimuli a run decides; a resume after only these changed keeps the decisions
#: of the stimuli that did not change
STIMULI_KEYS = {"stimuli_sha256", "stimuli"}
STIMULI_FILES = "stimuli_files"  # in .partial.json: {relpath: "size|mtime_ns"} of the stimuli when it was written


def _stimuli_files(stimuli: StimuliReport) -> dict:
    out = {}
    for s in stimuli.stimuli:
        try:
            st = (Path(stimuli.root) / s.relpath).stat()
            out[s.relpath] = f"{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            out[s.relpath] = "missing"
    return out


def _after_stimuli_change(run: _ModelRun, then: dict) -> dict:
    """The partial decisions of a run interrupted before its stimuli changed (fixed, added or removed files), kept
    for the stimuli whose file is the same; the change is named. Without the record of the files (an older
    erftools) the resume is refused, naming the change."""
    try:
        files = json.loads((run.out / PARTIAL_META).read_text(encoding="utf-8")).get(STIMULI_FILES)
    except (OSError, ValueError, AttributeError):
        files = None
    if not isinstance(files, dict):
        raise ErftoolsError(f"the stimuli in {run.stimuli.root} changed since the run in {run.out} was interrupted, "
                            "and its partial decisions do not record which files they were made from; pass "
                            "overwrite=True to decide every stimulus again")
    now = _stimuli_files(run.stimuli)
    changed = sorted(r for r in set(files) | set(now) if files.get(r) != now.get(r))
    old = _read_partial(run.out, then, None)
    kept = {r: Decision(next(s for s in run.stimuli.stimuli if s.relpath == r), d.response, d.probabilities)
            for r, d in old.items() if r in now and files.get(r) == now[r]}
    shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    log.warning("the stimuli changed since the run in %s was interrupted (%d file(s) changed, added or removed: %s); "
                "the %d decisions of the unchanged stimuli are kept, the others are decided again", run.out,
                len(changed), shown, len(kept))
    return kept


def _evaluate_share(run: _ModelRun, done: dict) -> tuple | None:
    """This process's share of the stimuli not yet decided, each batch appended to its partial file; gathered on
    rank 0: ``(decisions, nonfinite, precision check, backends report, prepared)`` there, None elsewhere."""
    from ..ops import backend_report

    rank, world, opts = run.dist.rank, run.dist.world, run.options
    todo = [s for s in run.stimuli.stimuli if s.relpath not in done]
    part = _partial_file(run.out, rank)
    if rank != 0 and not part.exists():
        _start_rank_partial(part, run.fingerprint)
    prepared = prepare_for_inference(run.model, run.device) if opts["prepare"] else None
    nonfinite, unreadable, check = [], [], {}
    mine = evaluate(run.model, todo[rank::world], run.stimuli.root, batch_size=opts["batch_size"], device=run.device,
                    progress=opts["progress"] and rank == 0, on_batch=functools.partial(_append_partial, part),
                    skipped=nonfinite, precision=opts["precision"], workers=opts["workers"], precision_check=check,
                    unreadable=unreadable)
    parts = run.dist.gather({"decisions": mine, "nonfinite": nonfinite, "check": check,
                             "backends": backend_report(), "unreadable": unreadable})
    if rank != 0:
        return None
    by_rel = {**done, **{d.stimulus.relpath: d for p in parts for d in p["decisions"]}}
    decisions = [by_rel[s.relpath] for s in run.stimuli.stimuli if s.relpath in by_rel]
    skipped = {d["file"]: d for p in parts for d in p["nonfinite"]}
    order = {s.relpath: i for i, s in enumerate(run.stimuli.stimuli)}
    nonfinite = sorted(skipped.values(), key=lambda d: order.get(d["file"], len(order)))
    run.unreadable = sorted((d for p in parts for d in p["unreadable"]), key=lambda d: order.get(d["file"], len(order)))
    check = _merge_checks([p["check"] for p in parts]) if opts["precision"] != "fp32" else {}
    return decisions, nonfinite, check, [p["backends"] for p in parts], prepared


def _shared_state(run: _ModelRun) -> dict:
    """The folder's state, decided by rank 0 alone (:func:`_open_state`), then shared with the other ranks."""
    state = _open_state(run) if run.dist.rank == 0 else {}
    if run.dist.world > 1:
        shared = run.dist.broadcast({k: v for k, v in state.items() if k != "decisions"}
                                    if run.dist.rank == 0 else None)
        if run.dist.rank != 0:
            state = dict(shared, decisions=None)
    return state


def _run_model_steps(run: _ModelRun) -> dict:
    """Inside the folder's lock: the state, this share's decisions (unless reused), the record written by rank 0."""
    from ..ops import reset_backend_report

    reset_backend_report()
    state = _shared_state(run)
    reused = state["reused"]
    if reused:
        result = (state["decisions"], state["nonfinite"], {}, None, None) if run.dist.rank == 0 else None
        run.unreadable = state.get("unreadable", [])
    else:
        result = _evaluate_share(run, state["done"])
    if result is None:
        return _runfolder.share(run.dist, None)
    decisions, nonfinite, check, backends, prepared = result
    seconds = None if reused else time.perf_counter() - run.t0
    _check_nonfinite(nonfinite, len(run.stimuli.stimuli), run.options["max_nonfinite_fraction"], run.info)
    if not decisions:
        raise ErftoolsError(f"no stimulus gave finite logits with {run.info.name} (weights {run.info.weights}); "
                            "nothing to analyse")
    record, refs = _model_record(run, decisions, nonfinite, check, backends, prepared, seconds)
    data = _finish(run.out, record, refs)
    _remove_partial(run.out)
    return _runfolder.share(run.dist, data)


def _model_record(run: _ModelRun, decisions: list, nonfinite: list, check: dict, backends, prepared,
                  seconds: float | None):
    """The decisions written (``decisions.csv``, ``probabilities_16class.npy``) and analysed: the typed record and
    the references to draw beside it (the paper's value for these weights included)."""
    info, label, out, opts = run.info, run.label, run.out, run.options
    rows = decision_rows(decisions, label)
    write_rows(out / results.SB_DECISIONS, rows)
    with atomic_path(out / PROBABILITIES) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.stack([d.probabilities for d in decisions]).astype(np.float32))
    dm = DecisionMaker(label, rows, results.MODEL, [label], [str(out / results.SB_DECISIONS)])
    analysis = analyse_decision_maker(dm, n_boot=opts["n_boot"], seed=opts["seed"])
    pub = published_for(info.name, info.weights, (run.fingerprint.get("zero_shot") or {}).get("prompts_sha256"))
    seed = opts["seed"] if info.weights == "random" else None
    from .zeroshot import record_fields

    zs = record_fields(run.model)  # zero-shot models: the prompts, text classifier, open_clip's transform
    record = results.new_record(
        "shape-bias", label=label, source="model", decision_maker_kind=results.MODEL, model=info.to_dict(),
        weights={"source": info.weights, "sha256": info.weights_sha256, "seed": seed},
        preprocessing=zs.get("preprocessing") or dict(info.preprocessing.to_dict(), resize=None, crop=None,
                                                      note=PREPROCESSING_NOTE), zero_shot=zs.get("zero_shot"),
        stimuli=_stimuli_record(run.stimuli), decisions=results.SB_DECISIONS, probabilities=PROBABILITIES,
        categories=list(CATEGORIES), device=run.device, batch_size=opts["batch_size"],
        conv_backend=_conv_backends(run.model), conv_backends_report=backends,
        precision=opts["precision"], precision_check=check or None, prepared=prepared, world_size=run.dist.world,
        timing={"seconds": None if seconds is None else round(seconds, 3),
                "images_per_second": None if not seconds else round(len(decisions) / seconds, 2),
                "reused_decisions": seconds is None},
        num_nonfinite=len(nonfinite), nonfinite=nonfinite, num_unreadable=len(run.unreadable),
        unreadable=run.unreadable, published=pub, fingerprint=run.fingerprint,
        error_consistency=consistency.write_run(out, label, rows, results.MODEL), **analysis)
    refs = list(opts["references"])
    if pub and pub["name"] not in refs:
        refs.append(pub["name"])  # the paper's value for these weights, drawn next to ours
    return record, refs


def _merge_checks(checks: list[dict]) -> dict:
    out = new_precision_check()
    for c in filter(None, checks):
        for key in ("compared", "changed_decisions", "changed"):
            out[key] += c[key]
        out["max_abs_probability_diff"] = max(out["max_abs_probability_diff"], c["max_abs_probability_diff"])
    return out


def _check_nonfinite(nonfinite: list[dict], total: int, max_fraction: float, info) -> None:
    if not nonfinite:
        return
    n = len(nonfinite)
    if n > max_fraction * total:
        first = ", ".join(d["file"] for d in nonfinite[:3])
        raise ErftoolsError(
            f"{n} of {total} stimuli gave non-finite (NaN or infinite) logits ({first}{', ...' if n > 3 else ''}), "
            f"more than the {max_fraction:.0%} that may be skipped: the model {info.name} (weights "
            f"{info.weights}) produces NaN or infinity. Check the checkpoint for NaN/inf values and the model's "
            "arguments; no shape bias is computed from such outputs")
    log.warning("%d of %d stimuli gave non-finite logits and are left out (listed in the record as 'nonfinite')",
                n, total)


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
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(rec.read_text(encoding="utf-8"))
        if data.get("complete"):
            data["complete"] = False
            write_json(rec, data)


def _reuse_complete(out: Path, fingerprint: dict, stimuli: StimuliReport) -> tuple[list[Decision] | None, list]:
    """Decisions (and non-finite skips) of a finished run with the same fingerprint, so a re-run only re-analyses;
    ``(None, [])`` otherwise."""
    none: tuple[None, list] = (None, [])
    try:
        rec = results.read_json_record(out, "shape-bias")
    except results.ResultError:
        return none
    if not rec.get("complete") or rec.get("fingerprint") != fingerprint:
        return none
    nonfinite = list(rec.get("nonfinite") or [])
    skipped = {d.get("file") for d in nonfinite + list(rec.get("unreadable") or [])}
    expected = [s for s in stimuli.stimuli if s.relpath not in skipped]
    try:
        probs = np.load(out / PROBABILITIES, allow_pickle=False)
        with open(out / results.SB_DECISIONS, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, ValueError):
        return none
    if len(rows) != len(expected) or probs.shape != (len(rows), len(CATEGORIES)) or any(
            r.get("imagename") != s.name or r.get("category") != s.shape for s, r in zip(expected, rows)):
        return none
    return [Decision(s, r["object_response"], p.astype(np.float64))
            for s, r, p in zip(expected, rows, probs)], nonfinite


def _finished_of(record: dict) -> str:
    """`` of <decision maker> (weights <source>)`` of a finished record, in the protocol's refusal."""
    what = (record.get("model") or {}).get("name") or record.get("label") or "another decision maker"
    weights = (record.get("weights") or {}).get("source") if isinstance(record.get("weights"), dict) else None
    return f" of {what}" + (f" (weights {weights})" if weights else "")


#: the shape bias under the run-folder protocol (fingerprints compared whole)
SB_RUN = _runfolder.RunKind("shape-bias", "shape-bias", "partial decisions", None, _finished_of)


def _partial_file(out: Path, rank: int) -> Path:
    return out / (PARTIAL if rank == 0 else f"{PARTIAL[:-4]}.r{rank}.csv")


def _fingerprint_hash(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode("utf-8")).hexdigest()


def _with_crc(text: str) -> str:
    return f"{text},{zlib.crc32(text.encode('utf-8')):08x}\n"


def _partial_files(out: Path) -> list[Path]:
    """The partial decision files in ``out``: rank 0's, then those of the other ranks of a torchrun run."""
    main = [out / PARTIAL] if (out / PARTIAL).is_file() else []
    return main + sorted(out.glob(f"{PARTIAL[:-4]}.r*.csv"))


def _start_rank_partial(path: Path, fingerprint: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(PARTIAL_MAGIC + _fingerprint_hash(fingerprint) + "\n"
                       + ",".join(["relpath", "object_response"] + list(CATEGORIES) + ["crc32"]) + "\n",
                       encoding="utf-8")


def _start_partial(out: Path, fingerprint: dict, stimuli: StimuliReport, keep: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if not keep:
        for f in _partial_files(out):
            f.unlink(missing_ok=True)
    if not (out / PARTIAL).is_file():
        _start_rank_partial(out / PARTIAL, fingerprint)
    write_json(out / PARTIAL_META, dict(fingerprint, **{STIMULI_FILES: _stimuli_files(stimuli)}))


def _append_partial(path: Path, new: Sequence[Decision]) -> None:
    """Append one batch to the partial file ``path``: one write, then fsync. On failure the file is cut back to its
    previous end, so no torn row is left, and the error says how many decisions are safe."""
    block = "".join(_with_crc(",".join([d.stimulus.relpath, d.response] + [repr(float(x)) for x in d.probabilities]))
                    for d in new)
    with open(path, "a", encoding="utf-8", newline="") as fh:
        end = fh.tell()
        try:
            fh.write(block)
            fh.flush()
            os.fsync(fh.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):  # else the torn row is detected by its CRC when the file is read
                fh.truncate(end)
            cause = "no space left on the device" if is_no_space(exc) else (exc.strerror or str(exc))
            raise ErftoolsError(f"{cause} while saving decisions to {path}; the decisions saved before this batch "
                                "are intact. Fix that (free some space), then run the same command again to "
                                "continue") from exc


def _read_partial(out: Path, fingerprint: dict, stimuli: StimuliReport | None = None) -> dict[str, Decision]:
    """The verified rows of the partial files of this run; a partial file of another run is refused."""
    known = {s.relpath: s for s in stimuli.stimuli} if stimuli is not None else None
    done: dict[str, Decision] = {}
    for part in _partial_files(out):
        try:
            with open(part, encoding="utf-8", errors="replace") as fh:
                first = fh.readline()
                lines = fh.readlines()
        except OSError as exc:
            raise ErftoolsError(f"{part} cannot be read ({exc.strerror or exc}); pass overwrite=True to "
                                "discard it") from exc
        if not first.startswith(PARTIAL_MAGIC):
            log.warning("%s has no fingerprint (written by an older erftools or not by erftools); it is discarded "
                        "and the images are decided again", part)
            continue
        if first[len(PARTIAL_MAGIC):].strip() != _fingerprint_hash(fingerprint):  # the protocol compared the
            # fingerprints of .partial.json already: this file is stale or was edited
            raise ErftoolsError(f"{out} holds partial decisions of another run ({part.name}: its fingerprint is not "
                                f"this run's, nor that of {PARTIAL_META}); pass overwrite=True to discard them, or "
                                "choose another output folder")
        bad = 0
        for line in lines[1:]:
            text, sep, crc = line.rstrip("\n").rpartition(",")
            parts = text.split(",")
            try:
                if not sep or not line.endswith("\n") or f"{zlib.crc32(text.encode('utf-8')):08x}" != crc:
                    raise ValueError("torn or damaged row")
                if len(parts) != 2 + len(CATEGORIES) or parts[1] not in CATEGORIES:
                    raise ValueError("not a decision")
                stim = known[parts[0]] if known is not None else parse_stimulus(parts[0])
                probs = np.array([float(x) for x in parts[2:]], dtype=np.float64)
                if not np.isfinite(probs).all():
                    raise ValueError("non-finite probabilities")
            except (KeyError, ValueError):
                bad += 1
                continue
            done[stim.relpath] = Decision(stim, parts[1], probs)
        if bad:
            log.warning("%s: %d damaged or cut-off row(s) dropped; those images are decided again", part, bad)
    return done


def _remove_partial(out: Path) -> None:
    for f in _partial_files(out):
        f.unlink(missing_ok=True)
    (out / PARTIAL_META).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------- decisions files
def load_decision_makers(paths: Sequence[str | os.PathLike], *, pool_humans: bool = True,
                         keep_individuals: bool = False) -> list[DecisionMaker]:
    rows, seen = [], {}
    for p in paths:
        if Path(p).is_file():
            digest = sha256_file(p)
            if digest in seen:
                log.warning("%s has the same content as %s; its trials are counted once", p, seen[digest])
                continue
            seen[digest] = str(p)
        rows += read_decisions(p)
    return group_decision_makers(rows, pool_humans=pool_humans, keep_individuals=keep_individuals,
                                 file_labels=known_file_labels(paths))


def known_file_labels(paths: Sequence[str | os.PathLike]) -> dict[str, str]:
    """``{path: display label}`` for the files that are (byte for byte) reference files of texture-vs-shape."""
    from .._paths import data_file
    from .reference import REFERENCE_FILES
    from .stimuli import read_manifest

    by_hash = {h: rel for rel, h in read_manifest(data_file("shapebias", "reference-decisions.sha256")).items()}
    found = {str(Path(p)): by_hash.get(sha256_file(p)) for p in paths}
    return {p: REFERENCE_FILES[rel][1] for p, rel in found.items() if rel in REFERENCE_FILES}


def run_decision_maker(dm: DecisionMaker, *, out: str | os.PathLike, stimuli_dir: str | os.PathLike | None = None,
                       seed: int = DEFAULT_SEED, n_boot: int = DEFAULT_BOOTSTRAP,
                       references: Sequence[str] = ("humans",), overwrite: bool = False,
                       observers: Sequence | None = None) -> dict:
    """Analyse existing per-trial decisions (ours, model-vs-human's, or the human data) into a run folder.

    A finished run of another decision maker in ``out`` is only replaced with ``overwrite``. ``observers``: the
    human observers of the error consistency (:func:`erftools.shapebias.consistency.observers_for`; default the
    shipped ones)."""
    out = Path(out)
    with run_lock(out, what="shape-bias analysis"):
        fingerprint = {"label": dm.label, "kind": dm.kind, "members": list(dm.members),
                       "decisions_sha256": sha256_strings(sorted(sha256_file(f) for f in dm.files))}
        _runfolder.RunFolder(out, SB_RUN, fingerprint, overwrite=overwrite).decide(None)  # refuses another run's
        analysis = analyse_decision_maker(dm, n_boot=n_boot, seed=seed)
        _mark_incomplete(out)
        write_rows(out / results.SB_DECISIONS, dm.rows)
        files = [{"path": str(Path(f).resolve()), "sha256": sha256_file(f)} for f in dm.files]
        record = results.new_record(
            "shape-bias", label=dm.label, source="decisions", decision_maker_kind=dm.kind,
            model={"name": dm.label, "subjects": dm.members}, weights=None, preprocessing=None,
            decisions=results.SB_DECISIONS, decisions_files=files, categories=list(CATEGORIES),
            stimuli={"dir": str(Path(stimuli_dir).resolve()) if stimuli_dir else None, "sha256": manifest_sha256(),
                     "note": "decisions refer to the standard cue-conflict set; image file = <dir>/<category>/<the "
                             "part of imagename after its last '_'>"},
            fingerprint=fingerprint,
            error_consistency=consistency.write_run(out, dm.label, dm.rows, dm.kind, observers), **analysis)
        return _finish(out, record, references)


# -------------------------------------------------------------------------------------------- several makers
class _Folders:
    """Run folders for ``n`` decision makers: ``out`` itself for one (default ``default/<slug>``), else one
    sub-folder of ``out`` (default ``default``) per maker, named by its slug (``-2``, ``-3`` for repeats)."""

    def __init__(self, out: str | os.PathLike | None, default: Path, n: int):
        self.top, self.single, self.used = Path(out) if out else default, n == 1, set()
        self.out = out

    def __call__(self, label: str) -> Path:
        if self.single:
            return Path(self.out) if self.out else self.top / results.slug(label)
        name, k = results.slug(label), 2
        while name in self.used:
            name, k = f"{results.slug(label)}-{k}", k + 1
        self.used.add(name)
        return self.top / name


def run_many(models: Sequence[tuple[str, str, str | None]], decision_makers: Sequence[DecisionMaker], *,
             out: str | os.PathLike | None, default_out: Path, stimuli: StimuliReport | None = None,
             stimuli_dir: str | os.PathLike | None = None, seed: int = DEFAULT_SEED, n_boot: int = DEFAULT_BOOTSTRAP,
             references: Sequence[str] = ("humans",), overwrite: bool = False, on_result=None,
             **model_kwargs) -> tuple[list[dict], list[Path], Path | None]:
    """Several decision makers, each in its run folder (:class:`_Folders`): every ``(name, weights, label)`` of
    ``models`` evaluated (:func:`run_model`, ``model_kwargs`` its other arguments), then every decision maker
    analysed (rank 0; :func:`run_decision_maker`), then for more than one the combined plots at the top
    (:func:`write_combined`). ``on_result(record, folder)`` is called after each (rank 0). Returns the records, the
    folders and the top folder of the combined plots (None for one maker; on ranks other than 0 the lists hold
    the model runs only). ``prompts`` (in ``model_kwargs``) go to the ``openclip:`` models only."""
    from .._dist import Dist

    prompts = model_kwargs.pop("prompts", None)

    folder_for = _Folders(out, default_out, len(models) + len(decision_makers))
    records, folders = [], []
    rank = Dist().rank
    for name, weights, label in models:
        from ..models import resolve

        folder = folder_for(label or resolve(name)[0].name)
        rec = run_model(name, weights=weights, out=folder, stimuli=stimuli, label=label, seed=seed, n_boot=n_boot,
                        references=references, overwrite=overwrite, **model_kwargs,
                        prompts=prompts if name.strip().lower().startswith("openclip:") else None)
        records.append(rec)
        folders.append(folder)
        if rank == 0 and on_result is not None:
            on_result(rec, folder)
    if rank != 0:
        return records, folders, None  # torchrun: rank 0 analyses decision files and writes the combined plots
    observers = consistency.observers_for([dm.rows for dm in decision_makers])  # None: the shipped observers
    for dm in decision_makers:
        folder = folder_for(dm.label)
        rec = run_decision_maker(dm, out=folder, stimuli_dir=stimuli_dir, seed=seed, n_boot=n_boot,
                                 references=references, overwrite=overwrite, observers=observers)
        records.append(rec)
        folders.append(folder)
        if on_result is not None:
            on_result(rec, folder)
    if folder_for.single:
        return records, folders, None
    ec = consistency.write_matrix(folder_for.top, [
        (r["label"], read_decisions(f / results.SB_DECISIONS), r.get("decision_maker_kind") or results.MODEL)
        for r, f in zip(records, folders)], observers)  # every pair above the runs
    write_combined(folder_for.top, records, [str(f.relative_to(folder_for.top)) for f in folders],
                   references=references, error_consistency=ec)
    return records, folders, folder_for.top


# ------------------------------------------------------------------------------------------------ outputs
def _named(references: Sequence[str]) -> list[str]:
    """The reference names of ``references`` (``none`` and empty names left out)."""
    return [r for r in references if r and r.lower() != "none"]


def reference_entries(names: Sequence[str]) -> list[dict]:
    out = []
    for ref in map(get_reference, _named(names)):
        e = {"label": ref["label"], "shape_bias": ref["shape_bias"], "ci95": ref.get("ci95"),
             "per_category": ref["per_category"], "kind": ref["kind"]}
        if ref.get("subjects"):
            e["subjects"] = ref["subjects"]
        out.append(e)
    return out


def _plot(out: Path, records: Sequence[dict], references: Sequence[str], title: str) -> list[str]:
    """Both plots of the records, with the references not among them, in ``out``; the plots' file names."""
    import matplotlib.pyplot as plt

    entries = [entry_from_record(r) for r in records]
    labels = {e["label"] for e in entries}
    entries += [e for e in reference_entries(references) if e["label"] not in labels]
    plot_shape_bias(entries, out / PLOT_MATRIX, title=title)
    plot_shape_bias_bars(entries, out / PLOT_BARS, title=title)
    plt.close("all")
    return [PLOT_MATRIX, PLOT_BARS]


def _finish(out: Path, record: results.ShapeBiasRecord, references: Sequence[str]) -> dict:
    """Write plots, then the record with ``complete: true`` (last, validated); return the JSON object written."""
    record.plots = _plot(out, [record.to_dict()], references, f"Shape bias: {record.label}")
    record.references = _named(references)
    record.complete = True
    return results.write_record(out / results.SB_RECORD, record)


def write_combined(out: str | os.PathLike, records: Sequence[dict], folders: Sequence[str],
                   references: Sequence[str] = ("humans",), error_consistency: dict | None = None) -> dict:
    """The combined plots of several decision makers at the top of ``out`` and ``combined.json`` (an index;
    ``error_consistency``: the summary of :func:`erftools.shapebias.consistency.write_matrix`)."""
    out = Path(out)
    index = {"kind": results.COMBINED_KIND, "schema": results.SCHEMA,
             "plots": _plot(out, records, references, "Shape bias on cue-conflict stimuli"),
             "references": _named(references),
             "runs": [{"folder": f, "label": r["label"], "shape_bias": r["shape_bias"], "ci95": r["ci95"]}
                      for f, r in zip(folders, records)]}
    if error_consistency:
        index["error_consistency"] = error_consistency
    write_json(out / results.SB_COMBINED, index)
    return index
