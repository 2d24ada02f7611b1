"""Make the committed golden data of ``tests/golden/`` by running the OFFICIAL code (none of it is copied here).

Usage (the official repositories are not part of erftools; clone them anywhere)::

    git clone https://github.com/DingXiaoH/RepLKNet-pytorch      # commit b76808ac2c763eaed6af9d286c6163c9345b4d5f
    git clone https://github.com/bethgelab/model-vs-human         # commit 79ed7cd1d9ac3a114e71b6638f0a98bdd627316c
    git clone https://github.com/AILab-CVC/UniRepLKNet           # commit b5677d8fb0e7b8af61eac39c1bf02727f5afc1d5
    python tests/golden/make_golden.py --replknet RepLKNet-pytorch --model-vs-human model-vs-human \
        --unireplknet UniRepLKNet

It needs torch, timm, numpy, pandas and matplotlib (all in ``.[test]``) and runs in about a minute on a CPU.
``--stages-for SHARED_FIXTURES --out tests/erf/data`` remakes only ``replknet_tiny_stages.npz`` for another tiny
checkpoint (the one of ``../shared/fixtures``, the independent second check).

What each file is and how it is made: ``tests/golden/README.md``. The official modules are imported from the given
clones with these stubs only: ``replknet.enable_sync_bn`` becomes a no-op (plain BatchNorm2d, identical to
SyncBatchNorm in eval mode); ``get_input_grad`` (``erf/visualize_erf.py``) and ``get_rectangle``
(``erf/analyze_erf.py``) are executed from their source (those scripts parse arguments and import plotting helpers at
import time); model-vs-human's ``__init__`` modules are replaced by empty packages (they import its model zoo).
"""
from __future__ import annotations

import argparse
import ast
import copy
import csv
import gzip
import hashlib
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
THRESHOLDS = (0.2, 0.3, 0.5, 0.99)
EXTRA_THRESHOLDS = (0.9, 0.9995)  # the second: no square of the official search qualifies (None)
#: the tiny configurations (channels chosen so that every file stays well under 1 MB)
TINY = dict(large_kernel_sizes=[13, 11, 9, 7], layers=[1, 1, 2, 1], channels=[8, 16, 24, 32], drop_path_rate=0,
            small_kernel=5, dw_ratio=1, ffn_ratio=4, num_classes=10, use_checkpoint=False, use_sync_bn=False)
TINY_XL = dict(TINY, small_kernel=None, dw_ratio=1.5)
ERF_IMAGES = ("astronaut", "chelsea", "coffee")  # bundled photographs (data/images), 128 x 128
ERF_SIZE = 128
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _function_from(path: Path, name: str, namespace: dict):
    """Execute one top-level function definition of an official script (not importable as a module)."""
    tree = ast.parse(path.read_text())
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    if len(defs) != 1:
        raise SystemExit(f"{path} has no single function {name}: is this the official checkout?")
    exec(compile(ast.Module(body=defs, type_ignores=[]), str(path), "exec"), namespace)
    return namespace[name]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _git_commit(root: Path) -> str | None:
    head = root / ".git" / "HEAD"
    if not head.is_file():
        return None
    ref = head.read_text().strip()
    if ref.startswith("ref: "):
        p = root / ".git" / ref[5:]
        return p.read_text().strip() if p.is_file() else None
    return ref


# --------------------------------------------------------------------------------------------- RepLKNet (official)

def load_official_replknet(root: Path):
    """The official ``replknet`` module and ``RepLKNetForERF``, SyncBN stubbed out."""
    sys.path.insert(0, str(root))
    import replknet

    print("  (the official constructors print their drop-path modules: expected)")
    replknet.enable_sync_bn = lambda: None
    from erf.replknet_for_erf import RepLKNetForERF
    return replknet, RepLKNetForERF


def randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Every BatchNorm: running_mean ~ N(0, 0.1), running_var ~ U(0.5, 1.5), weight ~ U(0.5, 1.5), bias ~ N(0, 0.1)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)


def _intermediate_names(config: dict) -> list[str]:
    n = len(config["layers"])
    return ([f"stem.{i}" for i in range(4)] + [f"stages.{i}" for i in range(n)]
            + [f"transitions.{i}" for i in range(n - 1)] + ["norm"])


