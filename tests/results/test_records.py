"""erftools.results.records: the typed run records (the schema), read from and written to JSON."""
from __future__ import annotations

import ast
import json

import pytest

from erftools.results import records as rec
from erftools.results.records import (ErfRecord, ResultError, ShapeBiasRecord, base_record, maker_kind,
                                      read_json_record, record_from_dict, validate)

from .builders import REPO, decision_rows, erf_record, sb_record, write_decisions


def test_round_trip_keeps_unknown_fields_and_key_order():
    data = erf_record("net").to_dict()
    data = {"future_field": {"x": [1, 2]}, **data, "another": "kept"}
    r = ErfRecord.from_dict(data, source="erf.json")
    assert r.extra == {"future_field": {"x": [1, 2]}, "another": "kept"}
    assert r.to_dict() == data and list(r.to_dict()) == list(data)
    assert json.loads(json.dumps(r.to_dict())) == data  # plain JSON all the way


def test_a_record_read_from_disk_gets_no_new_keys():
    data = {"kind": "erf", "schema": 1, "complete": True, "label": "old", "size": [8, 8]}  # an early, short record
    r = ErfRecord.from_dict(data)
    assert r.stored_downsample == 1 and r.num_nan is None  # defaults for what it does not say
    assert r.to_dict() == data
    r.stored_downsample = 4  # a field set on purpose is written
    assert r.to_dict() == dict(data, stored_downsample=4)
    assert ErfRecord.from_dict({"kind": "erf"}).schema == 1  # before the field existed: schema 1


def test_a_new_record_writes_every_field():
    r = ShapeBiasRecord(label="x", shape_bias=0.5)
    d = r.to_dict()
    assert list(d)[0] == "kind" and d["kind"] == "shape-bias"
    assert set(d) == {"kind", *ShapeBiasRecord.fields()}
    assert ShapeBiasRecord.from_dict(d) == r


@pytest.mark.parametrize("field, value, message", [
    ("size", [64], r"field 'size' should be \[height, width\]"),
    ("size", "64x64", "field 'size' should be list, got str"),
    ("num_images", 2.5, "field 'num_images' should be integer, got float"),
    ("num_images", True, "field 'num_images' should be integer, got bool"),
    ("complete", "yes", "field 'complete' should be true/false"),
    ("stored_downsample", 0, "field 'stored_downsample' should be a positive integer"),
    ("area_ratios", [{"threshold": "0.2"}], "field 'area_ratios' item 0 should be an object with a numeric"),
    ("area_ratios", [{"threshold": 0.2, "side": 1.5}], "'side' should be an integer or null"),
    ("radial_profile", {"radius": [1, 2], "cumulative": [0.5]}, "'radius' and 'cumulative' of the same length"),
    ("model", "resnet", "field 'model' should be object"),
])
def test_erf_validation_names_the_file_and_the_field(field, value, message):
    data = dict(erf_record("net").to_dict(), **{field: value})
    with pytest.raises(ResultError, match=message) as err:
        ErfRecord.from_dict(data, source="results/run/erf.json")
    assert str(err.value).startswith("results/run/erf.json")


@pytest.mark.parametrize("field, value, message", [
    ("shape_bias", "x", "field 'shape_bias' should be number, got str"),
    ("per_category", "oops", "field 'per_category' should be object"),
    ("per_category", {"cat": {"shape_bias": "high"}}, "category 'cat': the shape bias should be a number"),
    ("ci95", [0.1], "field 'ci95' should be a list of two numbers"),
    ("num_trials", "<img>", "field 'num_trials' should be integer"),
])
def test_shape_bias_validation(field, value, message):
    data = dict(sb_record("net", decision_rows("net", 0.3, 0)).to_dict(), **{field: value})
    with pytest.raises(ResultError, match=message):
        ShapeBiasRecord.from_dict(data, source="summary.json")


def test_kind_and_schema_are_checked():
    with pytest.raises(ResultError, match="is not a shape-bias record .kind='erf'"):
        ShapeBiasRecord.from_dict(erf_record("x").to_dict(), source="summary.json")
    with pytest.raises(ResultError, match="a JSON object was expected, got list"):
        ErfRecord.from_dict([1, 2], source="erf.json")
    newer = dict(erf_record("x").to_dict(), schema=rec.SCHEMA + 1, size="changed in schema 2")
    with pytest.raises(ResultError, match="has schema 2, newer than this erftools reads .1.; upgrade erftools"):
        ErfRecord.from_dict(newer, source="erf.json")
    with pytest.raises(ResultError, match="not a run record"):
        record_from_dict({"kind": "shape-bias-combined"}, source="combined.json")
    assert isinstance(record_from_dict(erf_record("x").to_dict()), ErfRecord)


