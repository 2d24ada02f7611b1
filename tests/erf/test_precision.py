"""compute_erf(..., precision=): fp32 (default), tf32 (CUDA only; fp32 on CPU), bf16 (autocast); the TF32 switches;
the automatic CUDA batch size (mocked free memory) and out-of-memory halving (a fake model that raises
torch.cuda.OutOfMemoryError on CPU)."""
import logging

import numpy as np
import pytest
import torch
import torch.nn as nn

from erftools import ErftoolsError
from erftools.erf import area_ratios, compute_erf, compute_erfs
from erftools.erf import batching as B
from erftools.erf import compute as C

from ._erf_helpers import fixture_data, fixture_model

#: bf16 against float64 on the tiny fixture, measured by benchmarks/erf_precision.py (reports/benchmarks/
#: erf_precision.md): 1.42e-1 max-relative. bfloat16 keeps 8 mantissa bits, so the forward pass flips the sign of
#: some activations close to 0 (ReLU masks, the centre's positive channels); which ones depends on the CPU's
#: accumulation order (oneDNN kernels, thread count), hence a 1.5x margin over the measurement.
BF16_TINY_BOUND = 1.5 * 1.42e-1


def _rel(a, ref) -> float:
    return float(np.abs(np.asarray(a, np.float64) - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def tiny(fixtures_dir):
    d = fixture_data(fixtures_dir)
    return torch.from_numpy(d["inputs"]), d["matrix"].astype(np.float64), d["side_lengths"]


@pytest.fixture(scope="module")
def default_result(fixtures_dir, tiny):
    return compute_erf(fixture_model(fixtures_dir), tiny[0], device="cpu")


def test_fp32_is_the_default_and_unchanged(fixtures_dir, tiny, default_result):
    x, golden, _ = tiny
    res = compute_erf(fixture_model(fixtures_dir), x, device="cpu", precision="fp32")
    # same operations in the same order: only thread-scheduling noise of fp32 sums (~1e-7 relative) can differ
    assert _rel(res.matrix, default_result.matrix.astype(np.float64)) < 1e-6
    # and still the official procedure's matrix (fp32 on another machine: fp32 noise, 1e-5 of the maximum)
    assert _rel(res.matrix, golden) < 1e-5
    assert default_result.precision == res.precision == "fp32"
    assert res.precision_note is None  # on CPU nothing is switched or changed
    assert default_result.batch_size == 1  # CPU: no estimate, one image per batch


def test_tf32_on_cpu_is_fp32_and_says_so(fixtures_dir, tiny, default_result):
    x = tiny[0]
    res = compute_erf(fixture_model(fixtures_dir), x, device="cpu", precision="tf32")
    assert res.precision == "fp32" and "plain fp32" in res.precision_note
    # plain fp32 on CPU: equal to the fp32 run up to fp32 summation noise (~1e-7 relative)
    assert _rel(res.matrix, default_result.matrix.astype(np.float64)) < 1e-6
    _, meta = C.accumulate_erf(fixture_model(fixtures_dir), x[:1, :, :64, :64], device="cpu", precision="tf32")
    assert meta.precision == "fp32" and meta.precision_requested == "tf32"
    assert "cpu" in meta.precision_note and "TF32" in meta.precision_note


def test_bf16_is_refused_without_the_allowance(fixtures_dir, tiny):
    # bf16 moved a square in the measurements (ResNet-152 at 1024): refused before the model is touched, and the
    # error says what was measured and how to proceed
    model = fixture_model(fixtures_dir)
    for call in (lambda: compute_erf(model, tiny[0], device="cpu", precision="bf16"),
                 lambda: compute_erfs(model, tiny[0], layers="stages", device="cpu", precision="bf16"),
                 lambda: C.accumulate_erfs(model, tiny[0], layers="stages", device="cpu", precision="bf16"),
                 lambda: C.accumulate_erf(model, tiny[0], device="cpu", precision="bf16")):
        with pytest.raises(ErftoolsError, match=r"area ratios.*3\.0e-01.*squares moved.*allow_low_precision=True"):
            call()
    assert not model.is_reparameterized and getattr(model, "_erftools_prepared", None) is None
    assert C.MEASURED_ERRORS["bf16"]["sides_changed"] and not C.MEASURED_ERRORS["tf32"]["sides_changed"]


def test_bf16_on_the_tiny_fixture_within_the_measured_bound(fixtures_dir, tiny, caplog):
    x, golden, sides = tiny
    with caplog.at_level(logging.WARNING, logger="erftools.erf.precision"):
        res = compute_erf(fixture_model(fixtures_dir), x, device="cpu", precision="bf16", allow_low_precision=True)
    assert res.precision == "bf16" and "autocast" in res.precision_note
    err = _rel(res.matrix, golden)
    assert err < BF16_TINY_BOUND
    assert err > 1e-4  # bf16 really ran (fp32 is ~1e-7 away)
    assert np.isfinite(res.matrix).all() and res.matrix.dtype == np.float32 and res.num_images == 3
    # the warning names the measured error
    assert any("'bf16'" in r.getMessage() and "3.0e-01" in r.getMessage() for r in caplog.records)
    # the squares of the measurement did not move on this fixture
    assert [a.side for a in area_ratios(res.matrix, (0.2, 0.3, 0.5, 0.99))] == [int(s) for s in sides]


def test_bf16_for_several_layers_records_the_precision(fixtures_dir, tiny):
    accs, meta = C.accumulate_erfs(fixture_model(fixtures_dir), tiny[0][:1], layers=["stages.0", "stages.1"],
                                   device="cpu", precision="bf16", allow_low_precision=True)
    assert meta.precision == meta.precision_requested == "bf16" and meta.allow_low_precision
    res = compute_erfs(fixture_model(fixtures_dir), tiny[0][:1], layers=["stages.0", "stages.1"], device="cpu",
                       precision="bf16", allow_low_precision=True)
    assert [r.precision for r in res.values()] == ["bf16", "bf16"]
    assert all(np.isfinite(r.matrix).all() and r.matrix.max() > 0 for r in res.values())


def test_unknown_precision_is_refused_before_the_model_is_touched(fixtures_dir, tiny):
    model = fixture_model(fixtures_dir)
    for call in (lambda: compute_erf(model, tiny[0], device="cpu", precision="fp16"),
                 lambda: compute_erfs(model, tiny[0], layers="stages", device="cpu", precision="FP32"),
                 lambda: C.accumulate_erf(model, tiny[0], device="cpu", precision="bfloat16")):
        with pytest.raises(ErftoolsError, match=r"unknown precision .*'fp32', 'tf32', 'bf16'"):
            call()
    assert not model.is_reparameterized and getattr(model, "_erftools_prepared", None) is None


def test_float64_model_computes_in_float64(fixtures_dir, tiny):
    x = tiny[0]
    model = fixture_model(fixtures_dir).double()
    res = compute_erf(model, x[:1, :, :64, :64], device="cpu")  # small: float64 depthwise kernels are slow
    assert res.precision == "fp64" and "float64" in res.precision_note
    assert res.total.dtype == np.float64 and np.isfinite(res.matrix).all() and res.matrix.max() > 0
    with pytest.raises(ErftoolsError, match="needs a float32 model"):
        compute_erf(model, x[:1], device="cpu", precision="bf16", allow_low_precision=True)


def test_precision_context_sets_and_restores_the_tf32_switches():
    # the switches are plain flags: setting them needs no GPU; the context only touches them for a CUDA device
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    cuda = torch.device("cuda", 0)
    try:
        for before in (True, False):
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = before
            for precision, inside in (("fp32", False), ("bf16", False), ("tf32", True)):
                with C.precision_context(precision, cuda):
                    assert torch.backends.cuda.matmul.allow_tf32 is inside
                    assert torch.backends.cudnn.allow_tf32 is inside
                assert torch.backends.cuda.matmul.allow_tf32 is before and torch.backends.cudnn.allow_tf32 is before
            with pytest.raises(RuntimeError, match="boom"), C.precision_context("tf32", cuda):
                raise RuntimeError("boom")
            assert torch.backends.cudnn.allow_tf32 is before  # restored after an error too
            with C.precision_context("tf32", torch.device("cpu")):
                assert torch.backends.cudnn.allow_tf32 is before  # CPU: left alone
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_default_layout_per_device_and_precision():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert all(C.default_channels_last(cpu, p) for p in C.PRECISIONS)
    assert C.default_channels_last(cuda, "bf16")
    assert not C.default_channels_last(cuda, "fp32") and not C.default_channels_last(cuda, "tf32")


# --------------------------------------------------------------------------------------------------------------
# automatic batch size with a mocked free-memory figure
# --------------------------------------------------------------------------------------------------------------
def _small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)).eval()


