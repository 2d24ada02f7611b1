"""UniRepLKNet in both measurements: the ERF preparation (re-parameterisation, channels-last, backend) keeps the
official outputs, the target is the last stage, ``stages`` expands, and the theoretical receptive field traces the
dilated branches (the same field before and after merging them)."""
import pytest
import torch

from erftools.erf.adapters import feature_map
from erftools.erf.layers import stage_layers
from erftools.erf.theoretical import theoretical_rf
from erftools.models.prepare import prepare_for_inference
from erftools.models.unireplknet import UniRepLKNet
from erftools.ops import DepthwiseConv2d

from ..conftest import golden_file


@pytest.fixture(scope="module")
def tiny(fixtures_dir):
    return torch.load(golden_file(fixtures_dir, "unireplknet_tiny.pt"), map_location="cpu", weights_only=True)


def test_preparation_reparameterises_and_keeps_the_official_last_stage(tiny):
    model = UniRepLKNet(**tiny["config"])
    model.load_state_dict(tiny["state_dict"])
    done = prepare_for_inference(model, "cpu", channels_last=True)
    assert done["structural_reparam"] and done["fuse_bn"] and done["conv_backend"] == "native"
    assert all(m.backend == "native" for m in model.modules() if isinstance(m, DepthwiseConv2d))
    assert not any(p.requires_grad for p in model.parameters())
    adapter = feature_map(model)
    assert adapter.name == "unireplknet.forward_features"
    with torch.no_grad():
        out = adapter(tiny["input"].contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, tiny["reparam_stages"][3], atol=1e-5, rtol=0)
    assert stage_layers(model) == ["stages.0", "stages.1", "stages.2", "stages.3"]


def _rf_by_hand(kernels_per_stage):
    """Stem: two 3x3 stride-2 convs; each stage's blocks at jump 4 * 2**i; a 3x3 stride-2 conv before stages 1-3."""
    r, j = 1 + 2 * 1, 2
    r, j = r + 2 * j, j * 2
    for i, ks in enumerate(kernels_per_stage):
        if i:
            r, j = r + 2 * j, j * 2
        for k in ks:
            r += (k - 1) * j if k else 0  # kernel 0: an identity
    return r


@pytest.mark.parametrize("kernels", [((3,), (13,), (13, 5), (7,)), ((0, 17), (15,), (11, 9), (5,))])
def test_theoretical_rf_traces_the_dilated_branches(kernels):
    model = UniRepLKNet(depths=tuple(len(k) for k in kernels), dims=(8, 16, 24, 32), kernel_sizes=kernels,
                        num_classes=3).eval()
    rf = theoretical_rf(model)
    side = _rf_by_hand(kernels)
    assert rf.side == (side, side) and rf.stride == (32, 32)
    assert "channel gates" in rf.reason  # SE and GRN: global per-channel scales, said, not counted
    model.structural_reparam()
    assert theoretical_rf(model).side == (side, side)


@pytest.mark.parametrize("with_beta", [True, False])
@pytest.mark.parametrize("step_bytes", [None, 1, 1400])
def test_input_grad_only_grn_equals_autograd_of_the_module(with_beta, step_bytes, monkeypatch):
    """The ERF's closed-form GRN input gradient against autograd through the module's own forward, in float64, with
    non-zero gammas, unequal channel norms and one all-zero channel (the norm's subgradient there is 0); the spatial
    sums in one step, row by row, and in steps of 2 rows of the 5 (a remainder)."""
    from erftools.erf._frozen import freeze_convolutions
    from erftools.models import _unireplknet_fast
    from erftools.models.unireplknet import GRNwithNHWC

    if step_bytes is not None:  # one row of (7, 6) float64 for each of the 2 images is 672 bytes
        monkeypatch.setattr(_unireplknet_fast, "SUM_STEP_BYTES", step_bytes)

    g = torch.Generator().manual_seed(3)
    grn = GRNwithNHWC(6, use_bias=with_beta).double()
    with torch.no_grad():
        grn.gamma.copy_(torch.randn(grn.gamma.shape, generator=g, dtype=torch.float64))
        if with_beta:
            grn.beta.copy_(torch.randn(grn.beta.shape, generator=g, dtype=torch.float64))
    grn.requires_grad_(False)
    x = torch.randn(2, 5, 7, 6, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3, 6, dtype=torch.float64)
    x[1, :, :, 2] = 0
    upstream = torch.randn(x.shape, generator=g, dtype=torch.float64)
    x.requires_grad_(True)
    ref_out = grn(x)
    (ref,) = torch.autograd.grad((ref_out * upstream).sum(), x)
    assert freeze_convolutions(grn) == 1
    out = grn(x)
    assert "InputGradGRN" in type(out.grad_fn).__name__
    (got,) = torch.autograd.grad((out * upstream).sum(), x)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    assert torch.isfinite(got).all()
    grn.gamma.requires_grad_(True)  # training: the module's own ops, so that gamma gets its gradient
    assert "InputGradGRN" not in type(grn(x).grad_fn).__name__


