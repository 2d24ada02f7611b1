"""Error consistency of shape-bias runs, for the report and the dashboard (the engine's numbers, read back).

* :func:`summary_rows`: each run's mean kappa against the human observers and the human ceiling, from its record
  (``summary.json``'s ``error_consistency``, written by :mod:`erftools.shapebias.consistency`);
* :func:`matrix_of`: the kappa matrix of chosen runs and the observers, computed from their ``decisions.csv``
  (read only from inside the results folder) with the engine's rules: the observers are the human observers
  among the runs when there are at least two, else the 10 shipped observers of Geirhos et al.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .records import HUMAN, HUMANS, ResultError
from .store import Run, load_decisions


@dataclass
class ConsistencyRow:
    name: str
    kind: str
    kappa_mean: float | None
    per_observer: dict
    trials: int | None
    ceiling: float | None
    observers_source: str

    def cells(self) -> dict[str, str]:
        def f(v):
            return "n/a" if v is None else f"{v:.3f}"

        return {"decision maker": self.name, "kappa vs humans (mean)": f(self.kappa_mean),
                "range over observers": "" if not self.per_observer else
                f"{min(self.per_observer.values()):.3f} to {max(self.per_observer.values()):.3f}",
                "trials": "" if self.trials is None else str(self.trials), "human ceiling": f(self.ceiling),
                "observers": self.observers_source}


def summary_row(title: str, run: Run) -> ConsistencyRow | None:
    """The error consistency a run recorded (None for a run written before erftools measured it)."""
    ec = run.record.error_consistency
    if not isinstance(ec, dict):
        return None
    ceiling = (ec.get("human_ceiling") or {}).get("kappa_mean")
    per = {str(k): float(v) for k, v in (ec.get("per_observer") or {}).items() if isinstance(v, (int, float))}
    return ConsistencyRow(title, run.record.maker_kind, ec.get("kappa_mean"), per, ec.get("trials"), ceiling,
                          str(ec.get("observers_source") or ""))


def summary_rows(runs: list[tuple[str, Run]], view: "ConsistencyView | None" = None) -> list[ConsistencyRow]:
    """One row per run: what its record holds, else (a run written before erftools measured error consistency)
    the values of ``view``'s matrix."""
    rows = [summary_row(title, run) or (None if view is None else view.row(title, run.record.maker_kind))
            for title, run in runs]
    return [row for row in rows if row is not None]


@dataclass
class ConsistencyView:
    """The kappa matrix of some runs' decision makers and the human observers."""
    labels: list[str]
    matrix: np.ndarray
    humans: list[bool]
    problems: list[str]

    def _mean_vs(self, i: int) -> tuple[float | None, dict]:
        per = {self.labels[j]: float(self.matrix[i, j]) for j, h in enumerate(self.humans)
               if h and j != i and np.isfinite(self.matrix[i, j])}
        return (float(np.mean(list(per.values()))) if per else None), per

    def ceiling(self) -> float | None:
        means = [m for m in (self._mean_vs(i)[0] for i, h in enumerate(self.humans) if h) if m is not None]
        return float(np.mean(means)) if means else None

    def row(self, title: str, kind: str) -> ConsistencyRow | None:
        if kind != HUMANS and title not in self.labels:
            return None
        ceiling = self.ceiling()
        mean, per = (ceiling, {}) if kind == HUMANS else self._mean_vs(self.labels.index(title))
        return ConsistencyRow(title, kind, mean, per, None, ceiling, "computed from decisions.csv")


def matrix_of(runs: list[tuple[str, Run]]) -> ConsistencyView:
    """The kappa matrix of the chosen runs' decision makers and the human observers (a run whose decisions cannot
    be read becomes a problem message)."""
    from ..shapebias import consistency as C

    makers: list = []
    problems: list[str] = []
    for title, run in runs:
        kind = run.record.maker_kind
        try:
            rows = load_decisions(run)
        except ResultError as exc:
            problems.append(f"{title}: {exc}")
            continue
        for m in C.makers_of(title, rows, kind if kind in (HUMAN, HUMANS) else "model"):
            if m.label not in {x.label for x in makers}:
                makers.append(m)
    own = [m for m in makers if m.human]
    observers = own if len(own) >= C.MIN_OBSERVERS else C.shipped_observers()
    labels, matrix = C.matrix([m for m in makers if not m.human], observers)
    human = {o.label for o in observers}
    return ConsistencyView(labels, matrix, [label in human for label in labels], problems)
