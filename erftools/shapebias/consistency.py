"""Error consistency (Cohen's kappa) between decision makers on the cue-conflict trials, as model-vs-human computes it.

Protocol (Geirhos, Meding & Wichmann, NeurIPS 2020; model-vs-human ``ErrorConsistency.analysis``):

* the trials of two decision makers are aligned by stimulus: the image id is the part of ``imagename`` after its
  last ``_`` (model-vs-human's ``get_short_imagename``; an ImageNet-style ``n0..._`` prefix is kept);
* a trial is *correct* when the response is the shape category (the ``category`` column). Every trial counts, the
  80 without a cue conflict (shape == texture) included, and a human ``na`` answer is an error: model-vs-human
  drops nothing here (unlike its shape bias, which leaves the no-conflict trials out of the numerators);
* ``p_a``, ``p_b``: the two accuracies over the aligned trials; expected consistency
  ``c_exp = p_a p_b + (1 - p_a)(1 - p_b)``; observed ``c_obs`` = share of trials where both are right or both
  wrong; ``kappa = (c_obs - c_exp) / (1 - c_exp)``, and ``kappa = 1`` when ``c_obs == 1``.
* a decision maker's value against humans is the mean of its kappas with each human observer (an observer of the
  same name is left out, as model-vs-human does); the human ceiling is each observer's mean kappa with the other
  observers, averaged over observers (model-vs-human's "humans" value).

model-vs-human requires the two trial sets to be identical; erftools aligns them on the stimuli both decided (the
same thing for two complete runs) and writes the number of aligned trials. The observers are the human observers
(``subject-NN``) among the decision files of a run when there are at least two, else the 10 observers of Geirhos
et al.'s lab experiment, shipped in ``data/shapebias/human_decisions.json`` (rebuilt from the raw files by
``python -m erftools.shapebias.consistency FOLDER``).
"""
from __future__ import annotations

import csv
import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .._io import ErftoolsError, atomic_path
from .._paths import data_file
from .categories import CATEGORIES

CSV_FILE = "error_consistency.csv"
CSV_COLUMNS = ("maker_a", "maker_b", "trials", "observed", "expected", "kappa")
HUMAN_FILE = "human_decisions.json"
NO_ANSWER_CODE = "-"
#: at least this many human observers among a run's decision files make them the observers
MIN_OBSERVERS = 2
FROM_FILES = "decision files of this run"
SHIPPED = ("shipped: the 10 observers of Geirhos et al. (2019), texture-vs-shape raw-data "
           "(data/shapebias/human_decisions.json)")
METHOD = ("Cohen's kappa of trial-by-trial correctness (response == shape category; all trials, no-conflict "
          "trials and 'na' included), trials aligned by stimulus; expected consistency from the two accuracies "
          "(model-vs-human ErrorConsistency)")


def image_id(imagename: str) -> str:
    """The stimulus of a trial, as model-vs-human's ``get_short_imagename``: the part after the last ``_``
    (``0001_s5n_s01_0_bird_00_bird3-clock2.png`` -> ``bird3-clock2.png``); an ImageNet image keeps its
    ``n0..._`` prefix."""
    parts = str(imagename).split("_")
    if len(parts) < 2:
        return parts[0]
    return f"{parts[-2]}_{parts[-1]}" if parts[-2].startswith("n0") else parts[-1]


@dataclass(frozen=True)
class Maker:
    """One decision maker's correctness per stimulus (``{image id: correct}``) and whether it is a human."""
    label: str
    correct: dict
    human: bool = False


def maker_from_rows(label: str, rows: Sequence[dict], human: bool = False) -> Maker:
    """A :class:`Maker` from per-trial rows (``object_response``, ``category``, ``imagename``); a stimulus decided
    twice is refused (model-vs-human needs one trial per stimulus)."""
    correct: dict[str, bool] = {}
    for r in rows:
        key = image_id(r["imagename"])
        if key in correct:
            raise ErftoolsError(f"{label}: the stimulus {key} is decided twice; error consistency needs one trial "
                                "per stimulus and decision maker (pass each observer's file once)")
        correct[key] = r["object_response"] == r["category"]
    return Maker(label, correct, human)


