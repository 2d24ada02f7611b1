"""The CUDA measurement table: the only evidence ``auto`` uses to leave PyTorch's own convolution on a GPU.

On CPU the constants at the top of ``_dispatch.py`` encode measurements of this project's machines. On CUDA the
choice depends on the GPU architecture, so it is a table written by ``benchmarks/gpu_check.py`` on a real GPU and
committed as ``erftools/ops/cuda_table.json`` (``ERFTOOLS_CUDA_TABLE=path`` reads another file instead, e.g. a
fresh ``gpu_check`` output before it is committed). Where the table has no entry for a call, ``auto`` runs PyTorch's
convolution (cuDNN or PyTorch's own CUDA kernel) and leaves the tensor's memory format alone: an unmeasured kernel
is never chosen by default.

Format (JSON, ``"format": "erftools-cuda-table/1"``)::

    {"format": "erftools-cuda-table/1",
     "entries": [
       {"arch": "sm_90", "dtype": "bf16", "kernel_size": 31, "plane": "huge", "mode": "input_grad",
        "backend": "triton", "layout": null,
        "speedup": 2.4, "baseline": "native/nchw", "gpu": "NVIDIA H200", "measured": "2026-12-01",
        "shapes": ["1x128x256x256"], "versions": {"torch": "...", "triton": "..."}}]}

Key of an entry (all five must match a call):
  ``arch``         ``sm_<major><minor>`` of the device (``torch.cuda.get_device_capability``): ``sm_90`` = Hopper;
  ``dtype``        ``fp32``, ``fp16``, ``bf16`` or ``fp64``;
  ``kernel_size``  odd K of the square depthwise kernel;
  ``plane``        plane-size class of H*W (:data:`PLANE_CLASSES`): ``small`` <= 32x32, ``medium`` <= 64x64,
                   ``large`` <= 128x128, ``huge`` above;
  ``mode``         what autograd needs from the call: ``forward`` (no gradient), ``input_grad`` (frozen weight,
                   input requires grad: ERF maps), ``weight_grad`` (the weight requires grad: training).
Decision:
  ``backend``      ``native``, ``fft`` or ``triton``;
  ``layout``       for ``native`` only: ``null`` (leave the input's memory format alone), ``"channels_last"``
                   (convert an NCHW input to channels-last, where PyTorch calls cuDNN, and the output back) or
                   ``"nchw"`` (the reverse).
Evidence (required, so an entry can only come from a measurement): ``speedup`` (>= 1: time of native NCHW over the
chosen one, the worst over the measured shapes of the class), ``gpu`` (device name) and ``measured`` (date).
``gpu_check`` writes an entry only for a backend/layout that passed its float64 correctness check on every shape of
the class and was at least 10 % faster on each of them; entries with ``backend: native, layout: null`` record that
PyTorch's convolution won.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

__all__ = ["FORMAT", "PLANE_CLASSES", "MODES", "DTYPE_NAMES", "TABLE_ENV", "TABLE_PATH", "plane_class",
           "dtype_name", "arch_name", "validate_table", "load_table", "lookup", "empty_table"]

FORMAT = "erftools-cuda-table/1"
#: plane-size classes by H * W (upper bound inclusive; the last has none)
PLANE_CLASSES = (("small", 32 * 32), ("medium", 64 * 64), ("large", 128 * 128), ("huge", None))
MODES = ("forward", "input_grad", "weight_grad")
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}
LAYOUTS = (None, "nchw", "channels_last")
TABLE_ENV = "ERFTOOLS_CUDA_TABLE"
TABLE_PATH = Path(__file__).with_name("cuda_table.json")
_KEY = ("arch", "dtype", "kernel_size", "plane", "mode")

_cache: dict = {}


def plane_class(h: int, w: int) -> str:
    n = int(h) * int(w)
    for name, limit in PLANE_CLASSES:
        if limit is None or n <= limit:
            return name
    raise AssertionError("unreachable")


def dtype_name(dtype: torch.dtype) -> str | None:
    return DTYPE_NAMES.get(dtype)


def arch_name(capability: tuple[int, int]) -> str:
    return f"sm_{int(capability[0])}{int(capability[1])}"


def empty_table() -> dict:
    return {"format": FORMAT, "entries": []}


def validate_table(table: dict, source: str = "the CUDA table") -> dict:
    """Check a table's structure; returns it, or raises ValueError naming the entry and the problem."""
    from ._dispatch import BACKENDS

    if not isinstance(table, dict) or table.get("format") != FORMAT:
        raise ValueError(f"{source} is not an erftools CUDA table: expected a JSON object with "
                         f"\"format\": \"{FORMAT}\" (write it with benchmarks/gpu_check.py)")
    entries = table.get("entries")
    if not isinstance(entries, list):
        raise ValueError(f"{source}: \"entries\" must be a list")
    seen = set()
    planes = {p for p, _ in PLANE_CLASSES}
    for i, e in enumerate(entries):
        where = f"{source}, entry {i}"
        if not isinstance(e, dict):
            raise ValueError(f"{where}: must be an object")
        missing = [k for k in _KEY + ("backend", "speedup", "gpu", "measured") if k not in e]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)} (every entry must carry its measurement)")
        if not (isinstance(e["arch"], str) and e["arch"].startswith("sm_")):
            raise ValueError(f"{where}: arch must look like 'sm_90', got {e['arch']!r}")
        if e["dtype"] not in DTYPE_NAMES.values():
            raise ValueError(f"{where}: dtype must be one of {sorted(DTYPE_NAMES.values())}, got {e['dtype']!r}")
        k = e["kernel_size"]
        if not (isinstance(k, int) and k > 0 and k % 2 == 1):
            raise ValueError(f"{where}: kernel_size must be an odd positive integer, got {k!r}")
        if e["plane"] not in planes:
            raise ValueError(f"{where}: plane must be one of {sorted(planes)}, got {e['plane']!r}")
        if e["mode"] not in MODES:
            raise ValueError(f"{where}: mode must be one of {list(MODES)}, got {e['mode']!r}")
        if e["backend"] not in BACKENDS:
            raise ValueError(f"{where}: backend must be one of {list(BACKENDS)}, got {e['backend']!r}")
        if e.get("layout") not in LAYOUTS or (e.get("layout") is not None and e["backend"] != "native"):
            raise ValueError(f"{where}: layout must be null, 'nchw' or 'channels_last', and only for backend "
                             f"native; got {e.get('layout')!r} for {e['backend']!r}")
        if not (isinstance(e["speedup"], (int, float)) and e["speedup"] >= 1.0):
            raise ValueError(f"{where}: speedup must be a measured number >= 1, got {e['speedup']!r}")
        key = tuple(e[k] for k in _KEY)
        if key in seen:
            raise ValueError(f"{where}: a second entry for {dict(zip(_KEY, key))}")
        seen.add(key)
    return table


