"""``erftools shape-bias``: shape bias on the cue-conflict stimuli, for models or for existing decision files."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .._constants import CONV_BACKEND_CHOICES, SHAPE_BIAS_PRECISIONS
from .._io import ErftoolsError

DEFAULT_OUT = Path("results") / "shape-bias"

EPILOG = """examples:
  erftools data fetch cue-conflict                      # once: the 1280 stimuli, verified, into the user cache
  erftools shape-bias --model replknet-31B --weights pretrained --out results/sb/replknet-31B
  erftools shape-bias --model resnet-152 --weights random --stimuli DIR --batch-size 16
  erftools shape-bias --model replknet-31B swin-B resnet-152 --out results/sb   # one folder each + combined plot
  erftools shape-bias --model openclip:ViT-B-32 --weights laion2b_s34b_b79k   # zero-shot, 80 CLIP templates
  erftools shape-bias --model openclip:ViT-B-32 --weights openai --prompt "a photo of a {}."
  erftools shape-bias --decisions subject-*.csv resnet50.csv --out results/sb-refs
  erftools shape-bias --list-references
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "shape-bias", help="shape bias on the cue-conflict stimuli (models or decision files)",
        description="Measure the shape bias of models on the 1280 cue-conflict images (model-vs-human protocol), "
                    "or analyse existing per-trial decision files. Writes summary.json, decisions.csv and plots.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("what to measure (one or both)")
    src.add_argument("--model", nargs="+", action="extend", default=[], metavar="NAME",
                     help="model name(s): replknet-31B, resnet-152, swin-B, any timm name, or openclip:ARCH (a "
                          "zero-shot open_clip model, e.g. openclip:ViT-B-32; needs pip install 'erftools[clip]')")
    src.add_argument("--decisions", nargs="+", action="extend", default=[], metavar="CSV",
                     help="per-trial decision files (model-vs-human schema: erftools', model-vs-human's, the human "
                          "data); each subj is one decision maker, human subjects are pooled as 'humans'")
    p.add_argument("--weights", nargs="+", default=["pretrained"], metavar="W",
                   help="weights for the model(s): pretrained (default), random, a registry tag, a file or a URL; "
                        "one value for all models or one per model; for openclip: models an open_clip pretrained "
                        "tag (openai, laion2b_s34b_b79k, ...), a local checkpoint or random")
    p.add_argument("--prompt", nargs="+", default=None, metavar="TEMPLATE",
                   help="openclip: models: the prompt template(s) of the text classifier, '{}' where the category "
                        "name goes (default: the 80 ImageNet templates of CLIP), e.g. --prompt 'a photo of a {}.'")
    p.add_argument("--label", nargs="+", default=None, metavar="LABEL", help="display name(s), one per model")
    p.add_argument("--stimuli", default=None, metavar="DIR",
                   help="cue-conflict folder (default: the user cache filled by `erftools data fetch cue-conflict`)")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="evaluate a subset or modified copy of the stimuli (recorded; not comparable to papers)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per forward pass (default 32)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", default="fp32", choices=SHAPE_BIAS_PRECISIONS,
                   help="fp32 (default, the protocol's) or bf16 (autocast; every batch is also run in fp32 and the "
                        "decisions that change are counted in the record)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="image-decoding processes (default: half the cores, at most 8, on CUDA; 1 on CPU)")
    p.add_argument("--no-prepare", action="store_true",
                   help="run the model exactly as built (no re-parameterisation, BN folding or channels-last)")
    p.add_argument("--conv-backend", default=None, choices=CONV_BACKEND_CHOICES,
                   help="large-kernel convolution backend of RepLKNet models (default: $ERFTOOLS_CONV_BACKEND, "
                        "else auto)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder: the run folder for one decision maker, else one sub-folder each plus the "
                        f"combined plots (default {DEFAULT_OUT}/<name> or {DEFAULT_OUT})")
    p.add_argument("--reference", nargs="+", default=["humans"], metavar="NAME",
                   help="references drawn in the plots (default: humans; 'none' for none; see --list-references)")
    p.add_argument("--bootstrap", type=int, default=10_000, metavar="B",
                   help="bootstrap resamples for the 95%% CI (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and of random weights (default 0)")
    p.add_argument("--no-pool-humans", action="store_true",
                   help="analyse each human subject separately instead of pooling them as 'humans'")
    p.add_argument("--individual-subjects", action="store_true",
                   help="with pooling, also write one run per human subject")
    p.add_argument("--resume", action="store_true",
                   help="require an interrupted or finished run of the same settings in the output folder and continue "
                        "it (without this flag such a run is continued too, and a new one is started when there is "
                        "none)")
    p.add_argument("--overwrite", "--fresh", dest="overwrite", action="store_true",
                   help="discard the interrupted or finished run in the output folder and start again (a run of other "
                        "settings is never replaced without it); --fresh is its former name")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list-references", action="store_true", help="list the offline references and exit")
    p.set_defaults(func=main)


