"""Where results are and how they are read: run discovery, paths confined to the results folder, the files of a
run (its record, matrix and decisions).

Every file the report and the dashboard read goes through :func:`safe_path` / :func:`checked_path` (a run's files
through :meth:`Run.file`): a symbolic link or ``..`` leading out of the results folder is refused, and a path
written inside a result file is never used.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import ErftoolsError
from .._lock import LOCK_NAME, lock_holder
from .records import (ERF_KIND, ERF_MATRIX, ERF_RECORD, FAILURE_FILE, RECORD_FILES, RECORD_TYPES, RESUME_STATE,
                      SB_DECISIONS, SB_KIND, ErfRecord, Record, ResultError, ShapeBiasRecord, checked_path,
                      read_json_record)

ENV_RESULTS = "ERFTOOLS_RESULTS"  # the results root the dashboard serves (set by ``erftools dashboard``)
_STIMULUS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.png$")


# ------------------------------------------------------------------------------------------------------- paths
def safe_path(root: str | os.PathLike, relative: str | os.PathLike) -> Path:
    """The real path of ``root / relative``, refusing (:class:`ResultError`) any path that resolves outside
    ``root``: ``..``, absolute paths, and symbolic links (to files or folders) leading out; every path typed by a
    viewer goes through it too."""
    return checked_path(root, Path(root) / relative, shown=relative)


def display_path(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """``path`` relative to ``root`` when inside it (absolute paths of the server are not shown needlessly)."""
    try:
        rel = Path(path).resolve().relative_to(Path(root).resolve())
        return "." if str(rel) == "." else rel.as_posix()
    except ValueError:
        return Path(path).name


def source_root() -> Path:
    """The repository root of a source checkout (the folder holding ``erftools/``)."""
    return Path(__file__).resolve().parents[2]


def default_results_dir() -> Path:
    """The example results committed in ``reports/examples`` of the source checkout."""
    path = source_root() / "reports" / "examples"
    if not path.is_dir():
        raise ResultError(
            f"the example results are not here ({path}): they ship with a source checkout of erftools. "
            "Pass results=DIR, a folder written by `erftools erf` / `erftools shape-bias`")
    return path


def results_root(results: str | os.PathLike | None = None) -> Path:
    """The results root: ``results``, else ``$ERFTOOLS_RESULTS``, else the committed examples."""
    chosen = results or os.environ.get(ENV_RESULTS)
    if chosen:
        path = Path(chosen).expanduser().resolve()
        if not path.is_dir():
            raise ResultError(f"results folder {path} does not exist")
        return path
    return default_results_dir().resolve()


# ------------------------------------------------------------------------------------------------------- runs
@dataclass
class Run:
    """A run folder and its typed record (:class:`~erftools.results.records.ErfRecord` or
    :class:`~erftools.results.records.ShapeBiasRecord`)."""
    kind: str  # "erf" or "shape-bias"
    path: Path  # the run folder
    record: Record
    root: Path | None = None  # the results folder it was found in; its files are read only from inside it

    def file(self, name: str) -> Path:
        """The real path of the file ``name`` of this run, refused (:class:`ResultError`) when it resolves outside
        the results folder (or, for a run made by hand without ``root``, outside the run folder)."""
        return checked_path(self.root if self.root is not None else self.path, self.path / name)

    @property
    def name(self) -> str:
        return self.record.name or self.path.name

    @property
    def complete(self) -> bool:
        return bool(self.record.complete)


def read_record(folder: str | os.PathLike, kind: str, root: str | os.PathLike | None = None) -> dict:
    """The JSON object of a run folder's record, checked to be of ``kind``; :class:`ResultError` otherwise.

    With ``root`` (the results folder) the record is read only when its real path lies inside ``root``.
    """
    folder = Path(folder)
    path = checked_path(root, folder / RECORD_FILES[kind]) if root is not None else None
    return read_json_record(folder, kind, path=path)


def load_record(folder: str | os.PathLike, kind: str, root: str | os.PathLike | None = None) -> Record:
    """The typed, validated record of a run folder (see :func:`read_record`)."""
    folder = Path(folder)
    return RECORD_TYPES[kind].from_dict(read_record(folder, kind, root=root), source=folder / RECORD_FILES[kind])


def load_run(folder: str | os.PathLike, kind: str, root: str | os.PathLike | None = None) -> Run:
    """The :class:`Run` of one folder (files confined to ``root``, default the folder itself)."""
    folder = Path(folder)
    return Run(kind, folder, load_record(folder, kind, root=root), root=Path(root) if root is not None else None)


def find_runs(root: str | os.PathLike, kind: str | None = None, max_depth: int = 4) -> list[Run]:
    """All run folders below ``root`` (sorted by path). Malformed records are skipped; use :func:`scan` to see them."""
    return scan(root, kind, max_depth)[0]


def scan(root: str | os.PathLike, kind: str | None = None, max_depth: int = 4) -> tuple[list[Run], list[str]]:
    """Like :func:`find_runs`, also returning a message for every folder whose record could not be read (not
    JSON, another kind, a field of the wrong type, ...).

    Only what lies inside ``root`` is read: a record that is a link leading outside, or a linked folder leading
    outside, is not read and gets a message (links to folders inside ``root`` are skipped silently: the folder
    itself is scanned where it is).
    """
    root = Path(root)
    runs, problems = [], []
    if not root.is_dir():
        raise ResultError(f"results folder {root} does not exist")
    kinds = [kind] if kind else list(RECORD_FILES)
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < max_depth else []
        for d in dirnames:
            sub = Path(dirpath) / d
            if sub.is_symlink():  # os.walk does not follow it; say so when it leads out of the results folder
                try:
                    checked_path(root, sub)
                except ResultError as exc:
                    problems.append(f"{exc}; the linked folder is skipped")
        for k in kinds:
            if RECORD_FILES[k] in filenames:
                try:
                    runs.append(load_run(dirpath, k, root=root))
                except ResultError as exc:
                    problems.append(str(exc))
    runs.sort(key=lambda r: str(r.path))
    return runs, problems


@dataclass
class Interrupted:
    """A folder holding the resume state of an interrupted run (ERF checkpoints, shape-bias partial decisions) and
    no finished record: the same command continues it."""
    kind: str
    path: Path
    running: bool = False  # a process holds the folder's lock right now (the run is still going)
    failed: str | None = None  # the error of a run that failed (FAILURE_FILE): not continued by the same command


def find_interrupted(root: str | os.PathLike, max_depth: int = 4) -> list[Interrupted]:
    """The folders below ``root`` with the resume state of a run (:data:`~erftools.results.records.RESUME_STATE`)
    whose record is missing or not complete. Only what lies inside ``root`` is looked at."""
    root = Path(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        folder = Path(dirpath)
        depth = len(folder.relative_to(root).parts)
        names = set(dirnames) | set(filenames)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < max_depth else []
        for kind, state in RESUME_STATE.items():
            if state not in names:
                continue
            try:
                checked_path(root, folder / state)
                complete = (folder / RECORD_FILES[kind]).is_file() and load_record(folder, kind, root=root).complete
            except ResultError:
                continue  # leads outside, or a malformed record (reported by scan)
            if not complete:
                try:  # the lock file is only looked at when it lies inside the results folder too
                    checked_path(root, folder / LOCK_NAME)
                    running = lock_holder(folder) is not None
                except ResultError:
                    running = False
                out.append(Interrupted(kind, folder, running, None if running else _failure(root, folder)))
    return sorted(out, key=lambda i: str(i.path))


def _failure(root: Path, folder: Path) -> str | None:
    """The error recorded by a failed run in ``folder`` (:data:`~erftools.results.records.FAILURE_FILE`), else None."""
    try:
        path = checked_path(root, folder / FAILURE_FILE)
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return str(data.get("error") or "failed") if isinstance(data, dict) else "failed"
    except (ResultError, OSError, ValueError):
        return None


@dataclass
class Listing:
    """The runs below a results folder, the ones that are not finished, and the problems found."""
    root: Path
    erf: list[Run]
    shape_bias: list[Run]
    incomplete: list[Run]  # runs whose record says ``complete: false``
    problems: list[str]
    interrupted: list[Interrupted] = field(default_factory=list)  # resume state without a finished record


def list_runs(root: str | os.PathLike, include_incomplete: bool = False) -> Listing:
    """Scan ``root``; malformed records become ``problems`` (messages naming folders relative to ``root``),
    unfinished runs go to ``incomplete`` (and to the lists too with ``include_incomplete``), folders holding an
    interrupted run's resume state to ``interrupted``."""
    root = Path(root)
    runs, problems = scan(root)
    done = [r for r in runs if r.complete or include_incomplete]
    incomplete = [r for r in runs if not r.complete]
    rel = [p.replace(str(root.resolve()), ".").replace(str(root), ".") for p in problems]
    return Listing(root, [r for r in done if r.kind == ERF_KIND], [r for r in done if r.kind == SB_KIND],
                   incomplete, rel, find_interrupted(root))


