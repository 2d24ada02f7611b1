import numpy as np
import pytest
import torch
import torch.nn as nn

from erftools import ErftoolsError
from erftools.erf import area_ratios, compute_erf, feature_map

from ._erf_helpers import fixture_data, fixture_model, tiny_resnet


def _close(a, ref, rel=1e-5):
    np.testing.assert_allclose(a, ref, rtol=rel, atol=rel * float(np.abs(ref).max()))


@pytest.mark.parametrize("prepare", [True, False])
def test_reproduces_official_fixture(fixtures_dir, prepare):
    d = fixture_data(fixtures_dir)
    model = fixture_model(fixtures_dir)
    res = compute_erf(model, torch.from_numpy(d["inputs"]), prepare=prepare, device="cpu")
    assert res.matrix.dtype == np.float32 and res.matrix.shape == (128, 128)
    _close(res.matrix, d["matrix"])
    assert res.num_images == 3 and res.num_skipped == 0
    assert res.feature_shape == tuple(int(v) for v in d["feature_map_shape"])
    for r, side, ratio in zip(area_ratios(res.matrix, d["thresholds"]), d["side_lengths"], d["area_ratios"]):
        assert r.side == int(side) and r.area_ratio == ratio
    extra = area_ratios(res.matrix, d["extra_thresholds"])
    assert extra[0].side == int(d["extra_side_lengths"][0]) and extra[1].side is None
    if prepare:  # the fast path really was taken
        assert res.prepared["fuse_bn"] and res.prepared["structural_reparam"] and res.prepared["frozen_parameters"]
        assert model.is_reparameterized
        assert not any(p.requires_grad for p in model.parameters())
    else:
        assert not res.prepared["fuse_bn"] and not model.is_reparameterized


def test_per_image_maps_match_fixture(fixtures_dir):
    from erftools.erf import contribution_maps

    d = fixture_data(fixtures_dir)
    model = fixture_model(fixtures_dir)
    maps = contribution_maps(feature_map(model), torch.from_numpy(d["inputs"]))
    for got, ref in zip(maps.numpy(), d["per_image_maps"]):
        _close(got, ref)


def test_batched_equals_one_at_a_time(fixtures_dir):
    d = fixture_data(fixtures_dir)
    x = torch.from_numpy(d["inputs"])
    model = fixture_model(fixtures_dir)
    one = compute_erf(model, x, batch_size=1, device="cpu")
    three = compute_erf(model, x, batch_size=3, device="cpu")
    two = compute_erf(model, x, batch_size=2, device="cpu")  # uneven last batch
    _close(three.matrix, one.matrix, 1e-6)
    _close(two.matrix, one.matrix, 1e-6)
    assert one.num_images == two.num_images == three.num_images == 3


def test_iterable_of_batches_and_single_image(fixtures_dir):
    d = fixture_data(fixtures_dir)
    x = torch.from_numpy(d["inputs"])
    model = fixture_model(fixtures_dir)
    ref = compute_erf(model, x, device="cpu")
    it = compute_erf(model, iter([x[:2], (x[2:], torch.zeros(1))]), batch_size=2, device="cpu")
    _close(it.matrix, ref.matrix, 1e-6)
    single = compute_erf(model, x[0], device="cpu")
    assert single.num_images == 1 and single.matrix.shape == (128, 128)


def test_nan_maps_are_skipped_and_counted():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    for p in conv.parameters():
        p.requires_grad_(False)

    def features(x):  # the gradient depends on x, so a NaN pixel poisons that image's map only
        return conv(x * x.mean(dim=(1, 2, 3), keepdim=True))

    x = torch.randn(3, 3, 16, 16)
    bad = x.clone()
    bad[1, 0, 0, 0] = float("nan")
    res = compute_erf(conv, bad, feature_fn=features, batch_size=3, device="cpu", prepare=False)
    assert res.num_images == 2 and res.num_skipped == 1 and res.num_nan == 1
    assert res.skipped[0]["file"] == "#1"
    ref = compute_erf(conv, x[[0, 2]], feature_fn=features, device="cpu", prepare=False)
    _close(res.matrix, ref.matrix, 1e-6)
    with pytest.raises(ErftoolsError, match="no image"):
        compute_erf(conv, bad[1:2], feature_fn=features, device="cpu", prepare=False)


def test_timm_resnet_layer4():
    model = tiny_resnet()
    adapter = feature_map(model)
    assert adapter.name == "timm.resnet.layer4"
    x = torch.randn(2, 3, 64, 64)
    res = compute_erf(model, x, device="cpu")
    assert res.feature_shape == (1, 512, 2, 2)
    assert res.matrix.shape == (64, 64) and res.matrix.max() > 0
    assert res.prepared["channels_last"] and res.prepared["fuse_bn"]


