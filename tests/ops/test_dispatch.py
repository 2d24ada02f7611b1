"""Backend names, the environment override, fallbacks, the auto policy and the module wrapper."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from erftools.ops import DepthwiseConv2d, available_backends, dwconv2d, resolve_backend
from erftools.ops import _dispatch


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("ERFTOOLS_CONV_BACKEND", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    _dispatch._warned.clear()


def test_available_on_cpu():
    av = available_backends("cpu")
    assert av[:2] == ["native", "fft"]
    assert "triton" not in av  # no CUDA and no interpreter on CPU tensors


def test_unknown_backend_names_valid_ones():
    x = torch.randn(1, 2, 8, 8)
    with pytest.raises(ValueError, match="native, fft, triton"):
        resolve_backend("cudnn", x, 31)
    with pytest.raises(ValueError):
        dwconv2d(x, torch.randn(2, 1, 3, 3), backend="bogus")


def test_unknown_backend_in_env_raises(monkeypatch):
    monkeypatch.setenv("ERFTOOLS_CONV_BACKEND", "fastest")
    with pytest.raises(ValueError, match="fastest"):
        resolve_backend("auto", torch.randn(1, 1, 4, 4), 31)


@pytest.mark.parametrize("k,expected", [(3, "native"), (5, "native"), (7, "native"), (13, "native"),
                                        (15, "fft"), (27, "fft"), (31, "fft")])
def test_auto_policy_cpu(k, expected):
    assert resolve_backend("auto", torch.randn(1, 2, 8, 8), k) == expected


def test_auto_on_cuda_without_measurements_is_native():
    # the committed table is empty until a GPU run of benchmarks/gpu_check.py fills it: no unmeasured kernel
    cuda = torch.device("cuda")
    for k in (3, 5, 13, 27, 31):
        for dt in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
            for mode in ("forward", "input_grad", "weight_grad"):
                assert _dispatch.auto_backend(cuda, dt, k, plane=(64, 64), mode=mode) == "native"
    assert _dispatch.auto_backend(cuda, torch.float32, 31) == "native"  # no plane given


def test_env_overrides_auto_only(monkeypatch):
    x = torch.randn(1, 2, 8, 8)
    monkeypatch.setenv("ERFTOOLS_CONV_BACKEND", "fft")
    assert resolve_backend("auto", x, 5) == "fft"
    assert resolve_backend("native", x, 31) == "native"  # explicit choice wins over the environment
    monkeypatch.setenv("ERFTOOLS_CONV_BACKEND", "NATIVE")
    assert resolve_backend("auto", x, 31) == "native"


def test_unavailable_backend_falls_back_once(caplog):
    x = torch.randn(1, 2, 8, 8)
    w = torch.randn(2, 1, 9, 9)
    with caplog.at_level(logging.DEBUG, logger="erftools.ops"):
        assert resolve_backend("triton", x, 9) == "native"
        y = dwconv2d(x, w, backend="triton")
        dwconv2d(x, w, backend="triton")
    msgs = [r.getMessage() for r in caplog.records if "triton" in r.getMessage()]
    assert len(msgs) == 1 and "native" in msgs[0]
    torch.testing.assert_close(y, F.conv2d(x, w, padding=4, groups=2), rtol=0, atol=0)


def test_float64_triton_falls_back():
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    assert resolve_backend("triton", x, 9) == "native"
    assert resolve_backend("fft", x, 9) == "fft"


def test_even_and_nonsquare_kernels_run_native():
    x = torch.randn(1, 2, 8, 8)
    for w in (torch.randn(2, 1, 4, 4), torch.randn(2, 1, 3, 5)):
        y = dwconv2d(x, w, backend="fft")
        ref = F.conv2d(x, w, padding=(w.shape[-2] // 2, w.shape[-1] // 2), groups=2)
        assert torch.equal(y, ref)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        dwconv2d(torch.randn(2, 8, 8), torch.randn(2, 1, 3, 3))
    with pytest.raises(ValueError):
        dwconv2d(torch.randn(1, 2, 8, 8), torch.randn(3, 1, 3, 3))
    with pytest.raises(ValueError):
        dwconv2d(torch.randn(1, 2, 8, 8), torch.randn(2, 1, 3, 3), torch.randn(3))


def test_module_is_conv2d_with_same_keys_and_switchable_backend():
    torch.manual_seed(0)
    m = DepthwiseConv2d(6, 6, 17, padding=8, groups=6, bias=True)
    ref = torch.nn.Conv2d(6, 6, 17, padding=8, groups=6, bias=True)
    assert isinstance(m, torch.nn.Conv2d)
    assert m.state_dict().keys() == ref.state_dict().keys()
    ref.load_state_dict(m.state_dict())
    x = torch.randn(2, 6, 11, 9)
    outs = {}
    for b in ("native", "fft", "auto"):
        m.backend = b
        outs[b] = m(x)
        torch.testing.assert_close(outs[b], ref(x), rtol=1e-5, atol=1e-5)
    assert "backend='auto'" in repr(m)


def test_module_non_depthwise_configs_use_conv2d():
    m = DepthwiseConv2d(4, 4, 5, stride=2, padding=2, groups=4, backend="fft")
    x = torch.randn(1, 4, 10, 10)
    assert torch.equal(m(x), F.conv2d(x, m.weight, m.bias, stride=2, padding=2, groups=4))


def test_auto_on_cpu_depends_on_whether_the_weight_gradient_is_needed():
    from erftools.ops._dispatch import auto_backend

    cpu = torch.device("cpu")
    assert auto_backend(cpu, torch.float32, 31, weight_grad=True) == "fft"
    assert auto_backend(cpu, torch.float32, 31, weight_grad=False) == "native"
    assert auto_backend(cpu, torch.float32, 13, weight_grad=True) == "native"
    w = torch.randn(6, 1, 17, 17)
    x = torch.randn(2, 6, 20, 23, requires_grad=True)
    ref = torch.nn.functional.conv2d(x.double(), w.double(), padding=8, groups=6)
    y = dwconv2d(x, w)  # frozen weight: native through channels-last, returned NCHW-contiguous
    assert y.is_contiguous()
    torch.testing.assert_close(y.double(), ref, rtol=0, atol=1e-5 * ref.abs().max().item())
    (g,) = torch.autograd.grad(y.sum(), x)
    (g_ref,) = torch.autograd.grad(torch.nn.functional.conv2d(x, w, padding=8, groups=6).sum(), x)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5)