def test_activation_estimate_counts_every_output():
    net = _small_net()
    got = C.activation_bytes_per_image(net, net, (32, 32), torch.device("cpu"))
    # documented estimate: all leaf outputs (8+8+4 channels x 32x32 float32), two of the largest (the gradients
    # alive at once), three copies of the image (input, its gradient, the map)
    outputs = (8 + 8 + 4) * 32 * 32 * 4
    assert got == outputs + 2 * 8 * 32 * 32 * 4 + 3 * 3 * 32 * 32 * 4
    # proportional to the number of pixels; bf16 autocast halves the convolution outputs
    assert C.activation_bytes_per_image(net, net, (64, 64), torch.device("cpu")) == 4 * got
    assert C.activation_bytes_per_image(net, net, (32, 32), torch.device("cpu"), precision="bf16") < got


def test_auto_batch_size_from_mocked_free_memory(monkeypatch):
    net = _small_net()
    per_image = C.activation_bytes_per_image(net, net, (32, 32), torch.device("cpu"))
    seen = []

    def mem_get_info(device=None):
        seen.append(device)
        return free, 80 * 2**30

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    for free, want in ((10 * per_image, 8),  # 80 % of the free memory: 8 images
                       (per_image // 2, 1),  # not even one fits: 1 (out-of-memory halving has the last word)
                       (10**6 * per_image, C.MAX_AUTO_BATCH)):  # capped
        est = C.auto_batch_size(net, net, (32, 32), torch.device("cpu"))
        assert est == {"batch_size": want, "bytes_per_image": per_image, "free_bytes": free}
    assert seen == [torch.device("cpu")] * 3


def test_cuda_batch_size_is_estimated_only_when_not_given(monkeypatch):
    calls = []
    monkeypatch.setattr(B, "auto_batch_size", lambda fwd, model, hw, dev, **kw: calls.append(hw) or {
        "batch_size": 6, "bytes_per_image": 1, "free_bytes": 6})
    net, cuda, x = _small_net(), torch.device("cuda", 0), torch.zeros(5, 3, 40, 24)
    assert B.choose_batch_size(None, cuda, x, net, net, "fp32", False)[0] == 6 and calls == [(40, 24)]
    assert B.choose_batch_size(3, cuda, x, net, net, "fp32", False) == (3, None)
    assert B.choose_batch_size(None, cuda, iter([x]), net, net, "fp32", False) == (4, None)  # size unknown
    assert B.choose_batch_size(None, torch.device("cpu"), x, net, net, "fp32", False) == (1, None)
    assert calls == [(40, 24)]
    with pytest.raises(ErftoolsError, match="batch_size must be at least 1"):
        B.choose_batch_size(0, cuda, x, net, net, "fp32", False)


# --------------------------------------------------------------------------------------------------------------
# out-of-memory halving, with a fake model that raises torch.cuda.OutOfMemoryError on CPU
# --------------------------------------------------------------------------------------------------------------
class _Fits(nn.Module):
    """A convolution that 'runs out of memory' for batches of more than ``limit`` images; records batch sizes."""

    def __init__(self, limit: int):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 4, 5, padding=2)
        self.limit, self.sizes = limit, []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")
        return self.conv(x)


