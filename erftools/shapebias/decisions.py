"""From a model to per-trial decisions on the cue-conflict images (the model-vs-human protocol).

Each image goes in at 224x224 as it is (no resize, no crop), as a [0, 1] tensor normalised with the model's own
mean/std. The decision is the arg-max over the 16 categories of the mean softmax probability of each category's
ImageNet classes. Zero-shot models (open_clip, :mod:`erftools.shapebias.zeroshot`) take open_clip's own transform
and decide among the 16 categories directly (``decides_categories``): the probabilities are the softmax of their 16
logits.
"""
from __future__ import annotations

import contextlib
import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .._constants import SHAPE_BIAS_PRECISIONS
from .._io import ErftoolsError, atomic_path
from .categories import CATEGORIES, NUM_IMAGENET_CLASSES, imagenet_indices
from .stimuli import Stimulus, load_image

log = logging.getLogger(__name__)

#: The per-trial schema of model-vs-human (and of Geirhos et al.'s raw data).
CSV_COLUMNS = ("subj", "session", "trial", "rt", "object_response", "category", "condition", "imagename")


def aggregate_16class(probabilities):
    """Aggregate ImageNet-1k probabilities ``(N, 1000)`` into the 16 categories: ``(N, 16)``, sorted category order.

    Each column is the mean probability over the category's ImageNet classes (model-vs-human's mapping). Accepts a
    numpy array (returns float64 numpy) or a torch tensor (returns a tensor of the same dtype and device).
    """
    is_torch = type(probabilities).__module__.startswith("torch")
    if not is_torch:
        probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim == 1:
        probabilities = probabilities[None]
    if probabilities.ndim != 2 or probabilities.shape[-1] != NUM_IMAGENET_CLASSES:
        raise ErftoolsError(f"the 16-class mapping needs ImageNet-1k probabilities of shape (N, 1000), got "
                            f"{tuple(probabilities.shape)}")
    indices = imagenet_indices()
    if is_torch:
        import torch

        cols = [probabilities[:, torch.as_tensor(indices[c], device=probabilities.device)].mean(dim=-1)
                for c in CATEGORIES]
        return torch.stack(cols, dim=-1)
    return np.stack([probabilities[:, indices[c]].mean(axis=-1) for c in CATEGORIES], axis=-1)


def decide(aggregated) -> list[str]:
    """The decision (arg-max category; the first in sorted order on a tie) for each row of ``(N, 16)``."""
    return [CATEGORIES[i] for i in np.argmax(np.asarray(aggregated), axis=-1)]


def check_imagenet_head(model) -> None:
    """Refuse a model whose classifier does not have the 1000 ImageNet-1k outputs (zero-shot classifiers, which
    decide among the 16 categories themselves, pass)."""
    if getattr(model, "decides_categories", False):
        return
    n = getattr(model, "num_classes", None)
    if n is not None and int(n) != NUM_IMAGENET_CLASSES:
        raise ErftoolsError(_head_message(model, n))


def _head_message(model, n) -> str:
    name = getattr(getattr(model, "erftools_info", None), "name", type(model).__name__)
    return (f"{name} has {n} output classes, but the cue-conflict decisions need an ImageNet-1k head (1000 classes) "
            "to map onto the 16 categories. Use ImageNet-1k weights (e.g. an in22k-ft-in1k checkpoint, not a "
            "pure ImageNet-22k one) or a model built with num_classes=1000.")


@dataclass
class Decision:
    """One trial: the model's decision on one stimulus, with the 16 category probabilities."""
    stimulus: Stimulus
    response: str
    probabilities: np.ndarray  # (16,) float64


PRECISIONS = SHAPE_BIAS_PRECISIONS  # one owner: erftools._constants


def new_precision_check() -> dict:
    """An empty account of the decisions a lower precision changed against fp32 (filled by :func:`evaluate`)."""
    return {"reference": "fp32", "compared": 0, "changed_decisions": 0, "changed": [], "max_abs_probability_diff": 0.0}


class _StimulusImages:
    """A map-style dataset of stimuli (decoded in DataLoader worker processes). ``transform``: the model's own
    PIL -> [0, 1] tensor transform (open_clip models), else the stimulus as it is."""

    def __init__(self, stimuli: Sequence[Stimulus], root: Path, transform=None):
        self.stimuli, self.root, self.transform = list(stimuli), root, transform

    def __len__(self) -> int:
        return len(self.stimuli)

    def __getitem__(self, i: int):
        """``(image, "")``, or for a file that fails to decode ``(a blank image, the reason)``: the run skips and
        counts it instead of dying with its batch."""
        from PIL import Image

        try:
            if self.transform is None:
                return load_image(self.root / self.stimuli[i].relpath), ""
            with Image.open(self.root / self.stimuli[i].relpath) as im:
                return self.transform(im.convert("RGB")), ""
        except Exception as exc:  # noqa: BLE001 - any decoder error is this image's problem, not the run's
            import torch

            blank = torch.zeros(3, 224, 224) if self.transform is None else self.transform(Image.new("RGB", (224, 224)))
            return blank, f"unreadable image ({type(exc).__name__}: {exc})"[:300]