@pytest.mark.parametrize("channels_last", [True, False])
def test_input_grad_only_se_equals_autograd_of_the_module(channels_last):
    """The ERF's closed-form squeeze-and-excitation input gradient (the gate's dependence on the spatial mean through
    both 1x1 convolutions and the ReLU, some of whose units are off) against autograd through the module, float64;
    the gradient keeps the incoming gradient's memory layout; hooks on a child or a trainable weight keep the
    module's ops."""
    from erftools.erf._frozen import freeze_convolutions
    from erftools.models.unireplknet import SEBlock

    g = torch.Generator().manual_seed(5)
    se = SEBlock(8, 4).double()
    with torch.no_grad():
        for p in se.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    se.requires_grad_(False)
    x = torch.randn(2, 8, 5, 7, generator=g, dtype=torch.float64)
    upstream = torch.randn(x.shape, generator=g, dtype=torch.float64)
    if channels_last:  # the ERF's layout, in which the gradient arrives too
        x, upstream = (t.contiguous(memory_format=torch.channels_last) for t in (x, upstream))
    x.requires_grad_(True)
    ref_out = se(x)
    (ref,) = torch.autograd.grad((ref_out * upstream).sum(), x)
    with torch.no_grad():
        units = se.down(x.mean((2, 3), keepdim=True))
    assert (units > 0).any() and (units <= 0).any()  # both sides of the ReLU are exercised
    assert freeze_convolutions(se) == 3  # the SE and its two 1x1 convolutions
    out = se(x)
    assert "InputGradSE" in type(out.grad_fn).__name__
    (got,) = torch.autograd.grad((out * upstream).sum(), x)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    assert got.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    handle = se.up.register_forward_hook(lambda *a: None)
    assert "InputGradSE" not in type(se(x).grad_fn).__name__
    handle.remove()
    se.up.weight.requires_grad_(True)
    assert "InputGradSE" not in type(se(x).grad_fn).__name__


def test_channels_first_layer_norm_fused_equals_the_module():
    """The prepared model's fused LayerNorm over the channels of a channels-last NCHW tensor: the module's output and
    input gradient (float64); NCHW-contiguous input and channels_last-format modules keep the module's own ops."""
    from erftools.models._unireplknet_fast import speed_up_unireplknet
    from erftools.models.unireplknet import LayerNorm

    g = torch.Generator().manual_seed(6)
    ln = LayerNorm(6, data_format="channels_first").double()
    with torch.no_grad():
        ln.weight.copy_(torch.randn(6, generator=g, dtype=torch.float64))
        ln.bias.copy_(torch.randn(6, generator=g, dtype=torch.float64))
    ln.requires_grad_(False)
    x = (torch.randn(2, 6, 5, 4, generator=g, dtype=torch.float64) * 3 + 1).contiguous(
        memory_format=torch.channels_last).requires_grad_(True)
    upstream = torch.randn(x.shape, generator=g, dtype=torch.float64)
    ref_out = ln(x)
    (ref,) = torch.autograd.grad((ref_out * upstream).sum(), x)
    assert speed_up_unireplknet(ln) == 1
    out = ln(x)
    fused = "NativeLayerNormBackward0"
    assert out.grad_fn.next_functions[0][0].name() == fused and out.is_contiguous(memory_format=torch.channels_last)
    (got,) = torch.autograd.grad((out * upstream).sum(), x)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    plain = ln(x.detach().contiguous().requires_grad_(True)).grad_fn
    assert fused not in (plain.name(), *(f.name() for f, _ in plain.next_functions if f is not None))


def _random_block(dim: int, kernel: int, seed: int):
    """A UniRepLKNet block with every parameter and BN statistic random, in eval mode, float64."""
    from erftools.models.unireplknet import UniRepLKNetBlock

    g = torch.Generator().manual_seed(seed)
    block = UniRepLKNetBlock(dim, kernel).double().eval()
    with torch.no_grad():
        for name, t in [*block.named_parameters(), *block.named_buffers()]:
            if t.dtype.is_floating_point:
                t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) + 0.5 if "running_var" in name
                        else torch.randn(t.shape, generator=g, dtype=t.dtype))
    return block