def test_decision_maker_kinds_have_one_spelling():
    assert rec.MAKER_KINDS == ("humans", "human", "model", "network", "published")
    for old, new in (("cnn", "network"), ("paper", "published"), ("Humans", "humans"), ("subject", "human"),
                     ("network", "network"), ("model", "model")):
        assert maker_kind(old) == new
    assert maker_kind("robot") is None and maker_kind(None) is None
    rows = decision_rows("n", 0.3, 0)
    assert sb_record("n", rows, dm_kind="cnn").maker_kind == "network"  # an old spelling in a record
    no_kind = dict(sb_record("n", rows).to_dict(), decision_maker_kind=None)
    assert ShapeBiasRecord.from_dict(no_kind).maker_kind == "model"  # evaluated by erftools
    assert ShapeBiasRecord.from_dict(dict(no_kind, source="decisions")).maker_kind == "network"


def test_views_of_a_record():
    r = erf_record("net", area_ratios=[{"threshold": 0.2, "side": 5, "area_ratio": 0.01},
                                       {"threshold": 0.99, "side": None, "area_ratio": None}])
    assert r.area_ratio_map() == {0.2: 0.01, 0.99: None} and r.side_map() == {0.2: 5, 0.99: None}
    assert r.name == "net" and r.weights == "random"
    assert ErfRecord.from_dict({"kind": "erf", "model": {"name": "m"}}).name == "m"
    s = sb_record("net", decision_rows("net", 0.3, 0))
    assert set(s.category_bias()) == set(s.per_category)


def test_base_record_and_validate():
    r = base_record("erf", label="x", size=[8, 8])
    assert r["kind"] == "erf" and r["schema"] == rec.SCHEMA and r["complete"] is False and "versions" in r
    assert validate(r) is r
    with pytest.raises(ResultError, match="field 'size'"):
        validate(dict(r, size=[8]))
    with pytest.raises(ValueError, match="kind should be one of erf, shape-bias"):
        base_record("erf-run")


def test_read_json_record(tmp_path):
    with pytest.raises(ResultError, match="is not a erf result folder: erf.json is missing"):
        read_json_record(tmp_path, "erf")
    (tmp_path / "erf.json").write_text("{", encoding="utf-8")
    with pytest.raises(ResultError, match="not valid JSON"):
        read_json_record(tmp_path, "erf")
    (tmp_path / "erf.json").write_text(json.dumps(erf_record("x").to_dict()), encoding="utf-8")
    assert read_json_record(tmp_path, "erf")["label"] == "x"


# ---------------------------------------------------------------------------------- what the writers write
def _keywords(path, call: str) -> set[str]:
    """The keyword names of every call of ``call`` in a source file."""
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name == call:
                out |= {k.arg for k in node.keywords if k.arg}
    return out


def _record_items(path) -> set[str]:
    """The fields a source file sets with ``record["key"] = ...`` or ``record.key = ...`` (after ``new_record``)."""
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    targets = [t for node in ast.walk(tree) if isinstance(node, ast.Assign) for t in node.targets]
    return ({t.slice.value for t in targets
             if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and t.value.id == "record"
             and isinstance(t.slice, ast.Constant) and isinstance(t.slice.value, str)}
            | {t.attr for t in targets if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
               and t.value.id == "record"})


def _dict_keys(path, keyword: str) -> set[str]:
    """The keys of a dict literal passed as ``keyword=`` in a source file (the CLI's ``extra`` fields)."""
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    return {k.value for node in ast.walk(tree) if isinstance(node, ast.keyword) and node.arg == keyword
            and isinstance(node.value, ast.Dict) for k in node.value.keys if isinstance(k, ast.Constant)}


def test_every_field_the_erf_writer_writes_is_known():
    written = (_keywords("erftools/erf/run.py", "new_record") | _record_items("erftools/erf/run.py")
               | _dict_keys("erftools/commands/erf.py", "extra"))
    assert {"label", "model", "area_ratios", "stored_downsample", "fingerprint", "command"} <= written
    assert written - set(ErfRecord.fields()) == set()


