"""ERFs of any layer: golden per-stage matrices from the official code, shortcuts, preparation and capture rules."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from erftools import ErftoolsError
from erftools.erf import area_ratios, compute_erf, compute_erfs, expand_layers, stage_layers

from ._erf_helpers import fixture_data, fixture_model, stages_golden, tiny_resnet



def _close(a, ref, rel=1e-5):
    np.testing.assert_allclose(a, ref, rtol=rel, atol=rel * float(np.abs(ref).max()))


@pytest.mark.parametrize("prepare", [True, False])
def test_stages_reproduce_official_golden(fixtures_dir, prepare):
    """Official RepLKNet + forward hooks + official get_input_grad (tests/erf/data/README.md) per stage.

    Tolerance 1e-5 of the maximum: the prepared model folds BNs and merges kernels (other fp32 roundings), runs
    channels-last and sums images in float64; each of these moves a value by a few fp32 ulps per layer (measured
    max error 5e-7 of the maximum), far below 1e-5, while a wrong target (another tensor, a missed ReLU, the
    wrong centre) changes the matrix by far more than 1 %.
    """
    g = np.load(stages_golden(fixtures_dir))
    x = torch.from_numpy(fixture_data(fixtures_dir)["inputs"])
    res = compute_erfs(fixture_model(fixtures_dir), x, layers="stages", prepare=prepare, device="cpu")
    assert list(res) == [str(s) for s in g["stages"]] == ["stages.0", "stages.1", "stages.2", "stages.3"]
    for i, (name, r) in enumerate(res.items()):
        assert r.layer == name and r.num_images == 3 and r.target == f"module:{name}"
        assert r.feature_shape == tuple(int(v) for v in g["feature_shapes"][i])
        _close(r.matrix, g["matrices"][i])
        for a, side, ratio in zip(area_ratios(r.matrix, g["thresholds"]), g["side_lengths"][i], g["area_ratios"][i]):
            assert a.side == int(side) and a.area_ratio == ratio  # area ratio: side/H*side/W of the same ints
    # the ERF grows with depth (square of the 50 % threshold)
    assert [int(s) for s in g["side_lengths"][:, 2]] == sorted(int(s) for s in g["side_lengths"][:, 2])


def test_golden_last_stage_is_the_final_feature_map(fixtures_dir):
    """stages.3 is RepLKNet's forward_features output: the golden file agrees with the older erf_tiny fixture,
    and compute_erf(layer=) agrees with the default target."""
    g = np.load(stages_golden(fixtures_dir))
    d = fixture_data(fixtures_dir)
    _close(g["matrices"][3], d["matrix"], 1e-6)  # both made by the official code, same inputs
    x = torch.from_numpy(d["inputs"])
    default = compute_erf(fixture_model(fixtures_dir), x, device="cpu")
    one = compute_erf(fixture_model(fixtures_dir), x, device="cpu", layer="stages.3")
    assert default.layer is None and one.layer == "stages.3"
    _close(one.matrix, default.matrix, 1e-6)


def test_layers_together_equal_layers_alone(fixtures_dir):
    x = torch.from_numpy(fixture_data(fixtures_dir)["inputs"][:2])
    both = compute_erfs(fixture_model(fixtures_dir), x, layers=["stages.1", "stages.0"], device="cpu", batch_size=2)
    assert list(both) == ["stages.1", "stages.0"]
    alone = compute_erf(fixture_model(fixtures_dir), x, device="cpu", layer="stages.0")
    _close(both["stages.0"].matrix, alone.matrix, 1e-6)


def test_a_layer_that_preparation_removes_is_refused_before_anything_changes(fixtures_dir):
    model = fixture_model(fixtures_dir)
    x = torch.from_numpy(fixture_data(fixtures_dir)["inputs"][:1])
    name = "stages.0.blocks.0.large_kernel.lkb_origin.bn"
    with pytest.raises(ErftoolsError, match=r"lkb_origin\.bn.*removed.*prepare=False"):
        compute_erfs(model, x, layers=[name], device="cpu")
    assert not model.is_reparameterized  # nothing was changed
    with pytest.raises(ErftoolsError, match=r"pw1\.conv.*weights are rewritten"):
        compute_erf(model, x, device="cpu", layer="stages.0.blocks.0.pw1.conv")
    with pytest.raises(ErftoolsError, match=r"prelkb_bn.*replaced"):
        compute_erf(model, x, device="cpu", layer="stages.0.blocks.0.prelkb_bn")
    res = compute_erf(model, x, device="cpu", layer=name, prepare=False)  # the model as given
    assert res.matrix.max() > 0 and res.feature_shape == (1, model.stem[0].conv.out_channels, 32, 32)
    compute_erf(model, x, device="cpu")  # prepared now: the module is gone, and the error says why
    with pytest.raises(ErftoolsError, match=r"no module named .*lkb_origin\.bn.*lkb_reparam.*prepared .*"
                                            r"build the model again and pass prepare=False"):
        compute_erf(model, x, device="cpu", layer=name)


def test_an_enclosing_module_is_kept_by_preparation(fixtures_dir):
    x = torch.from_numpy(fixture_data(fixtures_dir)["inputs"][:2])
    name = "stages.0.blocks.0.large_kernel"  # its branches are merged, its output is the same tensor
    fast = compute_erf(fixture_model(fixtures_dir), x, device="cpu", layer=name)
    plain = compute_erf(fixture_model(fixtures_dir), x, device="cpu", layer=name, prepare=False)
    assert fast.prepared["structural_reparam"]
    _close(fast.matrix, plain.matrix)


def test_forward_stops_after_the_deepest_layer(fixtures_dir):
    model = fixture_model(fixtures_dir)
    calls = []
    model.stages[1].register_forward_hook(lambda *a: calls.append(1))
    x = torch.from_numpy(fixture_data(fixtures_dir)["inputs"])
    compute_erfs(model, x, layers=["stages.0"], device="cpu", batch_size=1)
    assert len(calls) == 1  # the first batch runs the whole forward (checks), the other two stop at stages.0


def test_stage_shortcuts_of_known_families():
    import timm

    assert stage_layers(tiny_resnet()) == ["layer1", "layer2", "layer3", "layer4"]
    convnext = timm.create_model("convnext_atto", pretrained=False, num_classes=0)
    assert expand_layers(convnext, "stages") == ["stages.0", "stages.1", "stages.2", "stages.3"]
    from timm.models.swin_transformer import SwinTransformer

    swin = SwinTransformer(img_size=64, embed_dim=8, depths=(1, 1), num_heads=(1, 1), window_size=4, num_classes=0)
    assert expand_layers(swin, "stages,layers.0") == ["layers.0", "layers.1"]
    with pytest.raises(ErftoolsError, match="does not know the stages of Sequential.*named_modules"):
        expand_layers(nn.Sequential(nn.Conv2d(3, 3, 1)), "stages")

    class Staged(nn.Module):  # another model with the common layout: a stages list
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3)
            self.stages = nn.Sequential(nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3))

    assert expand_layers(Staged(), "stem,stages") == ["stem", "stages.0", "stages.1"]
    with pytest.raises(ErftoolsError, match="no module named 'layer9'"):
        expand_layers(tiny_resnet(), ["layer9"])
    with pytest.raises(ErftoolsError, match="one, use compute_erfs"):
        compute_erf(tiny_resnet(), torch.randn(1, 3, 32, 32), layer="stages")


class _InplaceAfter(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        y.mul_(2.0)  # changes the conv's output tensor in place
        return self.conv2(y)


def test_output_changed_in_place_later_is_still_the_modules_output():
    model = _InplaceAfter().eval()
    x = torch.randn(2, 3, 16, 16)
    got = compute_erf(model, x, layer="conv", device="cpu", prepare=False)
    ref = compute_erf(model, x, feature_fn=lambda t: model.conv(t), device="cpu", prepare=False)
    _close(got.matrix, ref.matrix, 1e-6)
    doubled = compute_erf(model, x, feature_fn=lambda t: 2 * model.conv(t), device="cpu", prepare=False)
    _close(doubled.matrix, 2 * got.matrix, 1e-6)  # what the in-place change would have given: twice the map


def test_nhwc_and_token_layers_are_made_nchw():
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    swin = SwinTransformer(img_size=64, embed_dim=8, depths=(1, 1), num_heads=(1, 1), window_size=4,
                           num_classes=0).eval()
    x = torch.randn(1, 3, 64, 64)
    res = compute_erf(swin, x, layer="layers.1", device="cpu", prepare=False)
    ref = compute_erf(swin, x, device="cpu", prepare=False)  # the final adapter: layers[-1], NHWC -> NCHW
    assert res.feature_shape == ref.feature_shape == (1, 16, 8, 8)
    _close(res.matrix, ref.matrix, 1e-6)
    conv = compute_erf(swin, x, layer="patch_embed.proj", device="cpu", prepare=False)  # a conv: NCHW as is
    assert conv.feature_shape == (1, 8, 16, 16)
    vit = VisionTransformer(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, num_classes=0).eval()
    tok = compute_erf(vit, x, layer="blocks.0", device="cpu")
    assert tok.feature_shape == (1, 32, 4, 4)


def test_a_shared_module_is_refused():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.conv(self.act(x)))

    with pytest.raises(ErftoolsError, match="'act' runs 2 times"):
        compute_erf(Shared(), torch.randn(1, 3, 8, 8), layer="act", device="cpu", prepare=False)


def test_result_statistics_use_the_layer():
    model = tiny_resnet()
    res = compute_erfs(model, torch.randn(1, 3, 64, 64), layers="layer1,layer2", device="cpu")
    stats = res["layer1"].statistics(model)
    assert stats["theoretical_rf"]["target"] == "layer1" and stats["theoretical_rf"]["side"] == [43, 43]
    assert res["layer2"].statistics(model)["theoretical_rf"]["side"] == [99, 99]
    assert stats["shape"] == [64, 64] and stats["gaussian"]["ok"]