@dataclass(frozen=True)
class Pair:
    """One row of ``error_consistency.csv``."""
    maker_a: str
    maker_b: str
    trials: int
    observed: float | None
    expected: float | None
    kappa: float | None


def kappa(observed: float, expected: float) -> float:
    """Cohen's kappa from observed and expected consistency (1 when ``observed == 1``, as model-vs-human)."""
    if observed == 1.0:
        return 1.0
    return (observed - expected) / (1.0 - expected)


def pair(a: Maker, b: Maker) -> Pair:
    """The error consistency of two decision makers on the stimuli both decided."""
    common = sorted(set(a.correct) & set(b.correct))
    if not common:
        return Pair(a.label, b.label, 0, None, None, None)
    ca = np.array([a.correct[k] for k in common], dtype=bool)
    cb = np.array([b.correct[k] for k in common], dtype=bool)
    pa, pb = float(ca.mean()), float(cb.mean())
    expected = pa * pb + (1.0 - pa) * (1.0 - pb)
    observed = float((ca == cb).mean())
    return Pair(a.label, b.label, len(common), observed, expected, kappa(observed, expected))


# ------------------------------------------------------------------------------------------------ observers
@functools.lru_cache(maxsize=1)
def _shipped() -> dict:
    return json.loads(data_file("shapebias", HUMAN_FILE).read_text(encoding="utf-8"))


def shipped_observers() -> list[Maker]:
    """The 10 human observers of Geirhos et al. (2019), from ``data/shapebias/human_decisions.json``."""
    data = _shipped()
    shapes = ["".join(ch for ch in name.split("-")[0] if not ch.isdigit()) for name in data["stimuli"]]
    return [Maker(subj, {name: code != NO_ANSWER_CODE and CATEGORIES[ord(code) - ord("a")] == shape
                         for name, shape, code in zip(data["stimuli"], shapes, entry["responses"])}, True)
            for subj, entry in data["observers"].items()]


def human_makers(rows: Sequence[dict]) -> list[Maker]:
    """The human observers (``subject-NN``) among per-trial rows, one :class:`Maker` per subject."""
    by_subj: dict[str, list[dict]] = {}
    for r in rows:
        if str(r["subj"]).startswith("subject-"):
            by_subj.setdefault(r["subj"], []).append(r)
    return [maker_from_rows(s, rs, True) for s, rs in by_subj.items()]


def observers_for(groups: Sequence[Sequence[dict]]) -> list[Maker] | None:
    """The observers a run with these groups of decision-file rows (one per decision maker) is compared with:
    its human observers (each subject once, from the first group holding it) when there are at least
    :data:`MIN_OBSERVERS`, else None (the shipped observers)."""
    found: dict[str, Maker] = {}
    for rows in groups:
        for m in human_makers(rows):
            found.setdefault(m.label, m)
    return list(found.values()) if len(found) >= MIN_OBSERVERS else None


# ------------------------------------------------------------------------------------------------ the table
def makers_of(label: str, rows: Sequence[dict], kind: str) -> list[Maker]:
    """The individual decision makers of a run: the observers of pooled humans (``kind == "humans"``), else one."""
    if kind == "humans":
        return human_makers(rows)
    return [maker_from_rows(label, rows, kind == "human")]


def _everyone(makers: Sequence[Maker], observers: Sequence[Maker] | None) -> list[Maker]:
    """``makers`` and then the observers (default: the shipped ones) not named as one of them."""
    observers = list(observers) if observers is not None else shipped_observers()
    seen = {m.label for m in makers}
    return list(makers) + [o for o in observers if o.label not in seen]