def make_tiny(replknet, config: dict, model_seed: int) -> dict:
    """An official tiny RepLKNet: weights, a fixed input, features/logits/intermediates, and the same after reparam."""
    torch.manual_seed(model_seed)
    model = replknet.RepLKNet(**config)
    randomise_bn(model, torch.Generator().manual_seed(model_seed + 100))
    model.eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    inter, modules = {}, dict(model.named_modules())
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: inter.__setitem__(n, o.detach().clone()))
             for n in _intermediate_names(config)]
    with torch.no_grad():
        features, logits = model.forward_features(x), model(x)
    for h in hooks:
        h.remove()
    out = dict(config=config, seeds=dict(model=model_seed, input=1), state_dict=copy.deepcopy(model.state_dict()),
               input=x, features=features, logits=logits, intermediates=inter)
    model.structural_reparam()
    with torch.no_grad():
        out.update(reparam_state_dict=copy.deepcopy(model.state_dict()), reparam_features=model.forward_features(x),
                   reparam_logits=model(x))
    return out


def mmpretrain_layout(state_dict: dict) -> dict:
    """OpenMMLab/mmengine keys: ``backbone.`` + official key; ``norm.*`` -> ``backbone.stages.3.norm.*``; head -> ``head.fc``."""
    out = {}
    for k, v in state_dict.items():
        if k.startswith("norm."):
            out["backbone.stages.3.norm." + k[5:]] = v
        elif k.startswith("head."):
            out["head.fc." + k[5:]] = v
        else:
            out["backbone." + k] = v
    return {"meta": {"mmengine_version": "0.10.0", "epoch": 120}, "state_dict": out}


def key_lists(replknet, RepLKNetForERF) -> dict:
    """Ordered [key, shape] and parameter counts of the official big models, training-time and re-parameterised."""
    makers = {
        "RepLKNet-31B": lambda: replknet.create_RepLKNet31B(num_classes=1000),
        "RepLKNet-31L": lambda: replknet.create_RepLKNet31L(num_classes=1000),
        "RepLKNet-XL": lambda: replknet.create_RepLKNetXL(num_classes=1000),
        "ERF/RepLKNet-13": lambda: RepLKNetForERF(large_kernel_sizes=[13] * 4, layers=[2, 2, 18, 2],
                                                  channels=[128, 256, 512, 1024], small_kernel=5),
        "ERF/RepLKNet-31B": lambda: RepLKNetForERF(large_kernel_sizes=[31, 29, 27, 13], layers=[2, 2, 18, 2],
                                                   channels=[128, 256, 512, 1024], small_kernel=5),
    }
    out = {"_about": "ordered [key, shape] of the official state_dict as constructed (train) and after "
                     "structural_reparam() (reparam); num_parameters = sum of numel over model.parameters()"}
    replknet.torch = _CpuLinspace()  # built on the meta device (no memory); the drop-path rates need real numbers
    for name, make in makers.items():
        with torch.device("meta"):
            model = make()
        entry = {}
        for mode in ("train", "reparam"):
            if mode == "reparam":
                _reparam_on_meta(model)
            entry[mode] = {"keys": [[k, list(v.shape)] for k, v in model.state_dict().items()],
                           "num_parameters": sum(p.numel() for p in model.parameters())}
        out[name] = entry
        print(f"  keys {name}: {entry['train']['num_parameters']:,} / {entry['reparam']['num_parameters']:,}")
    return out