def _images(n=16):
    return torch.randn(n, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def test_out_of_memory_halves_and_keeps_the_smaller_batch(caplog):
    x = _images()
    fake = _Fits(2)
    with caplog.at_level(logging.WARNING, logger="erftools.erf.precision"):
        res = compute_erf(fake, x, batch_size=8, device="cpu", prepare=False, feature_fn=fake)
    one = _Fits(100)
    expect = compute_erf(one, x, batch_size=1, device="cpu", prepare=False, feature_fn=one)
    assert res.batch_size == 2 and res.num_images == 16
    # 8 and 4 fail once; every later chunk (the rest of the first batch, all of the second) is cut to 2 in advance
    assert fake.sizes == [8, 4] + [2] * 8
    # the same images, the same maps: only the batching changed (fp32 sums in another order, ~1e-7)
    np.testing.assert_allclose(res.matrix, expect.matrix, rtol=1e-6, atol=1e-6 * float(expect.matrix.max()))
    assert sum("out of memory" in r.getMessage() for r in caplog.records) == 2


def test_out_of_memory_halving_for_layers():
    x = _images(6)
    fake = _Fits(1)
    res = compute_erfs(fake, x, layers=["conv"], batch_size=4, device="cpu", prepare=False)["conv"]
    one = _Fits(100)
    expect = compute_erfs(one, x, layers=["conv"], batch_size=1, device="cpu", prepare=False)["conv"]
    assert res.batch_size == 1 and res.num_images == 6
    assert max(fake.sizes[fake.sizes.index(1):]) == 1  # once 1 worked, nothing larger was tried again
    np.testing.assert_allclose(res.matrix, expect.matrix, rtol=1e-6, atol=1e-6 * float(expect.matrix.max()))


def test_out_of_memory_with_one_image_is_a_clear_error_and_other_errors_pass_through():
    fake = _Fits(0)
    with pytest.raises(ErftoolsError, match=r"out of memory computing one image of \(12, 12\) px.*smaller images"):
        compute_erf(fake, _images(2), batch_size=2, device="cpu", prepare=False, feature_fn=fake)

    def broken(v):
        raise RuntimeError("shape mismatch somewhere")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        compute_erf(_Fits(9), _images(2), batch_size=2, device="cpu", prepare=False, feature_fn=broken)


def test_input_gradient_only_layers_under_bf16_autocast():
    # prepare_model's convolutions / linear layers that keep only the input's shape must give, under autocast,
    # the input gradient that plain autograd gives for the same bf16 forward pass
    from erftools.erf._frozen import freeze_convolutions

    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            return self.fc(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    plain, frozen = Net().eval(), Net().eval()
    frozen.load_state_dict(plain.state_dict())
    for m in (plain, frozen):
        for p in m.parameters():
            p.requires_grad_(False)
    assert freeze_convolutions(frozen) == 2
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    maps = [C.contribution_maps(m, x, precision="bf16") for m in (plain, frozen)]
    assert maps[0].dtype == torch.float32 and maps[0].max() > 0
    # the same bf16 operations in both; only the order of the backward sums may differ (bf16 products summed in
    # float32: ~1e-3 relative)
    torch.testing.assert_close(maps[1], maps[0], rtol=1e-2, atol=1e-2 * float(maps[0].max()))
    # and bf16 really changed something against fp32 (the check above would pass trivially otherwise)
    assert not torch.allclose(maps[0], C.contribution_maps(plain, x), rtol=1e-5, atol=0)
