"""``erftools models``: list the model registry."""
from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("models", help="list the model registry (names, parameters, kernels, weights, cache)",
                       description="List erftools' registered models: name, parameter count, large-kernel sizes, "
                                   "default weights and whether they are already cached. Any timm model name "
                                   "works too.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--timm", action="store_true", help="also list every timm architecture name")
    p.set_defaults(func=run)


def _param_count(entry) -> int:
    import torch

    from ..models import count_parameters, create_model

    with torch.device("meta"):  # shapes only: instant, no memory
        return count_parameters(create_model(entry.name, weights="random"))


def run(args) -> int:
    from ..models import is_cached, list_models, registry_entries

    rows = []
    for e in registry_entries():
        src = e.weight_source()
        rows.append({
            "name": e.name, "family": e.family, "arch": e.arch, "params": _param_count(e),
            "kernels": e.kernel_sizes, "input_size": e.preprocessing.input_size,
            "default_weights": src.tag if src else None,
            "weights": [{"tag": w.tag, "description": w.description, "url": w.url, "hf_hub_id": w.hf_hub_id,
                         "manual": w.manual} for w in e.weights],
            "cached": is_cached(e), "description": e.description})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        head = f"{'name':<14} {'params':>9} {'kernels':<16} {'size':>4}  {'default weights':<20} cached"
        print(head)
        print("-" * len(head))
        for r in rows:
            kern = ",".join(map(str, r["kernels"])) if r["kernels"] else "-"
            cached = {True: "yes", False: "no", None: "-"}[r["cached"]]
            manual = [w["tag"] for w in r["weights"] if w["manual"]]
            dw = r["default_weights"] or ("by hand: " + ",".join(manual) + " *" if manual else "none published")
            print(f"{r['name']:<14} {r['params'] / 1e6:>8.1f}M {kern:<16} {r['input_size']:>4}  {dw:<20} {cached}")
        if any(w["manual"] for r in rows for w in r["weights"]):
            print("\n* by hand: the weights are published (e.g. on Google Drive) but cannot be downloaded by erftools; "
                  "download the file and pass --weights PATH (`erftools models --json` lists the source).")
        print("\nAny timm model name works too (e.g. convnext_base, vit_base_patch16_224); "
              "`--weights` takes random, pretrained, a tag, a file or a URL.")
    if args.timm:
        extra = [n for n in list_models(include_timm=True) if n not in {r["name"] for r in rows}]
        print("\n".join(extra))
    return 0
