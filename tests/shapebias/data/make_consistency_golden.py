"""Make ``error_consistency_golden.json``: error consistencies computed with model-vs-human's OWN analysis code.

Usage (outside the test suite; needs a checkout of model-vs-human, which is not part of erftools)::

    git clone https://github.com/bethgelab/model-vs-human MVH        # commit recorded in README.md
    python tests/shapebias/data/make_consistency_golden.py --mvh MVH \\
        --decisions ../shared/data/reference-decisions --out tests/shapebias/data

What it does (no model-vs-human code is copied here; it is imported from ``--mvh``):

* ``modelvshuman/plotting/analyses.py``, ``plotting/decision_makers.py`` and ``helper/plotting_helper.py`` are
  imported as they are. Stubs: the packages ``modelvshuman``, ``modelvshuman.plotting`` and
  ``modelvshuman.helper`` are created empty (their ``__init__`` imports the model zoo: torch, tensorflow, ...);
  ``MODELVSHUMANDIR`` is set to the checkout (``constants.py`` asserts it); ``pandas.DataFrame.append`` (removed in
  pandas 2, used by ``ErrorConsistency.get_result_df``) is given back as a ``pandas.concat`` of one row.
* Every reference file is read like model-vs-human's ``read_all_csv_files_from_directory`` (``pandas.read_csv``,
  column names lower-cased) and gets ``image_id = get_short_imagename(imagename)``, as ``get_experimental_data``.
* ``pairs``: ``ErrorConsistency().analysis(df1, df2)`` for every network file against every human observer and for
  every pair of observers (observed, expected and error consistency).
* ``mean_vs_humans`` and ``humans_ceiling``: ``ErrorConsistency().get_result_df(df, decision_makers, experiment)``
  with the 10 observers and one network (an experiment with the network's condition; the Open Images ResNet-101's
  file has condition 3, the observers 0, so model-vs-human cannot pair them that way and it gets only its pairs).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

LAB = "style-transfer-512-nomask-experiment"


def _load_mvh(mvh: Path):
    os.environ["MODELVSHUMANDIR"] = str(mvh)
    sys.path.insert(0, str(mvh))
    for name, sub in (("modelvshuman", ""), ("modelvshuman.plotting", "plotting"), ("modelvshuman.helper", "helper")):
        mod = types.ModuleType(name)
        mod.__path__ = [str(mvh / "modelvshuman" / sub)]
        sys.modules[name] = mod
    import pandas as pd

    if not hasattr(pd.DataFrame, "append"):
        pd.DataFrame.append = lambda self, row, ignore_index=True: pd.concat(  # noqa: E731
            [self, pd.DataFrame([row])], ignore_index=ignore_index)
    from modelvshuman.helper import plotting_helper
    from modelvshuman.plotting import analyses, decision_makers

    return analyses, decision_makers, plotting_helper


def _read(path: Path, ph):
    df = ph.read_data(str(path))
    df.columns = [c.lower() for c in df.columns]
    df["condition"] = df["condition"].astype(str)
    df["image_id"] = df["imagename"].apply(ph.get_short_imagename)
    return df


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mvh", required=True, type=Path, help="a checkout of bethgelab/model-vs-human")
    ap.add_argument("--decisions", required=True, type=Path, help="the reference decisions folder")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    analyses, dmk, ph = _load_mvh(args.mvh.resolve())
    import pandas as pd

    files = sorted(p.relative_to(args.decisions).as_posix() for p in args.decisions.glob("*/*.csv"))
    humans = [f for f in files if "_subject-" in f]
    networks = [f for f in files if f not in humans]
    frames = {f: _read(args.decisions / f, ph) for f in files}
    ec = analyses.ErrorConsistency()
    pairs = []
    for i, a in enumerate(networks + humans):
        for b in humans:
            if a == b or (a in humans and humans.index(b) <= humans.index(a)):
                continue
            r = ec.analysis(frames[a], frames[b])
            pairs.append({"file_a": a, "file_b": b, "trials": int(len(frames[a])),
                          "observed": float(r["observed-consistency"]), "expected": float(r["expected-consistency"]),
                          "kappa": float(r["error-consistency"])})
    means, ceiling = {}, None
    human_df = pd.concat([frames[f] for f in humans])
    for net in networks:
        df = pd.concat([human_df, frames[net]])
        conds = sorted(frames[net]["condition"].unique())
        if conds != ["0"]:
            continue
        makers = [dmk.DecisionMaker(name_pattern="subject-*", df=df, plotting_name="humans"),
                  dmk.DecisionMaker(name_pattern=str(frames[net]["subj"].iloc[0]), df=df)]
        res = ec.get_result_df(df, makers, types.SimpleNamespace(data_conditions=conds))
        model_row = res[res["subj"] != "humans"]
        means[net] = float(model_row["yvalue"].iloc[0])
        h = float(res[res["subj"] == "humans"]["yvalue"].iloc[0])
        assert ceiling is None or abs(ceiling - h) < 1e-12
        ceiling = h
    commit = subprocess.run(["git", "-C", str(args.mvh), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or None
    out = {"about": "Error consistency computed by model-vs-human's own code (make_consistency_golden.py) on the "
                    "reference decisions; files relative to the reference-decisions folder",
           "model_vs_human_commit": commit,
           "files_sha256": {f: hashlib.sha256((args.decisions / f).read_bytes()).hexdigest() for f in files},
           "pairs": pairs, "mean_vs_humans": means, "humans_ceiling": ceiling}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "error_consistency_golden.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out / 'error_consistency_golden.json'}: {len(pairs)} pairs, ceiling {ceiling}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