def _tiny_swin(img_size):
    from timm.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    return SwinTransformer(img_size=img_size, embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
                           window_size=7, num_classes=0).eval()


def test_swin_last_stage_nhwc_to_nchw_with_padded_windows():
    model = _tiny_swin(96)  # grids 24, 12, 6, 3: 24 and 12 are not multiples of the 7x7 window (timm pads)
    adapter = feature_map(model)
    assert adapter.name == "timm.swin.layers[-1]"
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        y = adapter(x)
        ref = model.layers(model.patch_embed(x))
    assert y.shape == (1, 64, 3, 3)
    torch.testing.assert_close(y, ref.permute(0, 3, 1, 2))
    res = compute_erf(model, x, device="cpu")
    assert np.isfinite(res.matrix).all() and res.matrix.max() > 0


def test_swin_at_1024_has_a_32x32_last_stage():
    """Swin-B's layout at 1024x1024 (window 7, grids 256/128/64/32; 32 % 7 != 0) with tiny widths."""
    model = _tiny_swin(1024)
    res = compute_erf(model, torch.randn(1, 3, 1024, 1024), device="cpu")
    assert res.feature_shape == (1, 64, 32, 32)
    assert res.matrix.shape == (1024, 1024) and res.matrix[512, 512] > 0


def test_model_kwargs_for_size():
    from erftools.erf import model_kwargs_for_size

    assert model_kwargs_for_size("swin-B", 1024) == {"img_size": 1024}
    assert model_kwargs_for_size("resnet-152", 1024) == {}
    assert model_kwargs_for_size("replknet-31B", 1024) == {}


def test_vit_tokens_reshaped_to_grid():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2, num_classes=0).eval()
    adapter = feature_map(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = adapter(x)
        tokens = model.forward_features(x)
    assert y.shape == (2, 32, 4, 4)
    torch.testing.assert_close(y[:, :, 1, 2], tokens[:, 1 + 1 * 4 + 2])  # cls token dropped, row-major grid
    res = compute_erf(model, x, device="cpu")
    assert res.matrix.shape == (64, 64)


class _Fake(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.num_features = 8
        if kind == "nhwc":
            self.output_fmt = "NHWC"

    def forward_features(self, x):
        y = self.conv(x)
        if self.kind == "nhwc":
            return y.permute(0, 2, 3, 1)
        if self.kind == "pooled":
            return y.mean((2, 3))
        return y


def test_generic_layouts_and_clear_errors():
    x = torch.randn(1, 3, 16, 16)
    nhwc = _Fake("nhwc")
    with torch.no_grad():
        torch.testing.assert_close(feature_map(nhwc)(x), nhwc.conv(x))
    with pytest.raises(ErftoolsError, match="_Fake.*no spatial layout"):
        compute_erf(_Fake("pooled"), x, device="cpu")
    with pytest.raises(ErftoolsError, match="Sequential"):
        feature_map(nn.Sequential(nn.Conv2d(3, 3, 1)))
    with pytest.raises(ErftoolsError, match="images must be"):
        compute_erf(_Fake("nchw"), torch.randn(2, 1, 8, 8), device="cpu")


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def test_resnet_fast_path_equals_plain_model():
    """BN folding, input-gradient-only convolutions and channels-last change nothing but the speed."""
    x = torch.randn(2, 3, 64, 64)
    plain = tiny_resnet()
    _randomize_bn(plain)
    fast = tiny_resnet()
    _randomize_bn(fast)
    ref = compute_erf(plain, x, device="cpu", prepare=False)
    res = compute_erf(fast, x, device="cpu")
    assert res.prepared["fuse_bn"] and res.prepared["channels_last"] and res.prepared["input_grad_only_layers"] > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    _close(res.matrix, ref.matrix)


def test_input_grad_only_convolutions_are_exact():
    from erftools.erf._frozen import freeze_convolutions

    torch.manual_seed(0)
    for layout in (torch.contiguous_format, torch.channels_last):
        for groups, k, stride in ((1, 1, 1), (8, 3, 2), (8, 7, 1), (2, 3, 1)):
            conv = nn.Conv2d(8, 8, k, stride=stride, padding=k // 2, groups=groups).to(memory_format=layout)
            conv.requires_grad_(False)
            x = torch.randn(2, 8, 17, 17).contiguous(memory_format=layout).requires_grad_(True)
            (g_ref,) = torch.autograd.grad((conv(x) ** 2).sum(), x)
            assert freeze_convolutions(conv) == 1
            y = conv(x)
            assert y.grad_fn is not None and "InputGradConv" in type(y.grad_fn).__name__
            (g,) = torch.autograd.grad((y ** 2).sum(), x)
            torch.testing.assert_close(g, g_ref, rtol=0, atol=0)
            assert g.is_contiguous(memory_format=layout)
