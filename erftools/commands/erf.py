"""``erftools erf`` (compute an ERF run), ``erftools analyze`` (area-ratio table of a matrix) and ``erftools compare``
(side-by-side figure and table of several runs): a thin layer over :mod:`erftools.erf`."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from .._constants import CONV_BACKEND_CHOICES, DEVICES, ERF_PRECISIONS, SAMPLERS
from .._io import ErftoolsError


def _threshold(text: str) -> float:
    t = float(text)
    t = t / 100.0 if t > 1 else t  # allow percentages: 20 -> 0.2
    if not 0 < t <= 1:
        raise ErftoolsError(f"a threshold must be in (0, 1] (or a percentage); got {text}")
    return t


def _add_thresholds(parser) -> None:
    from ..erf import DEFAULT_THRESHOLDS

    parser.add_argument("--thresholds", nargs="+", default=[str(t) for t in DEFAULT_THRESHOLDS],
                        help="area-ratio thresholds, fractions or percentages (default: "
                             + " ".join(str(t) for t in DEFAULT_THRESHOLDS) + ", as in the paper)")


def _size_arg(text: str):
    """One size as an int (as before sweeps existed); a list stays text for :func:`erftools.erf.sweep.parse_sizes`,
    which names what is wrong with it."""
    one = text.strip()
    return int(one) if one.isdigit() else text


ERF_EXAMPLES = """examples:
  erftools erf --model replknet-31B --images ~/imagenet/val          # 50 random images at 1024x1024, pretrained
  erftools erf --model resnet-152 --weights random --num-images 2    # untrained, two bundled photographs
  erftools erf --model replknet-31B --layers stages --num-images 4   # one matrix per stage, one forward pass
  torchrun --standalone --nproc-per-node 4 -m erftools.cli erf --model replknet-31B --images DIR
