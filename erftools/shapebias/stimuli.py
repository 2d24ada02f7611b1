"""The cue-conflict stimulus set: parse file names, find the images, check the set is complete and unmodified.

Layout: ``<shape>/<shape><i>-<texture><j>.png`` (16 folders, 1280 images of 224x224 RGB). The texture category is
the word after the last ``-`` without its digits; 80 images have shape == texture (no cue conflict).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .._io import ErftoolsError, cache_dir, sha256_file, sha256_strings
from .._paths import data_file
from .categories import CATEGORIES

NUM_IMAGES = 1280
IMAGE_SIZE = 224
_NAME = re.compile(r"^(?P<shape>[a-z]+)(?P<i>\d+)-(?P<texture>[a-z]+)(?P<j>\d+)\.png$")


@dataclass(frozen=True)
class Stimulus:
    """One cue-conflict image. ``relpath`` is ``<shape>/<file name>`` (the key used everywhere)."""
    relpath: str
    shape: str
    texture: str

    @property
    def name(self) -> str:
        return self.relpath.rsplit("/", 1)[-1]

    @property
    def conflict(self) -> bool:
        return self.shape != self.texture


def stimulus_file(imagename: str) -> str:
    """The stimulus file name inside an ``imagename`` of a decisions file.

    Human and texture-vs-shape files prefix it (``0001_s5n_s01_0_bird_00_bird3-bird2.png``); model-vs-human model
    files and erftools write it bare (``bird3-bird2.png``). Either way it is the part after the last ``_``.
    """
    return str(imagename).rsplit("/", 1)[-1].split("_")[-1]


def texture_category(imagename: str) -> str:
    """The texture category of an image name: the last ``-`` word of the file name, without digits and extension.

    ``'0001_s5n_s01_0_bird_00_bird3-clock2.png'`` -> ``'clock'``; the same rule as model-vs-human.
    """
    stem = stimulus_file(imagename).split(".")[0]
    return "".join(ch for ch in stem.split("-")[-1] if not ch.isdigit())


def shape_category(imagename: str) -> str:
    """The shape category written in a stimulus file name (the first ``-`` word without digits)."""
    stem = stimulus_file(imagename).split(".")[0]
    return "".join(ch for ch in stem.split("-")[0] if not ch.isdigit())


def parse_stimulus(relpath: str) -> Stimulus:
    """Parse ``<shape>/<shape><i>-<texture><j>.png``; raise ``ValueError`` naming the problem."""
    parts = relpath.replace(os.sep, "/").split("/")
    if len(parts) != 2:
        raise ValueError(f"{relpath}: expected <shape>/<shape><i>-<texture><j>.png")
    folder, name = parts
    m = _NAME.match(name)
    if not m:
        raise ValueError(f"{relpath}: the file name is not <shape><i>-<texture><j>.png")
    shape, texture = m["shape"], m["texture"]
    if shape != folder:
        raise ValueError(f"{relpath}: the file name says shape {shape!r} but it is in the folder {folder!r}")
    for kind, cat in (("shape", shape), ("texture", texture)):
        if cat not in CATEGORIES:
            raise ValueError(f"{relpath}: unknown {kind} category {cat!r}")
    return Stimulus(f"{folder}/{name}", shape, texture)


def read_manifest(path: str | os.PathLike | None = None) -> dict[str, str]:
    """``{relpath: sha256}`` of a ``sha256sum``-style file (default: the shipped cue-conflict manifest)."""
    path = Path(path) if path is not None else data_file("shapebias", "cue-conflict.sha256")
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digest, rel = line.split(None, 1)
        out[rel.lstrip("*")] = digest.lower()
    return out


def canonical_stimuli() -> list[Stimulus]:
    """The 1280 stimuli of the standard set, sorted by relpath (the order of every erftools decisions file)."""
    return [parse_stimulus(rel) for rel in sorted(read_manifest()) if rel.endswith(".png")]


def manifest_sha256(entries: dict[str, str] | None = None) -> str:
    """A hash identifying a stimulus set: sha256 over the sorted ``"<sha256>  <relpath>"`` lines."""
    entries = read_manifest() if entries is None else entries
    return sha256_strings(f"{entries[k]}  {k}" for k in sorted(entries) if k.endswith(".png"))


def default_stimuli_dir() -> Path:
    """Where ``erftools data fetch cue-conflict`` puts the stimuli by default (the user cache)."""
    return cache_dir("cue-conflict")


@dataclass
class StimuliReport:
    """What :func:`check_stimuli` found. ``ok`` means: the complete standard set, every file as published."""
    root: Path
    stimuli: list[Stimulus] = field(default_factory=list)  # usable images found, sorted by relpath
    missing: list[str] = field(default_factory=list)  # in the standard set, not in the folder
    unexpected: list[str] = field(default_factory=list)  # well-formed names that are not in the standard set
    malformed: list[str] = field(default_factory=list)  # "<relpath>: <why>" (bad name, unreadable, wrong size/mode)
    modified: list[str] = field(default_factory=list)  # in the standard set with another SHA-256
    verified: bool = False  # hashes were checked
    sha256: str = ""  # manifest hash of the usable images (see manifest_sha256)

    @property
    def complete(self) -> bool:
        return not self.missing and not self.unexpected and len(self.stimuli) == NUM_IMAGES

    @property
    def ok(self) -> bool:
        return self.complete and not self.malformed and not self.modified

    def problems(self, limit: int = 10) -> str:
        lines = []
        for title, items in (("missing", self.missing), ("malformed", self.malformed),
                             ("modified (SHA-256 differs from the published file)", self.modified),
                             ("not part of the standard set", self.unexpected)):
            if items:
                shown = ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
                lines.append(f"{len(items)} {title}: {shown}")
        return "; ".join(lines)

    def to_dict(self) -> dict:
        return {"dir": str(self.root), "sha256": self.sha256, "n_images": len(self.stimuli),
                "complete": self.complete, "verified": self.verified, "standard": self.ok,
                "missing": self.missing, "unexpected": self.unexpected, "malformed": self.malformed,
                "modified": self.modified}


def check_stimuli(root: str | os.PathLike, *, verify: bool = True, check_images: bool = True) -> StimuliReport:
    """Inspect a cue-conflict folder and report exactly what is missing, malformed, modified or unexpected.

    ``verify`` compares every file with the shipped SHA-256 manifest; ``check_images`` opens each image and checks
    it is 224x224 RGB (a modified file is still opened, so the report says whether it can be evaluated).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ErftoolsError(f"stimulus folder {root} does not exist. Download the cue-conflict set with "
                            "`erftools data fetch cue-conflict` (or pass stimuli_dir=DIR)")
    manifest = read_manifest()
    report = StimuliReport(root=root, verified=verify)
    found: dict[str, Stimulus] = {}
    hashes: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root)
        for fname in sorted(filenames):
            if fname.startswith(".") or not fname.lower().endswith((".png", ".jpg", ".jpeg")):
                continue  # LICENSE, README, SHA256SUMS, .part files, ...
            rel = (rel_dir / fname).as_posix()
            try:
                stim = parse_stimulus(rel)
            except ValueError as exc:
                report.malformed.append(str(exc))
                continue
            path = root / rel
            if check_images and (why := _image_problem(path)):
                report.malformed.append(f"{rel}: {why}")
                continue
            if rel not in manifest:
                report.unexpected.append(rel)
            elif verify:
                digest = sha256_file(path)
                hashes[rel] = digest
                if digest != manifest[rel]:
                    report.modified.append(rel)
            found[rel] = stim
    report.missing = sorted(r for r in manifest if r.endswith(".png") and r not in found
                            and not any(m.startswith(r + ":") for m in report.malformed))
    report.stimuli = [found[k] for k in sorted(found)]
    entries = {k: hashes[k] if k in hashes else (manifest.get(k) or sha256_file(root / k)) for k in found}
    report.sha256 = manifest_sha256(entries)
    return report


