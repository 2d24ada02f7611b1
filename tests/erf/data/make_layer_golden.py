"""Make ``replknet_tiny_stages.npz``: per-stage ERF matrices computed with the OFFICIAL RepLKNet code.

Usage (outside the repository's test suite; needs the official sources, which are not part of erftools)::

    git clone https://github.com/DingXiaoH/RepLKNet-pytorch OFFICIAL   # commit recorded in README.md
    python tests/erf/data/make_layer_golden.py --official OFFICIAL --shared ../shared --out tests/erf/data

What it does (no official code is copied here; it is imported from ``--official``):

* ``OFFICIAL/replknet.py`` and ``OFFICIAL/erf/replknet_for_erf.py`` are imported as they are, with one stub:
  ``replknet.enable_sync_bn`` is replaced by a no-op before the model is built (``RepLKNetForERF`` asks for
  SyncBatchNorm, which needs a process group; in eval mode SyncBatchNorm and BatchNorm2d compute the same thing).
* ``get_input_grad`` is taken from ``OFFICIAL/erf/visualize_erf.py`` and ``get_rectangle`` from
  ``OFFICIAL/erf/analyze_erf.py`` by executing only those function definitions (the scripts parse arguments and
  import plotting/torchvision helpers at import time).
* The model is ``RepLKNetForERF(**config)`` with the training-time ``state_dict`` of
  ``shared/fixtures/replknet_tiny.pt`` (``head.*`` dropped: unused), in eval mode, on the CPU.
* For each stage ``i`` a forward hook on ``model.stages[i]`` records its output; a wrapper module whose forward
  runs the official model and returns the recorded output is passed to ``get_input_grad`` (one image per call,
  as the official script does), on the 3 inputs of ``shared/fixtures/erf_tiny.npz``.
* Per stage the matrix is the running mean of the per-image maps (``timm.utils.AverageMeter``, as the official
  script); the square sides and area ratios come from ``get_rectangle`` on ``log10(matrix + 1) / max`` (the
  normalisation of ``analyze_erf.py``).
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

THRESHOLDS = (0.2, 0.3, 0.5, 0.99)


def _function_from(path: Path, name: str, namespace: dict):
    tree = ast.parse(path.read_text())
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    if len(defs) != 1:
        raise SystemExit(f"{path} has no single function {name}")
    exec(compile(ast.Module(body=defs, type_ignores=[]), str(path), "exec"), namespace)
    return namespace[name]


class _StageOutput(nn.Module):
    """Runs the official model and returns the output of one of its stages (recorded by a forward hook)."""

    def __init__(self, model: nn.Module, stage: int):
        super().__init__()
        self.model = model
        self.stage = stage
        self._out = None
        model.stages[stage].register_forward_hook(self._keep)

    def _keep(self, module, args, output):
        self._out = output

    def forward(self, x):
        self._out = None
        self.model(x)
        return self._out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--official", required=True, type=Path, help="checkout of DingXiaoH/RepLKNet-pytorch")
    ap.add_argument("--shared", required=True, type=Path, help="the shared folder (fixtures/)")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()

    sys.path.insert(0, str(args.official))
    import replknet as official

    official.enable_sync_bn = lambda: None  # stub: plain BatchNorm2d (identical in eval mode)
    from erf.replknet_for_erf import RepLKNetForERF
    from timm.utils import AverageMeter

    ns = {"torch": torch, "np": np}
    get_input_grad = _function_from(args.official / "erf" / "visualize_erf.py", "get_input_grad", ns)
    get_rectangle = _function_from(args.official / "erf" / "analyze_erf.py", "get_rectangle", ns)

    ck_path = args.shared / "fixtures" / "replknet_tiny.pt"
    data_path = args.shared / "fixtures" / "erf_tiny.npz"
    ck = torch.load(ck_path, weights_only=True)
    cfg = ck["config"]
    model = RepLKNetForERF(large_kernel_sizes=cfg["large_kernel_sizes"], layers=cfg["layers"],
                           channels=cfg["channels"], small_kernel=cfg["small_kernel"],
                           dw_ratio=cfg.get("dw_ratio", 1), ffn_ratio=cfg.get("ffn_ratio", 4),
                           small_kernel_merged=False)
    sd = {k: v for k, v in ck["state_dict"].items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.startswith("head.") for k in missing), (missing, unexpected)
    model.eval()
    inputs = torch.from_numpy(np.load(data_path)["inputs"])

    out = {"stages": np.array([f"stages.{i}" for i in range(len(cfg["layers"]))])}
    matrices, shapes, sides, ratios = [], [], [], []
    for stage in range(len(cfg["layers"])):
        wrapper = _StageOutput(model, stage).eval()
        meter = AverageMeter()
        for x in inputs:
            samples = x.unsqueeze(0).clone().requires_grad_(True)
            scores = get_input_grad(wrapper, samples)
            assert not np.isnan(np.sum(scores))
            meter.update(scores)
        with torch.no_grad():
            shapes.append(list(wrapper(inputs[:1]).shape))
        m = np.asarray(meter.avg, dtype=np.float32)
        matrices.append(m)
        norm = np.log10(m + 1)
        norm = norm / np.max(norm)
        row_s, row_r = [], []
        for t in THRESHOLDS:
            r = get_rectangle(norm, t)
            row_s.append(np.nan if r is None else r[0])
            row_r.append(np.nan if r is None else r[1])
        sides.append(row_s)
        ratios.append(row_r)
    out.update(matrices=np.stack(matrices), feature_shapes=np.array(shapes, np.int64),
               thresholds=np.array(THRESHOLDS), side_lengths=np.array(sides, np.float64),
               area_ratios=np.array(ratios, np.float64))
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "replknet_tiny_stages.npz", **out)
    info = {"inputs_sha256": hashlib.sha256(data_path.read_bytes()).hexdigest(),
            "weights_sha256": hashlib.sha256(ck_path.read_bytes()).hexdigest(),
            "feature_shapes": out["feature_shapes"].tolist(), "side_lengths": out["side_lengths"].tolist(),
            "matrix_sums": [float(m.sum()) for m in matrices], "torch": torch.__version__}
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