class _CpuLinspace:
    """``torch`` as the official module sees it, except that ``linspace`` (the drop-path rates) runs on the CPU."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def linspace(*args, **kwargs):
        return torch.linspace(*args, **kwargs, device="cpu")


def _reparam_on_meta(model: nn.Module) -> None:
    """The official ``merge_kernel`` on a meta-device model (its arithmetic runs on meta tensors: shapes only)."""
    with torch.device("meta"):
        model.structural_reparam()


# --------------------------------------------------------------------------------------------- ERF (official)

def erf_inputs() -> tuple[torch.Tensor, list[str]]:
    """The bundled photographs, PIL bicubic resize to 128 x 128, to [0, 1], ImageNet mean/std normalisation."""
    from PIL import Image

    arrays = []
    for name in ERF_IMAGES:
        img = Image.open(REPO / "data" / "images" / f"{name}.jpg").convert("RGB")
        img = img.resize((ERF_SIZE, ERF_SIZE), Image.BICUBIC)
        a = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        a = (a - np.array(IMAGENET_MEAN, np.float32)[:, None, None]) / np.array(IMAGENET_STD, np.float32)[:, None, None]
        arrays.append(a)
    return torch.from_numpy(np.stack(arrays)), list(ERF_IMAGES)


class _StageOutput(nn.Module):
    """Runs the official model and returns the output of one of its stages (recorded by a forward hook)."""

    def __init__(self, model: nn.Module, stage: int):
        super().__init__()
        self.model, self.stage, self._out = model, stage, None
        self._hook = model.stages[stage].register_forward_hook(self._keep)

    def _keep(self, module, args, output):
        self._out = output

    def forward(self, x):
        self.model(x)
        return self._out


def official_erf_model(RepLKNetForERF, tiny: dict) -> nn.Module:
    cfg = tiny["config"]
    model = RepLKNetForERF(large_kernel_sizes=cfg["large_kernel_sizes"], layers=cfg["layers"],
                           channels=cfg["channels"], small_kernel=cfg["small_kernel"],
                           dw_ratio=cfg.get("dw_ratio", 1), ffn_ratio=cfg.get("ffn_ratio", 4))
    sd = {k: v for k, v in tiny["state_dict"].items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.startswith("head.") for k in missing), (missing, unexpected)
    return model.eval()


def official_erf(model: nn.Module, inputs: torch.Tensor, get_input_grad, get_rectangle, thresholds) -> dict:
    """The official loop: one image per call, NaN check, running mean (timm AverageMeter), log10 normalisation."""
    from timm.utils import AverageMeter

    meter, maps = AverageMeter(), []
    for x in inputs:
        scores = get_input_grad(model, x.unsqueeze(0).clone().requires_grad_(True))
        assert not np.isnan(np.sum(scores))
        maps.append(np.asarray(scores, np.float32))
        meter.update(scores)
    matrix = np.asarray(meter.avg, np.float32)
    norm = np.log10(matrix + 1)
    norm = norm / np.max(norm)
    rects = [get_rectangle(norm, t) for t in thresholds]
    return dict(per_image_maps=np.stack(maps), matrix=matrix, normalized=norm.astype(np.float32),
                side_lengths=np.array([np.nan if r is None else r[0] for r in rects], np.float64),
                area_ratios=np.array([np.nan if r is None else r[1] for r in rects], np.float64))


def make_erf(RepLKNetForERF, tiny: dict, fns: tuple) -> dict:
    inputs, names = erf_inputs()
    model = official_erf_model(RepLKNetForERF, tiny)
    res = official_erf(model, inputs, *fns, THRESHOLDS)
    extra = official_erf(model, inputs, *fns, EXTRA_THRESHOLDS)
    with torch.no_grad():
        fmap = tuple(model(inputs[:1]).shape)
    return dict(res, inputs=inputs.numpy(), image_names=np.array(names), thresholds=np.array(THRESHOLDS),
                extra_thresholds=np.array(EXTRA_THRESHOLDS), extra_side_lengths=extra["side_lengths"],
                extra_area_ratios=extra["area_ratios"], central_point=np.array([fmap[2] // 2, fmap[3] // 2]),
                feature_map_shape=np.array(fmap, np.int64))


def make_stages(RepLKNetForERF, tiny: dict, inputs: torch.Tensor, fns: tuple) -> dict:
    """Per stage: the official ERF procedure on the output of ``stages.i`` (a wrapper returns it)."""
    model = official_erf_model(RepLKNetForERF, tiny)
    n = len(tiny["config"]["layers"])
    rows = []
    for stage in range(n):
        wrapper = _StageOutput(model, stage).eval()
        rows.append(official_erf(wrapper, inputs, *fns, THRESHOLDS))
        with torch.no_grad():
            rows[-1]["shape"] = list(wrapper(inputs[:1]).shape)
        wrapper._hook.remove()
    return dict(stages=np.array([f"stages.{i}" for i in range(n)]), matrices=np.stack([r["matrix"] for r in rows]),
                feature_shapes=np.array([r["shape"] for r in rows], np.int64), thresholds=np.array(THRESHOLDS),
                side_lengths=np.stack([r["side_lengths"] for r in rows]),
                area_ratios=np.stack([r["area_ratios"] for r in rows]))


# --------------------------------------------------------------------------------------------- model-vs-human

def load_model_vs_human(root: Path):
    """model-vs-human's helper, decision-mapping and analysis modules, its package ``__init__`` files stubbed."""
    import os

    os.environ["MODELVSHUMANDIR"] = str(root)
    for pkg in ("modelvshuman", "modelvshuman.datasets", "modelvshuman.plotting", "modelvshuman.helper"):
        mod = types.ModuleType(pkg)
        mod.__path__ = [str(root / pkg.replace(".", "/"))]
        sys.modules[pkg] = mod
    sys.path.insert(0, str(root))
    from modelvshuman.datasets import decision_mappings
    from modelvshuman.helper import human_categories, wordnet_functions
    from modelvshuman.plotting import analyses
    return human_categories, wordnet_functions, decision_mappings, analyses


