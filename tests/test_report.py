"""`erftools report` and the helpers behind the committed examples."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from erftools import results as R
from erftools.cli import main
from erftools.dashboard import data as D
from erftools.report import build_report, shrink_erf_run
from erftools.results import ResultError, Run

from .apps.conftest import REPO, erf_matrix, make_erf_run, make_sb_run

LINK = re.compile(r"!?\[[^\]]*\]\(([^)]+)\)")


def _links_resolve(md: Path) -> list[str]:
    links = LINK.findall(md.read_text(encoding="utf-8"))
    assert links
    missing = [l for l in links if not (md.parent / l).exists()]
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
    figs = [l for l in links if l.endswith(".png")]
    assert {Path(f).name for f in figs} == {"erf_comparison.png", "erf_radial_profiles.png", "shape_bias.png",
                                           "shape_bias_bars.png"}
    assert all(not Path(l).is_absolute() for l in links)  # relative links: the folder can move
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


def test_report_mentions_broken_runs(results, tmp_path):
    (results / "erf" / "resnet-152" / "erf.npy").unlink()
    (results / "bad").mkdir()
    (results / "bad" / "summary.json").write_text("{", encoding="utf-8")
    make_erf_run(results / "erf" / "half", "half", complete=False)
    out = build_report(results, tmp_path / "index.md")
    text = out.read_text()
    assert "erf.npy is missing" in text and "not valid JSON" in text and "is unfinished" in text
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


def test_shrink_erf_run(tmp_path):
    full = erf_matrix(64, 8.0)
    folder = make_erf_run(tmp_path / "run", "replknet-13", size=64, matrix=full)
    before = json.loads((folder / "erf.json").read_text())
    assert shrink_erf_run(folder, side=16) == 4
    rec = R.read_record(folder, "erf")
    small = np.load(folder / "erf.npy")
    assert small.shape == (16, 16) and small.dtype == np.float32
    assert rec["stored_downsample"] == 4 and rec["complete"] is True
    assert rec["area_ratios"] == before["area_ratios"]  # full-resolution numbers are kept
    np.testing.assert_allclose(small.sum(), full.sum(), rtol=1e-5)  # block sums
    m, f = D.load_erf_matrix(Run("erf", folder, rec))
    assert f == 4
    np.testing.assert_allclose(m, full.reshape(16, 4, 16, 4).mean(axis=(1, 3)), rtol=1e-5)  # back to means
    assert (folder / "erf.png").stat().st_size > 1000
    # the live square on the coarse grid lands within one block of the full-resolution one
    side, _ = D.area_ratio_at(m, 0.5, f, (64, 64))
    exact = next(r["side"] for r in before["area_ratios"] if r["threshold"] == 0.5)
    assert abs(side - exact) <= 2 * f
    assert shrink_erf_run(folder, side=16) == 1  # already small: nothing to do
    assert R.read_record(folder, "erf")["stored_downsample"] == 4


def test_load_erf_matrix_checks_the_record(tmp_path):
    folder = make_erf_run(tmp_path / "run", "x", size=32)
    rec = json.loads((folder / "erf.json").read_text())
    rec["stored_downsample"] = 2  # the matrix is not 16x16
    with pytest.raises(ResultError, match="stored downsampled by 2"):
        D.load_erf_matrix(Run("erf", folder, rec))
    rec["stored_downsample"] = "two"
    with pytest.raises(ResultError, match="not a positive integer"):
        D.load_erf_matrix(Run("erf", folder, rec))
    np.save(folder / "erf.npy", np.full((32, 32), np.nan, np.float32))
    rec["stored_downsample"] = 1
    with pytest.raises(ResultError, match="NaN"):
        D.load_erf_matrix(Run("erf", folder, rec))


def test_paper_matching():
    def rec(name, **model):
        return {"model": {"name": name, **model}, "label": name}

    assert D.paper_erf_entry(rec("resnet-152"))["name"] == "ResNet-152"
    assert D.paper_erf_entry(rec("resnet101.tv_in1k"))["name"] == "ResNet-101"
    assert D.paper_erf_entry(rec("replknet-31B"))["name"] == "RepLKNet-31"
    assert D.paper_erf_entry(rec("swin-B")) is None
    ref = D.shapebias_reference()
    assert D.paper_fig5_entry(rec("swin-B"), ref)[1]["shape_bias"] == pytest.approx(0.2216)
    assert D.paper_fig5_entry(rec("swin-B", weights={"tag": "ms_in22k_ft_in1k"}), ref)[1]["shape_bias"] == \
        pytest.approx(0.3154)
    assert D.paper_fig5_entry(rec("ResNet-152 (torchvision)", subjects=["resnet152"]), ref)[0].startswith("ResNet-152")
    assert D.paper_fig5_entry(rec("humans"), ref)[1]["shape_bias"] == pytest.approx(0.9587)
    assert D.paper_fig5_entry(rec("vgg16"), ref) is None
    table = json.loads((REPO / "data" / "paper_table10.json").read_text())
    assert [m["area_ratio_percent"]["0.99"] for m in table["models"]] == [23.4, 34.9, 96.3, 98.6]


def test_stimulus_paths_are_checked(tmp_path):
    stim = tmp_path / "stim"
    (stim / "cat").mkdir(parents=True)
    (stim / "cat" / "cat1-dog2.png").write_bytes(b"png")
    (tmp_path / "secret.png").write_bytes(b"x")
    allowed = {("cat", "cat1-dog2.png"), ("cat", "../secret.png"), ("..", "secret.png")}
    assert D.stimulus_path(stim, "cat", "cat1-dog2.png", allowed) == (stim / "cat" / "cat1-dog2.png").resolve()
    with pytest.raises(ResultError, match="not an image named in the decisions"):
        D.stimulus_path(stim, "dog", "cat1-dog2.png", allowed)
    for shape, name in (("cat", "../secret.png"), ("..", "secret.png")):
        with pytest.raises(ResultError, match="refusing"):
            D.stimulus_path(stim, shape, name, allowed)


def test_merge_decisions_pools_trials(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("subj,session,trial,rt,object_response,category,condition,imagename\n"
                   "s1,1,1,1,cat,cat,0,0001_x_cat_00_cat1-dog2.png\n"
                   "s2,1,1,1,dog,cat,0,0001_x_cat_00_cat1-dog2.png\n"
                   "s3,1,1,1,cat,cat,0,0001_x_cat_00_cat1-dog2.png\n"
                   "s1,1,2,1,knife,bear,0,0002_x_bear_00_bear3-bear1.png\n")
    df = D.load_decisions(csv)
    assert list(df["decided"]) == ["shape", "texture", "shape", "no conflict"]
    merged = D.merge_decisions({"humans": df})
    row = merged[merged["stimulus"] == "cat1-dog2.png"].iloc[0]
    assert row["humans"] == "cat (2/3)" and row["humans :: class"] == "shape" and row["texture"] == "dog"
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ResultError, match="lacks the columns"):
        D.load_decisions(bad)


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
    listing = D.list_runs(examples)
    assert not listing.problems and not listing.incomplete
    assert {D.run_title(r) for r in listing.erf} >= {f"{m} (random init)" for m in
                                                     ("replknet-31B", "replknet-13", "resnet-152", "swin-B")}
    assert any(D.classify(r) == "human" for r in listing.shape_bias)
    total = sum(p.stat().st_size for p in examples.rglob("*") if p.is_file())
    assert total < 4_000_000
    for p in examples.rglob("*"):
        if p.suffix in (".json", ".csv", ".md"):
            text = p.read_text(encoding="utf-8")
            for local in (str(REPO.parent) + "/", str(Path.home()) + "/", "/tmp/"):
                assert local not in text, f"{p} holds the local path {local}"


# ------------------------------------------------------------------------------ crafted folders (links, payloads)
UNSAFE_MD = re.compile(r"!\[(?!ERF comparison\]|radial profiles\]|shape bias)|(?<!\\)<\s*(img|a|script)\b", re.I)


def test_report_reads_nothing_outside_the_results_folder(tmp_path):
    from .apps.conftest import SECRET, make_linked_results, make_outside

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


def test_shrink_refuses_a_matrix_linked_outside(tmp_path):
    from .apps.conftest import link

    outside = make_erf_run(tmp_path / "outside", "secret", size=64)
    before = (outside / "erf.npy").read_bytes()
    run = make_erf_run(tmp_path / "run", "run", size=64)
    link(run / "erf.npy", outside / "erf.npy")
    with pytest.raises(ResultError, match="outside"):
        shrink_erf_run(run, side=16)
    assert (run / "erf.npy").is_symlink() and (outside / "erf.npy").read_bytes() == before


def test_report_shows_text_from_results_as_plain_text(tmp_path):
    from .apps.conftest import HTML_PAYLOAD, IMAGE_PAYLOAD, make_payload_results

    root = make_payload_results(tmp_path / "results")
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