def default_workers(device: str) -> int:
    """Decoding processes: on CUDA enough to keep the GPU fed, on CPU one (the model needs the cores)."""
    n = os.cpu_count() or 1
    return max(1, min(8, n // 2)) if str(device).startswith("cuda") else (1 if n > 1 else 0)


def prepare_for_inference(model, device: str) -> dict:
    """The inference preparation of :func:`erftools.models.prepare.prepare_for_inference`, with the shape bias's
    layout: channels-last on CPU (with oneDNN's depthwise kernel for RepLKNet, by the one backend rule); on CUDA the
    layout stays as it is until measured. In place; returns what was done (the record's ``prepared``); the logits
    equal the unprepared model's to float rounding."""
    from ..models.prepare import prepare_for_inference as prepare

    return prepare(model, device, channels_last=not str(device).startswith("cuda"))


def evaluate(model, stimuli: Sequence[Stimulus], root: str | os.PathLike, *, batch_size: int = 32,
             device: str | None = None, progress: bool = True, done: dict[str, Decision] | None = None,
             on_batch: Callable[[list[Decision]], None] | None = None,
             skipped: list | None = None, precision: str = "fp32", workers: int | None = None,
             prepare: bool = False, precision_check: dict | None = None,
             unreadable: list | None = None) -> list[Decision]:
    """Run ``model`` on the stimuli (in order) and return one :class:`Decision` per stimulus with finite logits.

    ``done`` holds decisions of an interrupted run (by relpath): those images are skipped. ``on_batch`` is called
    with each new batch of decisions (the CLI appends them to a resume file). An image whose logits hold NaN or
    infinity gets no decision: it is left out of the result and appended to ``skipped`` as ``{"file", "reason"}``;
    an image that fails to decode (it passed the up-front check, but its pixels are garbage) gets none either and is
    appended to ``unreadable`` the same way (a resume tries it again).
    ``workers``: image-decoding processes (default :func:`default_workers`); on CUDA the batches go through pinned
    memory. ``prepare``: :func:`prepare_for_inference` first (faster; same logits to float rounding).
    ``precision``: ``fp32`` (the protocol's) or ``bf16`` (autocast); with ``bf16`` every batch is also run in fp32
    and ``precision_check`` (a dict) receives the number of decisions that differ and the largest probability
    difference, so the cost of the lower precision is always known.
    """
    import torch

    from ..models import get_model_info
    from .zeroshot import is_zero_shot_model, zero_shot_classifier

    if precision not in PRECISIONS:
        raise ErftoolsError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    device = resolve_device(device)
    if is_zero_shot_model(model):  # an open_clip model: the 80-template text classifier of the 16 categories
        model = zero_shot_classifier(model, device=device)
    check_imagenet_head(model)
    info = get_model_info(model)
    if prepare:
        prepare_for_inference(model, device)
    model = model.to(device).eval()
    dev = torch.device(device)
    done = dict(done or {})
    bad, unread = [], []
    check = new_precision_check()
    todo = [s for s in stimuli if s.relpath not in done]
    direct = bool(getattr(model, "decides_categories", False))  # zero-shot: 16 logits, no 1000-class mapping
    with _progress(progress, len(stimuli), len(stimuli) - len(todo), info.name) as bar, torch.inference_mode():
        start = 0
        for x, reasons in _loader(todo, Path(root), batch_size, workers, dev, getattr(model, "image_transform", None)):
            batch = todo[start:start + len(x)]
            start += len(x)
            x = info.preprocessing.normalize(x.to(dev, non_blocking=True))
            logits = _logits(model, x, precision)
            unread += [{"file": s.relpath, "reason": r} for s, r in zip(batch, reasons) if r]
            readable = [i for i, r in enumerate(reasons) if not r]
            keep = [readable[i] for i in _finite_rows([batch[i] for i in readable], logits[readable], bad)]
            new = _decisions([batch[i] for i in keep], logits[keep], direct)
            if precision != "fp32" and keep:
                _compare(new, _logits(model, x, "fp32")[keep], check, precision, direct)
            done.update((d.stimulus.relpath, d) for d in new)
            if on_batch is not None:
                on_batch(new)
            if bar is not None:
                bar.update(len(batch))
    if skipped is not None:
        skipped.extend(bad)
    if unreadable is not None:
        unreadable.extend(unread)
    if unread:
        log.warning("%d image(s) failed to decode and get no decision (first: %s: %s); they are skipped and counted "
                    "(an interrupted run tries them again)", len(unread), unread[0]["file"], unread[0]["reason"])
    if precision_check is not None and precision != "fp32":
        precision_check.update(check)
    if bad:
        log.warning("%d image(s) gave non-finite logits and get no decision (first: %s)", len(bad), bad[0]["file"])
    return [done[s.relpath] for s in stimuli if s.relpath in done]


def _progress(progress: bool, total: int, initial: int, desc: str):
    """A progress bar (closed on leaving its ``with``), or for no ``progress`` a context that gives None."""
    if not progress:
        return contextlib.nullcontext()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="img", desc=desc)


def _loader(todo: Sequence[Stimulus], root: Path, batch_size: int, workers: int | None, dev, transform=None):
    """Batches of the decoded stimuli (``workers`` processes; pinned memory on CUDA; ``transform``: the model's own,
    see :class:`_StimulusImages`)."""
    from torch.utils.data import DataLoader

    workers = default_workers(str(dev)) if workers is None else max(0, int(workers))
    return DataLoader(_StimulusImages(todo, root, transform), batch_size=batch_size, shuffle=False,
                      num_workers=workers if todo else 0, pin_memory=dev.type == "cuda",
                      persistent_workers=False, prefetch_factor=2 if workers and todo else None)


def _logits(model, x, precision: str):
    """The model's ImageNet logits of ``x`` in float32 (the forward pass under bf16 autocast for ``bf16``); the 16
    category logits for a zero-shot model."""
    import torch

    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = model(x)
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    n_out = len(CATEGORIES) if getattr(model, "decides_categories", False) else NUM_IMAGENET_CLASSES
    if logits.ndim != 2 or logits.shape[-1] != n_out:
        raise ErftoolsError(_head_message(model, tuple(logits.shape[1:])))
    return logits.float()


def _finite_rows(batch: Sequence[Stimulus], logits, bad: list) -> list[int]:
    """The rows of ``logits`` that are finite; each other one is appended to ``bad`` with its reason."""
    import torch

    finite = torch.isfinite(logits).all(dim=-1).cpu().tolist()
    if all(finite):
        return list(range(len(batch)))
    n_nan = torch.isnan(logits).sum(dim=-1).cpu().tolist()
    for s, ok, k in zip(batch, finite, n_nan):
        if not ok:
            bad.append({"file": s.relpath, "reason": (f"non-finite logits ({k} of {logits.shape[-1]} are NaN)" if k
                                                      else "infinite logits")})
    return [i for i, ok in enumerate(finite) if ok]


def _probabilities_16(logits, direct: bool = False) -> np.ndarray:
    """The (N, 16) category probabilities: the 16-class mean of the 1000 ImageNet softmax probabilities, or for a
    model that decides among the categories itself (``direct``: zero-shot) the softmax of its 16 logits."""
    import torch

    p = torch.softmax(logits.double(), dim=-1)
    return (p if direct else aggregate_16class(p)).cpu().numpy()


def _decisions(stimuli: Sequence[Stimulus], logits, direct: bool = False) -> list[Decision]:
    agg = _probabilities_16(logits, direct)
    return [Decision(s, r, p) for s, r, p in zip(stimuli, decide(agg), agg)]


def _compare(new: list[Decision], ref_logits, check: dict, precision: str, direct: bool = False) -> None:
    """Add to ``check`` the decisions of ``new`` that the fp32 logits ``ref_logits`` decide otherwise, and the
    largest probability difference."""
    ref = _probabilities_16(ref_logits, direct)
    finite_ref = np.isfinite(ref).all(axis=1)
    for d, r, fr in zip(new, decide(ref), finite_ref):
        check["compared"] += int(fr)
        if fr and r != d.response:
            check["changed_decisions"] += 1
            check["changed"].append({"file": d.stimulus.relpath, precision: d.response, "fp32": r})
    diff = np.abs(np.stack([d.probabilities for d in new]) - ref)[finite_ref]
    if diff.size:
        check["max_abs_probability_diff"] = max(check["max_abs_probability_diff"], float(diff.max()))


def resolve_device(device: str | None) -> str:
    """The device as a string (``cpu``, ``cuda:0``, ...): see :func:`erftools._device.resolve_device`."""
    from .._device import resolve_device as _resolve

    return str(_resolve(device))


def decision_rows(decisions: Sequence[Decision], subj: str) -> list[dict]:
    """Rows in the model-vs-human schema (imagename = bare file name, as model-vs-human's own model files)."""
    return [{"subj": subj, "session": "1", "trial": str(i), "rt": "NaN", "object_response": d.response,
             "category": d.stimulus.shape, "condition": "0", "imagename": d.stimulus.name}
            for i, d in enumerate(decisions, start=1)]


def write_rows(path: str | os.PathLike, rows: Sequence[dict]) -> Path:
    """Write decision rows as CSV (model-vs-human schema), atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
    return Path(path)
