"""Studies with an input-size sweep (``size = [..]``) and an ERF variant (``objective``, ``reduce``): two models at
three sizes is one command (``erftools study FILE``) and one figure in the report."""
from __future__ import annotations

import json

import pytest

from erftools.cli import main
from erftools.results import read_record
from erftools.study import load_study
from erftools.study.jobs import erf_command, jobs
from erftools.study.spec import StudyError, parse_study

SIZES_STUDY = """\
[study]
name = "sizes"
device = "cpu"

[erf]
images = "bundled"
num_images = 1
size = [64, 96, 128]
samplers = ["sequential"]
objective = "unit"
reduce = "l2"

[[model]]
id = "resnet18"
name = "resnet18"
label = "ResNet-18"
weights = "random"

[[model]]
id = "replknet"
name = "replknet-31B"
label = "narrow RepLKNet"
weights = "random"
model_kwargs = { layers = [1, 1, 1, 1], channels = [16, 32, 64, 128] }
"""


def test_spec_and_jobs_of_a_size_sweep(tmp_path):
    study = parse_study(SIZES_STUDY, "s.toml")
    assert study.erf.sizes == (64, 96, 128) and study.erf.size == 64 and study.erf.all_sizes == (64, 96, 128)
    assert study.erf.objective == "unit" and study.erf.reduction == "l2"
    js = jobs(study)
    assert [j.folder for j in js][:3] == ["resnet18/erf-sequential/size-64", "resnet18/erf-sequential/size-96",
                                          "resnet18/erf-sequential/size-128"]
    assert js[0].label(study) == "ResNet-18 (unit objective, l2 reduction), 64 px"
    one = parse_study(SIZES_STUDY.replace("size = [64, 96, 128]", "size = 64"), "s.toml")
    assert one.erf.sizes == () and [j.folder for j in jobs(one)][0] == "resnet18/erf-sequential"
    cmd = erf_command(one, jobs(one)[0], tmp_path / "x", "random", None, "cpu", 2)
    assert cmd[cmd.index("--objective") + 1] == "unit" and cmd[cmd.index("--reduce") + 1] == "l2"


@pytest.mark.parametrize("text,key,what", [
    ("size = [64, 16]", "size", "at least 32"), ("size = [64, 64]", "size", "listed twice"),
    ("size = []", "size", "at least one size"), ('objective = "luo"', "objective", "choose one of paper, unit"),
    ('reduce = "sum"', "reduce", "choose one of relu, abs, l2")])
def test_bad_keys_are_named(text, key, what):
    bad = SIZES_STUDY.replace("size = [64, 96, 128]", text if key == "size" else "size = 64")
    if key != "size":
        bad = bad.replace('objective = "unit"' if key == "objective" else 'reduce = "l2"', text)
    with pytest.raises(StudyError, match=rf"line \d+, key erf\.{key}: .*{what}"):
        parse_study(bad, "s.toml")


def test_two_models_three_sizes_one_command_one_figure(tmp_path, capsys):
    path = tmp_path / "sizes.toml"
    path.write_text(SIZES_STUDY, encoding="utf-8")
    root = tmp_path / "results"
    assert main(["study", str(path), "--results", str(root), "--no-progress"]) == 0
    capsys.readouterr()
    for mid in ("resnet18", "replknet"):
        for size in (64, 96, 128):
            rec = read_record(root / mid / "erf-sequential" / f"size-{size}", "erf")
            assert rec["size"] == [size, size] and rec["objective"] == "unit" and rec["reduction"] == "l2"
            assert rec["sweep"]["size"] == size and rec["sweep"]["sizes"] == [64, 96, 128]
    report = (root / "report.md").read_text()
    assert report.count("### ERF against the input size") == 1 and "figures/erf_sizes.png" in report
    assert (root / "figures" / "erf_sizes.png").stat().st_size > 1000
    for label in ("ResNet-18 (unit objective, l2 reduction) | 128", "narrow RepLKNet (unit objective, l2 reduction) | 96"):
        assert label in report
    record = json.loads((root / "study.json").read_text())
    assert record["measurements"]["erf"]["sizes"] == [64, 96, 128]
    assert len({r["measurement"] for r in record["rows"]}) == 3  # ERF (sequential, N px) per size
    assert load_study(path).erf.sizes == (64, 96, 128)
