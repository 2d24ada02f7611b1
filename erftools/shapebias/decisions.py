"""From a model to per-trial decisions on the cue-conflict images (the model-vs-human protocol).

Each image goes in at 224x224 as it is (no resize, no crop), as a [0, 1] tensor normalised with the model's own
mean/std. The decision is the arg-max over the 16 categories of the mean softmax probability of each category's
ImageNet classes.
"""
from __future__ import annotations

import csv
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .._io import ErftoolsError
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
    arr = np.asarray(aggregated)
    return [CATEGORIES[i] for i in np.argmax(arr, axis=-1)]


def check_imagenet_head(model) -> None:
    """Refuse a model whose classifier does not have the 1000 ImageNet-1k outputs."""
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


def evaluate(model, stimuli: Sequence[Stimulus], root: str | os.PathLike, *, batch_size: int = 32,
             device: str | None = None, progress: bool = True, done: dict[str, Decision] | None = None,
             on_batch: Callable[[list[Decision]], None] | None = None,
             skipped: list | None = None) -> list[Decision]:
    """Run ``model`` on the stimuli (in order) and return one :class:`Decision` per stimulus with finite logits.

    ``done`` holds decisions of an interrupted run (by relpath): those images are skipped. ``on_batch`` is called
    with each new batch of decisions (the CLI appends them to a resume file). An image whose logits hold NaN or
    infinity gets no decision: it is left out of the result and appended to ``skipped`` as ``{"file", "reason"}``.
    """
    import torch

    from ..models import get_model_info

    check_imagenet_head(model)
    info = get_model_info(model)
    device = resolve_device(device)
    model = model.to(device).eval()
    root = Path(root)
    done = dict(done or {})
    bad: list[dict] = []
    todo = [s for s in stimuli if s.relpath not in done]
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(stimuli), initial=len(stimuli) - len(todo), unit="img", desc=info.name)

    def load(batch):
        return torch.stack([load_image(root / s.relpath) for s in batch])

    try:
        with ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode():
            future = pool.submit(load, batches[0]) if batches else None
            for k, batch in enumerate(batches):
                x = future.result()
                if k + 1 < len(batches):
                    future = pool.submit(load, batches[k + 1])  # decode the next batch while the model runs
                x = info.preprocessing.normalize(x).to(device)
                logits = model(x)
                if isinstance(logits, (tuple, list)):
                    logits = logits[0]
                if logits.ndim != 2 or logits.shape[-1] != NUM_IMAGENET_CLASSES:
                    raise ErftoolsError(_head_message(model, tuple(logits.shape[1:])))
                finite = torch.isfinite(logits).all(dim=-1).cpu().tolist()
                if not all(finite):
                    n_nan = torch.isnan(logits).sum(dim=-1).cpu().tolist()
                    for s, ok, k in zip(batch, finite, n_nan):
                        if not ok:
                            reason = (f"non-finite logits ({k} of {logits.shape[-1]} are NaN)" if k else
                                      "infinite logits")
                            bad.append({"file": s.relpath, "reason": reason})
                    keep = [i for i, ok in enumerate(finite) if ok]
                    batch = [batch[i] for i in keep]
                    logits = logits[keep]
                probs = torch.softmax(logits.double(), dim=-1)
                agg = aggregate_16class(probs).cpu().numpy()
                new = [Decision(s, r, p) for s, r, p in zip(batch, decide(agg), agg)]
                for d in new:
                    done[d.stimulus.relpath] = d
                if on_batch is not None:
                    on_batch(new)
                if bar is not None:
                    bar.update(len(batches[k]))
    finally:
        if bar is not None:
            bar.close()
    if skipped is not None:
        skipped.extend(bad)
    if bad:
        log.warning("%d image(s) gave non-finite logits and get no decision (first: %s)", len(bad), bad[0]["file"])
    return [done[s.relpath] for s in stimuli if s.relpath in done]


def resolve_device(device: str | None) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ErftoolsError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    return str(device)


def decision_rows(decisions: Sequence[Decision], subj: str) -> list[dict]:
    """Rows in the model-vs-human schema (imagename = bare file name, as model-vs-human's own model files)."""
    return [{"subj": subj, "session": "1", "trial": str(i), "rt": "NaN", "object_response": d.response,
             "category": d.stimulus.shape, "condition": "0", "imagename": d.stimulus.name}
            for i, d in enumerate(decisions, start=1)]


def write_rows(path: str | os.PathLike, rows: Sequence[dict]) -> Path:
    """Write decision rows as CSV (model-vs-human schema), atomically."""
    from .._io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
    return Path(path)