def load_table(path: str | os.PathLike | None = None) -> dict:
    """The table in use: ``path``, else ``$ERFTOOLS_CUDA_TABLE``, else the committed ``cuda_table.json``
    (cached per path; a missing committed file counts as empty). Raises ValueError for a malformed table."""
    p = Path(path) if path is not None else Path(os.environ.get(TABLE_ENV) or TABLE_PATH)
    key = str(p)
    if key not in _cache:
        if not p.is_file():
            if path is None and not os.environ.get(TABLE_ENV):
                _cache[key] = empty_table()
                return _cache[key]
            raise ValueError(f"CUDA table {p} does not exist (check {TABLE_ENV} or the path given)")
        try:
            table = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"CUDA table {p} is not valid JSON: {exc}") from None
        _cache[key] = validate_table(table, f"CUDA table {p.name}")
    return _cache[key]


_index: dict = {}  # id(table) -> (table, {key: entry}); the table is kept so that its id stays unique


def lookup(table: dict, arch: str, dtype: torch.dtype, kernel_size: int, plane: str, mode: str) -> dict | None:
    """The entry for one call, or None when nothing was measured for it (a dict look-up: it runs on every call)."""
    held = _index.get(id(table))
    if held is None or held[0] is not table:
        held = (table, {tuple(e[k] for k in _KEY): e for e in table.get("entries", ())})
        _index[id(table)] = held
    return held[1].get((arch, dtype_name(dtype), int(kernel_size), plane, mode))