def pairs_for(makers: Sequence[Maker], observers: Sequence[Maker] | None = None) -> list[Pair]:
    """Every pair among ``makers`` and the observers (the observers among themselves included), each once; a
    decision maker is never paired with an observer of its own name (or itself)."""
    everyone = _everyone(makers, observers)
    return [pair(a, b) for i, a in enumerate(everyone) for b in everyone[i + 1:]]


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarise(label: str, makers: Sequence[Maker], observers: Sequence[Maker], pairs: Sequence[Pair]) -> dict:
    """The ``error_consistency`` entry of ``summary.json`` for the run's decision maker(s) ``makers``."""
    k = {(p.maker_a, p.maker_b): p for p in pairs}
    k.update({(p.maker_b, p.maker_a): p for p in pairs})
    names = [o.label for o in observers]

    def against(who: str) -> dict[str, Pair]:
        return {o: k[(who, o)] for o in names if o != who and (who, o) in k and k[(who, o)].kappa is not None}

    ceiling = {o: _mean([p.kappa for p in against(o).values()]) for o in names}
    ceiling_values = [v for v in ceiling.values() if v is not None]
    out = {"file": CSV_FILE, "method": METHOD, "observers": names,
           "human_ceiling": {"kappa_mean": _mean(ceiling_values), "per_observer": ceiling,
                             "pairs": sum(1 for p in pairs if p.maker_a in names and p.maker_b in names)}}
    if len(makers) == 1 and makers[0].label == label:
        mine = against(label)
        out.update({"maker": label, "trials": min((p.trials for p in mine.values()), default=0),
                    "kappa_mean": _mean([p.kappa for p in mine.values()]),
                    "observed_mean": _mean([p.observed for p in mine.values()]),
                    "expected_mean": _mean([p.expected for p in mine.values()]),
                    "per_observer": {o: p.kappa for o, p in mine.items()}})
    else:  # pooled observers: their value is the ceiling
        out.update({"maker": label, "trials": min((p.trials for p in pairs), default=0),
                    "kappa_mean": out["human_ceiling"]["kappa_mean"], "per_observer": ceiling})
    return out


def _num(v: float | None) -> str:
    return "" if v is None else repr(float(v))


