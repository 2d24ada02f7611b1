"""Image folders for the ERF: discovery, seeded sampling, robust loading and preprocessing.

* :func:`find_images` lists the image files below a folder (recursively; ImageFolder layouts included), in the
  order torchvision's ``ImageFolder`` uses (sorted class folders, sorted files): the ``sequential`` sampler takes
  the first N of this order, as the official ERF script does.
* :func:`select_images` samples N of them: ``random`` (seeded, the default), ``sequential``, or ``stratified``
  (one image per class folder, classes in a seeded random order; round-robin when N exceeds the number of
  classes). The result, an :class:`ImageList`, records the root, the relative file names and their hash. Its
  normalisation is the model's by default: unless ``mean``/``std`` are given, :func:`erftools.erf.compute_erf` and
  ``run_erf`` fill in the model's preprocessing (``get_model_info(model).preprocessing``: mean 0.5 for
  RepLKNet-XL, Inception, BiT; ImageNet's for most others), so the Python path and the CLI give the same matrix.
* :func:`load_image` opens one file and preprocesses it like the official script: PIL bicubic resize to
  ``(size, size)``, ToTensor, ``(x - mean) / std``. Grayscale, palette, CMYK and 16-bit images are converted to
  RGB; images with an alpha channel are flattened onto white. Unreadable, truncated and tiny images raise
  :class:`ImageError` with the reason, so a caller can skip them with a warning instead of crashing.
"""
from __future__ import annotations

import itertools
import logging
import os
import random
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ._constants import SAMPLERS  # one owner (re-exported)
from ._io import ErftoolsError, sha256_strings

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp", ".gif")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # when loaded without a model
MIN_SIDE = 16  # images with a side below this many pixels are skipped as "tiny"

__all__ = ["IMAGE_EXTENSIONS", "SAMPLERS", "ImageError", "ImageList", "default_image_dir", "find_images",
           "sample_images", "select_images", "load_image", "to_rgb"]


class ImageError(Exception):
    """One image cannot be used; ``str(exc)`` is the reason (the run skips it and carries on)."""


def default_image_dir() -> Path:
    """The bundled set of license-clean natural photographs (see ``data/images/ATTRIBUTION.md``)."""
    from ._paths import data_dir

    return data_dir() / "images"


