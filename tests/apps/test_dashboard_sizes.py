"""The ERF page for input-size sweeps (`erftools erf --size A,B`): the area ratio against the input size, and the
variant named in the titles and the provenance (streamlit AppTest on runs made by the CLI)."""
from __future__ import annotations

import pytest

from erftools.cli import main
from erftools.results import read_record
from erftools.results import views as V

from .test_dashboard_app import block, images_in, start

TINY = ["--weights", "random", "--num-images", "1", "--no-progress", "--size", "64,96"]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweeps") / "results"
    assert main(["erf", "--model", "resnet18", *TINY, "--out", str(root / "paper")]) == 0
    assert main(["erf", "--model", "resnet18", *TINY, "--seed", "1", "--objective", "unit", "--reduce", "l2",
                 "--out", str(root / "unit")]) == 0
    return root


def test_sizes_section(monkeypatch, sweeps):
    at = start(monkeypatch, sweeps)
    options = at.multiselect(key="erf_models").options
    assert "resnet18 (unit objective, l2 reduction), 96 px (random init)" in options and len(options) == 4
    at.multiselect(key="erf_models").set_value(options).run()
    assert "ERF against the input size" in [h.value for h in at.subheader]
    assert images_in(block(at, "erf-sizes")) == 1
    table = next(df.value for df in at.dataframe if "size (px)" in df.value.columns)
    assert list(zip(table["model"], table["size (px)"])) == [
        ("resnet18", "64"), ("resnet18", "96"),
        ("resnet18 (unit objective, l2 reduction)", "64"), ("resnet18 (unit objective, l2 reduction)", "96")]
    rec = read_record(sweeps / "unit" / "size-96", "erf")
    want = next(r for r in rec["area_ratios"] if r["threshold"] == 0.5)
    assert table["t=50%"].iloc[3] == V.pct(want["area_ratio"])
    assert not at.exception and not at.error
