"""``erftools study STUDY``: run a whole comparison described in one TOML file (or a built-in study) and print
our numbers next to the paper's: a thin layer over :mod:`erftools.study`."""
from __future__ import annotations

import argparse
import re
import shlex
import sys

from .._io import ErftoolsError

EPILOG = """examples:
  erftools study --list                                          # the built-in studies
  erftools study replknet-table10 --dry-run                      # what is needed, downloaded and computed
  erftools study replknet-table10 --images ~/imagenet/val --weights-dir ~/Downloads
  erftools study replknet-fig5                                   # after `erftools data fetch cue-conflict`
  erftools study my-study.toml --shard 1/2 --results /shared/run # on machine 1 of 2; then 2/2 on the other
  erftools study my-study.toml --nproc-per-node 4                # each measurement on 4 GPUs (torchrun)
  erftools study my-study.toml --report-only                     # the table and report of what is there

The file format: docs/study.md."""

#: library argument names in error messages, as this command's flags
ADVICE = (
    (re.compile(r"weights_files=\{'([^']+)': PATH\}"), r"--weights-file \1=PATH"),
    (re.compile(r"\bweights_files\b"), "--weights-file"),
    (re.compile(r"\bweights_dir=DIR\b"), "--weights-dir DIR"),
    (re.compile(r"\bimages=DIR\b"), "--images DIR"),
    (re.compile(r"\bstimuli=DIR\b"), "--stimuli DIR"),
    (re.compile(r"\bskip_missing=True\b"), "--skip-missing"),
    (re.compile(r"\bnproc_per_node\b"), "--nproc-per-node"),
    (re.compile(r"\bshard (?='|\")"), "--shard "),
)


def advice(message: str) -> str:
    from .._advice import flag_advice

    return flag_advice(message, ADVICE)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "study", help="run a comparison described in a TOML file (or a built-in study) and compare with the paper",
        description="Run every model of a study through every measurement (ERF, shape bias) into one results "
                    "folder, resumably, then write the comparison (study.md, study.json) and the report (report.md) "
                    "and print each number next to the paper's, with a verdict against the study's tolerance.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", nargs="?", help="a study file (TOML) or a built-in study name (see --list)")
    p.add_argument("--list", action="store_true", help="list the built-in studies and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="show what is needed, downloaded and computed (with time estimates); compute nothing")
    p.add_argument("--results", metavar="DIR", default=None,
                   help="results folder (default: the study's `results`, else results/studies/<name>)")
    p.add_argument("--images", metavar="DIR", default=None,
                   help="ERF images: the ImageNet validation folder (overrides the study's [erf] images)")
    p.add_argument("--stimuli", metavar="DIR", default=None,
                   help="cue-conflict folder (default: the study's, else the `erftools data fetch` cache)")
    p.add_argument("--allow-incomplete", action="store_true", default=None,
                   help="accept a subset or modified copy of the stimuli (not comparable to the paper)")
    p.add_argument("--weights-file", action="append", default=[], metavar="ID=PATH",
                   help="the checkpoint of a model (its id in the study); repeat for several models")
    p.add_argument("--weights-dir", metavar="DIR", default=None,
                   help="folder holding manually downloaded weights under the file names the study expects "
                        "(default: $ERFTOOLS_WEIGHTS_DIR)")
    p.add_argument("--shard", metavar="I/N", default=None,
                   help="run only this machine's share of the models (1/2 and 2/2 on two machines, writing into "
                        "one shared --results folder)")
    p.add_argument("--nproc-per-node", type=int, default=None, metavar="N",
                   help="run each measurement under torchrun with N processes (one per GPU)")
    p.add_argument("--device", default=None, help="override the study's device (auto, cpu, cuda)")
    p.add_argument("--skip-missing", action="store_true",
                   help="run the models that pass the checks (weights there, model builds, ...); list the others "
                        "as missing")
    p.add_argument("--overwrite", action="store_true",
                   help="accept a study file that differs from the one the results folder was made with and "
                        "compute every run (of this shard) again; never touches files no study wrote")
    p.add_argument("--report-only", action="store_true",
                   help="compute nothing: write the table and report of the finished runs (e.g. after all shards)")
    p.add_argument("--no-report", action="store_true", help="write the table but not report.md and its figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=main)


def main(args) -> int:
    try:
        return _main(args)
    except ErftoolsError as exc:
        raise ErftoolsError(advice(str(exc))) from exc


def _main(args) -> int:
    from ..study import builtin_studies, format_plan, format_rows, load_study, make_plan, run_study
    from ..study.compare import summary
    from ..study.jobs import results_dir
    from ..study.runner import REPORT, STUDY_TABLE, StudyOutcome, parse_weights_files, write_outputs

    if args.list:
        from ..study.spec import builtin_path

        for name in builtin_studies():
            print(f"{name:20s} {load_study(builtin_path(name)).title}")
        return 0
    if not args.study:
        raise ErftoolsError("name a study: a TOML file or a built-in study (erftools study --list)")
    study = load_study(args.study)
    weights_files = parse_weights_files(args.weights_file)
    common = dict(results=args.results, images=args.images, stimuli=args.stimuli, weights_files=weights_files,
                  weights_dir=args.weights_dir, shard=args.shard, device=args.device, overwrite=args.overwrite,
                  skip_missing=args.skip_missing, allow_incomplete=args.allow_incomplete,
                  nproc_per_node=args.nproc_per_node)
    if args.dry_run:
        from ..study.jobs import parse_shard

        common["shard"] = parse_shard(args.shard)
        print(advice(format_plan(make_plan(study, **common))))
        return 0
    if args.report_only:
        from ..study.folder import check_folder, study_lock

        root = results_dir(study, args.results)
        if not root.is_dir():
            raise ErftoolsError(f"results folder {root} does not exist; run the study first")
        check_folder(root, study, args.overwrite)
        with study_lock(root):
            outcome = StudyOutcome(root, [])
            write_outputs(study, root, outcome, report=not args.no_report, force_report=True)
    else:
        try:
            outcome = run_study(study, progress=not args.no_progress, report=not args.no_report,
                                echo=lambda s: print(s, flush=True), **common)
        except KeyboardInterrupt:
            again = ["erftools"] + [a for a in sys.argv[1:] if a != "--overwrite"]  # the copy is already replaced
            print(f"\nerftools study: interrupted. Every finished run and batch is kept; continue with the same "
                  f"command:\n  {shlex.join(again)}", file=sys.stderr)
            return 130
    print()
    print(f"Study {study.name}: {study.title}")
    print(format_rows(outcome.rows))
    print("\n" + ", ".join(f"{n} {v}" for v, n in sorted(summary(outcome.rows).items())))
    for mid, why in outcome.skipped.items():
        print(f"skipped {mid}: {advice(why)}")
    for folder, why in outcome.failures.items():
        print(f"failed {folder}: {advice(why)}", file=sys.stderr)
    print(f"table: {outcome.results / STUDY_TABLE}" + (f"; report: {outcome.results / REPORT}" if outcome.report
                                                       else ""))
    if outcome.report_problem:
        print(f"no report: {outcome.report_problem}")
    return 1 if outcome.failures else 0
