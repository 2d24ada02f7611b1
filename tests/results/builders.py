"""Result folders for the tests of the results layer, the report and the dashboard.

Every record is built through :mod:`erftools.results.records` (``ErfRecord`` / ``ShapeBiasRecord``, with the
fields the engines write), never as a hand-written dict. The numbers a record holds are computed here
independently of the code under test (:func:`reference_area_ratios` is the paper's definition written as plain
loops; the shape-bias counts are counted directly).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from erftools.results.records import HUMANS, MODEL, NETWORK, ErfRecord, ShapeBiasRecord, base_record

REPO = Path(__file__).resolve().parents[2]
THRESHOLDS = (0.2, 0.3, 0.5, 0.99)
#: the 16 categories, written out (not imported from the code under test)
CATEGORIES = ("airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat", "chair", "clock", "dog",
              "elephant", "keyboard", "knife", "oven", "truck")


# ------------------------------------------------------------------------------------------------------- ERF
def erf_matrix(size: int = 64, spread: float = 6.0, seed: int = 0) -> np.ndarray:
    """A centred bump plus a little noise: a plausible mean contribution matrix."""
    yy, xx = np.mgrid[0:size, 0:size]
    c = size // 2
    m = 50.0 * np.exp(-((yy - c) ** 2 + (xx - c) ** 2) / (2 * spread ** 2))
    m += np.random.default_rng(seed).random((size, size)) * 0.05
    return m.astype(np.float32)


def reference_area_ratios(matrix: np.ndarray, thresholds=THRESHOLDS) -> list[dict]:
    """The paper's high-contribution square, written as plain loops: on log10(M + 1) (the scale does not change
    the shares), the smallest centred square of side 2i+1 (i = 1 .. H//2 - 1) whose share of the total exceeds t."""
    a = [[math.log10(float(v) + 1.0) for v in row] for row in np.asarray(matrix, dtype=np.float64)]
    h, w = len(a), len(a[0])
    total = sum(sum(row) for row in a)
    out = []
    for t in thresholds:
        side = ratio = None
        for i in range(1, h // 2):
            s = sum(a[y][x] for y in range(h // 2 - i, h // 2 + i + 1) for x in range(w // 2 - i, w // 2 + i + 1))
            if s / total > t:
                side = 2 * i + 1
                ratio = side * side / (h * w)
                break
        out.append({"threshold": t, "side": side, "area_ratio": ratio})
    return out


def erf_record(name: str, *, size: int = 64, weights="random", downsample: int = 1, complete: bool = True,
               area_ratios: list[dict] | None = None, spread: float = 6.0, **extra) -> ErfRecord:
    """An ERF record with the fields ``erftools erf`` writes (values of a small fake run)."""
    r = np.arange(0, size // 2, dtype=float)
    fields = base_record(
        "erf", label=name,
        model={"name": name, "family": "replknet" if "replknet" in name else "timm", "arch": name,
               "preprocessing": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                 "interpolation": "bicubic", "input_size": 224},
               "weights": weights, "weights_sha256": None, "num_parameters": 1234},
        images={"source": "bundled", "files": ["a.jpg", "b.jpg"], "sha256": "ab" * 32, "sampler": "random",
                "seed": 0, "num_requested": 2, "num_available": 5},
        size=[size, size], num_images=2, num_skipped=0, num_nan=0, skipped=[], converted=[],
        processed=["a.jpg", "b.jpg"], thresholds=list(THRESHOLDS), area_ratios=area_ratios or [],
        radial_profile={"radius": r.tolist(), "cumulative": (1 - np.exp(-r / spread)).tolist()},
        stored_downsample=downsample, matrix_stats={"max": 50.0, "min": 0.0, "sum": 1.0, "centre": 50.0},
        target={"adapter": "test", "description": "a fake run", "feature_shape": [1, 8, 2, 2],
                "central_point": [1, 1]},
        prepared={"eval": True, "frozen_parameters": True, "structural_reparam": False, "fuse_bn": False,
                  "channels_last": False, "conv_backend": None},
        batch_size=1, device={"type": "cpu", "name": "cpu", "threads": 1}, world_size=1, resumed=False,
        timings={"wall_s": 1.0, "compute_s": 0.9}, fingerprint={"model": name},
        files={"matrix": "erf.npy", "figure": None})
    fields.update(complete=complete, created="2026-01-01T00:00:00+00:00",
                  versions={"erftools": "0.1.0", "torch": "2"})
    fields.update(extra)
    return ErfRecord.from_dict(fields, source=f"the test record of {name}")


def make_erf_run(folder: Path, name: str, *, size: int = 64, spread: float = 6.0, weights="random",
                 downsample: int = 1, complete: bool = True, matrix: np.ndarray | None = None, **extra) -> Path:
    """An ERF run folder: ``erf.npy`` (block-summed by ``downsample``) and ``erf.json`` whose area ratios are the
    full-resolution ones (:func:`reference_area_ratios`)."""
    folder.mkdir(parents=True, exist_ok=True)
    full = erf_matrix(size, spread) if matrix is None else matrix
    stored = full
    if downsample > 1:
        h = size // downsample
        stored = full.reshape(h, downsample, h, downsample).sum(axis=(1, 3)).astype(np.float32)
    np.save(folder / "erf.npy", stored)
    record = erf_record(name, size=size, weights=weights, downsample=downsample, complete=complete, spread=spread,
                        area_ratios=reference_area_ratios(full), **extra)
    write_record(folder / "erf.json", record)
    return folder


def write_record(path: Path, record) -> Path:
    import json

    path.write_text(json.dumps(record.to_dict()), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ shape bias
def stimuli_names() -> list[tuple[str, str]]:
    """(shape, file) pairs: 4 per category, the first one without cue conflict."""
    out = []
    for i, shape in enumerate(CATEGORIES):
        out.append((shape, f"{shape}1-{shape}2.png"))
        for j in range(1, 4):
            tex = CATEGORIES[(i + j) % len(CATEGORIES)]
            out.append((shape, f"{shape}{j + 1}-{tex}{j}.png"))
    return out


def texture_of(stimulus: str) -> str:
    return stimulus.rsplit("-", 1)[-1][:-4].rstrip("0123456789")


def decision_rows(name: str, p_shape: float, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for k, (shape, stim) in enumerate(stimuli_names()):
        tex = texture_of(stim)
        u = rng.random()
        resp = shape if u < p_shape else tex if u < 0.9 else "knife" if shape != "knife" else "oven"
        rows.append({"subj": name, "session": 1, "trial": k + 1, "rt": "NaN", "object_response": resp,
                     "category": shape, "condition": 0, "imagename": stim})
    return rows


def write_decisions(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def counts(rows: list[dict]) -> dict:
    """Shape and texture decisions on the cue-conflict trials, counted directly."""
    conflict = [r for r in rows if r["category"] != texture_of(r["imagename"])]
    s = sum(r["object_response"] == r["category"] for r in conflict)
    t = sum(r["object_response"] == texture_of(r["imagename"]) for r in conflict)
    return {"n": len(rows), "n_shape": s, "n_texture": t, "shape_bias": s / (s + t) if s + t else None}


def sb_record(name: str, rows: list[dict], *, dm_kind: str = MODEL, complete: bool = True,
              stimuli_dir: str | None = None, **extra) -> ShapeBiasRecord:
    """A shape-bias record with the fields ``erftools shape-bias`` writes, its numbers counted from ``rows``."""
    c = counts(rows)
    per = {}
    for cat in CATEGORIES:
        cc = counts([r for r in rows if r["category"] == cat])
        per[cat] = {"shape_bias": cc["shape_bias"], "fraction_shape": cc["n_shape"] / cc["n"],
                    "fraction_texture": cc["n_texture"] / cc["n"], "n": cc["n"], "n_shape": cc["n_shape"],
                    "n_texture": cc["n_texture"], "ci95": [0.0, 1.0]}
    sb = c["shape_bias"]
    model_run = dm_kind == MODEL
    fields = base_record(
        "shape-bias", label=name, source="model" if model_run else "decisions", decision_maker_kind=dm_kind,
        model=({"name": name, "family": "timm", "arch": name, "weights": "pretrained"} if model_run
               else {"name": name, "subjects": [name]}),
        weights={"source": "pretrained", "sha256": None, "seed": None} if model_run else None,
        preprocessing={"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]} if model_run else None,
        stimuli={"dir": stimuli_dir, "sha256": "cd" * 32}, decisions="decisions.csv",
        categories=list(CATEGORIES), fingerprint={"label": name},
        shape_bias=sb, fraction_correct_shape=c["n_shape"] / c["n"], fraction_correct_texture=c["n_texture"] / c["n"],
        ci95=[max(0.0, sb - 0.05), min(1.0, sb + 0.05)], accuracy_no_conflict=0.9, num_trials=c["n"],
        n_shape=c["n_shape"], n_texture=c["n_texture"], per_category=per, plots=[], references=["humans"])
    if model_run:
        fields.update(device="cpu", batch_size=16, num_nonfinite=0, nonfinite=[], probabilities=None)
    fields.update(complete=complete, created="2026-01-01T00:00:00+00:00")
    fields.update(extra)
    return ShapeBiasRecord.from_dict(fields, source=f"the test record of {name}")


def make_sb_run(folder: Path, name: str, *, p_shape: float = 0.3, seed: int = 0, complete: bool = True,
                stimuli_dir: str | None = None, dm_kind: str = MODEL, decisions: bool = True, **extra) -> Path:
    """A shape-bias run folder: ``decisions.csv`` (64 trials, 4 per category) and ``summary.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = decision_rows(name, p_shape, seed)
    if decisions:
        write_decisions(folder / "decisions.csv", rows)
    write_record(folder / "summary.json", sb_record(name, rows, dm_kind=dm_kind, complete=complete,
                                                    stimuli_dir=stimuli_dir, **extra))
    return folder


def make_stimuli(folder: Path) -> Path:
    from PIL import Image

    for i, (shape, stim) in enumerate(stimuli_names()):
        (folder / shape).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 24), ((i * 37) % 255, 90, 160)).save(folder / shape / stim)
    return folder


def good_results(root: Path) -> Path:
    make_erf_run(root / "erf" / "replknet-31B", "replknet-31B", spread=12.0)
    make_erf_run(root / "erf" / "resnet-152", "resnet-152", spread=4.0, downsample=2)
    make_sb_run(root / "shape-bias" / "humans", "humans", p_shape=0.9, dm_kind=HUMANS, seed=1)
    make_sb_run(root / "shape-bias" / "resnet152", "resnet152", p_shape=0.25, dm_kind=NETWORK, seed=2)
    make_sb_run(root / "shape-bias" / "replknet-31B", "replknet-31B", p_shape=0.4, seed=3)
    return root


# ------------------------------------------------------------------------------------------- crafted result folders
# Links and payloads a result folder may hold when it was written (or tampered with) by someone else. The
# dashboard and `erftools report` must show none of the outside files and render none of the text as Markdown.
SECRET = "SECRET-OUTSIDE"  # every file outside the results root carries this marker in its label or text
IMAGE_PAYLOAD = "![x](http://127.0.0.1:9/beacon.png)"  # rendered as Markdown, the viewer's browser fetches the URL
HTML_PAYLOAD = '<img src="http://127.0.0.1:9/html.png">'


def make_outside(folder: Path) -> Path:
    """Files a link inside a results folder may point to: one of each kind the readers open, all marked SECRET."""
    make_erf_run(folder / "erf-run", SECRET, spread=9.0)
    make_sb_run(folder / "sb-run", SECRET, p_shape=0.7, seed=9)
    path = folder / "sb-run" / "decisions.csv"
    rows = [dict(r, subj=SECRET) for r in csv.DictReader(path.open(encoding="utf-8"))]
    write_decisions(path, rows)
    make_stimuli(folder / "stimuli")
    return folder


def link(at: Path, target: Path) -> Path:
    """Replace ``at`` (a file or folder) by a symbolic link to ``target``."""
    if at.is_file():
        at.unlink()
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(target)
    return at


def make_linked_results(root: Path, outside: Path) -> Path:
    """One good run of each kind, plus runs whose files are symbolic links to the files in ``outside``."""
    make_erf_run(root / "erf" / "good", "resnet-152")
    make_sb_run(root / "sb" / "good", "vgg16")
    link(make_erf_run(root / "erf" / "npy-link", "npy-link") / "erf.npy", outside / "erf-run" / "erf.npy")
    link(make_erf_run(root / "erf" / "json-link", "json-link") / "erf.json", outside / "erf-run" / "erf.json")
    link(make_sb_run(root / "sb" / "csv-link", "csv-link") / "decisions.csv", outside / "sb-run" / "decisions.csv")
    link(make_sb_run(root / "sb" / "json-link", "json-link") / "summary.json", outside / "sb-run" / "summary.json")
    link(root / "erf" / "folder-link", outside / "erf-run")  # a whole run folder linked in
    link(root / "sb" / "folder-link", outside / "sb-run")
    return root


def make_payload_results(root: Path, payload_decisions: bool = False) -> Path:
    """Runs whose labels, model names, subjects and device hold Markdown and HTML that would fetch outside URLs.

    With ``payload_decisions`` a further run's decisions.csv answers with the payloads (a malformed file: the
    decisions reader refuses it, and the message quoting it must be shown as plain text)."""
    make_erf_run(root / "erf" / "md", f"erf {IMAGE_PAYLOAD}", weights={"tag": HTML_PAYLOAD}, device=HTML_PAYLOAD)
    make_sb_run(root / "sb" / "md", f"sb {IMAGE_PAYLOAD}", p_shape=0.5, seed=4)
    if payload_decisions:
        folder = make_sb_run(root / "sb" / "md-csv", f"csv {HTML_PAYLOAD}", p_shape=0.5, seed=5)
        path = folder / "decisions.csv"
        rows = list(csv.DictReader(path.open(encoding="utf-8")))
        for i, r in enumerate(rows):
            r["object_response"] = IMAGE_PAYLOAD if i % 2 else HTML_PAYLOAD
        write_decisions(path, rows)
    return root


# ------------------------------------------------------------------------------- layered runs and their baseline
def statistics(spread: float, theoretical: int | None = None, *, ok: bool = True) -> dict:
    """A statistics object as ``erftools erf`` records it, for an isotropic Gaussian of standard deviation
    ``spread`` (closed form: sigma = spread, no orientation, R^2 = 1, the disc holding a share s has radius
    spread * sqrt(-2 ln(1 - s)), the centre of mass at the centre)."""
    radii = {str(s): spread * math.sqrt(-2 * math.log(1 - s)) for s in (0.5, 0.9, 0.99)}
    gaussian = ({"ok": True, "reason": None, "sigma_x": spread, "sigma_y": spread, "sigma_major": spread,
                 "sigma_minor": spread, "orientation_deg": None, "r2": 1.0} if ok else
                {"ok": False, "reason": "the matrix is all zero", "sigma_x": None, "sigma_y": None, "r2": None})
    theo = None if theoretical is None else {"side": [theoretical, theoretical], "stride": [4, 4], "target": "x",
                                             "reason": None}
    return {"schema": 1, "empty": not ok, "gaussian": gaussian, "radii": radii,
            "centre_of_mass": {"x": 32.0, "y": 32.0, "offset_x": 0.0, "offset_y": 0.0, "offset": 0.0},
            "theoretical_rf": theo,
            "effective_to_theoretical": None if theoretical is None else {"0.2": 7 / theoretical},
            "warnings": []}


#: (layer, spread of its synthetic ERF, side of its theoretical receptive field): the ERF grows with depth
LAYERS = (("stages.0", 2.0, 13), ("stages.1", 4.0, 29), ("stages.2", 7.0, 61), ("stages.3", 11.0, 125))


def make_layered_run(folder: Path, name: str, *, layers=LAYERS, size: int = 64, thresholds=THRESHOLDS,
                     weights="random", baseline: bool = False, scale: float = 1.0, **extra) -> Path:
    """A run of ``erftools erf --layers`` (``--baseline random`` with ``baseline``): one matrix per layer in
    ``layers/``, the deepest also as ``erf.npy``, per-layer entries with area ratios at ``thresholds`` (computed by
    :func:`reference_area_ratios`) and :func:`statistics`; the baseline is a complete run folder ``baseline/``
    whose ERFs are ``scale`` times as wide."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "layers").mkdir(exist_ok=True)
    entries = []
    for k, (layer, spread, theo) in enumerate(layers):
        m = erf_matrix(size, spread * scale, seed=k)
        np.save(folder / "layers" / f"{layer}.npy", m)
        r = np.arange(0, size // 2, dtype=float)
        entries.append({"layer": layer, "target": f"module:{layer}", "feature_shape": [1, 8, size >> (k + 2),
                                                                                      size >> (k + 2)],
                        "central_point": [1, 1], "num_images": 2, "num_nan": 0,
                        "area_ratios": reference_area_ratios(m, thresholds),
                        "radial_profile": {"radius": r.tolist(), "cumulative": (1 - np.exp(-r / spread)).tolist()},
                        "statistics": statistics(spread * scale, theo),
                        "matrix_stats": {"max": 50.0, "min": 0.0, "sum": 1.0, "centre": 50.0},
                        "matrix": f"layers/{layer}.npy", "figure": None})
    deepest = entries[-1]
    np.save(folder / "erf.npy", np.load(folder / deepest["matrix"]))
    fields = dict(layers=entries, statistics=deepest["statistics"], thresholds=list(thresholds),
                  growth_figure=None)
    if baseline:
        make_layered_run(folder / "baseline", f"{name} (untrained, seed 0)", layers=layers, size=size,
                         thresholds=thresholds, scale=1.5, baseline_of="..")
        base = json_record(folder / "baseline" / "erf.json")
        fields["baseline"] = {"folder": "baseline", "weights": "random", "seed": 0, "label": base["label"],
                              "area_ratios": base["area_ratios"], "statistics": base["statistics"],
                              "num_images": 2,
                              "layers": [{"layer": e["layer"], "area_ratios": e["area_ratios"],
                                          "statistics": e["statistics"], "matrix": f"baseline/{e['matrix']}"}
                                         for e in base["layers"]]}
    fields.update(extra)
    record = erf_record(name, size=size, weights=weights, area_ratios=deepest["area_ratios"], **fields)
    write_record(folder / "erf.json", record)
    return folder


def json_record(path: Path) -> dict:
    import json

    return json.loads(path.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------------------------------- study
_STUDIES: dict = {}


def tiny_study(shared: Path, tmp_root: Path) -> Path:
    """The results folder of the tiny two-model study of tests/study (random resnet18 and a narrow RepLKNet at
    64 px on two bundled photographs, shape bias on six cue-conflict stimuli, an unpublished RepLKNet-3), run by
    the real study code once per test session (about 20 s on two cores); callers only read it."""
    import pytest

    from erftools.study import load_study, run_study

    from ..conftest import CUE_CONFLICT_MISSING

    from ..study.conftest import make_study_dir

    if "results" not in _STUDIES:
        cue = shared / "data" / "cue-conflict"
        if not (cue / "SHA256SUMS").is_file():
            pytest.skip(CUE_CONFLICT_MISSING.format(cue))
        study = make_study_dir(tmp_root / "study", cue)
        out = tmp_root / "results"
        outcome = run_study(load_study(study), results=out, progress=False, report=True)
        assert not outcome.failures, outcome.failures
        _STUDIES["results"] = out
    return _STUDIES["results"]


def copy_study(src: Path, dest: Path, **changes) -> Path:
    """A copy of a study's results folder whose study.json has ``changes`` applied: ``title=...`` sets a top-level
    field, ``model_<i>={...}`` updates model i, ``row_<i>={...}`` updates row i."""
    import json
    import shutil

    shutil.copytree(src, dest)
    path = dest / "study.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if key.startswith("model_"):
            data["models"][int(key[6:])].update(value)
        elif key.startswith("row_"):
            data["rows"][int(key[4:])].update(value)
        else:
            data[key] = value
    path.write_text(json.dumps(data), encoding="utf-8")
    return dest
