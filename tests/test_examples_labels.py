"""Every run of the committed examples (reports/examples) is named and described as its record says: the titles
and the weights line of the committed report (reports/index.md, made by `erftools report`), and the provenance the
dashboard's Runs page and metadata panels show (results.views, which both use)."""
from __future__ import annotations

import json

from erftools.results import list_runs
from erftools.results import views as V
from erftools.shapebias.stimuli import NUM_IMAGES

from .conftest import REPO

EXAMPLES = REPO / "reports" / "examples"


def _said_random(record_path) -> bool | None:
    """What the record file itself says about the weights (None: it names none)."""
    data = json.loads(record_path.read_text())
    model = data.get("model") or {}
    if "weights" in model:
        return model["weights"] in (None, "random")
    return None


def test_every_example_run_is_labelled_as_its_record_says():
    listing = list_runs(EXAMPLES)
    runs = V.main_erf_runs(listing.erf) + listing.shape_bias  # a baseline is shown beside its run
    assert len(V.main_erf_runs(listing.erf)) >= 4 and len(listing.shape_bias) >= 8 and not listing.problems
    report = (REPO / "reports" / "index.md").read_text()
    for run in runs:
        said = _said_random(run.path / ("erf.json" if run.kind == "erf" else "summary.json"))
        title, weights = V.run_title(run), V.weights_text(run.record)
        assert ("(random init)" in title or "untrained" in title.lower()) == bool(said), (run.path, title)
        assert ("random" in weights) == bool(said), (run.path, weights)
        if said is None:  # the published decisions: humans or trained networks, never "random"
            assert "published decisions" in weights
        n = V.partial_stimuli(run.record)
        assert (f"of {NUM_IMAGES} stimuli" in title) == (n is not None)
        assert f"### {title} ({run.kind})" in report, title  # the report's provenance section, same title
        section = report.split(f"### {title} ({run.kind})", 1)[1].split("\n### ", 1)[0]
        assert f"| weights | {weights} |" in section, (title, weights)
        assert V.provenance(run.record)["weights"] == weights  # the dashboard's metadata panel


def test_the_cli_tables_name_every_example_run_as_its_record_says(tmp_path, capsys):
    """``erftools compare`` over the example ERF runs: one table row per run, labelled with the dashboard's and the
    report's title (so "(random init)" exactly where the record's weights are random)."""
    from erftools.cli import main

    runs = V.main_erf_runs(list_runs(EXAMPLES).erf)
    assert main(["compare", *[str(r.path) for r in runs], "--out", str(tmp_path)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    labels = [row.split("|")[1].strip() for row in rows[1:]]  # rows[0]: the header
    assert sorted(labels) == sorted(V.run_title(r) for r in runs)
    cells = {row.split("|")[1].strip(): [c.strip() for c in row.split("|")[2:-1]] for row in rows[1:]}
    for run in runs:
        assert ("(random init)" in V.run_title(run)) == bool(_said_random(run.path / "erf.json")), run.path
        # the squares are the record's full-resolution ones (the committed matrices are block-summed)
        recorded = {round(r["threshold"], 6): r["side"] for r in json.loads((run.path / "erf.json").read_text())
                    ["area_ratios"]}
        for t, cell in zip((0.2, 0.3, 0.5, 0.99), cells[V.run_title(run)]):
            side = recorded[t]
            assert cell == "none" if side is None else cell.endswith(f"({side} px)"), (run.path, t, cell, side)