def test_every_field_the_shape_bias_writer_writes_is_known(tmp_path):
    written = _keywords("erftools/shapebias/run.py", "new_record") | _record_items("erftools/shapebias/run.py")
    assert {"decision_maker_kind", "num_nonfinite", "nonfinite", "fingerprint", "plots", "references"} <= written
    assert written - set(ShapeBiasRecord.fields()) == set()
    # and the folder the engine really writes from published decisions reads back complete, with no unknown field
    from erftools.shapebias.analysis import DecisionMaker, read_decisions
    from erftools.shapebias.run import run_decision_maker

    csvs = [write_decisions(tmp_path / f"s{i}.csv", decision_rows(f"subject-0{i}", 0.8, i)) for i in (1, 2)]
    rows = [r for f in csvs for r in read_decisions(f)]
    dm = DecisionMaker("humans", rows, "humans", ["subject-01", "subject-02"], [str(f) for f in csvs])
    written_rec = run_decision_maker(dm, out=tmp_path / "run", n_boot=20, references=())
    r = ShapeBiasRecord.from_dict(json.loads((tmp_path / "run" / "summary.json").read_text()))
    assert r.complete and r.extra == {} and r.maker_kind == "humans"
    assert r.to_dict() == json.loads(json.dumps(written_rec, default=str))


@pytest.mark.parametrize("text, name", [("ResNet-152 (torchvision)", "ResNet-152-torchvision"), ("a/b", "a-b"),
                                        ("..", "run"), (".hidden", "hidden"), ("swin_B.in1k", "swin_B.in1k")])
def test_slug(text, name):
    assert rec.slug(text) == name


# ---- issue 18: one validating writer; writers refuse wrong-typed fields ------------------------------------------
def test_write_record_refuses_a_wrong_typed_field_and_writes_nothing(tmp_path):
    path = tmp_path / "erf.json"
    good = rec.new_record("erf", label="net", size=[8, 8], num_images=3)
    assert rec.write_record(path, good)["num_images"] == 3 and ErfRecord.from_dict(json.loads(path.read_text()))
    path.unlink()
    good.num_images = "three"  # a writer's bug: text where the schema says integer
    with pytest.raises(ResultError, match=r"erf\.json: field 'num_images' should be integer"):
        rec.write_record(path, good)
    assert not path.exists()
    with pytest.raises(ResultError, match=r"field 'size' should be \[height, width\]"):
        rec.new_record("erf", size=[8])  # refused where the writer builds it, too


def test_run_erf_refuses_a_wrong_typed_field_from_its_caller(tmp_path):
    """The engine's writer goes through the validating writer: a caller's ``extra`` field of the wrong type (a
    number of images as text) is refused, and no record claims the folder complete."""
    import torch

    from erftools.erf.run import run_erf
    from erftools.images import select_images
    from erftools.models import create_model

    images_dir = tmp_path / "images"
    images_dir.mkdir()
    from PIL import Image

    for i in range(2):
        Image.new("RGB", (40, 40), (40 * i, 90, 200)).save(images_dir / f"{i}.png")
    torch.manual_seed(0)
    model = create_model("resnet18", weights="random", num_classes=10)
    images = select_images(images_dir, num=2, size=32, mean=(0.5,) * 3, std=(0.5,) * 3, min_side=1)
    with pytest.raises(ResultError, match="field 'batch_size' should be integer"):
        run_erf(model, images, tmp_path / "run", device="cpu", progress=False, plot=False,
                extra={"batch_size": "1"})
    assert not (tmp_path / "run" / "erf.json").exists()


def test_nested_entries_are_typed_and_a_wrong_typed_one_is_refused(tmp_path):
    """A layer entry and the timings are typed parts of the ERF record, checked by the same validator."""
    entry = rec.LayerEntry(layer="stages.0", num_images=3, matrix="layers/stages.0.npy",
                           area_ratios=[{"threshold": 0.2, "side": 5, "area_ratio": 0.01}])
    timings = rec.ErfTimings(wall_s=1.5, compute_s=1.0, images_computed_this_session=3)
    assert "peak_rss_bytes" not in timings.to_dict() and timings.to_dict()["wall_s"] == 1.5
    good = rec.new_record("erf", layers=[entry.to_dict()], timings=timings.to_dict())
    assert rec.LayerEntry.from_dict(good.layers[0]).matrix == "layers/stages.0.npy"
    entry.num_images = "3"
    with pytest.raises(ResultError, match=r"field 'layers' is malformed: item 0: field 'num_images' should be integer"):
        rec.write_record(tmp_path / "erf.json", rec.new_record("erf", layers=[entry.to_dict()]))
    with pytest.raises(ResultError, match=r"field 'timings' is malformed: it: field 'wall_s' should be number"):
        rec.new_record("erf", timings={"wall_s": "fast"})
    assert not (tmp_path / "erf.json").exists()


def test_a_fingerprint_lists_its_differences():
    fp = rec.Fingerprint({"model": "a", "size": 64, "seed": 0})
    assert fp.differences({"model": "a", "size": 32, "seed": 0}) == ["size"]
    assert sorted(fp.differences({"model": "a", "size": 64, "extra": 1})) == ["extra", "seed"]
    assert fp.differences({"model": "b"}, keys=["model"]) == ["model"]
