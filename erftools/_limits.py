"""The bounds a run's numbers must keep, owned here and used by every entry point (``erftools erf``, ``erftools
shape-bias``, a study file's keys), so that a number a machine cannot honour is refused before anything is built,
with the flag (or key) and the limit named, instead of failing after the model ran.

Each limit cites what it rests on. :func:`check_bound` is the one check; the callers name the value their way
(``--size`` on the command line, ``erf.size`` in a study file).
"""
from __future__ import annotations

import math

from ._io import ErftoolsError

#: ERF input side in pixels. At least 32 (a ResNet's total stride); at most 4096, 16x the pixels of the paper's 1024:
#: at 1024 erftools peaks at 3.4 GB resident (ResNet-152) to 6.1 GB (Swin-B), batch 1
#: (reports/benchmarks/erf_bench.json), which grows with the pixels, so 4096 already asks ~50-100 GB; 1,000,000
#: asked for a 7 TiB allocation.
MIN_SIZE = 32
MAX_SIZE = 4096
#: ERF images: the ImageNet validation set has 50,000 (the paper averages 50).
MAX_NUM_IMAGES = 50_000
#: images per forward pass (ERF and shape bias): beyond 1024 one batch of 224 px stimuli is 0.6 GB of input alone,
#: and the ERF at 1024 px needs 3.4-6.1 GB for one image (erf_bench.json).
MAX_BATCH_SIZE = 1024
#: seeds: numpy's generators (the samplers, the bootstrap) take 0 .. 2**32 - 1 as a plain integer seed.
MAX_SEED = 2 ** 32 - 1
#: bootstrap resamples of the shape bias's 95% interval: 0.73 s per 100,000 resamples of the 1120 cue-conflict images
#: on a 2-core CPU, and the analysis draws one interval per category and one overall (17), so 1,000,000 (100x the
#: default 10,000) already costs ~2 minutes; 1,000,000,000 died in the analysis after the model ran.
MAX_BOOTSTRAP = 1_000_000

__all__ = ["MIN_SIZE", "MAX_SIZE", "MAX_NUM_IMAGES", "MAX_BATCH_SIZE", "MAX_SEED", "MAX_BOOTSTRAP", "BOUNDS",
           "bound_problem", "check_bound"]

#: ``{quantity: (lowest, highest)}``: the quantities a caller names
BOUNDS = {
    "size": (MIN_SIZE, MAX_SIZE),
    "num_images": (1, MAX_NUM_IMAGES),
    "batch_size": (1, MAX_BATCH_SIZE),
    "seed": (0, MAX_SEED),
    "bootstrap": (1, MAX_BOOTSTRAP),
}


def bound_problem(quantity: str, value) -> str | None:
    """What is wrong with ``value`` as ``quantity`` (a key of :data:`BOUNDS`), or None when it is allowed."""
    lo, hi = BOUNDS[quantity]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected an integer, got {value!r}"
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        return f"expected an integer, got {value!r}"
    if value < lo:
        return f"must be at least {lo:,} (got {value:,})"
    if value > hi:
        return f"must be at most {hi:,} (got {value:,}); see erftools/_limits.py for what this limit rests on"
    return None


def check_bound(quantity: str, value, name: str | None = None) -> None:
    """Raise :class:`ErftoolsError` naming ``name`` (a flag such as ``--size``; default the quantity) and the limit
    when ``value`` is out of bounds; None passes (an unset optional value)."""
    if value is None:
        return
    problem = bound_problem(quantity, value)
    if problem:
        raise ErftoolsError(f"{name or quantity} {problem}")