The same command continues an interrupted run, and with a larger --num-images grows a finished one (only the new
images are computed); see docs/erf.md."""


def register(subparsers) -> None:
    from ..erf.objectives import OBJECTIVE_HELP, OBJECTIVES, REDUCTION_HELP, REDUCTIONS

    p = subparsers.add_parser(
        "erf", help="compute the effective receptive field (aggregated contribution map) of a model",
        description="Compute the aggregated contribution map of a model at SIZE x SIZE (the RepLKNet paper's ERF "
                    "protocol) and write erf.npy, erf.json and erf.png into --out. Under torchrun the images are "
                    "split across the processes.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=ERF_EXAMPLES)
    p.add_argument("--model", required=True, help="registry name (replknet-31B, resnet-152, swin-B, ...) or any "
                                                  "timm model name")
    p.add_argument("--weights", default="pretrained",
                   help="pretrained (default), random, a weight tag, a local checkpoint file or a URL")
    p.add_argument("--images", default=None, metavar="DIR",
                   help="folder of images, searched recursively (ImageFolder layouts too); default: the bundled "
                        "public-domain photographs")
    p.add_argument("--num-images", type=int, default=50,
                   help="number of images (default 50, as in the paper); more than a finished run in --out holds "
                        "grows it")
    p.add_argument("--sampler", choices=SAMPLERS, default="random",
                   help="random (seeded, default), sequential (first N in folder order, as the official script), "
                        "stratified (one image per class folder)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random / stratified sampler and of random weights (default 0)")
    p.add_argument("--size", default=1024, type=_size_arg, metavar="SIZE[,SIZE...]",
                   help="input resolution (default 1024); several (224,512,1024): an input-size sweep, one run "
                        "folder per size under --out (OUT/size-224, ...) and erf_sizes.png, the area ratios "
                        "against the size")
    p.add_argument("--objective", default="paper", choices=OBJECTIVES,
                   help="what is differentiated: " + "; ".join(f"{k}: {v}" for k, v in OBJECTIVE_HELP.items()))
    p.add_argument("--reduce", default="relu", choices=REDUCTIONS, dest="reduction",
                   help="how the input gradient becomes a map: "
                        + "; ".join(f"{k}: {v}" for k, v in REDUCTION_HELP.items()))
    p.add_argument("--batch-size", type=int, default=None, help="images per pass (default: 1 on CPU, 4 on CUDA)")
    p.add_argument("--device", default="auto", choices=DEVICES, help="default: cuda if available")
    p.add_argument("--precision", default="fp32", choices=ERF_PRECISIONS,
                   help="fp32 (default, the paper's), tf32 (CUDA tensor cores; plain fp32 on CPU) or bf16 "
                        "(autocast; its measured error against float64 is in docs/erf.md; refused without "
                        "--allow-low-precision because it moved a square in those measurements)")
    p.add_argument("--allow-low-precision", action="store_true",
                   help="accept bf16 although its measured error moved a high-contribution square (recorded)")
    p.add_argument("--conv-backend", default=None, choices=CONV_BACKEND_CHOICES,
                   help="large-kernel convolution backend of RepLKNet models (default: $ERFTOOLS_CONV_BACKEND, "
                        "else native channels-last on CPU and auto on CUDA)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="run folder (default results/erf/<model>_<weights>_<size>)")
    p.add_argument("--label", default=None, help="name shown in figures and tables (default: the model name)")
    p.add_argument("--layers", default=None, metavar="NAMES",
                   help="ERFs of these modules' outputs instead of the final feature map: comma-separated names "
                        "from model.named_modules() (stages.0,stages.1), or 'stages' for every stage of a known "
                        "family (RepLKNet/ConvNeXt stages, ResNet layer1-4, Swin layers); one forward pass per "
                        "batch for all, one matrix each, and a growth-with-depth figure")
    p.add_argument("--baseline", default=None, choices=("random",),
                   help="also compute the same architecture with seeded random weights (--seed) on the same images, "
                        "in OUT/baseline, shown next to the trained network")
    _add_thresholds(p)
    p.add_argument("--resume", action="store_true",
                   help="require an interrupted run of the same settings in --out and continue it (without this "
                        "flag such a run is continued too, and a new one is started when there is none)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard the interrupted or finished run in --out and start again (a run of other settings "
                        "is never replaced without it)")
    p.add_argument("--no-prepare", action="store_true",
                   help="use the model exactly as built (no re-parameterisation, BN fusion or channels-last); "
                        "slower, for checking")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_erf)
    _register_analyze_compare(subparsers)


def _register_analyze_compare(subparsers) -> None:
    a = subparsers.add_parser(
        "analyze", help="area-ratio table (and radial profile) of an ERF matrix",
        description="Print and save the high-contribution area ratios of an ERF matrix: an erf.npy of erftools, a "
                    "run folder, or the .npy written by the official RepLKNet script.")
    a.add_argument("path", help="an .npy matrix or an ERF run folder")
    a.add_argument("--layer", default=None, metavar="NAME",
                   help="of a run made with --layers: analyse this layer (default: every layer of such a run)")
    _add_thresholds(a)
    a.add_argument("--out", default=None, metavar="DIR", help="where to save the table (default: next to the input)")
    a.add_argument("--heatmap", action="store_true", help="also save the heatmap with the squares drawn")
    a.set_defaults(func=cmd_analyze)

    c = subparsers.add_parser(
        "compare", help="side-by-side ERF figure and area-ratio table of several runs",
        description="Plot several ERF matrices (run folders or .npy files) side by side on one colour scale, with "
                    "their area-ratio table and radial profiles.")
    c.add_argument("paths", nargs="+", metavar="DIR", help="ERF run folders or .npy files")
    c.add_argument("--labels", nargs="+", default=None, help="one label per input (default: the run labels)")
    _add_thresholds(c)
    c.add_argument("--squares", action="store_true", help="draw the high-contribution squares")
    c.add_argument("--layer", default=None, metavar="NAME",
                   help="compare this layer of runs made with --layers (default: their erf.npy, the deepest "
                        "layer); runs with layers also get a growth-with-depth figure of all of them overlaid")
    c.add_argument("--out", default=None, metavar="DIR",
                   help="folder for erf_compare.{png,md,json} (default: results/compare/<the labels>)")
    c.set_defaults(func=cmd_compare)


# ---------------------------------------------------------------------------------------------------------------


def _out_folder(args, model: str, sizes: list[int]) -> Path:
    """``--out``, else ``results/erf/<model>_<weights>_<size>`` (``sizes-A-B-C`` for a sweep)."""
    from ..results.records import slug

    if args.out:
        return Path(args.out)
    w = args.weights
    if os.path.sep in w or w.startswith(("http://", "https://")) or w.endswith((".pth", ".pt", ".safetensors")):
        w = Path(w.split("?")[0]).stem
    size = sizes[0] if len(sizes) == 1 else "sizes-" + "-".join(map(str, sizes))
    return Path("results") / "erf" / f"{slug(model)}_{slug(w)}_{size}"


def _names(text: str) -> list[str]:
    """The comma-separated names of a flag (``--model A,B``, ``--layers stages.0,stages.1``)."""
    return [x.strip() for x in text.split(",") if x.strip()]


def _check_erf_args(args) -> list[int]:
    """The sizes of ``--size`` and the argument checks done before any model is built."""
    from .._limits import check_bound
    from ..erf.sweep import parse_sizes

    sizes = parse_sizes(args.size)  # each within erftools._limits
    for quantity, flag in (("num_images", "--num-images"), ("seed", "--seed"), ("batch_size", "--batch-size")):
        check_bound(quantity, getattr(args, quantity), flag)  # before any model is built
    if args.resume and args.overwrite:
        raise ErftoolsError("--resume and --overwrite contradict each other; choose one")
    if len(sizes) > 1 and args.baseline:
        raise ErftoolsError("--baseline is not available with several sizes: run each size with --baseline "
                            "separately, or drop --baseline for the sweep")
    return sizes


def _build(args, size: int, thresholds, command: str):
    """The model (seeded, rebuilt for ``size`` where its patch grid needs it), the images at ``size`` and the keyword
    arguments of ``run_erf`` for one size."""
    import torch

    from ..erf import model_kwargs_for_size
    from ..images import select_images
    from ..models import create_model, get_model_info

    kwargs = model_kwargs_for_size(args.model, size)
    torch.manual_seed(args.seed)  # random weights: reproducible, and the same in every torchrun process
    model = create_model(args.model, args.weights, **kwargs)
    info = get_model_info(model)
    images = select_images(args.images, args.num_images, args.sampler, args.seed, size=size,
                           mean=info.preprocessing.mean, std=info.preprocessing.std)
    common = dict(batch_size=args.batch_size, device=args.device, resume=args.resume, overwrite=args.overwrite,
                  prepare=not args.no_prepare, conv_backend=args.conv_backend, thresholds=thresholds,
                  progress=not args.no_progress, seed=args.seed, model_kwargs=kwargs,
                  layers=args.layers if args.layers in (None, "stages") else _names(args.layers),
                  precision=args.precision, allow_low_precision=args.allow_low_precision,
                  objective=args.objective, reduction=args.reduction,
                  extra={"model_kwargs": kwargs, "command": command})
    return model, images, common, info


def _interrupted(args, out: Path, rank: int) -> int:
    if rank == 0:
        argv = [a for a in sys.argv[1:] if a not in ("--overwrite",)] or ["erf", "--model", args.model]
        if args.out is None:
            argv += ["--out", str(out)]
        print(f"\nerftools erf: interrupted. Every finished batch is saved in {out} (.erf_checkpoint); "
              f"continue with the same command:\n  erftools {shlex.join(argv)}", file=sys.stderr)
    return 130


def cmd_erf(args) -> int:
    from ..erf.run import run_erf, run_erf_with_baseline

    sizes = _check_erf_args(args)
    thresholds = [_threshold(t) for t in args.thresholds]
    command = "erftools " + shlex.join(sys.argv[1:])
    rank = int(os.environ.get("RANK", "0") or 0)
    models = _names(args.model)
    if len(models) > 1:
        return _cmd_models(args, models, sizes, thresholds, command, rank)
    if len(sizes) > 1:
        return _cmd_sweep(args, sizes, thresholds, command, rank)
    model, images, common, info = _build(args, sizes[0], thresholds, command)
    out = _out_folder(args, info.name, sizes)
    try:
        record = (run_erf_with_baseline if args.baseline == "random" else run_erf)(model, images, out,
                                                                                   label=args.label, **common)
    except KeyboardInterrupt:
        return _interrupted(args, out, rank)
    if rank != 0:
        return 0
    _print_run(record)
    _print_summary(record, sizes[0], out)
    print(f"browse it: erftools dashboard --results {shlex.quote(str(out.parent if args.out is None else out))}")
    return 0


def _cmd_sweep(args, sizes: list[int], thresholds, command: str, rank: int) -> int:
    """``erftools erf --size A,B,C``: one run per size under one parent (:mod:`erftools.erf.sweep`)."""
    from ..erf.objectives import label_with_variant
    from ..erf.run import read_run, run_erf
    from ..erf.sweep import SWEEP_RECORD, run_size_sweep, size_folder
    from ..models import resolve

    name = resolve(args.model)[0].name  # the name create_model gives the model (info.name)
    out = _out_folder(args, name, sizes)
    label = label_with_variant(args.label or name, args.objective, args.reduction)
    try:
        sweep = run_size_sweep(sizes, out, lambda size: _build(args, size, thresholds, command)[:3], run_erf,
                               label=label, overwrite=args.overwrite, extra={"command": command}, rank=rank)
    except KeyboardInterrupt:
        return _interrupted(args, out, rank)
    if rank != 0:
        return 0
    for entry in sweep["runs"]:
        _print_run(read_run(out / size_folder(entry["size"]))[1])
    print(f"{len(sizes)} sizes ({', '.join(map(str, sizes))} px) written to {out}: {SWEEP_RECORD}, "
          f"{sweep.get('figure') or 'no figure'} (area ratios against the input size)")
    print(f"compare sweeps: erftools compare {shlex.quote(str(out))} OTHER_SWEEP --out DIR; browse: erftools "
          f"dashboard --results {shlex.quote(str(out))}")
    return 0


def _cmd_models(args, models: list[str], sizes: list[int], thresholds, command: str, rank: int) -> int:
    """``erftools erf --model A,B --size X,Y,Z``: one sweep per model in ``OUT/<model>/`` and one figure of all of
    them, ``OUT/erf_sizes.png``."""
    from ..erf.plots import plot_size_sweep
    from ..erf.sweep import SWEEP_FIGURE, read_sweep
    from ..results.records import slug

    if len(sizes) < 2:
        raise ErftoolsError("several --model names are for input-size sweeps: give several sizes (--size "
                            "224,512,1024), or run each model on its own")
    if args.label:
        raise ErftoolsError("--label names one model; with several --model names each run is labelled by its model")
    if os.path.sep in args.weights or args.weights.endswith((".pth", ".pt", ".safetensors")):
        raise ErftoolsError("a weights file fits one model; with several --model names use --weights pretrained "
                            "or random, or run each model on its own")
    out = _out_folder(args, "+".join(models), sizes)
    for m in models:
        rc = _cmd_sweep(argparse_copy(args, model=m, out=str(out / slug(m))), sizes, thresholds, command, rank)
        if rc:
            return rc
    if rank != 0:
        return 0
    sweeps = [read_sweep(out / slug(m)) for m in models]
    plot_size_sweep({s["label"]: s["runs"] for s in sweeps}, thresholds=thresholds, path=out / SWEEP_FIGURE)
    print(f"{len(models)} models at {len(sizes)} sizes: one figure, {out / SWEEP_FIGURE}")
    return 0


def _print_run(record: dict) -> None:
    """The area-ratio table (each layer, the baseline) and the statistics line of a finished run."""
    from ..erf import format_table
    from ..erf.analysis import AreaRatio, radii_text

    def rows_of(name: str, rec: dict) -> list:  # one row per layer (of a run without layers: one)
        return [(name if e["layer"] is None else f"{name} {e['layer']}",
                 [AreaRatio(r["threshold"], r["side"], r["area_ratio"]) for r in e["area_ratios"]])
                for e in rec.get("layers") or [{"layer": None, "area_ratios": rec["area_ratios"]}]]

    base = record.get("baseline")
    print(format_table(rows_of(record["label"], record) + (rows_of("untrained", base) if base else []), markdown=False))
    st = record.get("statistics") or {}
    g = st.get("gaussian") or {}
    radii = st.get("radii") or {}
    if g.get("ok") or radii:
        trf = (st.get("theoretical_rf") or {}).get("side")
        print("statistics: " + ", ".join(x for x in [
            f"Gaussian sigma {g['sigma_x']:.1f} x {g['sigma_y']:.1f} px (R^2 {g['r2']:.2f})" if g.get("ok") else "",
            "radius holding 50/90/99%: " + radii_text(radii, " px") if radii else "",
            f"theoretical RF {trf[0]} px" if trf else ""] if x))


def _print_summary(record: dict, size: int, out: Path) -> None:
    t = record.get("timings", {})
    skipped = f", {record['num_skipped']} skipped" if record.get("num_skipped") else ""
    per = t.get("seconds_per_image")
    n, now = record["num_images"], t.get("images_computed_this_session")
    timing = f"{t.get('wall_s', 0):.1f} s" + (f" ({per:.2f} s per image)" if per else "")
    if now is not None and now < n:  # resumed: this session's time alone would understate the run
        whole = t.get("run_compute_s")
        timing = (f"this session {now} of them in {timing}; the whole run "
                  + (f"{whole:.1f} s of computation ({t['run_seconds_per_image']:.2f} s per image)"
                     if whole is not None and t.get("run_seconds_per_image") else
                     "began before erftools recorded computation times"))
    print(f"{n} image{'' if n == 1 else 's'} at {size}x{size}{skipped}; {timing}; written to {out}")


def _save_tables(stem: Path, rows, extra: dict) -> tuple[Path, Path]:
    from .._io import write_json, write_text
    from ..erf import format_table

    return (write_text(stem.with_name(stem.name + ".md"), format_table(rows) + "\n"),
            write_json(stem.with_name(stem.name + ".json"), extra))


def _sweep_runs(path) -> list[dict]:
    """The runs of a size-sweep folder (``sweep.json``), in size order."""
    from ..erf.sweep import read_sweep

    return sorted(read_sweep(path)["runs"], key=lambda e: int(e["size"]))


def cmd_analyze(args) -> int:
    from ..erf import format_table, radial_profile
    from ..erf.analysis import radii_text
    from ..erf.run import layer_file_stem, load_matrix
    from ..erf.sweep import is_sweep

    thresholds = [_threshold(t) for t in args.thresholds]
    path = Path(args.path)
    if path.is_dir() and is_sweep(path):  # an input-size sweep: every size
        for entry in _sweep_runs(path):
            print(f"== size {entry['size']} px")
            cmd_analyze(argparse_copy(args, path=str(path / entry["folder"])))
        return 0
    matrix, record = load_matrix(path, layer=args.layer)
    if path.is_dir() and args.layer is None and (record or {}).get("layers"):
        for entry in record["layers"]:
            print(f"== layer {entry['layer']}")
            cmd_analyze(argparse_copy(args, layer=entry["layer"]))
        return 0
    ratios = _area_ratios_of(None, path, matrix, thresholds)  # checks the matrix for radial_profile too
    prof = radial_profile(matrix)
    label = (record or {}).get("label") or (path.name if path.is_dir() else path.stem)
    if args.layer:
        label = f"{label} {args.layer}"
    src = path / "erf.npy" if path.is_dir() else path
    if path.is_dir() and args.layer:
        src = path / "layers" / f"{layer_file_stem(args.layer)}.npy"
    out_dir = Path(args.out) if args.out else src.parent
    h, w = matrix.shape
    print(f"{src}: {h}x{w}, max {float(matrix.max()):.6g}, min {float(matrix.min()):.6g}")
    if record and record.get("stored_downsample", 1) != 1:
        print(f"note: this matrix was block-summed by {record['stored_downsample']} for storage; the area ratios "
              "are approximate (see the record for the full-resolution values)")
    print(format_table([(label, ratios)], markdown=False))
    stats = _statistics_lines(matrix, thresholds, (record or {}).get("statistics"))
    print("radius holding 50/90/99% of the contribution: " + radii_text(stats["statistics"].get("radii"), " px"))
    for line in stats["lines"]:
        print(line)
    md, js = _save_tables(out_dir / f"{src.stem}_area_ratios", [(label, ratios)], {
        "source": str(src), "shape": [h, w], "label": label, "area_ratios": [x.to_dict() for x in ratios],
        "radial_profile": prof, "statistics": stats["statistics"],
        "method": "log10(x+1)/max; smallest centred odd square whose share > t"})
    print(f"saved {md} and {js}")
    if args.heatmap:
        from ..erf.plots import plot_erf

        png = out_dir / f"{src.stem}_heatmap.png"
        plot_erf(matrix, title=label, thresholds=thresholds, path=png)
        print(f"saved {png}")
    return 0


def argparse_copy(args, **changes):
    return argparse.Namespace(**{**vars(args), **changes})


def _statistics_lines(matrix, thresholds, recorded: dict | None) -> dict:
    """The ERF statistics of a matrix (the record's theoretical RF reused when there is one) and lines to print."""
    import warnings

    from ..erf.statistics import erf_statistics

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        st = erf_statistics(matrix, thresholds=thresholds, theoretical=(recorded or {}).get("theoretical_rf"))
    lines = [f"warning: {w.message}" for w in caught]
    g = st.get("gaussian") or {}
    if g.get("ok"):
        orient = "" if g.get("orientation_deg") is None else f", orientation {g['orientation_deg']:.0f} deg"
        lines.append(f"2-D Gaussian fit: sigma_x {g['sigma_x']:.2f} px, sigma_y {g['sigma_y']:.2f} px{orient}, "
                     f"R^2 {g['r2']:.3f}")
    elif g:
        lines.append(f"2-D Gaussian fit: not possible ({g.get('reason')})")
    com = st.get("centre_of_mass") or {}
    if com:
        lines.append(f"centre of mass: {com['offset']:.2f} px from the centre "
                     f"(dx {com['offset_x']:+.2f}, dy {com['offset_y']:+.2f})")
    trf = st.get("theoretical_rf") or {}
    if trf.get("side"):
        ratio = st.get("effective_to_theoretical") or {}
        lines.append(f"theoretical receptive field: {trf['side'][0]} px; effective/theoretical side: "
                     + ", ".join(f"t={float(k):g}: {v:.3f}" for k, v in ratio.items() if v is not None))
    return {"statistics": st, "lines": lines}


def _expand_sweeps(paths, labels) -> dict:
    """``paths`` (and ``labels``) with every size-sweep folder (``sweep.json``) replaced by its size runs, in size
    order; a sweep's label, when given, is kept with the size appended."""
    from ..erf.sweep import is_sweep

    pairs = []
    for p, label in zip(paths, labels or [None] * len(paths)):
        if Path(p).is_dir() and is_sweep(p):
            pairs += [(str(Path(p) / e["folder"]), f"{label}, {e['size']} px" if labels else None)
                      for e in _sweep_runs(p)]
        else:
            pairs.append((p, label))
    return {"paths": [p for p, _ in pairs], "labels": [lab for _, lab in pairs] if labels else None}


def _size_series(rows, records, paths) -> dict:
    """``{sweep label: [{"size", "area_ratios", "theoretical_rf"}]}`` of the compared runs that belong to a size
    sweep (``sweep`` in their record), grouped by the sweep's folder; sweeps with one size are left out."""
    groups: dict = {}
    for (_label, ratios), rec, p in zip(rows, records, paths):
        sweep = rec.get("sweep")
        if not isinstance(sweep, dict) or "size" not in sweep:
            continue
        key = str(Path(p).resolve().parent)
        title, points = groups.setdefault(key, (sweep.get("label") or rec.get("label") or key, []))
        points.append({"size": int(sweep["size"]), "area_ratios": [r.to_dict() for r in ratios],
                       "theoretical_rf": (rec.get("statistics") or {}).get("theoretical_rf")})
    series: dict = {}
    for title, points in groups.values():
        if len(points) > 1:
            series[title if title not in series else f"{title} ({len(series) + 1})"] = points
    return series


def _compared_run(path: Path, record: dict | None) -> tuple:
    """The run behind a compared input, read once through the results store, and the title the dashboard and the
    report give it (``results.views.run_title``: ``(random init)``, ``(incomplete)``, the ERF variant); a bare
    matrix file has no run (None) and is named by its file name."""
    if not (record and path.is_dir()):
        return None, path.name if path.is_dir() else path.stem
    from ..results import load_run
    from ..results.views import run_title

    run = load_run(path, "erf", root=path)
    return run, run_title(run)


def _area_ratios_of(run, path: Path, matrix, thresholds, layer: str | None = None) -> list:
    """``[AreaRatio]`` of a run (or one of its layers) as the dashboard shows them (``results.views``: the
    recorded full-resolution squares, recomputed only at other thresholds); of a bare matrix, computed from it."""
    from ..erf import area_ratios
    from ..erf.analysis import AreaRatio

    if run is None:
        try:
            return area_ratios(matrix, thresholds)
        except ValueError as exc:
            raise ErftoolsError(f"{path}: {exc}") from exc
    from ..results.views import layer_area_ratios

    got = layer_area_ratios(run, layer, thresholds).ratios
    return [AreaRatio(t, *got[round(float(t), 6)]) for t in thresholds]


def cmd_compare(args) -> int:
    from ..erf import format_table, radial_profile
    from ..erf.plots import plot_comparison, plot_layer_growth, plot_radial_profiles, plot_size_sweep
    from ..erf.run import load_matrix
    from ..results.records import slug

    thresholds = [_threshold(t) for t in args.thresholds]
    if args.labels and len(args.labels) != len(args.paths):
        raise ErftoolsError(f"--labels needs one label per input ({len(args.paths)}); got {len(args.labels)}")
    args = argparse_copy(args, **_expand_sweeps(args.paths, args.labels))
    matrices, labels, records, runs = [], [], [], []
    for i, p in enumerate(args.paths):
        m, rec = load_matrix(Path(p), layer=args.layer)
        run, title = _compared_run(Path(p), rec)
        matrices.append(m)
        records.append(rec or {})
        runs.append(run)
        labels.append(args.labels[i] if args.labels else title)
    for i, lab in enumerate(labels):  # make duplicate labels distinct
        if labels.count(lab) > 1:
            labels[i] = f"{lab} ({Path(args.paths[i]).name})"
    rows, entries, profiles = [], [], []
    for m, lab, rec, run, p in zip(matrices, labels, records, runs, args.paths):
        ratios = _area_ratios_of(run, Path(p), m, thresholds, args.layer)
        profiles.append(radial_profile(m))
        rows.append((lab, ratios))
        entries.append({"label": lab, "source": str(p), "shape": list(m.shape),
                        "model": (rec.get("model") or {}).get("name"),
                        "weights": (rec.get("model") or {}).get("weights"), "num_images": rec.get("num_images"),
                        "area_ratios": [r.to_dict() for r in ratios],
                        "radius_for_share": profiles[-1]["radius_for_share"]})
    # results/compare/<labels joined> by default: beside the runs, never the current folder
    out = Path(args.out) if args.out else Path("results") / "compare" / slug("_vs_".join(labels))[:120]
    out.mkdir(parents=True, exist_ok=True)
    png = out / "erf_compare.png"
    plot_comparison(matrices, labels, thresholds=thresholds if args.squares else None, path=png)
    radial = out / "erf_compare_radial.png"
    plot_radial_profiles(profiles, labels, path=radial)
    series = {lab: [(e["layer"], _area_ratios_of(run, Path(p), None, thresholds, e["layer"])) for e in rec["layers"]]
              for lab, rec, run, p in zip(labels, records, runs, args.paths) if rec.get("layers")}
    if series:
        growth = out / "erf_compare_growth.png"
        plot_layer_growth(series, thresholds=thresholds, path=growth)
        print(f"saved {growth} (area ratio against layer)")
    sizes = _size_series(rows, records, args.paths)
    if sizes:
        sweep_png = out / "erf_compare_sizes.png"
        plot_size_sweep(sizes, thresholds=thresholds, path=sweep_png)
        print(f"saved {sweep_png} (area ratio against the input size)")
    print(format_table(rows))
    md, js = _save_tables(out / "erf_compare", rows, {"thresholds": thresholds, "runs": entries})
    print(f"saved {png}, {radial}, {md} and {js}")
    return 0