def _image_problem(path: Path) -> str:
    from PIL import Image

    try:
        with Image.open(path) as im:
            size, mode = im.size, im.mode
            im.verify()
    except Exception as exc:  # noqa: BLE001 - any decoding problem
        return f"not a readable image ({type(exc).__name__}: {exc})"
    if size != (IMAGE_SIZE, IMAGE_SIZE):
        return f"{size[0]}x{size[1]} pixels, expected {IMAGE_SIZE}x{IMAGE_SIZE}"
    if mode != "RGB":
        return f"image mode {mode}, expected RGB"
    return ""


def load_stimuli(root: str | os.PathLike | None = None, *, allow_incomplete: bool = False,
                 verify: bool = True) -> StimuliReport:
    """Check a cue-conflict folder (default: the user cache) and return its report.

    Raises :class:`ErftoolsError` listing the problems when the folder is not the complete, unmodified standard set
    (``allow_incomplete=True`` accepts a subset or modified files; malformed images are always an error).
    """
    root = Path(root).expanduser() if root is not None else default_stimuli_dir()
    if not root.is_dir() and root == default_stimuli_dir():
        raise ErftoolsError(f"no cue-conflict stimuli at {root}. Download them once with "
                            "`erftools data fetch cue-conflict`, or pass stimuli_dir=DIR")
    report = check_stimuli(root, verify=verify)
    if report.malformed:
        raise ErftoolsError(f"the stimulus folder {root} has images erftools cannot use: {report.problems()}. "
                            "Images must be 224x224 RGB PNGs named <shape>/<shape><i>-<texture><j>.png")
    if not report.stimuli:
        raise ErftoolsError(f"no cue-conflict images in {root}: expected <shape>/<shape><i>-<texture><j>.png")
    if not report.ok and not allow_incomplete:
        raise ErftoolsError(
            f"{root} is not the complete, unmodified cue-conflict set ({len(report.stimuli)} usable of "
            f"{NUM_IMAGES} images; {report.problems()}). Re-download with `erftools data fetch cue-conflict`, or "
            "pass allow_incomplete=True to evaluate what is there (the result is then not comparable to published "
            "values).")
    return report


def load_image(path: str | os.PathLike):
    """A stimulus as a float32 tensor (3, 224, 224) in [0, 1]: no resize, no crop (as model-vs-human)."""
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(path) as im:
        if im.size != (IMAGE_SIZE, IMAGE_SIZE):
            raise ErftoolsError(f"{path} is {im.size[0]}x{im.size[1]}; cue-conflict images must be 224x224 "
                                "(erftools never resizes them)")
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