@pytest.mark.parametrize("kernel", [13, 3])
def test_block_with_grn_and_linear_fused_equals_autograd_of_the_block(kernel, monkeypatch):
    """A deploy-structure block whose GRN and second linear run as one (the scaled tensor never formed): output and
    input gradient against autograd through the training-structure block, float64, two images (one weight per
    image); a hook on the second linear, or a trainable GRN, keeps the module's own ops."""
    import copy

    from erftools.erf import _frozen
    from erftools.models import _unireplknet_fast

    block = _random_block(8, kernel, seed=kernel)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 8, 9, 7, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    upstream = torch.randn(x.shape, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    ref_out = block(x)
    (ref,) = torch.autograd.grad((ref_out * upstream).sum(), x)
    fast = copy.deepcopy(block)
    fast.reparameterize()
    fast.requires_grad_(False)
    _frozen.freeze_convolutions(fast)
    monkeypatch.setattr(_unireplknet_fast, "SUM_STEP_BYTES", 2 * 2 * 7 * 32 * 8)  # the 9 rows in steps of 2
    calls = []
    real = _frozen._InputGradGRNLinear.apply
    monkeypatch.setattr(_frozen._InputGradGRNLinear, "apply", lambda *a: calls.append(1) or real(*a))
    out = fast(x)
    (got,) = torch.autograd.grad((out * upstream).sum(), x)
    assert calls == [1]
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-10)
    handle = fast.pwconv2[0].register_forward_hook(lambda *a: None)
    fast(x)
    handle.remove()
    fast.act[1].gamma.requires_grad_(True)
    fast(x)
    assert calls == [1]  # neither call was fused


def test_fused_grn_linear_where_a_channel_scale_is_zero():
    """A channel whose GRN scale ``gamma n / m + 1`` is exactly 0: the backward cannot divide by it and takes the
    unscaled product; the gradient still equals autograd through the GRN and the linear (float64)."""
    from erftools.erf._frozen import _InputGradGRNLinear
    from erftools.models._unireplknet_fast import grn_scale as _grn_scale
    from erftools.models.unireplknet import GRNwithNHWC

    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 4, 5, 6, generator=g, dtype=torch.float64)
    gamma = torch.randn(1, 1, 1, 6, generator=g, dtype=torch.float64)
    norm, mean, _ = _grn_scale(x, gamma)
    q = norm / mean
    for k in range(1000):  # a gamma_0 with gamma_0 * q_0 == -1 exactly in float64
        gamma[..., 0] = -1 / q[..., 0] * (1 + k * 2.0 ** -52)
        if float(_grn_scale(x, gamma)[2][..., 0]) == 0.0:
            break
    assert float(_grn_scale(x, gamma)[2][..., 0]) == 0.0
    weight = torch.randn(3, 6, generator=g, dtype=torch.float64)
    bias = torch.randn(3, generator=g, dtype=torch.float64)
    grn = GRNwithNHWC(6, use_bias=False).double()
    with torch.no_grad():
        grn.gamma.copy_(gamma)
    upstream = torch.randn(1, 4, 5, 3, generator=g, dtype=torch.float64)
    x.requires_grad_(True)
    (ref,) = torch.autograd.grad((torch.nn.functional.linear(grn(x), weight, bias) * upstream).sum(), x)
    (got,) = torch.autograd.grad((_InputGradGRNLinear.apply(x, gamma, weight, bias) * upstream).sum(), x)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


def test_prepared_erf_equals_the_plain_one_on_the_official_tiny_model(tiny):
    """compute_erf's fast path (deploy structure, channels-last, input-gradient-only convolutions, linears, GRNs and
    SEs, fused LayerNorms)
    against autograd on the official training structure (the fixture's non-zero GRN gammas and betas), batch 1."""
    import numpy as np

    from erftools.erf import compute_erf

    from ..erf._erf_helpers import reference_matrix

    model = UniRepLKNet(**tiny["config"])
    model.load_state_dict(tiny["state_dict"])
    model.eval()
    x = torch.cat([tiny["input"], torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(8))])
    ref = reference_matrix(model.forward_features, x, "paper", "relu")
    got = compute_erf(model, x, device="cpu", batch_size=3)
    assert got.prepared["structural_reparam"] and got.prepared["input_grad_only_layers"] > 0
    np.testing.assert_allclose(got.matrix, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))


