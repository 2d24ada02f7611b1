"""Study files: parsing, the built-in studies, and errors that name the line and the key."""
from __future__ import annotations

import json

import pytest

from erftools._paths import data_file
from erftools.study import builtin_studies, load_study, parse_study
from erftools.study.spec import StudyError, Tolerance, locate

from .conftest import TINY_STUDY


def test_the_tiny_study_parses():
    st = parse_study(TINY_STUDY, "tiny.toml")
    assert st.name == "tiny" and st.device == "cpu"
    assert st.erf.size == 64 and st.erf.samplers == ("sequential",) and st.erf.images == "bundled"
    assert st.shape_bias.allow_incomplete and st.shape_bias.batch_size == 6
    assert [m.id for m in st.models] == ["resnet18", "replknet", "replknet-3"]
    rep = st.models[1]
    assert rep.seed == 4 and rep.model_kwargs == {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128]}
    assert st.models[0].paper_erf == {0.2: 99.0} and st.models[0].paper_shape_bias == 0.0
    assert st.models[2].unpublished
    published = json.loads(data_file("shapebias", "published_fig5.json").read_text())
    assert st.models[2].paper_shape_bias == published["entries"]["paper:replknet-3-in1k"]["shape_bias"]
    assert st.tolerance["shape_bias"] == Tolerance(0.02, 0.0)


def test_builtin_studies_name_the_paper_values():
    assert {"replknet-table10", "replknet-fig5"} <= set(builtin_studies())
    table = json.loads(data_file("paper_table10.json").read_text())
    t10 = load_study("replknet-table10")
    assert t10.erf.num_images == 50 and t10.erf.size == 1024
    assert set(t10.erf.samplers) == {"sequential", "random"} and t10.erf.images is None
    assert t10.shape_bias is None
    for m in t10.models:  # every row of the shipped Table 10, each value as published
        row = next(r for r in table["models"] if r["name"] == m.label)
        assert m.paper_erf == {float(k): v for k, v in row["area_ratio_percent"].items()}
    drive = {m.id: m.download for m in t10.models if m.download}
    assert set(drive) == {"replknet-13", "replknet-31"}
    assert all(d["url"].startswith("https://drive.google.com/") and d["file"].endswith(".pth")
               for d in drive.values())
    fig5 = load_study("replknet-fig5")
    published = json.loads(data_file("shapebias", "published_fig5.json").read_text())["entries"]
    values = sorted(m.paper_shape_bias for m in fig5.models)
    assert values == sorted(e["shape_bias"] for k, e in published.items() if k != "paper:humans")
    assert [m.id for m in fig5.models if m.unpublished] == ["replknet-3"]


def test_tolerance_allows_the_larger_of_abs_and_rel():
    t = Tolerance(abs=0.5, rel=0.1)
    assert t.allows(0.5, 1.0) and not t.allows(0.6, 1.0)  # abs dominates for small values
    assert t.allows(-9.0, 98.6) and not t.allows(10.0, 98.6)  # rel dominates for large ones


def _error(text: str) -> str:
    with pytest.raises(StudyError) as exc:
        parse_study(text, "s.toml")
    return str(exc.value)


def test_toml_syntax_error_names_the_line():
    msg = _error(TINY_STUDY.replace('seed = 4', 'seed = = 4'))
    line = TINY_STUDY.splitlines().index("seed = 4") + 1
    assert "s.toml" in msg and f"line {line}" in msg and "not valid TOML" in msg