def find_images(root: str | os.PathLike) -> list[str]:
    """Image files below ``root`` as POSIX paths relative to it, in ImageFolder order (hidden entries skipped).

    Symbolic links are followed, but a folder is entered once (a link back up the tree, ``sub/loop -> ..``, is not
    descended into) and a file reached through several paths is listed once, under its first path in that order;
    both are reported by one warning.
    """
    root = Path(root)
    if not root.is_dir():
        raise ErftoolsError(f"image folder {root} does not exist or is not a folder")
    found, loops, seen_dirs = [], [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        rel = Path(dirpath).relative_to(root)
        if real in seen_dirs:
            loops.append(rel.as_posix())
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                # ImageFolder order: sorted class folders; inside one, sorted os.walk roots, then sorted names.
                # Files lying directly in root (not part of an ImageFolder layout) come first.
                top = rel.parts[0] if rel.parts else ""
                found.append(((1 if rel.parts else 0), top, str(Path(dirpath)), name, (rel / name).as_posix()))
    files, real_files, dupes = [], set(), []
    for *_, f in sorted(found):
        real = os.path.realpath(root / f)
        (dupes if real in real_files else files).append(f)
        real_files.add(real)
    notes = [f"{len(names)} {what} ({how}: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
             for names, what, how in ((loops, "folder(s) reached again through symbolic links", "not entered again"),
                                      (dupes, "image path(s) that point to a file already listed", "counted once"))
             if names]
    if notes:
        log.warning("%s: %s", root, "; ".join(notes))
    return files


def _class_of(rel: str) -> str:
    parts = Path(rel).parts
    return parts[0] if len(parts) > 1 else ""


def sample_images(files: Sequence[str], num: int | None, sampler: str = "random", seed: int = 0) -> list[str]:
    """Choose ``num`` of ``files`` (all when ``num`` is None or larger than the list)."""
    files = list(files)
    if sampler not in SAMPLERS:
        raise ErftoolsError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    n = len(files) if num is None else max(0, min(int(num), len(files)))
    rng = random.Random(seed)
    if sampler == "sequential":
        return files[:n]
    if sampler == "random":
        return rng.sample(files, n)
    groups: dict[str, list[str]] = {}
    for f in files:
        groups.setdefault(_class_of(f), []).append(f)
    classes = sorted(groups)
    rng.shuffle(classes)
    for c in classes:
        rng.shuffle(groups[c])
    # round-robin: the first image of every class (in that order), then the second, ...
    rounds = itertools.zip_longest(*(groups[c] for c in classes))
    return [f for r in rounds for f in r if f is not None][:n]


def files_sha256(root, files) -> str:
    """The hash of the files' names, sizes and modification times, in order (the fingerprint's
    ``images_files_sha256``)."""
    stats = []
    for f in files:
        try:
            st = (Path(root) / f).stat()
            stats.append(f"{f}|{st.st_size}|{st.st_mtime_ns}")
        except OSError:
            stats.append(f"{f}|missing")
    return sha256_strings(stats)


@dataclass
class ImageList:
    """A chosen list of image files and how to preprocess them (what the ERF run records)."""
    root: Path
    files: list[str]  # relative to root, POSIX
    size: int = 1024
    mean: tuple | None = None  # None: the model's (see for_model); ImageNet's when loaded without a model
    std: tuple | None = None
    sampler: str = "random"
    seed: int = 0
    num_requested: int | None = None
    num_available: int | None = None
    min_side: int = MIN_SIDE
    bundled: bool = False
    converted: list = field(default_factory=list)  # {"file", "from_mode"} filled in while loading

    def __len__(self) -> int:
        return len(self.files)

    @property
    def sha256(self) -> str:
        return sha256_strings(self.files)

    def subset(self, files: Sequence[str]) -> "ImageList":
        return replace(self, files=list(files))  # shares ``converted``

    def for_model(self, mean: Sequence[float], std: Sequence[float]) -> "ImageList":
        """This list with the model's normalisation where none was chosen (``mean``/``std`` None); else itself."""
        if self.mean is not None and self.std is not None:
            return self
        return replace(self, mean=tuple(self.mean or mean), std=tuple(self.std or std))

    def load(self, rel: str) -> torch.Tensor:
        """The preprocessed (3, size, size) float32 tensor of one file; raises :class:`ImageError`."""
        x, mode = load_image(self.root / rel, self.size, self.mean or IMAGENET_MEAN, self.std or IMAGENET_STD,
                             min_side=self.min_side)
        if mode is not None:
            self.converted.append({"file": rel, "from_mode": mode})
            log.warning("converted %s from %s to RGB", rel, mode)
        return x

    def to_dict(self) -> dict:
        return {"source": "bundled" if self.bundled else str(self.root), "files": list(self.files),
                "sha256": self.sha256, "sampler": self.sampler, "seed": self.seed,
                "num_requested": self.num_requested, "num_available": self.num_available,
                "mean": list(self.mean or IMAGENET_MEAN), "std": list(self.std or IMAGENET_STD)}


def select_images(root: str | os.PathLike | None = None, num: int | None = 50, sampler: str = "random",
                  seed: int = 0, *, size: int = 1024, mean=None, std=None,
                  min_side: int = MIN_SIDE) -> ImageList:
    """Find and sample the images of a folder (the bundled photographs when ``root`` is None).

    ``mean``/``std``: the normalisation; by default (None) the model's, filled in by
    :func:`erftools.erf.compute_erf` / ``run_erf`` (:meth:`ImageList.for_model`)."""
    bundled = root is None
    root = Path(default_image_dir() if root is None else root).expanduser()
    files = find_images(root)
    if not files:
        raise ErftoolsError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found in {root}")
    if num is not None and num < 1:
        raise ErftoolsError(f"the number of images must be at least 1 (got {num})")
    chosen = sample_images(files, num, sampler, seed)
    if num is not None and len(chosen) < num:
        log.warning("only %d images in %s; using all of them instead of %d", len(files), root, num)
    return ImageList(root.resolve(), chosen, int(size), None if mean is None else tuple(mean),
                     None if std is None else tuple(std), sampler, int(seed), num, len(files), int(min_side), bundled)


def to_rgb(img):
    """An RGB PIL image and the original mode when a conversion was needed (else None)."""
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img, None
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        hi = a.max() if a.size else 1.0
        a = np.clip(a / (hi if hi > 0 else 1.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB"), mode
    if mode == "F":
        a = np.nan_to_num(np.asarray(img, dtype=np.float64))
        lo, hi = a.min(), a.max()
        a = ((a - lo) / (hi - lo if hi > lo else 1.0) * 255.0 + 0.5).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB"), mode
    return img.convert("RGB"), mode


def load_image(path: str | os.PathLike, size: int, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), *,
               min_side: int = MIN_SIDE) -> tuple[torch.Tensor, str | None]:
    """Load, convert to RGB, bicubic-resize to ``(size, size)``, ToTensor and normalise one image.

    Returns the (3, size, size) float32 tensor and the original mode when the image was converted (else None).
    Raises :class:`ImageError` for unreadable, truncated or tiny files.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()  # decode now: truncated files fail here, not later
                img = im.copy()
    except UnidentifiedImageError:
        raise ImageError("not a readable image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"too large ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"unreadable or truncated ({type(exc).__name__}: {exc})") from None
    if min(img.size) < min_side:
        raise ImageError(f"tiny image ({img.size[0]}x{img.size[1]} px, below {min_side} px)")
    try:
        img, converted = to_rgb(img)
        img = img.resize((int(size), int(size)), Image.BICUBIC)
        arr = np.asarray(img, dtype=np.uint8)
    except Exception as exc:  # a broken mode or decoder error surfacing late
        raise ImageError(f"cannot convert to RGB ({type(exc).__name__}: {exc})") from None
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous().float().div(255)
    m = torch.tensor(mean, dtype=torch.float32).reshape(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).reshape(3, 1, 1)
    return (x - m) / s, converted