# ------------------------------------------------------------------------------------------------ ERF matrix
def load_erf_matrix(run: Run, max_side: int | None = None):
    """The run's contribution matrix as a per-pixel mean (float64 numpy array) and the factor it is downsampled by.

    ``erf.npy`` may have been block-summed by ``stored_downsample`` = f (the committed examples): it is divided by
    f*f here so that every pixel is again a mean contribution. With ``max_side`` the matrix is block-averaged further
    for display (the factor returned includes it). The file is refused when it leads outside the results folder.
    """
    return _read_matrix(run, ERF_MATRIX, max_side)


def _read_matrix(run: Run, name: str, max_side: int | None):
    import numpy as np

    record: ErfRecord = run.record  # type: ignore[assignment]
    path = run.file(name)
    if not path.is_file():
        raise ResultError(f"{run.path.name}: {name} is missing (the run did not finish?)")
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise ResultError(f"{run.path.name}: {name} is unreadable ({exc})") from exc
    if arr.ndim != 2 or min(arr.shape) < 3 or arr.dtype.kind not in "fiu":
        raise ResultError(f"{run.path.name}: {name} should be a 2-D numeric matrix, "
                          f"got shape {arr.shape} dtype {arr.dtype}")
    f = record.stored_downsample or 1
    m = np.asarray(arr, dtype=np.float64) / float(f * f)
    if not np.all(np.isfinite(m)):
        raise ResultError(f"{run.path.name}: {name} contains NaN or inf values")
    if record.size:
        expect = (record.size[0] // f, record.size[1] // f)
        if m.shape != expect:
            raise ResultError(f"{run.path.name}: {name} has shape {m.shape} but the record says size "
                              f"{record.size} stored downsampled by {f} ({expect})")
    if max_side and max(m.shape) > max_side:
        g = int(math.ceil(max(m.shape) / max_side))
        m = block_reduce(m, g) / float(g * g)
        f *= g
    return m, f


# ------------------------------------------------------------------------------------------- layers, baseline
#: the file of a layer's matrix as ``erftools erf --layers`` names it: ``layers/<name>.npy``, one plain file name
_LAYER_MATRIX = re.compile(r"^layers/[A-Za-z0-9][A-Za-z0-9._-]*\.npy$")
#: the sub-folder holding a run's untrained baseline: one plain folder name
_SUBFOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def layer_entries(run: Run) -> list[dict]:
    """The per-layer entries of a layered ERF run (``layers`` in ``erf.json``), in depth order; [] for a run of
    the final feature map. An entry that is not an object with a layer name is a :class:`ResultError`."""
    layers = getattr(run.record, "layers", None) or []
    for i, e in enumerate(layers):
        if not isinstance(e, dict) or not isinstance(e.get("layer"), str) or not e["layer"]:
            raise ResultError(f"{run.path.name}: entry {i} of 'layers' in {ERF_RECORD} has no layer name")
    return list(layers)


def layer_entry(run: Run, layer: str) -> dict:
    """The entry of ``layer`` in the run's ``layers``; :class:`ResultError` naming the layers there are."""
    entries = layer_entries(run)
    for e in entries:
        if e["layer"] == layer:
            return e
    names = ", ".join(e["layer"] for e in entries) or "none (a run of the final feature map)"
    raise ResultError(f"{run.path.name}: no layer {layer!r} in this run; its layers: {names}")


def load_layer_matrix(run: Run, layer: str, max_side: int | None = None):
    """Like :func:`load_erf_matrix`, for the matrix of one layer of a layered run (``layers/<name>.npy``).

    The file name written in the record is used only when it is a plain file name inside the run's ``layers/``
    folder, and it is read only from inside the results folder."""
    return _read_matrix(run, layer_matrix_name(run, layer), max_side)


def layer_matrix_name(run: Run, layer: str) -> str:
    """The file of ``layer``'s matrix relative to the run folder (``layers/<name>.npy``), checked to be a plain
    file name in the run's ``layers/`` folder (:class:`ResultError` otherwise)."""
    name = layer_entry(run, layer).get("matrix")
    if not isinstance(name, str) or not _LAYER_MATRIX.match(name):
        raise ResultError(f"{run.path.name}: the matrix of layer {layer!r} should be a file layers/<name>.npy of "
                          f"the run folder, the record says {name!r}")
    return name


def load_baseline(run: Run) -> Run | None:
    """The untrained-baseline run of ``run`` (``erftools erf --baseline random``: a complete run folder in a
    sub-folder named by ``baseline.folder``), or None when the run has none. The folder must be a plain sub-folder
    name and lie inside the results folder; anything else is a :class:`ResultError`."""
    summary = getattr(run.record, "baseline", None)
    if not summary:
        return None
    folder = summary.get("folder") if isinstance(summary, dict) else None
    if not isinstance(folder, str) or not _SUBFOLDER.match(folder):
        raise ResultError(f"{run.path.name}: the baseline folder should be a sub-folder name, the record says "
                          f"{folder!r}")
    root = run.root if run.root is not None else run.path
    path = run.file(folder)
    if not (path / ERF_RECORD).exists():
        raise ResultError(f"{run.path.name}: its baseline run {folder}/ is missing")
    return load_run(path, ERF_KIND, root=root)


def is_baseline_run(run: Run, runs: list[Run]) -> bool:
    """Whether ``run`` is the untrained baseline of another run of ``runs`` (``baseline_of`` in its record and
    that run is its parent folder): the dashboard and the report show it beside that run."""
    if not getattr(run.record, "baseline_of", None):
        return False
    parent = run.path.parent.resolve()
    return any(r is not run and r.path.resolve() == parent for r in runs)


def full_size(run: Run, matrix, downsample: int) -> tuple[int, int]:
    """(H, W) of the full-resolution matrix: the record's ``size``, else the stored shape times the factor."""
    size = getattr(run.record, "size", None)
    if size:
        return int(size[0]), int(size[1])
    return matrix.shape[0] * downsample, matrix.shape[1] * downsample


def block_reduce(m, f: int):
    """Sum ``f`` x ``f`` blocks (rows/columns beyond a multiple of ``f`` are dropped symmetrically)."""
    import numpy as np

    if f <= 1:
        return np.asarray(m)
    h, w = (m.shape[0] // f) * f, (m.shape[1] // f) * f
    top, left = (m.shape[0] - h) // 2, (m.shape[1] - w) // 2
    m = np.asarray(m)[top:top + h, left:left + w]
    return m.reshape(h // f, f, w // f, f).sum(axis=(1, 3))


# ------------------------------------------------------------------------------------------------- decisions
def load_decisions(source: Run | str | os.PathLike) -> list[dict]:
    """The per-trial rows of a decisions file, read and checked by the shape-bias engine's reader
    (:func:`erftools.shapebias.analysis.read_decisions`, the one decisions reader of erftools).

    ``source`` is a shape-bias run (its ``decisions.csv``, refused when it leads outside the results folder) or the
    path of a decisions file. Every problem is a :class:`ResultError` naming the file by its run folder (never by
    the server's absolute path).
    """
    from ..shapebias.analysis import read_decisions

    path = source.file(SB_DECISIONS) if isinstance(source, Run) else Path(source)
    shown = f"{path.parent.name}/{path.name}"
    if not path.is_file():
        raise ResultError(f"{shown} is missing")
    try:
        return read_decisions(path)
    except ErftoolsError as exc:
        raise ResultError(str(exc).replace(str(path), shown)) from None


# --------------------------------------------------------------------------------------------------- stimuli
def stimuli_dir_for(override: str | os.PathLike | None = None) -> Path | None:
    """The cue-conflict stimuli folder: the operator's ``override`` (``erftools dashboard --stimuli``), else the
    ``erftools data fetch cue-conflict`` cache; None when neither exists.

    A folder named inside a run's record (``stimuli.dir`` in ``summary.json``) is never used: whoever wrote the
    result folder could point it anywhere on the server.
    """
    candidates = [Path(override).expanduser()] if override else []
    try:  # where `erftools data fetch cue-conflict` puts the stimuli
        from ..shapebias.stimuli import default_stimuli_dir

        candidates.append(default_stimuli_dir())
    except Exception:  # pragma: no cover - shape-bias engine missing
        pass
    return next((c.resolve() for c in candidates if c.is_dir()), None)


def stimulus_path(stimuli_dir: Path, shape: str, stimulus: str, allowed: set[tuple[str, str]]) -> Path:
    """The file of one stimulus, only if (shape, stimulus) is a decision row's image and it lies inside the folder."""
    if (shape, stimulus) not in allowed:
        raise ResultError(f"refusing to show {shape}/{stimulus}: not an image named in the decisions")
    if not re.fullmatch(r"[a-z]+", shape) or not _STIMULUS_NAME.match(stimulus):
        raise ResultError(f"refusing to show {shape}/{stimulus}: not a cue-conflict file name")
    path = safe_path(stimuli_dir, Path(shape) / stimulus)
    if not path.is_file():
        flat = safe_path(stimuli_dir, stimulus)  # a flat folder of stimuli
        if flat.is_file():
            return flat
        raise ResultError(f"{shape}/{stimulus} is not in the stimuli folder")
    return path


__all__ = ["STUDY_KIND", "STUDY_RECORD", "VERDICTS", "StudyModel", "StudyResult", "StudyRow", "find_studies",
           "study_from_dict", "read_study", "ENV_RESULTS", "Interrupted", "Listing", "find_interrupted", "Run",
           "block_reduce", "checked_path", "default_results_dir", "display_path", "find_runs", "full_size",
           "is_baseline_run", "layer_entries", "layer_entry", "load_baseline", "layer_matrix_name", "load_layer_matrix",
           "list_runs", "load_decisions", "load_erf_matrix", "load_record", "load_run", "read_record", "results_root",
           "safe_path", "scan", "source_root", "stimuli_dir_for", "stimulus_path", "ErfRecord", "ShapeBiasRecord"]


# --------------------------------------------------------------------------------------------------- studies
STUDY_RECORD = "study.json"  # written by ``erftools study`` (erftools.study.runner) at the top of its results
STUDY_KIND = "study"
STUDY_SCHEMA = 1
#: the verdicts of a study's comparison rows (``erftools.study.compare``), in the order they are explained
VERDICTS = ("agrees", "DIFFERS", "no paper value", "not run", "missing", "failed")
#: a run folder named in study.json: plain relative names (``<model id>/erf-<sampler>``), nothing else
_REL_FOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*(/[A-Za-z0-9][A-Za-z0-9._+-]*)*$")


@dataclass
class StudyRow:
    """One row of a study's comparison: one model, measurement and value next to the paper's."""
    model: str
    label: str
    measurement: str  # "ERF (sequential)", "shape bias"
    quantity: str  # "r @ 20% (%)" (area ratio in percent of the image), "shape bias"
    ours: float | None
    paper: float | None
    diff: float | None
    tolerance: str
    verdict: str  # one of VERDICTS
    folder: str | None = None  # the run folder relative to the study folder (shown as text only)
    note: str = ""


@dataclass
class StudyModel:
    """A model of a study: its run folders (relative to the study folder, checked) and the paper's values."""
    id: str
    name: str
    label: str
    weights: str | None
    note: str
    unpublished: bool
    download: dict | None  # {"url", "file", "note"} for weights downloaded by hand (text, never fetched here)
    runs: list[str]
    paper_erf: dict[float, float]  # {threshold: area ratio in percent}
    erf_source: str | None
    paper_shape_bias: float | None
    shape_bias_source: str | None


@dataclass
class StudyResult:
    """A study's results folder (``study.json`` with ``"kind": "study"``), read by :func:`read_study`."""
    path: Path  # the study folder (holding study.json)
    root: Path  # the results folder it was found in; every file is read only from inside it
    name: str
    title: str
    reference: str
    description: str
    tolerance: dict[str, dict]  # {"erf": {"abs", "rel"}, "shape_bias": {...}}
    measurements: dict
    models: list[StudyModel]
    rows: list[StudyRow]
    verdicts: dict[str, int]

    @property
    def thresholds(self) -> list[float]:
        erf = self.measurements.get("erf") or {}
        return [float(t) for t in erf.get("thresholds") or []]

    def model(self, model_id: str) -> StudyModel:
        for m in self.models:
            if m.id == model_id:
                return m
        raise ResultError(f"{STUDY_RECORD}: no model {model_id!r} in study {self.name!r}")

    def run_path(self, folder: str) -> Path:
        """The real path of a run folder named in study.json, refused unless it is a plain relative folder name
        that resolves inside the results folder (symbolic links included)."""
        return _study_folder(self.path, self.root, folder, "run folder")

    def runs(self, model: StudyModel) -> list[tuple[str, Run | None, str]]:
        """``(folder, run or None, problem)`` for each run of ``model``: the run when its folder holds a finished
        record of either kind, else None and why (not computed yet, interrupted, malformed)."""
        return [(folder, *self._run(folder)) for folder in model.runs]

    def _run(self, folder: str) -> tuple[Run | None, str]:
        path = self.run_path(folder)
        kinds = [k for k in RECORD_FILES if (path / RECORD_FILES[k]).is_file()]
        if not kinds:
            return None, "not computed yet (no record in the folder)"
        try:
            run = load_run(path, kinds[0], root=self.root)
        except ResultError as exc:
            return None, str(exc).replace(str(self.root), ".")
        return (run, "") if run.complete else (None, "unfinished (run the study again to continue it)")


def _study_folder(study: Path, root: Path, folder: Any, what: str) -> Path:
    if not isinstance(folder, str) or not _REL_FOLDER.match(folder):
        raise ResultError(f"{study.name}/{STUDY_RECORD}: the {what} {folder!r} should be a folder relative to the "
                          "study folder (plain names joined by '/'); refusing to read it")
    return checked_path(root, study / folder, shown=f"{study.name}/{folder}")


def _get(data: dict, key: str, types, where: str, default: Any = None, required: bool = False) -> Any:
    if key not in data or data[key] is None:
        if required:
            raise ResultError(f"{where}: the field {key!r} is missing")
        return default
    value = data[key]
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ResultError(f"{where}: the field {key!r} should be {_type_names(types)}, got {value!r}")
    if not isinstance(value, types):
        raise ResultError(f"{where}: the field {key!r} should be {_type_names(types)}, got {type(value).__name__}")
    return value


def _type_names(types) -> str:
    names = {str: "text", int: "a number", float: "a number", bool: "true or false", dict: "an object",
             list: "a list"}
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


_NUM = (int, float)


def _num(data: dict, key: str, where: str) -> float | None:
    v = _get(data, key, _NUM, where)
    if v is not None and not math.isfinite(float(v)):
        raise ResultError(f"{where}: the field {key!r} should be a finite number, got {v!r}")
    return None if v is None else float(v)


def _study_model(data: Any, i: int, where: str, study: Path, root: Path) -> StudyModel:
    w = f"{where}: models[{i}]"
    if not isinstance(data, dict):
        raise ResultError(f"{w} should be an object")
    mid = _get(data, "id", str, w, required=True)
    w = f"{where}: model {mid!r}"
    runs = _get(data, "runs", list, w, [])
    for folder in runs:
        _study_folder(study, root, folder, "run folder")
    paper = _get(data, "paper", dict, w, {})
    erf = _get(paper, "erf", dict, w + " paper", {})
    paper_erf = {}
    for k, v in erf.items():
        try:
            t = float(k)
        except ValueError:
            raise ResultError(f"{w}: paper.erf key {k!r} should be a threshold such as \"0.2\"") from None
        paper_erf[round(t, 6)] = _num(erf, k, w + " paper.erf")
    download = _get(data, "download", dict, w)
    if download is not None:
        download = {k: _get(download, k, str, w + " download") for k in ("url", "file", "note")}
    return StudyModel(mid, _get(data, "name", str, w, mid), _get(data, "label", str, w, mid),
                      _get(data, "weights", str, w), _get(data, "note", str, w, ""),
                      bool(_get(data, "unpublished", bool, w, False)), download, list(runs), paper_erf,
                      _get(paper, "erf_source", str, w + " paper"), _num(paper, "shape_bias", w + " paper"),
                      _get(paper, "shape_bias_source", str, w + " paper"))


def _study_row(data: Any, i: int, where: str) -> StudyRow:
    w = f"{where}: rows[{i}]"
    if not isinstance(data, dict):
        raise ResultError(f"{w} should be an object")
    verdict = _get(data, "verdict", str, w, required=True)
    if verdict not in VERDICTS:
        raise ResultError(f"{w}: verdict {verdict!r} should be one of {', '.join(VERDICTS)}")
    return StudyRow(_get(data, "model", str, w, required=True), _get(data, "label", str, w, ""),
                    _get(data, "measurement", str, w, ""), _get(data, "quantity", str, w, ""),
                    _num(data, "ours", w), _num(data, "paper", w), _num(data, "diff", w),
                    _get(data, "tolerance", str, w, ""), verdict, _get(data, "folder", str, w),
                    _get(data, "note", str, w, ""))


def read_study(folder: str | os.PathLike, root: str | os.PathLike | None = None) -> StudyResult:
    """The study in ``folder`` (its ``study.json``, ``"kind": "study"``), typed and checked.

    ``study.json`` is read only when it lies inside ``root`` (the results folder; default ``folder``), and every
    run folder it names must be a relative folder name resolving inside ``root``. A malformed file is a
    :class:`ResultError` naming the field and the fix (run ``erftools study`` again to rewrite it).
    """
    folder = Path(folder)
    root = Path(root) if root is not None else folder
    path = checked_path(root, folder / STUDY_RECORD)
    shown = display_path(path, root) if root != folder else f"{folder.name}/{STUDY_RECORD}"
    if not path.is_file():
        raise ResultError(f"{shown} is missing: {folder.name} is not the results folder of a study")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultError(f"{shown} is unreadable or not valid JSON ({exc}); run `erftools study` again to "
                          "rewrite it") from None
    return study_from_dict(data, folder, root, shown)


def study_from_dict(data: Any, folder: str | os.PathLike, root: str | os.PathLike, shown: str) -> StudyResult:
    """The one check of a study record (``study.json``): its writer (:func:`erftools.study.runner.write_outputs`)
    passes it what it is about to write, :func:`read_study` what it read. Every field typed, every run folder a plain
    relative name inside ``root``; a :class:`ResultError` naming ``shown`` and the field otherwise."""
    folder, root = Path(folder), Path(root)
    if not isinstance(data, dict) or data.get("kind") != STUDY_KIND:
        kind = data.get("kind") if isinstance(data, dict) else None
        raise ResultError(f"{shown} is not a study record (kind={kind!r}, expected {STUDY_KIND!r})")
    schema = data.get("schema", STUDY_SCHEMA)
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise ResultError(f"{shown}: the field 'schema' should be a number, got {schema!r}")
    if schema > STUDY_SCHEMA:
        raise ResultError(f"{shown} has schema {schema}, newer than this erftools reads ({STUDY_SCHEMA}); "
                          "upgrade erftools")
    try:
        name = _get(data, "name", str, shown, folder.name)
        tolerance = _get(data, "tolerance", dict, shown, {})
        for k, t in tolerance.items():
            if not isinstance(t, dict):
                raise ResultError(f"{shown}: tolerance {k!r} should be an object with abs and rel")
            _num(t, "abs", f"{shown}: tolerance {k!r}")
            _num(t, "rel", f"{shown}: tolerance {k!r}")
        measurements = _get(data, "measurements", dict, shown, {})
        erf = _get(measurements, "erf", dict, shown + " measurements")
        if erf is not None:
            for t in _get(erf, "thresholds", list, shown + " measurements.erf", []):
                if isinstance(t, bool) or not isinstance(t, _NUM):
                    raise ResultError(f"{shown}: measurements.erf.thresholds should be numbers, got {t!r}")
        models = [_study_model(m, i, shown, folder, root)
                  for i, m in enumerate(_get(data, "models", list, shown, required=True))]
        rows = [_study_row(r, i, shown) for i, r in enumerate(_get(data, "rows", list, shown, required=True))]
        verdicts = _get(data, "verdicts", dict, shown, {})
    except ResultError as exc:
        raise ResultError(f"{exc}; run `erftools study` again to rewrite the file") from None
    return StudyResult(folder, root, name, _get(data, "title", str, shown, ""),
                       _get(data, "reference", str, shown, ""), _get(data, "description", str, shown, ""),
                       tolerance, measurements, models, rows, {str(k): v for k, v in verdicts.items()})


def find_studies(root: str | os.PathLike, max_depth: int = 3) -> tuple[list[StudyResult], list[str]]:
    """The studies below ``root`` (folders holding a ``study.json`` of kind "study", sorted by folder) and a
    message for each one that could not be read. Only what lies inside ``root`` is read; a ``study.json`` of
    another kind is not a study and is passed over."""
    root = Path(root)
    if not root.is_dir():
        raise ResultError(f"results folder {root} does not exist")
    studies, problems = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < max_depth else []
        if STUDY_RECORD not in filenames:
            continue
        try:
            path = checked_path(root, Path(dirpath) / STUDY_RECORD)
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("kind") != STUDY_KIND:
                continue
        except (OSError, ValueError):
            pass  # read_study names the problem
        except ResultError as exc:
            problems.append(str(exc))
            continue
        try:
            studies.append(read_study(dirpath, root))
        except ResultError as exc:
            problems.append(str(exc))
    studies.sort(key=lambda s: str(s.path))
    return studies, problems