def make_16class(hc, wnf) -> dict:
    cats = list(hc.get_human_object_recognition_categories())
    h = hc.HumanCategories()
    indices = {c: [int(i) for i in h.get_imagenet_indices_for_category(c)] for c in cats}
    index_to = [None] * 1000
    for c, idx in indices.items():
        for i in idx:
            index_to[i] = c
    return {"_about": "ImageNet-1k index -> 16 categories (model-vs-human helper/human_categories.py)",
            "categories": cats, "indices": indices, "num_indices_total": sum(map(len, indices.values())),
            "index_to_category": index_to, "imagenet_wnids": list(wnf.get_ilsvrc2012_WNIDs())}


def make_mapping(decision_mappings, n: int = 16, seed: int = 0) -> dict:
    """Random logits through the official ImageNetProbabilitiesTo16ClassesMapping (aggregation recorded by a hook)."""
    torch.manual_seed(seed)
    logits = torch.randn(n, 1000) * 3
    probs = torch.softmax(logits.double(), dim=-1).numpy()
    seen = []

    def mean(values, axis):
        r = np.mean(values, axis=axis)
        seen.append(r)
        return r

    mapping = decision_mappings.ImageNetProbabilitiesTo16ClassesMapping(aggregation_function=mean)
    ranking = mapping(probs)
    cats = list(mapping.categories)
    from modelvshuman.helper import human_categories as hc
    h = hc.HumanCategories()
    to_cat = np.full(1000, -1, np.int64)
    for ci, c in enumerate(cats):
        to_cat[h.get_imagenet_indices_for_category(c)] = ci
    ranking_idx = np.array([[cats.index(c) for c in row] for row in ranking], np.int64)
    return dict(seed=np.int64(seed), logits=logits.numpy(), probabilities=probs, categories=np.array(cats),
                imagenet_to_category=to_cat, aggregated_probabilities=np.transpose(np.array(seen)),
                ranking_indices=ranking_idx, ranking_names=np.array(ranking), top1_index=ranking_idx[:, 0],
                top1_name=np.array(ranking)[:, 0])


def synthetic_decisions(categories: list[str], subj: str, seed: int, n_per_cat: int = 12) -> list[dict]:
    """Random decisions on made-up cue-conflict file names (model-vs-human CSV schema; includes no-conflict rows)."""
    rng = np.random.default_rng(seed)
    rows, trial = [], 0
    for shape in categories:
        for k in range(n_per_cat):
            texture = shape if k == 0 else categories[int(rng.integers(len(categories)))]
            roll = rng.random()
            answer = shape if roll < 0.4 else texture if roll < 0.7 else "na" if roll < 0.75 else \
                categories[int(rng.integers(len(categories)))]
            trial += 1
            rows.append(dict(subj=subj, session=1, trial=trial, rt="NaN", object_response=answer, category=shape,
                             condition=0, imagename=f"{trial:04d}_cue_{subj}_0_{shape}_00_{shape}{k + 1}-{texture}"
                                                     f"{int(rng.integers(1, 10))}.png"))
    return rows


