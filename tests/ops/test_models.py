"""Whole-model checks: RepLKNet-31B (random weights, small input) with every CPU backend equals native, in the
training-time form, the re-parameterised form and the BN-folded form, and its ERF map agrees within fp32 noise; on a
tiny RepLKNet each backend's fp32 error against a float64 model is no larger than native's."""
from __future__ import annotations

import pytest
import torch

from erftools.models import create_model
from erftools.models.replknet import RepLKNet

CPU_BACKENDS = ["fft"]  # triton runs on CPU only under the interpreter: see test_triton_interpreter.py


def rel(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def erf_map(model, x):
    """ERF of the central output unit: relu(d sum relu(y[:, :, h/2, w/2]) / dx), summed over colour channels."""
    x = x.clone().requires_grad_()
    y = model.forward_features(x)
    if isinstance(y, (list, tuple)):
        y = y[-1]
    h, w = y.shape[-2:]
    s = torch.relu(y[:, :, h // 2, w // 2]).sum()
    (g,) = torch.autograd.grad(s, x)
    return torch.relu(g).sum(dim=(0, 1))


def square_sides(m, fractions=(0.2, 0.3, 0.5, 0.99)):
    """Side of the smallest centred square holding each fraction of the total contribution."""
    m = m.double()
    h, w = m.shape
    total = m.sum()
    out = []
    for t in fractions:
        for r in range(max(h, w)):
            sq = m[max(0, h // 2 - r): h // 2 + r + 1, max(0, w // 2 - r): w // 2 + r + 1]
            if sq.sum() >= t * total:
                out.append(2 * r + 1)
                break
    return out


@pytest.fixture(scope="module")
def model31b():
    torch.manual_seed(0)
    m = create_model("replknet-31B", weights="random").eval()
    m.requires_grad_(False)
    return m


@pytest.fixture(scope="module")
def x64():
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def native_out(model31b, x64):
    model31b.set_conv_backend("native")
    with torch.no_grad():
        y = model31b.forward_features(x64)
    return y, erf_map(model31b, x64)


@pytest.mark.parametrize("backend", CPU_BACKENDS + ["auto"])
def test_replknet31b_forward_and_erf_equal_native(model31b, x64, native_out, backend):
    y_ref, erf_ref = native_out
    model31b.set_conv_backend(backend)
    try:
        with torch.no_grad():
            y = model31b.forward_features(x64)
        erf = erf_map(model31b, x64)
    finally:
        model31b.set_conv_backend("native")
    assert y.abs().max() > 0 and erf.max() > 0
    assert rel(y, y_ref) <= 1e-4
    assert float((erf - erf_ref).abs().max() / erf_ref.max()) <= 1e-3
    for a, b in zip(square_sides(erf), square_sides(erf_ref)):
        assert abs(a - b) <= 2


@pytest.mark.parametrize("form", ["reparam", "fused"])
def test_replknet31b_inference_forms_equal_native(form, x64):
    torch.manual_seed(0)
    m = create_model("replknet-31B", weights="random").eval().requires_grad_(False)
    with torch.no_grad():
        ref = m.set_conv_backend("native").forward_features(x64)
        m.structural_reparam() if form == "reparam" else m.fuse_bn()
        assert m.is_reparameterized
        y_nat = m.forward_features(x64)
        y_fft = m.set_conv_backend("fft").forward_features(x64)
    assert rel(y_nat, ref) <= 1e-4
    assert rel(y_fft, y_nat) <= 1e-4


def _tiny(seed=0):
    torch.manual_seed(seed)
    m = RepLKNet(large_kernel_sizes=[31, 29, 27, 13], layers=[1, 1, 1, 1], channels=[8, 16, 16, 16], small_kernel=5,
                 num_classes=None, out_indices=[3]).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.1)
    return m.requires_grad_(False)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backend_error_vs_float64_not_above_native(backend):
    """Forward and ERF of a tiny RepLKNet in fp32, against the same model in float64 (native): the backend's error may
    not exceed native's (with 25% slack for rounding luck: both are O(eps) and the slack is far below a real bug)."""
    m = _tiny()
    m64 = _tiny().double().set_conv_backend("native")
    x = torch.randn(1, 3, 96, 80, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = m64.forward_features(x.double())[0]
        errs = {}
        for b in ("native", backend):
            errs[b] = rel(m.set_conv_backend(b).forward_features(x)[0], ref)
    erf_ref = erf_map(m64, x.double())
    erf_errs = {b: float((erf_map(m.set_conv_backend(b), x).double() - erf_ref).abs().max() / erf_ref.max())
                for b in ("native", backend)}
    assert errs["native"] > 0 and erf_errs["native"] > 0
    assert errs[backend] <= 1.25 * errs["native"], errs
    assert erf_errs[backend] <= 1.25 * erf_errs["native"], erf_errs
