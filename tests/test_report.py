"""`erftools report`: the Markdown report, read through erftools.results and drawn through erftools.figures."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from erftools import results as R
from erftools.cli import main
from erftools.report import build_report
from erftools.results import views as V

from .results.builders import LAYERS, REPO, make_erf_run, make_layered_run, make_sb_run, reference_area_ratios

LINK = re.compile(r"!?\[[^\]]*\]\(([^)]+)\)")


def _links_resolve(md: Path) -> list[str]:
    links = LINK.findall(md.read_text(encoding="utf-8"))
    assert links
    missing = [target for target in links if not (md.parent / target).exists()]
    assert not missing, f"broken links in {md}: {missing}"
    return links


@pytest.fixture
def results(tmp_path) -> Path:
    root = tmp_path / "results"
    make_erf_run(root / "erf" / "replknet-31B", "replknet-31B", spread=12.0)
    make_erf_run(root / "erf" / "resnet-152", "resnet-152", spread=4.0, downsample=2)
    make_erf_run(root / "erf" / "my-net", "my-net", weights={"tag": "in1k"})
    make_sb_run(root / "sb" / "humans", "humans", p_shape=0.9, dm_kind="humans")
    make_sb_run(root / "sb" / "rlk", "replknet-31B", p_shape=0.4)
    return root


def test_report_contents(results, tmp_path):
    out = build_report(results, tmp_path / "site" / "index.md")
    text = out.read_text(encoding="utf-8")
    links = _links_resolve(out)
    figs = [target for target in links if target.endswith(".png")]
    assert {Path(f).name for f in figs} == {"erf_comparison.png", "erf_radial_profiles.png", "shape_bias.png",
                                           "shape_bias_bars.png", "error_consistency.png",
                                           "error_consistency_matrix.png"}
    assert all(not Path(target).is_absolute() for target in links)  # relative links: the folder can move
    # area ratios: ours (from the record, at full resolution) next to the paper's Table 10
    rec = json.loads((results / "erf" / "replknet-31B" / "erf.json").read_text())
    ours20, side20 = 100 * rec["area_ratios"][0]["area_ratio"], rec["area_ratios"][0]["side"]
    assert re.search(rf"\| replknet-31B \(random init\) \| {ours20:.1f} \({side20} px\) / 15\.0 \|", text)
    assert "| my-net | " in text and "not in Table 10" in text  # trained weights: no "(random init)"
    assert "untrained architectures" in text
    # shape bias: ours next to the paper's Fig. 5 and the humans'
    assert re.search(r"\| replknet-31B \| [0-9.]+ \| \[[0-9.]+, [0-9.]+\] \|.*0\.299 \(RepLKNet-31B, ImageNet-1K", text)
    assert "Humans (pooled): shape bias" in text
    assert "(paper Fig. 5) | 0.959" in text
    # provenance of each run, linking its record
    for folder in ("erf/replknet-31B", "erf/resnet-152", "erf/my-net", "sb/humans", "sb/rlk"):
        assert f"{folder}/{'erf.json' if folder.startswith('erf') else 'summary.json'})" in text
    assert str(tmp_path) not in text  # no absolute paths


@pytest.fixture
def layered(tmp_path) -> Path:
    root = tmp_path / "results"
    make_layered_run(root / "erf" / "rlk", "replknet-31B", weights={"tag": "in1k"}, baseline=True)
    make_layered_run(root / "erf" / "r50", "resnet-50", layers=(("layer1", 2.0, 35), ("layer2", 3.0, 91)),
                     weights={"tag": "in1k"})
    make_erf_run(root / "erf" / "swin", "swin-B", weights={"tag": "in1k"})
    return root


def _table_rows(text: str, first_cell: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith(f"| {first_cell} |")]


def test_report_layers_growth_statistics_and_baseline(layered, tmp_path):
    out = build_report(layered, tmp_path / "site" / "index.md")
    text = out.read_text(encoding="utf-8")
    figs = {Path(t).name for t in _links_resolve(out) if t.endswith(".png")}
    assert {"erf_growth.png", "erf_layers_erf-rlk.png", "erf_layers_erf-r50.png", "erf_baseline_erf-rlk.png"} <= figs
    assert "erf_layers_erf-swin.png" not in figs and "erf_baseline_erf-r50.png" not in figs
    for section in ("### Layers", "### Growth with depth", "### ERF statistics", "### Trained and untrained"):
        assert section in text
    # the per-layer table: the recorded squares of every layer and its theoretical receptive field
    for name, _, theo in LAYERS:
        row = _table_rows(text, name)[0]
        want = reference_area_ratios(np.load(layered / "erf" / "rlk" / "layers" / f"{name}.npy"))
        assert row[2] == str(theo)
        assert row[3:] == [f"{V.pct(w['area_ratio'])} ({w['side']} px)" for w in want]
    # statistics: every layer of both layered runs and the main matrix of the plain run, each column explained
    stats = [r for r in text.splitlines() if r.startswith("| replknet-31B | stages.")]
    assert len(stats) == len(LAYERS) and stats[0].split(" | ")[2] == "2.0 / 2.0"  # sigma of the builder's Gaussian
    assert "| swin-B |" not in text.split("### ERF statistics")[1].split("###")[0]  # it has none recorded
    assert "No statistics recorded (runs of an erftools release before the statistics): swin-B." in text
    for column, line in V.STATISTICS_HELP.items():
        assert f"* **{column}**: {line}" in text
    # trained and untrained: one pair of rows per layer, the baseline's numbers from its own record
    pairs = [r for name, _, _ in LAYERS for r in _table_rows(text, name) if r[1] in ("as run", "untrained baseline")]
    assert [r[1] for r in pairs] == ["as run", "untrained baseline"] * len(LAYERS)
    base = json.loads((layered / "erf" / "rlk" / "baseline" / "erf.json").read_text())
    r = base["layers"][0]["area_ratios"][0]
    assert pairs[1][2] == "random init, seed 0" and pairs[1][3] == f"{V.pct(r['area_ratio'])} ({r['side']} px)"
    # the baseline run is shown beside its run, not as a model of its own
    assert "(untrained, seed 0) |" not in text.split("### Layers")[0]


def test_report_layer_problems_are_named(layered, tmp_path):
    (layered / "erf" / "rlk" / "layers" / "stages.2.npy").unlink()
    import shutil

    shutil.rmtree(layered / "erf" / "rlk" / "baseline")
    text = build_report(layered, tmp_path / "index.md").read_text(encoding="utf-8")
    problems = re.sub(r"\\(.)", r"\1", "\n".join(line for line in text.splitlines() if "Problem" in line))
    assert "stages.2.npy is missing" in problems and "baseline run baseline/ is missing" in problems
    assert "### Growth with depth" in text  # the recorded numbers of the other layered run are still shown


def test_report_mentions_broken_runs(results, tmp_path):
    (results / "erf" / "resnet-152" / "erf.npy").unlink()
    (results / "bad").mkdir()
    (results / "bad" / "summary.json").write_text("{", encoding="utf-8")
    make_erf_run(results / "erf" / "half", "half", complete=False)
    (results / "erf" / "cut" / R.ERF_CHECKPOINT).mkdir(parents=True)
    out = build_report(results, tmp_path / "index.md")
    text = out.read_text()
    assert "erf.npy is missing" in text and "not valid JSON" in text and "is unfinished" in text
    assert "`results/erf/cut` is an interrupted erf run (the same command continues it)" in text
    _links_resolve(out)


def test_report_cli(results, tmp_path, capsys):
    out = tmp_path / "r" / "index.md"
    assert main(["report", "--results", str(results), "--out", str(out)]) == 0
    assert out.is_file() and (out.parent / "figures" / "shape_bias.png").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", "--results", str(empty), "--out", str(tmp_path / "x.md")]) == 1
    assert "no finished ERF or shape-bias run" in capsys.readouterr().err
    assert main(["report", "--results", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_dashboard_command(tmp_path, capsys, results):
    assert main(["dashboard", "--results", str(results), "--print-command"]) == 0
    cmd = capsys.readouterr().out
    assert "--server.address 127.0.0.1" in cmd and "--server.headless true" in cmd
    assert "--browser.gatherUsageStats false" in cmd and "run_dashboard.py" in cmd
    assert main(["dashboard", "--results", str(tmp_path / "nope"), "--print-command"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["dashboard", "--results", str(results), "--stimuli", str(tmp_path / "nope"),
                 "--print-command"]) == 1


def test_committed_examples_are_portable():
    examples = REPO / "reports" / "examples"
    if not examples.is_dir():
        pytest.skip("no reports/examples")
    listing = R.list_runs(examples)
    assert not listing.problems and not listing.incomplete
    assert {V.run_title(r) for r in listing.erf} >= {f"{m} (random init)" for m in
                                                     ("replknet-31B", "replknet-13", "resnet-152", "swin-B")}
    assert any(V.classify(r) == R.HUMANS for r in listing.shape_bias)
    total = sum(p.stat().st_size for p in examples.rglob("*") if p.is_file())
    assert total < 4_000_000
    for p in examples.rglob("*"):
        if p.suffix in (".json", ".csv", ".md"):
            text = p.read_text(encoding="utf-8")
            for local in (str(REPO.parent) + "/", str(Path.home()) + "/", "/tmp/"):
                assert local not in text, f"{p} holds the local path {local}"


# ------------------------------------------------------------------------------ crafted folders (links, payloads)
UNSAFE_MD = re.compile(r"!\[(?!ERF comparison\]|radial profiles\]|shape bias|ERF per layer of |ERF growth with depth\]"
                       r"|ERF baseline of |error consistency with humans\]|error-consistency matrix\]"
                       r"|ERF area ratio against shape bias\])|(?<!\\)<\s*(img|a|script)\b", re.I)


def test_report_reads_nothing_outside_the_results_folder(tmp_path):
    from .results.builders import SECRET, make_linked_results, make_outside

    outside = make_outside(tmp_path / "outside")
    root = make_linked_results(tmp_path / "results", outside)
    out = build_report(root, tmp_path / "site" / "index.md")
    text = out.read_text(encoding="utf-8")
    assert SECRET not in text
    # the linked files and folders are named, as refused, and every run drawn is one whose files are inside
    for name in ("erf/json-link/erf.json", "sb/json-link/summary.json", "erf/folder-link", "sb/folder-link"):
        assert name in text, name
    problem = next(line for line in text.splitlines() if "npy-link" in line and "Problem" in line)
    assert "erf.npy" in problem and "outside the results folder" in problem
    assert "### npy-link" not in text  # its provenance is not listed: nothing of it is in the report
    assert str(tmp_path) not in text
    _links_resolve(out)


def test_report_shows_text_from_results_as_plain_text(tmp_path):
    from .results.builders import HTML_PAYLOAD, IMAGE_PAYLOAD, make_payload_results

    root = make_payload_results(tmp_path / "results")
    make_layered_run(root / "erf" / "layered", f"layers {IMAGE_PAYLOAD}", baseline=True)
    make_erf_run(root / "erf" / "math", r"math $\notacommand{x}$")  # matplotlib would parse it as mathtext
    make_sb_run(root / "sb" / "math", r"sb $\notacommand$ net")
    (root / "bad").mkdir()
    (root / "bad" / "erf.json").write_text(json.dumps({"kind": HTML_PAYLOAD}), encoding="utf-8")
    out = build_report(root, tmp_path / "index.md")
    text = out.read_text(encoding="utf-8")
    assert not UNSAFE_MD.search(text), UNSAFE_MD.search(text)
    assert not re.search(r"(?<!\\)\]\((?!figures/|results/)", text)  # no link but ours (figures, records)
    assert not re.search(r"(?<!\\)\$", text)  # no math
    # the text is still there, escaped: a Markdown viewer shows it as written
    assert r"erf \!\[x\]\(http" in text or r"erf \!\[x\](http" in text
    unescaped = re.sub(r"\\(.)", r"\1", text)
    assert f"erf {IMAGE_PAYLOAD}" in unescaped and "math $\\notacommand{x}$" in unescaped
    ours = re.findall(r"(?<!\\)\[[^\]]*(?<!\\)\]\(([^)]+)\)", text)  # the links Markdown sees: all resolve
    assert ours and all((out.parent / link).exists() for link in ours)


# ---------------------------------------------------------------------------------------------------- studies
@pytest.fixture(scope="session")
def study_results(shared, tmp_path_factory):
    from .results.builders import tiny_study

    return tiny_study(shared, tmp_path_factory.mktemp("tiny-study"))


def _study_rows(text: str, after: str) -> list[list[str]]:
    part = text.split(after, 1)[1]
    lines = [ln for ln in part.split("\n\n", 3)[2].splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines[2:]]


def test_report_has_the_study_section(study_results, tmp_path):
    out = build_report(study_results, tmp_path / "report.md")
    text = out.read_text(encoding="utf-8")
    assert text.index("## Study tiny: two random networks") < text.index("## Effective receptive fields")
    assert "Tolerances (|ours - paper| <= max(abs, rel x paper)): ERF area ratio ±0.5 pp; shape bias ±0.02." in text
    rows = _study_rows(text, "## Study tiny")
    data = json.loads((study_results / "study.json").read_text(encoding="utf-8"))
    assert len(rows) == len(data["rows"]) == 15
    assert [r[-1] for r in rows] == [r["verdict"] + (f" ({r['note']})" if r["note"] else "") for r in data["rows"]]
    assert rows[0][:6] == ["ResNet-18 (random)", "ERF (sequential)", r"r \@ 20% (%)",
                           f"{data['rows'][0]['ours']:.2f}", "99.00", f"\\{data['rows'][0]['diff']:+.2f}"]
    # the report the study command wrote itself holds the same section
    assert "## Study tiny: two random networks" in (study_results / "report.md").read_text(encoding="utf-8")


def test_report_study_payload_and_outside(study_results, tmp_path):
    from .results.builders import HTML_PAYLOAD, IMAGE_PAYLOAD, SECRET, copy_study, make_outside

    make_outside(tmp_path / "outside")
    root = tmp_path / "results"
    copy_study(study_results, root / "a", title=IMAGE_PAYLOAD, row_0={"label": HTML_PAYLOAD})
    copy_study(study_results, root / "b", model_1={"runs": ["../../outside/sb-run"]})
    text = build_report(root, tmp_path / "report.md").read_text(encoding="utf-8")
    assert r"## Study tiny: \!\[x\](http\://127.0.0.1\:9/beacon.png)" in text
    assert r"| \<img src=" in text and HTML_PAYLOAD not in text and IMAGE_PAYLOAD not in text
    skipped = [ln for ln in text.splitlines() if ln.startswith("> **Study skipped:**")]
    assert len(skipped) == 1 and skipped[0].startswith(r"> **Study skipped:** b/study.json\: the run folder")
    assert "refusing to read" in skipped[0]
    assert text.count("## Study tiny") == 1  # study a is still reported
    assert SECRET not in text and str(tmp_path) not in text