def make_shape_bias(analyses, categories: list[str], out_dir: Path) -> dict:
    """Synthetic decision CSVs and the official ShapeBias.analysis of each (overall and per shape category)."""
    import pandas as pd

    sb = analyses.ShapeBias()
    files = {}
    (out_dir / "decisions").mkdir(parents=True, exist_ok=True)
    for i, subj in enumerate(("subject-01", "subject-02", "resnet-x")):
        path = out_dir / "decisions" / f"cue-conflict_{subj}_session_1.csv"
        rows = synthetic_decisions(categories, subj, seed=i)
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        df = pd.read_csv(path)
        entry = {k: float(v) for k, v in sb.analysis(df).items()}
        entry.update(path=f"decisions/{path.name}", n_trials=len(df), per_category={})
        for cat in categories:
            part = df.loc[df["category"] == cat]
            r = sb.analysis(part)
            entry["per_category"][cat] = {k: (None if np.isnan(v) else float(v)) for k, v in r.items()}
            entry["per_category"][cat]["n_trials"] = len(part)
        files[path.name] = entry
    return {"_about": "official modelvshuman.plotting.analyses.ShapeBias.analysis on pandas.read_csv of each "
                      "synthetic CSV in decisions/ (per_category: on the rows of one shape category)",
            "categories": categories, "files": files}


# --------------------------------------------------------------------------------------------- UniRepLKNet

#: the tiny classification model (kernels 3 and 5: plain depthwise; 7 and 13: Dilated Reparam Blocks) and the cases
#: it lacks: kernels 0 (identity), 9, 11, 15, 17; the downstream mode (norm0..3, four maps) without layer scale
UNI_TINY = dict(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), kernel_sizes=((3,), (5,), (7, 13), (13,)), num_classes=10)
UNI_CASES = {
    "kernels": dict(depths=(2, 1, 2, 1), dims=(8, 16, 24, 32), kernel_sizes=((0, 17), (15,), (11, 9), (5,)),
                    num_classes=7),
    "downstream": dict(depths=(1, 1, 2, 1), dims=(8, 16, 16, 24), kernel_sizes=((3,), (7,), (13, 3), (7,)),
                       num_classes=None, init_cfg=dict(checkpoint=None), layer_scale_init_value=0),
}
UNI_VARIANTS = ("a", "f", "p", "n", "t", "s", "b", "l", "xl")


