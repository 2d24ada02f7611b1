"""ERF throughput and peak memory at 1024x1024: erftools' ``compute_erf`` next to a baseline that follows the
official RepLKNet ``erf/visualize_erf.py`` procedure, measured in the same run.

Every configuration runs in its own child process, so that its peak resident memory (``ru_maxrss`` of the child)
is clean; the children run one after another, never in parallel. Each child builds its model with random weights
(timing does not depend on the weights), computes the contribution maps of ``--images`` random 1024x1024 inputs one
batch at a time and reports the time of every image; the first image includes one-off costs (oneDNN primitive
creation, memory allocation), so s/image is the median over the images after the first (the first alone when only
one is run); the median, not the mean, because other jobs on a shared machine cause bursts.

Configurations
  ``replknet-31B / official``: the baseline. The training-time model (BN layers and the parallel 5x5 branch in
      place, not re-parameterised), every parameter requiring grad, the native (NCHW) convolution, batch 1,
      ``model.eval()``, and per image ``y = forward_features(x)``, ``ReLU(y[:, :, h//2, w//2]).sum()``,
      ``autograd.grad`` w.r.t. the input, ReLU, sum over batch and colour channels: the official procedure.
  ``replknet-31B / erftools``: ``erftools.erf.compute_erf`` with its defaults (eval, frozen parameters,
      structural re-parameterisation + BN folding, channels-last on CPU with oneDNN's depthwise kernel, convolutions
      that keep only what the input gradient needs).
  ``replknet-31B / erftools, FFT conv``: the same with ``conv_backend="fft"`` (erftools.ops' FFT convolution).
  ``resnet152 / erftools`` and ``swin_base_patch4_window7_224 / erftools`` (built with ``img_size=1024``).

Layer mode (``--mode layers``): the ERFs of the 4 stages of RepLKNet-31B (``compute_erfs(model, images,
layers="stages")``: one forward pass per image, one backward pass per stage) against the final-layer ERF alone
(``compute_erf``), both with the defaults, each in its own child process. Both pass all images in one call and
time each image from the ``on_batch`` callback, so model preparation is outside the per-image times. The target of
issue 14 is at most 2.5x (``stages_vs_final`` in the output).

UniRepLKNet mode (``--mode unireplknet``): ``unireplknet-S / official``, the same official procedure on the as-built
official-structure model (training structure: the dilated branches and BNs in place, parameters requiring grad,
native NCHW convolution, batch 1; the official iGEMM extension is CUDA-only and not used on CPU), next to
``unireplknet-S / erftools`` (``compute_erf`` with its defaults: re-parameterised, frozen, channels-last). Target
(issue 19): erftools at least 2x faster on CPU; ``--rounds N`` runs the pair N times in turn. Writes
``erf_bench_unireplknet.json`` / ``.md``. (``torch.compile`` of the prepared model was tried: about 110 s to compile,
then 6-10 % faster per image at 1024 px: not adopted.)

Usage::

    .venv/bin/python benchmarks/erf_bench.py                  # all configurations, 6 images each, 1024 px
    .venv/bin/python benchmarks/erf_bench.py --size 256 --images 2 --only replknet   # quick check
    .venv/bin/python benchmarks/erf_bench.py --mode layers                # 4 stages vs the final layer, 1024 px
    .venv/bin/python benchmarks/erf_bench.py --mode layers --size 256 --num-images 1   # quick check
    .venv/bin/python benchmarks/erf_bench.py --mode unireplknet --images 2   # UniRepLKNet-S, official vs erftools

Writes ``reports/benchmarks/erf_bench.json`` and ``reports/benchmarks/erf_bench.md`` (``--out`` to change);
the layer mode ``erf_bench_layers.json`` / ``.md`` (a ``_SIZE`` suffix when not at 1024).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = [
    # name, model, mode, options
    ("replknet-31B / official baseline", "replknet-31B", "official", {}),
    ("replknet-31B / erftools", "replknet-31B", "erftools", {}),
    ("replknet-31B / erftools, FFT conv", "replknet-31B", "erftools", {"conv_backend": "fft"}),
    ("resnet152 / erftools", "resnet-152", "erftools", {}),
    ("swin_base_patch4_window7_224 / erftools", "swin-B", "erftools", {}),
]

# --mode unireplknet: the successor family, the official procedure on the as-built official (training) structure
UNIREP_CONFIGS = [
    ("unireplknet-S / official baseline", "unireplknet-S", "official", {}),
    ("unireplknet-S / erftools", "unireplknet-S", "erftools", {}),
]

LAYER_CONFIGS = [
    ("replknet-31B / final layer (compute_erf)", "replknet-31B", "final", {}),
    ("replknet-31B / 4 stages (compute_erfs, layers=stages)", "replknet-31B", "layers", {"layers": "stages"}),
]


def _rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * (1 if platform.system() == "Darwin" else 1024)


def _current_rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def _configs(mode: str) -> list:
    return {"layers": LAYER_CONFIGS, "unireplknet": UNIREP_CONFIGS}.get(mode, CONFIGS)


def child(args) -> dict:
    """Run one configuration in this (fresh) process and return its measurements."""
    import torch

    from erftools.erf import compute_erf, model_kwargs_for_size
    from erftools.models import create_model

    name, model_name, mode, opts = _configs(args.mode)[args.child]
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = create_model(model_name, "random", **model_kwargs_for_size(model_name, args.size))
    build_s = time.perf_counter() - t0
    rss_model = _current_rss_bytes()
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(1, 3, args.size, args.size, generator=gen) for _ in range(args.images)]
    times, cpu_times = [], []
    matrix_sum = 0.0
    if mode == "official":
        # the official procedure: training-time model, parameters requiring grad, NCHW, native conv, batch 1
        model.set_conv_backend("native")
        model.eval()
        for p in model.parameters():
            p.requires_grad_(True)
        total = None
        for x in xs:
            t, c = time.perf_counter(), time.process_time()
            sample = x.clone().requires_grad_(True)
            out = model.forward_features(sample)
            h, w = out.shape[-2:]
            centre = torch.relu(out[:, :, h // 2, w // 2]).sum()
            (g,) = torch.autograd.grad(centre, sample)
            m = torch.relu(g).sum((0, 1)).numpy()
            total = m if total is None else total + m
            times.append(time.perf_counter() - t)
            cpu_times.append(time.process_time() - c)
            del out, centre, g, sample
        matrix_sum = float(total.sum() / len(xs))
    elif mode in ("final", "layers"):
        from erftools.erf import compute_erfs

        marks = []

        def tick(_acc):
            marks.append((time.perf_counter(), time.process_time()))

        batches = iter(xs)
        marks.append((time.perf_counter(), time.process_time()))
        if mode == "final":
            r = compute_erf(model, batches, batch_size=1, device="cpu", on_batch=tick, **opts)
            matrix_sum = float(r.matrix.sum())
        else:
            rs = compute_erfs(model, batches, batch_size=1, device="cpu", on_batch=tick, **opts)
            matrix_sum = {k: float(v.matrix.sum()) for k, v in rs.items()}
            r = next(iter(rs.values()))
        # the first mark is taken before the call: the first interval includes the preparation (one-off)
        times = [b[0] - a[0] for a, b in zip(marks, marks[1:])]
        cpu_times = [b[1] - a[1] for a, b in zip(marks, marks[1:])]
        opts = {**opts, "prepare_s": r.timings.get("prepare_s")}
    else:
        for x in xs:
            t, c = time.perf_counter(), time.process_time()
            r = compute_erf(model, x, batch_size=1, device="cpu", **opts)
            times.append(time.perf_counter() - t)
            cpu_times.append(time.process_time() - c)
            matrix_sum += float(r.matrix.sum()) / len(xs)
    import statistics

    per_image = statistics.median(times[1:] or times)  # the median resists other jobs' bursts on a shared machine
    cpu_per_image = statistics.median(cpu_times[1:] or cpu_times)
    return {"name": name, "model": model_name, "mode": mode, "options": opts, "size": args.size,
            "images": args.images, "seconds_per_image": times, "steady_seconds_per_image": per_image,
            "images_per_second": 1.0 / per_image, "cpu_seconds_per_image": cpu_times,
            "steady_cpu_seconds_per_image": cpu_per_image, "peak_rss_bytes": _rss_bytes(),
            "rss_after_model_bytes": rss_model,
            "build_s": build_s, "matrix_sum": matrix_sum, "threads": torch.get_num_threads()}


def _run_child(i: int, name: str, args) -> dict:
    """Configuration ``i`` in a fresh child process: its measurements, or ``{"name", "error"}``."""
    cmd = [sys.executable, __file__, "--child", str(i), "--size", str(args.size), "--images", str(args.images),
           "--mode", args.mode]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        print(proc.stderr[-3000:], file=sys.stderr)
        return {"name": name, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    res = json.loads(line[0][7:])
    print(f"    {res['steady_seconds_per_image']:.2f} s/img ({res['steady_cpu_seconds_per_image']:.2f} CPU s), "
          f"peak RSS {res['peak_rss_bytes'] / 2**30:.2f} GiB", file=sys.stderr, flush=True)
    return res


def _merge_rounds(rs: list) -> dict:
    """One configuration's rounds as one result: the medians over every round's images after its first, the
    largest peak RSS, each round's own medians under ``rounds``."""
    import statistics

    failed = next((r for r in rs if "error" in r), None)
    if failed:
        return failed
    steady = [t for r in rs for t in (r["seconds_per_image"][1:] or r["seconds_per_image"])]
    cpu = [t for r in rs for t in (r["cpu_seconds_per_image"][1:] or r["cpu_seconds_per_image"])]
    merged = {**rs[0], "seconds_per_image": [t for r in rs for t in r["seconds_per_image"]],
              "cpu_seconds_per_image": [t for r in rs for t in r["cpu_seconds_per_image"]],
              "steady_seconds_per_image": statistics.median(steady),
              "steady_cpu_seconds_per_image": statistics.median(cpu),
              "peak_rss_bytes": max(r["peak_rss_bytes"] for r in rs),
              "rounds": [{"wall": r["steady_seconds_per_image"], "cpu": r["steady_cpu_seconds_per_image"],
                          "first_image_s": r["seconds_per_image"][0]} for r in rs]}
    merged["images_per_second"] = 1.0 / merged["steady_seconds_per_image"]
    return merged


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--images", "--num-images", type=int, default=6, help="images per configuration (default 6)")
    p.add_argument("--mode", choices=("speed", "layers", "unireplknet"), default="speed",
                   help="speed: the configurations against the official baseline (default); layers: the 4 stages "
                        "of RepLKNet-31B against its final layer; unireplknet: UniRepLKNet-S against the official "
                        "procedure")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the configurations this many times in turn (A B A B ...): medians over all rounds, "
                        "and the ratios of each round, which ran back to back (default 1)")
    p.add_argument("--only", default=None, help="run only configurations whose name contains this text")
    p.add_argument("--out", default=str(ROOT / "reports" / "benchmarks"), help="output folder")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return 0
    runs: dict[str, list] = {}
    t_all = time.perf_counter()
    for rnd in range(args.rounds):
        for i, (name, *_rest) in enumerate(_configs(args.mode)):
            if args.only and args.only.lower() not in name.lower():
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {name} (round {rnd + 1}/{args.rounds}) ...", file=sys.stderr,
                  flush=True)
            runs.setdefault(name, []).append(_run_child(i, name, args))
    results = [_merge_rounds(rs) for rs in runs.values()]
    base = next((r for r in results if r.get("mode") == "official" and "error" not in r), None)
    for r in results:
        if base and "error" not in r and r.get("model") == base["model"]:
            r["speedup_vs_official"] = base["steady_seconds_per_image"] / r["steady_seconds_per_image"]
            r["cpu_time_speedup_vs_official"] = (base["steady_cpu_seconds_per_image"]
                                                 / r["steady_cpu_seconds_per_image"])
            r["memory_ratio_vs_official"] = r["peak_rss_bytes"] / base["peak_rss_bytes"]
            # the same ratios within each round (the configurations of a round ran back to back)
            r["round_speedups_vs_official"] = [
                [b["wall"] / o["wall"], b["cpu"] / o["cpu"]] for b, o in zip(base["rounds"], r["rounds"])]
    import torch

    meta = {"size": args.size, "images_per_config": args.images, "rounds": args.rounds,
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_average_at_end": os.getloadavg(), "wall_s": round(time.perf_counter() - t_all, 1),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "env_conv_backend": os.environ.get("ERFTOOLS_CONV_BACKEND")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.size == 1024 and not args.only else f"_{args.size}" + (f"_{args.only}" if args.only else "")
    sys.path.insert(0, str(ROOT))
    from erftools._io import write_json, write_text

    if args.mode == "layers":
        final = next((r for r in results if r.get("mode") == "final" and "error" not in r), None)
        stages = next((r for r in results if r.get("mode") == "layers" and "error" not in r), None)
        meta["stages_vs_final"] = (stages["steady_seconds_per_image"] / final["steady_seconds_per_image"]
                                   if final and stages else None)
        meta["target_stages_vs_final"] = 2.5
        write_json(out / f"erf_bench_layers{suffix}.json", {"meta": meta, "results": results})
        write_text(out / f"erf_bench_layers{suffix}.md", markdown_layers(meta, results))
        print(markdown_layers(meta, results))
        return 0

    stem = "erf_bench_unireplknet" if args.mode == "unireplknet" else "erf_bench"
    write_json(out / f"{stem}{suffix}.json", {"meta": meta, "results": results})
    write_text(out / f"{stem}{suffix}.md", markdown(meta, results))
    print(markdown(meta, results))
    return 0


def markdown(meta: dict, results: list) -> str:
    lines = [f"# ERF benchmark: {meta['size']}x{meta['size']} input, CPU",
             "",
             f"{meta['cpu']} ({meta['cpu_count']} cores, {meta['threads']} torch threads), torch {meta['torch']}, "
             f"{meta['images_per_config']} random images per configuration"
             + (f" in each of {meta['rounds']} rounds (the configurations in turn, A B A B)"
                if meta.get("rounds", 1) > 1 else "")
             + f", {meta['date']}. Each configuration ran "
             "alone in a fresh child process (peak RSS = `ru_maxrss` of that process, weights and Python included); "
             "s/image is the median over the images after the first of each round (one-off set-up); per-image times "
             "are in the JSON. "
             "The machine was shared "
             f"with other jobs (load average at the end: {', '.join(f'{v:.1f}' for v in meta['load_average_at_end'])})"
             ", so absolute times are noisy; the ratios come from the same run. Produced by "
             "`benchmarks/erf_bench.py`.",
             "",
             "| configuration | s / image | images / s | CPU s / image | first image (s) | peak RSS (GiB) | "
             "speed-up vs official (wall / CPU time) | memory vs official |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error']} | | | | | | |")
            continue
        sp = r.get("speedup_vs_official")
        cs = r.get("cpu_time_speedup_vs_official")
        mr = r.get("memory_ratio_vs_official")
        lines.append(f"| {r['name']} | {r['steady_seconds_per_image']:.2f} | {r['images_per_second']:.3f} | "
                     f"{r['steady_cpu_seconds_per_image']:.2f} | {r['seconds_per_image'][0]:.2f} | "
                     f"{r['peak_rss_bytes'] / 2**30:.2f} | "
                     f"{'' if sp is None else f'{sp:.2f}x / {cs:.2f}x'} | {'' if mr is None else f'{mr:.2f}'} |")
    per_round = [(r["name"], r["round_speedups_vs_official"]) for r in results
                 if len(r.get("round_speedups_vs_official") or ()) > 1 and r.get("mode") != "official"]
    if per_round:
        lines += ["", "Speed-up vs official within each round (wall / CPU time): " + "; ".join(
            f"{name}: " + ", ".join(f"{w:.2f}x / {c:.2f}x" for w, c in rounds) for name, rounds in per_round)]
    lines.append("")
    return "\n".join(lines)


def markdown_layers(meta: dict, results: list) -> str:
    ratio = meta.get("stages_vs_final")
    lines = [f"# ERF of the 4 stages of RepLKNet-31B vs the final layer alone: {meta['size']}x{meta['size']}, CPU",
             "",
             f"{meta['cpu']} ({meta['cpu_count']} cores, {meta['threads']} torch threads), torch {meta['torch']}, "
             f"{meta['images_per_config']} random images per configuration, {meta['date']}; each configuration alone "
             "in a fresh child process, one call over all images, each image timed from the `on_batch` callback; "
             "s/image is the median over the images after the first (the first includes preparation). Load average "
             f"at the end: {', '.join(f'{v:.1f}' for v in meta['load_average_at_end'])}. Produced by "
             "`benchmarks/erf_bench.py --mode layers`.",
             "",
             "| configuration | s / image | CPU s / image | peak RSS (GiB) |",
             "|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error']} | | |")
            continue
        lines.append(f"| {r['name']} | {r['steady_seconds_per_image']:.2f} | {r['steady_cpu_seconds_per_image']:.2f} "
                     f"| {r['peak_rss_bytes'] / 2**30:.2f} |")
    lines += ["", f"4 stages / final layer: **{ratio:.2f}x** (target: at most {meta['target_stages_vs_final']}x)"
              if ratio else "4 stages / final layer: not measured (a configuration failed)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
