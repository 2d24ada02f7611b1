"""``erftools report``: a Markdown report (figures, our numbers next to the paper's, provenance)."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="write a Markdown report of result folders, next to the paper's numbers",
        description="Write a Markdown report of the runs below a results folder: the ERF comparison figure and "
                    "area-ratio table next to the paper's Table 10, the shape-bias plot and table next to the "
                    "paper's Fig. 5 and the humans', and each run's provenance. Figures go to figures/ beside "
                    "the report and are linked with relative paths.")
    p.add_argument("--results", metavar="DIR", default=None,
                   help="folder holding run folders (default: ./results when it exists, else the example results "
                        "in reports/examples of a source checkout)")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="the Markdown file to write (default: RESULTS/index.md for ./results or --results, "
                        "reports/index.md for the examples)")
    p.set_defaults(func=run)


def run(args) -> int:
    import os
    from pathlib import Path

    from ..results import results_root
    from ..results.store import ENV_RESULTS
    from ..report import build_report

    chosen = args.results
    if chosen is None and os.environ.get(ENV_RESULTS) is None and Path("results").is_dir():
        chosen = "results"  # where `erftools erf` and `erftools shape-bias` write by default
    results = results_root(chosen)
    out = args.out or (Path(results) / "index.md" if chosen or os.environ.get(ENV_RESULTS) else "reports/index.md")
    print(f"wrote {build_report(results, out)}")
    return 0
