"""Fixtures for the dashboard and report tests: result folders written with the CLI's fields (a factory)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from erftools.dashboard.data import CATEGORIES

REPO = Path(__file__).resolve().parents[2]


def erf_matrix(size: int = 64, spread: float = 6.0, seed: int = 0) -> np.ndarray:
    """A centred bump plus a little noise: a plausible mean contribution matrix."""
    yy, xx = np.mgrid[0:size, 0:size]
    c = size // 2
    m = 50.0 * np.exp(-((yy - c) ** 2 + (xx - c) ** 2) / (2 * spread ** 2))
    m += np.random.default_rng(seed).random((size, size)) * 0.05
    return m.astype(np.float32)


def make_erf_run(folder: Path, name: str, *, size: int = 64, spread: float = 6.0, weights="random",
                 downsample: int = 1, complete: bool = True, matrix: np.ndarray | None = None, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    full = erf_matrix(size, spread) if matrix is None else matrix
    stored = full
    if downsample > 1:
        h = size // downsample
        stored = full.reshape(h, downsample, h, downsample).sum(axis=(1, 3)).astype(np.float32)
    np.save(folder / "erf.npy", stored)
    from erftools.dashboard.data import area_ratio_at

    ratios = []
    for t in (0.2, 0.3, 0.5, 0.99):
        side, ratio = area_ratio_at(full.astype(np.float64), t)
        ratios.append({"threshold": t, "side": side, "area_ratio": ratio})
    r = np.arange(0, size // 2, dtype=float)
    record = {
        "kind": "erf", "schema": 1, "complete": complete, "label": name,
        "model": {"name": name, "family": "replknet" if "replknet" in name else "timm", "arch": name,
                  "preprocessing": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
                  "weights": weights, "weights_sha256": None, "num_parameters": 1234},
        "images": {"source": "bundled", "files": ["a.jpg", "b.jpg"], "sha256": "ab" * 32, "sampler": "random",
                   "seed": 0, "num_requested": 2},
        "size": [size, size], "num_images": 2, "num_skipped": 0, "area_ratios": ratios,
        "radial_profile": {"radius": r.tolist(), "cumulative": (1 - np.exp(-r / spread)).tolist()},
        "stored_downsample": downsample, "prepared": False, "timings": {"total_s": 1.0}, "device": "cpu",
        "versions": {"erftools": "0.1.0", "torch": "2"}, "created": "2026-01-01T00:00:00+00:00",
    }
    record.update(extra)
    (folder / "erf.json").write_text(json.dumps(record), encoding="utf-8")
    return folder


def stimuli_names() -> list[tuple[str, str]]:
    """(shape, file) pairs: 4 per category, the first one without cue conflict."""
    out = []
    for i, shape in enumerate(CATEGORIES):
        out.append((shape, f"{shape}1-{shape}2.png"))
        for j in range(1, 4):
            tex = CATEGORIES[(i + j) % len(CATEGORIES)]
            out.append((shape, f"{shape}{j + 1}-{tex}{j}.png"))
    return out


def make_sb_run(folder: Path, name: str, *, p_shape: float = 0.3, seed: int = 0, complete: bool = True,
                stimuli_dir: str | None = None, dm_kind: str = "model", decisions: bool = True, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for k, (shape, stim) in enumerate(stimuli_names()):
        tex = stim.rsplit("-", 1)[-1].rstrip(".png").rstrip("0123456789")
        u = rng.random()
        resp = shape if u < p_shape else tex if u < 0.9 else "knife" if shape != "knife" else "oven"
        rows.append({"subj": name, "session": 1, "trial": k + 1, "rt": "NaN", "object_response": resp,
                     "category": shape, "condition": 0, "imagename": stim})
    if decisions:
        with open(folder / "decisions.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    per = {}
    for cat in CATEGORIES:
        sub = [r for r in rows if r["category"] == cat and not r["imagename"].startswith(f"{cat}1-")]
        s = sum(r["object_response"] == cat for r in sub)
        t = sum(r["object_response"] == r["imagename"].rsplit("-", 1)[-1][:-4].rstrip("0123456789") for r in sub)
        per[cat] = {"shape_bias": s / (s + t) if s + t else None, "fraction_shape": s / 4, "fraction_texture": t / 4,
                    "n": 4}
    sbs = [v["shape_bias"] for v in per.values() if v["shape_bias"] is not None]
    sb = float(np.mean(sbs))
    record = {"kind": "shape-bias", "schema": 1, "complete": complete, "label": name,
              "model": {"name": name, "family": "timm", "weights": "pretrained"},
              "decision_maker_kind": dm_kind, "source": "model" if dm_kind == "model" else "decisions",
              "shape_bias": sb, "fraction_correct_shape": sb * 0.8, "fraction_correct_texture": (1 - sb) * 0.8,
              "per_category": per, "ci95": [sb - 0.05, sb + 0.05], "accuracy_no_conflict": 0.9,
              "num_trials": len(rows), "stimuli": {"dir": stimuli_dir, "sha256": "cd" * 32},
              "preprocessing": {}, "plots": [], "created": "2026-01-01T00:00:00+00:00"}
    record.update(extra)
    (folder / "summary.json").write_text(json.dumps(record), encoding="utf-8")
    return folder


def make_stimuli(folder: Path) -> Path:
    from PIL import Image

    for i, (shape, stim) in enumerate(stimuli_names()):
        (folder / shape).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 24), ((i * 37) % 255, 90, 160)).save(folder / shape / stim)
    return folder


@pytest.fixture
def good_results(tmp_path) -> Path:
    root = tmp_path / "results"
    make_erf_run(root / "erf" / "replknet-31B", "replknet-31B", spread=12.0)
    make_erf_run(root / "erf" / "resnet-152", "resnet-152", spread=4.0, downsample=2)
    make_sb_run(root / "shape-bias" / "humans", "humans", p_shape=0.9, dm_kind="humans", seed=1)
    make_sb_run(root / "shape-bias" / "resnet152", "resnet152", p_shape=0.25, dm_kind="network", seed=2)
    make_sb_run(root / "shape-bias" / "replknet-31B", "replknet-31B", p_shape=0.4, seed=3)
    return root


@pytest.fixture
def broken_results(tmp_path) -> Path:
    """One good run of each kind plus every way a folder can be wrong."""
    root = tmp_path / "broken"
    make_erf_run(root / "erf" / "ok", "resnet-152")
    make_erf_run(root / "erf" / "no-npy", "replknet-13").joinpath("erf.npy").unlink()
    bad = make_erf_run(root / "erf" / "bad-npy", "swin-B")
    (bad / "erf.npy").write_bytes(b"not an array")
    wrong = make_erf_run(root / "erf" / "wrong-shape", "replknet-31B")
    np.save(wrong / "erf.npy", np.ones((10, 10, 3), np.float32))
    make_erf_run(root / "erf" / "unfinished", "resnet-101", complete=False)
    (root / "erf" / "garbage").mkdir(parents=True)
    (root / "erf" / "garbage" / "erf.json").write_text("{ not json", encoding="utf-8")
    (root / "erf" / "wrong-kind").mkdir(parents=True)
    (root / "erf" / "wrong-kind" / "erf.json").write_text('{"kind": "other"}', encoding="utf-8")
    make_sb_run(root / "sb" / "ok", "vgg16")
    make_sb_run(root / "sb" / "no-csv", "alexnet", decisions=False)
    make_sb_run(root / "sb" / "weird", "weird", per_category="oops", ci95=None, shape_bias="x")
    (root / "sb" / "garbage").mkdir(parents=True)
    (root / "sb" / "garbage" / "summary.json").write_text("[1, 2", encoding="utf-8")
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
    rows = (folder / "sb-run" / "decisions.csv").read_text(encoding="utf-8").splitlines()
    head, body = rows[0], [r.split(",") for r in rows[1:]]
    for r in body:
        r[4] = SECRET  # object_response
    (folder / "sb-run" / "decisions.csv").write_text("\n".join([head] + [",".join(r) for r in body]) + "\n")
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


def make_payload_results(root: Path) -> Path:
    """Runs whose labels, model names and decisions hold Markdown and HTML that would fetch outside URLs."""
    make_erf_run(root / "erf" / "md", f"erf {IMAGE_PAYLOAD}", weights={"tag": HTML_PAYLOAD}, device=HTML_PAYLOAD)
    make_sb_run(root / "sb" / "md", f"sb {IMAGE_PAYLOAD}", p_shape=0.5, seed=4, num_trials=HTML_PAYLOAD)
    csv_path = root / "sb" / "md" / "decisions.csv"
    rows = csv_path.read_text(encoding="utf-8").splitlines()
    body = [r.split(",") for r in rows[1:]]
    for i, r in enumerate(body):
        r[4] = f'"{IMAGE_PAYLOAD}"' if i % 2 else f'"{HTML_PAYLOAD.replace(chr(34), chr(34) * 2)}"'
    csv_path.write_text("\n".join([rows[0]] + [",".join(r) for r in body]) + "\n", encoding="utf-8")
    return root