@pytest.mark.parametrize("old,new,key,words", [
    ('weights = "random"\nseed = 4', 'wieghts = "random"\nseed = 4', "model[2].wieghts", "did you mean 'weights'"),
    ('samplers = ["sequential"]', 'samplers = ["seq"]', "erf.samplers", "unknown sampler 'seq'"),
    ("size = 64", 'size = "64"', "erf.size", "expected an integer"),
    ("batch_size = 6", "batch_size = 0", "shape_bias.batch_size", "at least 1"),
    ('paper.shape_bias = "fig5:paper:replknet-3-in1k"', 'paper.shape_bias = "fig5:nope"', "model[3].paper.shape_bias",
     "Fig. 5 has no entry 'nope'"),
    ('paper.erf = { "0.2" = 99.0 }', 'paper.erf = "table10:ResNet-18"', "model[1].paper.erf",
     "Table 10 has no row 'ResNet-18'"),
    ('id = "replknet"\n', 'id = "resnet18"\n', "model[2].id", "already the id of model 1"),
    ("abs = 0.02", "abs = -1", "tolerance.shape_bias.abs", "a finite number from 0 to 1 of shape bias"),
    # the probes of issue 24: numbers no machine honours, or that make every verdict "agrees"
    ("abs = 0.02", "abs = inf", "tolerance.shape_bias.abs", "a finite number from 0 to 1 of shape bias (got inf)"),
    ("abs = 0.5", "abs = nan", "tolerance.erf.abs", "a finite number from 0 to 100 percentage points (got nan)"),
    ("num_images = 2", "num_images = 1000000000", "erf.num_images", "at most 50,000 (got 1,000,000,000)"),
    ("size = 64", "size = 1000000", "erf.size", "at most 4,096 (got 1,000,000)"),
    ("bootstrap = 10", "bootstrap = 1000000000", "shape_bias.bootstrap", "at most 1,000,000"),
    ("bootstrap = 10", "seed = -1\nbootstrap = 10", "shape_bias.seed", "at least 0 (got -1)"),
    ("batch_size = 6", "batch_size = 100000", "shape_bias.batch_size", "at most 1,024"),
    ("seed = 4\n", "seed = 4294967296\n", "model[2].seed", "at most 4,294,967,295"),
    ('paper.erf = { "0.2" = 99.0 }', 'paper.erf = { "0.2" = nan }', "model[1].paper.erf", "finite, 0 to 100"),
    ('paper.erf = { "0.2" = 99.0 }', 'paper.erf = { "0.2" = inf }', "model[1].paper.erf", "finite, 0 to 100"),
    ("paper.shape_bias = 0.0", "paper.shape_bias = nan", "model[1].paper.shape_bias", "a number in [0, 1]"),
    ('samplers = ["sequential"]', 'precision = "bf16"\nsamplers = ["sequential"]', "erf.precision",
    "add allow_low_precision = true to [erf]"),
])
def test_semantic_errors_name_the_line_and_key(old, new, key, words):
    text = TINY_STUDY.replace(old, new, 1)
    assert text != TINY_STUDY
    msg = _error(text)
    line = TINY_STUDY[:TINY_STUDY.index(old)].count("\n") + 1  # where the changed key is in the file
    assert f"s.toml, line {line}, key {key}:" in msg, msg
    assert words in msg, msg


def test_missing_tables_and_unknown_names():
    assert "[study] table" in _error("[erf]\nsize = 64\n")
    assert "measures nothing" in _error('[study]\nname = "x"\n[[model]]\nname = "resnet18"\n')
    msg = _error('[study]\nname = "x"\n[erf]\n[[model]]\nname = "resnet18"\nmeasure = ["shape_bias"]\n')
    assert "line 6, key model[1].measure" in msg and "no [shape_bias] table" in msg
    with pytest.raises(StudyError, match="built-in studies: .*replknet-fig5"):
        load_study("no-such-study")


def test_locate_finds_keys_in_tables_arrays_and_dotted_keys():
    text = '[study]\nname = "a"\n\n[[model]]\nname = "m1"\n\n[[model]]\nname = "m2"\npaper.erf = "x"\n'
    assert locate(text, ("study", "name")) == 2
    assert locate(text, ("model", 0, "name")) == 5
    assert locate(text, ("model", 1, "name")) == 8
    assert locate(text, ("model", 1, "paper", "erf")) == 9
    assert locate(text, ("model", 1, "weights")) == 7  # absent key: the header of its table


def test_the_complete_example_of_the_docs_parses():
    import re

    from erftools.results import source_root

    doc = source_root() / "docs" / "study.md"
    if not doc.is_file():
        pytest.skip("docs/ ships with a source checkout")
    blocks = re.findall(r"```toml\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)
    st = parse_study(blocks[0], "docs/study.md")
    assert [m.id for m in st.models] == ["replknet-31b", "resnet-152", "convnext-b-random", "my-erf-model",
                                         "replknet-3"]
    assert st.models[3].needs_file and st.models[4].unpublished and st.erf.layers == "stages"
    assert st.models[1].paper_erf[0.99] == 34.9 and st.tolerance["erf"] == Tolerance(0.5, 0.1)


def test_the_results_layer_knows_every_verdict():
    """The dashboard colours verdicts from erftools.results.store.VERDICTS; a renamed verdict must not go unseen."""
    from erftools.results.store import VERDICTS
    from erftools.study.compare import AGREES, DIFFERS, FAILED, MISSING, NO_PAPER, NOT_RUN

    assert set(VERDICTS) == {AGREES, DIFFERS, NO_PAPER, NOT_RUN, MISSING, FAILED}