def _check(args) -> tuple[list, list]:
    """Refuse bad arguments before anything runs; the references (checked) and the weights per model."""
    from .._limits import check_bound
    from ..shapebias.reference import get_reference

    if not args.model and not args.decisions:
        raise ErftoolsError("nothing to measure: pass --model NAME and/or --decisions FILE.csv "
                            "(or --list-references)")
    for quantity, flag in (("batch_size", "--batch-size"), ("seed", "--seed"), ("bootstrap", "--bootstrap")):
        check_bound(quantity, getattr(args, quantity), flag)  # before any model runs
    if args.workers is not None and args.workers < 0:
        raise ErftoolsError("--workers must be 0 or more")
    if args.resume and args.overwrite:
        raise ErftoolsError("--resume and --overwrite contradict each other; choose one")
    refs = [r for r in args.reference if r.lower() != "none"]
    for r in refs:
        get_reference(r)  # fail early on a typo
    if args.model and len(args.weights) not in (1, len(args.model)):
        raise ErftoolsError(f"--weights takes one value for all models or one per model ({len(args.model)})")
    weights = args.weights * max(1, len(args.model)) if len(args.weights) == 1 else list(args.weights)
    if args.prompt and not any(m.strip().lower().startswith("openclip:") for m in args.model):
        raise ErftoolsError("--prompt applies to zero-shot openclip:ARCH models only; none is among --model")
    if args.label and len(args.label) != len(args.model):
        raise ErftoolsError(f"--label takes one value per model ({len(args.model)})")
    return refs, weights


def main(args) -> int:
    from ..shapebias import run as sbrun
    from ..shapebias.reference import list_references
    from ..shapebias.stimuli import load_stimuli

    if args.list_references:
        print(f"{'name':28s} {'shape bias':>10s}  label")
        for r in list_references():
            print(f"{r['name']:28s} {r['shape_bias']:10.4f}  {r['label']}")
        return 0
    refs, weights = _check(args)
    dms = sbrun.load_decision_makers(args.decisions, pool_humans=not args.no_pool_humans,
                                     keep_individuals=args.individual_subjects) if args.decisions else []
    stimuli = None
    if args.model:
        stimuli = load_stimuli(args.stimuli, allow_incomplete=args.allow_incomplete)
        if not stimuli.ok:
            print(f"warning: non-standard stimuli ({stimuli.problems(limit=3)}); results are not comparable to "
                  "published values", file=sys.stderr)
    models = list(zip(args.model, weights, args.label or [None] * len(args.model)))
    _records, folders, top = sbrun.run_many(
        models, dms, out=args.out, default_out=DEFAULT_OUT, stimuli=stimuli, stimuli_dir=args.stimuli,
        seed=args.seed, n_boot=args.bootstrap, references=refs, overwrite=args.overwrite, on_result=_print_summary,
        batch_size=args.batch_size, device=args.device, progress=not args.no_progress, resume=args.resume,
        conv_backend=args.conv_backend, precision=args.precision, prepare=not args.no_prepare, workers=args.workers,
        prompts=args.prompt)
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return 0
    if top is not None:
        print(f"combined plots: {top / sbrun.PLOT_MATRIX}, {top / sbrun.PLOT_BARS}")
    browse = Path(args.out) if args.out else (DEFAULT_OUT if top is not None else folders[0].parent)
    print(f"browse it: erftools dashboard --results {browse}")
    return 0


def _num(v, fmt: str = ".4f") -> str:
    return "n/a" if v is None or v != v else format(v, fmt)


def _print_summary(rec: dict, out: Path) -> None:
    lo, hi = rec["ci95"]
    extra = ""
    if rec.get("shape_bias_mean_of_subjects") is not None:
        a, b = rec["shape_bias_range_of_subjects"]
        extra = f"; mean of {len(rec['subjects'])} subjects {rec['shape_bias_mean_of_subjects']:.4f} ({a:.3f}-{b:.3f})"
    if pub := rec.get("published"):
        extra += f"; paper Fig. 5: {pub['shape_bias']:.4f}"
    if check := rec.get("precision_check"):
        extra += (f"; {rec['precision']}: {check['changed_decisions']} of {check['compared']} decisions differ from "
                  "fp32")
    if rec.get("num_nonfinite"):
        extra += f"; {rec['num_nonfinite']} images skipped (non-finite logits)"
    if rec.get("num_unreadable"):
        extra += (f"; {rec['num_unreadable']} images skipped (failed to decode: "
                  f"{rec['unreadable'][0]['file']}{', ...' if rec['num_unreadable'] > 1 else ''}; the record lists "
                  "the reasons)")
    print(f"{rec['label']}: shape bias {_num(rec['shape_bias'])} (95% CI {_num(lo)}-{_num(hi)}), "
          f"shape {_num(rec['fraction_correct_shape'])}, texture {_num(rec['fraction_correct_texture'])}, "
          f"no-conflict accuracy {_num(rec['accuracy_no_conflict'], '.3f')}, {rec['num_trials']} trials{extra} "
          f"-> {out}")