def _random_model(seed: int) -> UniRepLKNet:
    """A small UniRepLKNet with random BN statistics, GRN gammas and betas, in eval mode, float64."""
    g = torch.Generator().manual_seed(seed)
    model = UniRepLKNet(num_classes=7, depths=(1, 1, 2, 1), dims=(8, 16, 24, 32),
                        kernel_sizes=((13,), (3,), (5, 0), (7,))).double().eval()
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if t.dtype.is_floating_point and ("gamma" in name or "beta" in name or "running" in name):
                t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) + 0.5 if "running_var" in name
                        else torch.randn(t.shape, generator=g, dtype=t.dtype) * 0.5)
    return model


def _reference_and_prepared(seed: int, x: torch.Tensor):
    """``_random_model(seed)``, its logits on ``x`` (no autograd), and a prepared (channels-last) copy of it."""
    import copy

    model = _random_model(seed)
    with torch.no_grad():
        ref = model(x)
    prepared = copy.deepcopy(model)
    prepare_for_inference(prepared, "cpu", channels_last=True)
    return model, ref, prepared


@pytest.mark.parametrize("min_positions", [0, 10**9])
def test_prepared_inference_equals_the_module_on_both_grn_paths(min_positions, monkeypatch):
    """The prepared model's fast forwards without autograd (GRN by a stepped sum of squares, the GRN folded into each
    image's weight, or scaled in place and one product for the batch): the logits of the unprepared training
    structure in float64, three images; with autograd on, the modules' own ops."""
    from erftools.models import _unireplknet_fast as fast

    monkeypatch.setattr(fast, "PER_IMAGE_WEIGHT_MIN_POSITIONS", min_positions)
    monkeypatch.setattr(fast, "SUM_STEP_BYTES", 3 * 24 * 32 * 8 * 2)  # stage 0's 24 rows (4C = 32) in steps of 2
    x = torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _, ref, prepared = _reference_and_prepared(5, x)
    calls = []
    real = fast.grn_scale
    monkeypatch.setattr(fast, "grn_scale", lambda *a: calls.append(1) or real(*a))
    with torch.inference_mode():
        got = prepared(x.contiguous(memory_format=torch.channels_last))
    assert len(calls) == 5  # every block's GRN took the fast path
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    calls.clear()
    with torch.enable_grad():
        prepared(x.requires_grad_(True))
    assert calls == []


def test_prepared_inference_falls_back_where_a_hook_holds_the_gelu_output():
    """The in-place scaling must not reach a tensor someone else holds: with a forward hook on a block's GELU the
    block runs its own ops, and the hooked output is the GELU's (not the GRN-scaled) tensor. The training structure
    (GRN with beta, fuse=False) takes the fast GRN alone."""
    import copy

    from erftools.models import _unireplknet_fast as fast

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    model, ref, prepared = _reference_and_prepared(6, x)
    block = prepared.stages[2][0]
    seen = []
    block.act[0].register_forward_hook(lambda m, i, o: seen.append((o, o.clone())))
    with torch.no_grad():
        got = prepared(x)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    held, copy_at_hook = seen[0]
    assert torch.equal(held, copy_at_hook)
    training = copy.deepcopy(model)
    prepare_for_inference(training, "cpu", fuse=False)
    assert hasattr(training.stages[0][0].act[1], "beta") and training.stages[0][0].act[1]._erftools_fast_forward
    assert fast.speed_up_unireplknet(training) == 5 + 5 + 5  # blocks, GRNs, channels-first LayerNorms; idempotent
    with torch.no_grad():
        torch.testing.assert_close(training(x), ref, rtol=1e-10, atol=1e-10)


def test_a_copy_of_a_prepared_model_runs_its_own_weights():
    """The prepared forwards (inference and ERF) are bound to their module, so ``copy.deepcopy`` of a prepared model
    computes with the copy's weights: scaled in the copy, its logits and input gradient equal those of a plain
    deploy-structure model loaded with the copy's state dict, and the original's are unchanged."""
    import copy

    from erftools.erf import compute_erf

    model = _random_model(7)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    compute_erf(model, x, device="cpu", batch_size=2)  # prepares and freezes the model in place
    with torch.no_grad():
        before = model(x)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(1.1)
    plain = UniRepLKNet(num_classes=7, depths=(1, 1, 2, 1), dims=(8, 16, 24, 32),
                        kernel_sizes=((13,), (3,), (5, 0), (7,)), deploy=True).double().eval()
    plain.load_state_dict(twin.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(twin(x), plain(x), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    grads = []
    for m in (twin, plain):
        xi = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)
        grads.append(torch.autograd.grad(m.forward_features(xi)[:, :, 1, 1].relu().sum(), xi)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-12)
