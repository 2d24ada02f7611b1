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
                   help="folder holding run folders (default: the example results in reports/examples)")
    p.add_argument("--out", metavar="FILE", default="reports/index.md",
                   help="the Markdown file to write (default: %(default)s)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..results import results_root
    from ..report import build_report

    results = results_root(args.results) if args.results else results_root(None)
    out = build_report(results, args.out)
    print(f"wrote {out}")
    return 0