def write_pairs(path: str | os.PathLike, pairs: Sequence[Pair]) -> Path:
    """Write ``error_consistency.csv`` (columns :data:`CSV_COLUMNS`), atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(CSV_COLUMNS)
            for p in pairs:
                w.writerow([p.maker_a, p.maker_b, p.trials, _num(p.observed), _num(p.expected), _num(p.kappa)])
    return Path(path)


def write_run(out: str | os.PathLike, label: str, rows: Sequence[dict], kind: str,
              observers: Sequence[Maker] | None = None) -> dict:
    """Write ``error_consistency.csv`` into the run folder ``out`` and return the record's summary: the decision
    maker against every observer, and the observers among themselves (the human ceiling)."""
    makers = makers_of(label, rows, kind)
    obs, source = _observers(observers, makers)
    pairs = pairs_for(makers, obs)
    write_pairs(Path(out) / CSV_FILE, pairs)
    return dict(summarise(label, makers, obs, pairs), observers_source=source)


def _observers(observers: Sequence[Maker] | None, makers: Sequence[Maker]) -> tuple[list[Maker], str]:
    """The observers of a comparison and their source: those given, else the human ``makers`` when there are at
    least :data:`MIN_OBSERVERS` (only pooled humans have several), else the shipped observers."""
    own = [m for m in makers if m.human]
    if observers:
        return list(observers), FROM_FILES
    if len(own) >= MIN_OBSERVERS:
        return own, FROM_FILES
    return shipped_observers(), SHIPPED


def write_matrix(out: str | os.PathLike, runs: Sequence[tuple[str, Sequence[dict], str]],
                 observers: Sequence[Maker] | None = None) -> dict:
    """``error_consistency.csv`` above several runs: every pair among their decision makers (``(label, rows,
    kind)``; pooled humans as their observers) and the observers. Returns the summary for ``combined.json``."""
    makers: list[Maker] = []
    for label, rows, kind in runs:
        makers += [m for m in makers_of(label, rows, kind) if m.label not in {x.label for x in makers}]
    obs, source = _observers(observers, makers)
    names = {o.label for o in obs}
    pairs = pairs_for([m for m in makers if m.label not in names] + obs, [])
    write_pairs(Path(out) / CSV_FILE, pairs)
    summary = summarise("", [], obs, pairs)
    means = {m.label: _mean([p.kappa for p in pairs if m.label in (p.maker_a, p.maker_b) and p.kappa is not None
                             and {p.maker_a, p.maker_b} - {m.label} <= names])
             for m in makers if m.label not in names}
    return {"file": CSV_FILE, "method": METHOD, "observers": summary["observers"], "observers_source": source,
            "human_ceiling": summary["human_ceiling"], "kappa_mean": means}


def matrix(makers: Sequence[Maker], observers: Sequence[Maker] | None = None) -> tuple[list[str], np.ndarray]:
    """The symmetric kappa matrix of ``makers`` and the observers (ones on the diagonal, NaN where undefined), as
    model-vs-human's error-consistency matrix; returns ``(labels, matrix)``."""
    everyone = _everyone(makers, observers)
    n = len(everyone)
    out = np.ones((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            k = pair(everyone[i], everyone[j]).kappa
            out[i, j] = out[j, i] = math.nan if k is None else k
    return [m.label for m in everyone], out


# ------------------------------------------------------------------------------------------ the shipped file
def build_human_decisions(folder: str | os.PathLike) -> dict:
    """The content of ``data/shapebias/human_decisions.json`` from the reference files under ``folder`` (the
    layout of ``erftools data fetch reference-decisions``): every observer's response to each stimulus, one letter
    per stimulus (``a`` + the index of the category in sorted order; ``-`` for no answer)."""
    from .._io import sha256_file
    from .analysis import read_decisions
    from .reference import REFERENCE_FILES, TEXTURE_VS_SHAPE, TEXTURE_VS_SHAPE_COMMIT

    folder = Path(folder)
    observers, stimuli = {}, None
    for rel, (name, _, _) in REFERENCE_FILES.items():
        if not name.startswith("subject-"):
            continue
        path = folder / rel
        if not path.is_file():
            raise ErftoolsError(f"reference file {path} is missing; run `erftools data fetch reference-decisions`")
        rows = read_decisions(path)
        by_id = {image_id(r["imagename"]): r["object_response"] for r in rows}
        if stimuli is None:
            stimuli = sorted(by_id)
        if sorted(by_id) != stimuli:
            raise ErftoolsError(f"{path} does not decide the same stimuli as the other observers")
        codes = "".join(NO_ANSWER_CODE if by_id[s] == "na" else chr(ord("a") + CATEGORIES.index(by_id[s]))
                        for s in stimuli)
        observers[name] = {"file": rel, "sha256": sha256_file(path), "responses": codes}
    return {"about": "The responses of the 10 human observers of Geirhos et al. (ICLR 2019) to the 1280 cue-conflict "
                     "stimuli, for error consistency. responses[i] is the answer to stimuli[i]: chr(ord('a') + k) "
                     "for the k-th of the sorted categories, '-' for no answer. CC BY 4.0.",
            "source_repository": f"https://github.com/{TEXTURE_VS_SHAPE}/tree/{TEXTURE_VS_SHAPE_COMMIT}/raw-data",
            "categories": list(CATEGORIES), "stimuli": stimuli, "observers": observers}


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - maintenance entry point
    """``python -m erftools.shapebias.consistency FOLDER [OUT]``: rebuild the shipped human decisions."""
    from .reference import rebuild_main

    return rebuild_main(argv, build_human_decisions, HUMAN_FILE)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
