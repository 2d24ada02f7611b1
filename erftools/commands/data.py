"""``erftools data``: download and check the data sets erftools measures on."""
from __future__ import annotations

import sys

from .._io import ErftoolsError

DATASETS = ("cue-conflict", "reference-decisions")


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="download / check data sets (cue-conflict stimuli, reference decisions)",
                              description="Download and check the data sets erftools uses.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    f = sub.add_parser("fetch", help="download a data set, verifying every file against the shipped SHA-256 list",
                       description="Download a data set from the pinned rgeirhos/texture-vs-shape commit into DEST "
                                   "(default: the user cache). Every file is verified against the SHA-256 manifest "
                                   "shipped with erftools; interrupted downloads resume when run again.")
    f.add_argument("dataset", choices=DATASETS)
    f.add_argument("--dest", default=None, metavar="DIR", help="target folder (default: the user cache)")
    f.add_argument("--base-url", default=None, metavar="URL",
                   help="an http(s) mirror of the repository at the pinned commit (default: raw.githubusercontent.com)")
    f.add_argument("--mirror", default=None, metavar="DIR",
                   help="copy from a folder on this machine instead (the data set's own layout or the repository's); "
                        "every file is verified as a download would be")
    f.add_argument("--workers", type=int, default=8, help="parallel downloads (default 8)")
    f.add_argument("--no-progress", action="store_true")
    f.set_defaults(func=_fetch)
    c = sub.add_parser("check", help="check a cue-conflict folder: complete, unmodified, 224x224 RGB",
                       description="Report exactly what is missing, malformed, modified or unexpected.")
    c.add_argument("dataset", choices=("cue-conflict",))
    c.add_argument("--dest", default=None, metavar="DIR", help="folder to check (default: the user cache)")
    c.set_defaults(func=_check)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _fetch(args) -> int:
    from ..shapebias.fetch import fetch

    if args.workers < 1:
        raise ErftoolsError("--workers must be at least 1")
    rep = fetch(args.dataset, args.dest, base_url=args.base_url, workers=args.workers, progress=not args.no_progress,
                mirror=args.mirror)
    print(f"{args.dataset}: {len(rep.downloaded) + len(rep.already_present)} files verified in {rep.dest} "
          f"({len(rep.downloaded)} downloaded, {len(rep.already_present)} already there)")
    return 0


def _check(args) -> int:
    from ..shapebias.stimuli import check_stimuli, default_stimuli_dir

    root = args.dest or default_stimuli_dir()
    rep = check_stimuli(root)
    if rep.ok:
        print(f"{root}: the complete cue-conflict set, {len(rep.stimuli)} images, every file verified "
              f"(set sha256 {rep.sha256[:16]}...)")
        return 0
    print(f"{root}: {len(rep.stimuli)} usable images; {rep.problems(limit=20)}", file=sys.stderr)
    return 1