def load_official_unireplknet(root: Path):
    spec = importlib.util.spec_from_file_location("official_unireplknet", root / "unireplknet.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its @register_model looks the module up
    spec.loader.exec_module(mod)
    mod.get_root_logger = lambda: None
    return mod


@torch.no_grad()
def randomise_unireplknet(model: nn.Module) -> None:
    """Every parameter and BN statistic: layer scale U(0.5, 1.5), GRN N(0, 0.3), other 1-D N(0, 0.1) (+1 for
    weights), conv/linear weights N(0, 1/fan_in), running_mean N(0, 0.1), running_var U(0.5, 1.5)."""
    for name, p in model.named_parameters():
        if name.endswith(".gamma") and p.dim() == 1:
            p.uniform_(0.5, 1.5)
        elif ".act.1." in name:
            p.normal_(0, 0.3)
        elif p.dim() == 1:
            p.normal_(0, 0.1)
            if name.endswith("weight"):
                p.add_(1)
        else:
            p.normal_(0, (1.0 / p[0].numel()) ** 0.5)
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            b.normal_(0, 0.1)
        elif name.endswith("running_var"):
            b.uniform_(0.5, 1.5)


def _outputs(model: nn.Module, x: torch.Tensor):
    stages = []
    hooks = [s.register_forward_hook(lambda m, i, o: stages.append(o.detach().clone())) for s in model.stages]
    with torch.no_grad():
        out = model(x)
    for h in hooks:
        h.remove()
    return (out if isinstance(out, torch.Tensor) else list(out)), stages[:4]


def make_unireplknet_case(official, config: dict, seed: int, size: int) -> dict:
    """An official UniRepLKNet, randomised: weights, an input, outputs and stage outputs, and the same after the
    official ``reparameterize_unireplknet()`` (with the deploy state dict)."""
    torch.manual_seed(seed)
    model = official.UniRepLKNet(attempt_use_lk_impl=False, **config)
    randomise_unireplknet(model)
    model.eval()
    x = torch.randn(2, 3, size, size)
    out, stages = _outputs(model, x)
    train_sd = copy.deepcopy(model.state_dict())
    model.reparameterize_unireplknet()
    rep, rep_stages = _outputs(model, x)
    cfg = {k: v for k, v in config.items() if k != "init_cfg"}
    classify = config.get("num_classes") is not None
    return dict(config=cfg, seed=seed, state_dict=train_sd, input=x, logits=out if classify else None,
                outputs=out, stages=stages if classify else [], reparam_state_dict=copy.deepcopy(model.state_dict()),
                reparam_keys=[[k, list(v.shape)] for k, v in model.state_dict().items()],
                reparam_logits=rep if classify else None, reparam_outputs=rep,
                reparam_stages=rep_stages if classify else [])


def unireplknet_key_lists(official) -> dict:
    """Ordered [key, shape] and parameter counts of every published variant (1000 classes), train and deploy."""
    out = {"_about": "ordered [key, shape] of the official state_dict as constructed (train) and after "
                     "reparameterize_unireplknet() (deploy); num_parameters = sum of numel over model.parameters()"}
    for v in UNI_VARIANTS:
        model = getattr(official, f"unireplknet_{v}")(num_classes=1000, attempt_use_lk_impl=False).eval()
        entry = {}
        for mode in ("train", "deploy"):
            if mode == "deploy":
                model.reparameterize_unireplknet()
            entry[mode] = {"keys": [[k, list(t.shape)] for k, t in model.state_dict().items()],
                           "num_parameters": sum(p.numel() for p in model.parameters())}
        out[f"unireplknet_{v}"] = entry
        print(f"  keys unireplknet_{v}: {entry['train']['num_parameters']:,} / {entry['deploy']['num_parameters']:,}")
        del model
    return out


def make_unireplknet_files(root: Path, out: Path) -> dict:
    official = load_official_unireplknet(root)
    _save_torch(out / "unireplknet_tiny.pt", make_unireplknet_case(official, UNI_TINY, seed=3, size=64))
    cases = {name: make_unireplknet_case(official, cfg, seed, size=48) for seed, (name, cfg) in
             enumerate(UNI_CASES.items())}
    for case in cases.values():
        del case["reparam_state_dict"]  # (their deploy keys are kept; the file stays small)
    _save_torch(out / "unireplknet_cases.pt", cases)
    with gzip.open(out / "unireplknet_keys.json.gz", "wt") as f:
        json.dump(unireplknet_key_lists(official), f)
    return {"commit": _git_commit(root), "sha256": {"unireplknet.py": _sha256(root / "unireplknet.py")}}


# --------------------------------------------------------------------------------------------- main

def _save_npz(path: Path, arrays: dict) -> None:
    np.savez_compressed(path, **arrays)
    print(f"  {path.name}: {path.stat().st_size / 1e3:.0f} kB")


def _save_torch(path: Path, obj) -> None:
    torch.save(obj, path)
    print(f"  {path.name}: {path.stat().st_size / 1e3:.0f} kB")


def make_replknet_files(root: Path, out: Path) -> dict:
    replknet, RepLKNetForERF = load_official_replknet(root)
    ns = {"torch": torch, "np": np}
    fns = (_function_from(root / "erf" / "visualize_erf.py", "get_input_grad", ns),
           _function_from(root / "erf" / "analyze_erf.py", "get_rectangle", ns))
    tiny = make_tiny(replknet, TINY, model_seed=1)  # seed 1: the 50 % square grows stage by stage
    _save_torch(out / "replknet_tiny.pt", tiny)
    _save_torch(out / "replknet_tiny_xl.pt", make_tiny(replknet, TINY_XL, model_seed=2))
    _save_torch(out / "replknet_tiny_mmpretrain.pth", mmpretrain_layout(tiny["state_dict"]))
    _save_torch(out / "replknet_tiny_official_wrapped.pth", {"model": tiny["state_dict"], "epoch": 119})
    erf = make_erf(RepLKNetForERF, tiny, fns)
    _save_npz(out / "erf_tiny.npz", erf)
    _save_npz(out / "replknet_tiny_stages.npz", make_stages(RepLKNetForERF, tiny, torch.from_numpy(erf["inputs"]), fns))
    with gzip.open(out / "replknet_keys.json.gz", "wt") as f:
        json.dump(key_lists(replknet, RepLKNetForERF), f)
    files = ("replknet.py", "erf/replknet_for_erf.py", "erf/visualize_erf.py", "erf/analyze_erf.py")
    return {"commit": _git_commit(root), "sha256": {p: _sha256(root / p) for p in files},
            "erf_side_lengths": erf["side_lengths"].tolist()}


def make_mvh_files(root: Path, out: Path) -> dict:
    hc, wnf, decision_mappings, analyses = load_model_vs_human(root)
    table = make_16class(hc, wnf)
    (out / "imagenet_16class.json").write_text(json.dumps(table))
    _save_npz(out / "shape_bias_mapping.npz", make_mapping(decision_mappings))
    (out / "expected_shape_bias.json").write_text(json.dumps(make_shape_bias(analyses, table["categories"], out),
                                                             indent=1))
    files = ("modelvshuman/datasets/decision_mappings.py", "modelvshuman/helper/human_categories.py",
             "modelvshuman/helper/wordnet_functions.py", "modelvshuman/helper/categories.txt",
             "modelvshuman/plotting/analyses.py")
    return {"commit": _git_commit(root), "sha256": {p: _sha256(root / p) for p in files}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--replknet", type=Path, help="a clone of github.com/DingXiaoH/RepLKNet-pytorch")
    ap.add_argument("--model-vs-human", type=Path, help="a clone of github.com/bethgelab/model-vs-human")
    ap.add_argument("--unireplknet", type=Path, help="a clone of github.com/AILab-CVC/UniRepLKNet")
    ap.add_argument("--out", type=Path, default=HERE, help="where to write (default: tests/golden)")
    ap.add_argument("--stages-for", type=Path, metavar="FIXTURES",
                    help="only remake replknet_tiny_stages.npz for FIXTURES/replknet_tiny.pt and FIXTURES/erf_tiny.npz")
    args = ap.parse_args()
    if not (args.replknet or args.model_vs_human or args.unireplknet):
        ap.error("give --replknet, --model-vs-human and/or --unireplknet (paths to clones of the official repositories)")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stages_for:
        replknet, RepLKNetForERF = load_official_replknet(args.replknet)
        ns = {"torch": torch, "np": np}
        fns = (_function_from(args.replknet / "erf" / "visualize_erf.py", "get_input_grad", ns),
               _function_from(args.replknet / "erf" / "analyze_erf.py", "get_rectangle", ns))
        tiny = torch.load(args.stages_for / "replknet_tiny.pt", weights_only=True)
        inputs = torch.from_numpy(np.load(args.stages_for / "erf_tiny.npz")["inputs"])
        _save_npz(args.out / "replknet_tiny_stages.npz", make_stages(RepLKNetForERF, tiny, inputs, fns))
        return
    prov_path = args.out / "provenance.json"
    prov = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
    prov.update(generator="tests/golden/make_golden.py", torch=torch.__version__, numpy=np.__version__)
    if args.replknet:
        prov["DingXiaoH/RepLKNet-pytorch"] = make_replknet_files(args.replknet, args.out)
    if args.model_vs_human:
        prov["bethgelab/model-vs-human"] = make_mvh_files(args.model_vs_human, args.out)
    if args.unireplknet:
        prov["AILab-CVC/UniRepLKNet"] = make_unireplknet_files(args.unireplknet, args.out)
    prov_path.write_text(json.dumps(prov, indent=1) + "\n")
    print(json.dumps(prov, indent=1))


if __name__ == "__main__":
    main()
