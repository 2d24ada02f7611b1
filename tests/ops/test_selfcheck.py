"""The first-use self-check of non-native backends, and backend_report(), on CPU with the FFT backend: a correct
backend passes and is recorded, a deliberately broken one (monkeypatched) is caught, warned about once, disabled
for the process, and native runs instead. (The Triton kernels go through the same check under the interpreter in
test_triton_interpreter.py.)"""
from __future__ import annotations

import json
import logging

import pytest
import torch
import torch.nn.functional as F

from erftools.ops import _dispatch, _fft, _selfcheck, backend_report, dwconv2d, reset_backend_report, resolve_backend


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("ERFTOOLS_CONV_BACKEND", raising=False)
    monkeypatch.delenv("ERFTOOLS_CONV_SELFCHECK", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    reset_backend_report(self_checks=True)
    _dispatch._warned.clear()
    yield
    reset_backend_report(self_checks=True)


def _data(k=9, dtype=torch.float32):
    g = torch.Generator().manual_seed(k)
    return (torch.randn(2, 3, 14, 11, generator=g).to(dtype), (torch.randn(3, 1, k, k, generator=g) / k).to(dtype))


def _shifted(x, weight, bias=None):
    """A plausible-looking bug: the right convolution, off by one column."""
    k = weight.shape[-1]
    return torch.roll(F.conv2d(x, weight.to(x.dtype), bias, padding=k // 2, groups=x.shape[1]), 1, dims=-1)


def test_correct_backend_passes_and_is_reported():
    x, w = _data(9)
    y = dwconv2d(x, w, backend="fft")
    dwconv2d(x, w, backend="fft")
    ref = F.conv2d(x.double(), w.double(), padding=4, groups=3)
    assert float((y.double() - ref).abs().max() / ref.abs().max()) < 1e-5  # fp32 FFT rounding is ~1e-7
    rep = backend_report()
    json.dumps(rep)  # JSON-able, as run records store it
    (chk,) = rep["self_checks"]
    assert chk["backend"] == "fft" and chk["device"] == "cpu" and chk["dtype"] == "float32"
    assert chk["kernel_size"] == 9 and chk["ok"] is True and chk["error"] is None
    # the check compares with float64 from the same rounded inputs: fp32 FFT error, far under the 1e-4 tolerance
    assert chk["forward_error"] < 1e-5 and chk["input_grad_error"] < 1e-5 and chk["tolerance"] == 1e-4
    assert rep["disabled"] == []
    assert {"backend": "fft", "layout": None, "device": "cpu", "dtype": "float32", "kernel_size": 9,
            "calls": 2} in rep["runs"]
    assert rep["cuda_table"]["entries"] == 0


def test_one_check_per_dtype_and_kernel_size():
    for k, dt in ((9, torch.float32), (15, torch.float32), (9, torch.bfloat16), (9, torch.float32)):
        x, w = _data(k, dt)
        dwconv2d(x, w, backend="fft")
    checks = {(c["dtype"], c["kernel_size"]): c["ok"] for c in backend_report()["self_checks"]}
    assert checks == {("float32", 9): True, ("float32", 15): True, ("bfloat16", 9): True}


def test_broken_backend_is_caught_warned_once_disabled_and_native_runs(monkeypatch, caplog):
    monkeypatch.setattr(_fft, "fft_dwconv2d", _shifted)
    x, w = _data(9)
    with caplog.at_level(logging.WARNING, logger="erftools.ops"):
        y1 = dwconv2d(x, w, backend="fft")
        y2 = dwconv2d(x, w, backend="fft")
        x2, w2 = _data(15)
        dwconv2d(x2, w2, backend="fft")  # another K on the same device: disabled too, no second check
    warnings = [r.getMessage() for r in caplog.records if "self-check" in r.getMessage()]
    assert len(warnings) == 1
    assert "'fft'" in warnings[0] and "cpu" in warnings[0] and "error" in warnings[0]
    ref = F.conv2d(x, w, padding=4, groups=3)
    for y in (y1, y2):  # native ran: PyTorch's result, not the shifted one
        torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-6)
    assert (_shifted(x, w) - ref).abs().max() > 0.1  # the bug is large enough to matter
    rep = backend_report()
    (chk,) = rep["self_checks"]
    assert chk["ok"] is False and chk["forward_error"] > chk["tolerance"]
    assert rep["disabled"] == [{"backend": "fft", "device": "cpu", "reason": rep["disabled"][0]["reason"]}]
    assert {r["backend"] for r in rep["runs"]} == {"native"}  # fft never produced an output
    assert sum(r["calls"] for r in rep["runs"]) == 3
    assert resolve_backend("fft", x, 9) == "native"


def test_backend_that_raises_is_disabled(monkeypatch, caplog):
    def boom(*a, **k):
        raise RuntimeError("kernel launch failed")

    monkeypatch.setattr(_fft, "fft_dwconv2d", boom)
    x, w = _data(9)
    with caplog.at_level(logging.WARNING, logger="erftools.ops"):
        y = dwconv2d(x, w, backend="fft")
    torch.testing.assert_close(y, F.conv2d(x, w, padding=4, groups=3), rtol=1e-6, atol=1e-6)
    (chk,) = backend_report()["self_checks"]
    assert chk["ok"] is False and "kernel launch failed" in chk["error"]
    assert any("kernel launch failed" in r.getMessage() for r in caplog.records)


def test_wrong_gradient_only_is_caught(monkeypatch):
    class WrongGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight):
            ctx.save_for_backward(weight)
            return F.conv2d(x, weight, padding=weight.shape[-1] // 2, groups=x.shape[1])

        @staticmethod
        def backward(ctx, gy):
            (weight,) = ctx.saved_tensors  # forgets to rotate the kernel by 180 degrees
            return F.conv2d(gy, weight, padding=weight.shape[-1] // 2, groups=gy.shape[1]), None

    monkeypatch.setattr(_fft, "fft_dwconv2d", lambda x, w, b=None: WrongGrad.apply(x, w))
    x, w = _data(9)
    dwconv2d(x, w, backend="fft")
    (chk,) = backend_report()["self_checks"]
    assert chk["forward_error"] < 1e-5 and chk["input_grad_error"] > chk["tolerance"] and not chk["ok"]


def test_auto_on_cpu_is_checked_too_and_inference_mode_does_not_break_the_check():
    x, w = _data(17)
    w.requires_grad_(True)
    assert resolve_backend("auto", x, 17) == "fft"  # CPU, weight gradient: the FFT (unchanged policy)
    with torch.inference_mode():
        dwconv2d(x, w.detach(), backend="fft")
    (chk,) = backend_report()["self_checks"]
    assert chk["ok"] is True


def test_selfcheck_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("ERFTOOLS_CONV_SELFCHECK", "0")
    monkeypatch.setattr(_fft, "fft_dwconv2d", _shifted)
    x, w = _data(9)
    y = dwconv2d(x, w, backend="fft")
    torch.testing.assert_close(y, _shifted(x, w))  # unchecked: the (broken) backend ran
    rep = backend_report()
    assert rep["self_checks"] == [] and rep["env"]["ERFTOOLS_CONV_SELFCHECK"] == "0"


def test_reset_backend_report():
    x, w = _data(9)
    dwconv2d(x, w, backend="fft")
    reset_backend_report()
    rep = backend_report()
    assert rep["runs"] == [] and len(rep["self_checks"]) == 1
    reset_backend_report(self_checks=True)
    assert backend_report()["self_checks"] == [] and _selfcheck.results() == []


def test_record_native_run_is_reported():
    from erftools.ops import record_native_run

    record_native_run(torch.randn(1, 2, 8, 8), 31)
    record_native_run(torch.randn(1, 2, 8, 8), 31)
    assert backend_report()["runs"] == [{"backend": "native", "layout": None, "device": "cpu", "dtype": "float32",
                                        "kernel_size": 31, "calls": 2}]
