"""The CUDA measurement table: format validation, lookup by (arch, dtype, K, plane class, mode), and ``auto`` on CUDA
following it (the device's compute capability is patched, so this runs without a GPU)."""
from __future__ import annotations

import json

import pytest
import torch

from erftools.ops import _cuda_table, _dispatch
from erftools.ops._cuda_table import load_table, lookup, plane_class, validate_table

CUDA = torch.device("cuda")


def _entry(**kw):
    e = {"arch": "sm_90", "dtype": "bf16", "kernel_size": 31, "plane": "huge", "mode": "input_grad",
         "backend": "triton", "layout": None, "speedup": 2.0, "gpu": "NVIDIA H200", "measured": "2026-12-01"}
    e.update(kw)
    return e


@pytest.fixture
def table_file(tmp_path, monkeypatch):
    """Write a table, point ERFTOOLS_CUDA_TABLE at it and pretend the GPU is an sm_90."""
    monkeypatch.delenv("ERFTOOLS_CONV_BACKEND", raising=False)
    monkeypatch.setattr(_dispatch, "_cuda_arch", lambda device: "sm_90")
    monkeypatch.setattr(_dispatch, "_triton_runs_on", lambda device: None)  # as on a GPU with Triton installed
    _cuda_table._cache.clear()

    def write(entries):
        p = tmp_path / f"table{len(_cuda_table._cache)}.json"
        p.write_text(json.dumps({"format": _cuda_table.FORMAT, "entries": entries}))
        monkeypatch.setenv(_cuda_table.TABLE_ENV, str(p))
        _cuda_table._cache.clear()
        return p

    yield write
    _cuda_table._cache.clear()


def test_committed_table_is_valid_and_every_entry_is_a_measurement():
    table = load_table(_cuda_table.TABLE_PATH)
    for e in table["entries"]:
        assert e["speedup"] >= 1.0 and e["gpu"] and e["measured"]


@pytest.mark.parametrize("h,w,name", [(16, 16, "small"), (32, 32, "small"), (33, 32, "medium"), (64, 64, "medium"),
                                      (128, 128, "large"), (256, 256, "huge"), (1, 20000, "huge")])
def test_plane_classes(h, w, name):
    assert plane_class(h, w) == name


@pytest.mark.parametrize("bad,msg", [
    ({"kernel_size": 30}, "odd"), ({"plane": "tiny"}, "plane"), ({"mode": "train"}, "mode"),
    ({"backend": "cudnn"}, "backend"), ({"layout": "channels_last"}, "only for backend native"),
    ({"speedup": 0.8}, "speedup"), ({"dtype": "float32"}, "dtype"), ({"arch": "9.0"}, "sm_90"),
])
def test_validation_names_the_problem(bad, msg):
    with pytest.raises(ValueError, match=msg):
        validate_table({"format": _cuda_table.FORMAT, "entries": [_entry(**bad)]})


def test_validation_requires_evidence_format_and_unique_keys():
    e = _entry()
    del e["speedup"]
    with pytest.raises(ValueError, match="missing speedup"):
        validate_table({"format": _cuda_table.FORMAT, "entries": [e]})
    with pytest.raises(ValueError, match="gpu_check"):
        validate_table({"entries": []})
    with pytest.raises(ValueError, match="second entry"):
        validate_table({"format": _cuda_table.FORMAT, "entries": [_entry(), _entry(backend="fft")]})


def test_auto_on_cuda_follows_the_table(table_file):
    table_file([_entry(), _entry(dtype="fp32", kernel_size=27, plane="medium", mode="forward", backend="fft"),
                _entry(dtype="fp32", kernel_size=13, plane="small", mode="input_grad", backend="native",
                       layout="channels_last")])
    auto = _dispatch.auto_backend
    assert auto(CUDA, torch.bfloat16, 31, plane=(256, 256), mode="input_grad") == "triton"
    # every part of the key matters: architecture-, dtype-, K-, plane- and mode-specific evidence only
    assert auto(CUDA, torch.float16, 31, plane=(256, 256), mode="input_grad") == "native"
    assert auto(CUDA, torch.bfloat16, 29, plane=(256, 256), mode="input_grad") == "native"
    assert auto(CUDA, torch.bfloat16, 31, plane=(128, 128), mode="input_grad") == "native"
    assert auto(CUDA, torch.bfloat16, 31, plane=(256, 256), mode="weight_grad") == "native"
    assert auto(CUDA, torch.bfloat16, 31, plane=(256, 256), weight_grad=False) == "triton"  # input_grad
    assert auto(CUDA, torch.float32, 27, plane=(64, 48), mode="forward") == "fft"
    assert _dispatch.cuda_native_layout(CUDA, torch.float32, 13, (32, 32), "input_grad") == "channels_last"
    assert _dispatch.cuda_native_layout(CUDA, torch.float32, 13, (32, 32), "forward") is None
    assert _dispatch.cuda_native_layout(CUDA, torch.float32, 27, (64, 64), "forward") is None  # not native
    assert _dispatch.auto_backend(torch.device("cpu"), torch.float32, 31) == "fft"  # CPU rules unchanged


def test_other_architecture_gets_native(table_file, monkeypatch):
    table_file([_entry()])
    monkeypatch.setattr(_dispatch, "_cuda_arch", lambda device: "sm_80")
    assert _dispatch.auto_backend(CUDA, torch.bfloat16, 31, plane=(256, 256), mode="input_grad") == "native"


def test_table_backend_not_runnable_or_disabled_gets_native(table_file, monkeypatch):
    from erftools.ops import _selfcheck

    table_file([_entry()])
    monkeypatch.setattr(_dispatch, "_triton_runs_on", lambda device: "Triton is not installed")
    assert _dispatch.auto_backend(CUDA, torch.bfloat16, 31, plane=(256, 256), mode="input_grad") == "native"
    monkeypatch.setattr(_dispatch, "_triton_runs_on", lambda device: None)
    monkeypatch.setitem(_selfcheck._disabled, ("triton", "cuda"), "broken")
    assert _dispatch.auto_backend(CUDA, torch.bfloat16, 31, plane=(256, 256), mode="input_grad") == "native"


def test_bad_table_file_raises_clearly(tmp_path, monkeypatch):
    _cuda_table._cache.clear()
    p = tmp_path / "t.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_table(p)
    monkeypatch.setenv(_cuda_table.TABLE_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="does not exist"):
        load_table()
    _cuda_table._cache.clear()


def test_lookup_returns_the_matching_entry():
    t = validate_table({"format": _cuda_table.FORMAT, "entries": [_entry(), _entry(mode="forward", speedup=3.0)]})
    assert lookup(t, "sm_90", torch.bfloat16, 31, "huge", "forward")["speedup"] == 3.0
    assert lookup(t, "sm_90", torch.bfloat16, 31, "huge", "weight_grad") is None
