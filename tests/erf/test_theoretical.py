"""Theoretical receptive fields, checked against sizes worked out by hand with r' = r + (k - 1) * d * j, j' = j * s
(r: field size, j: jump, both in input pixels; k kernel, d dilation, s stride)."""
import pytest
import torch
import torch.nn as nn

from erftools.erf.statistics import erf_statistics
from erftools.erf.theoretical import theoretical_rf

from ._erf_helpers import fixture_model, tiny_resnet


def test_plain_stack_with_stride_and_dilation():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                        nn.Conv2d(4, 4, 3, dilation=2, padding=2))
    # r: 1 -> 3 -> 5 (j 1 -> 2) -> 5 + 2 * 2 * 2 = 13
    assert theoretical_rf(net, "0").side == (3, 3)
    rf = theoretical_rf(net, "3")
    assert rf.side == (13, 13) and rf.stride == (2, 2) and rf.reason is None
    pooled = nn.Sequential(nn.Conv2d(3, 4, 7, stride=2, padding=3), nn.MaxPool2d(3, 2, padding=1),
                           nn.Conv2d(4, 4, (1, 5), padding=(0, 2)))
    # 7 (j 2) -> 7 + 2 * 2 = 11 (j 4) -> rows 11, cols 11 + 4 * 4 = 27
    assert theoretical_rf(pooled, "1").side == (11, 11)
    assert theoretical_rf(pooled, "2").side == (11, 27) and theoretical_rf(pooled, "2").stride == (4, 4)


class _Block(nn.Module):
    """A bottleneck with a strided shortcut: main 1x1 -> 3x3 s2 -> 1x1, shortcut 1x1 s2, then a 5x5."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.c = nn.Conv2d(4, 4, 1)
        self.short = nn.Conv2d(3, 4, 1, stride=2)
        self.after = nn.Conv2d(4, 4, 5, padding=2)

    def forward(self, x):
        y = self.c(torch.relu(self.b(self.a(x)))) + self.short(x)
        return self.after(y)


def test_parallel_branches_take_the_larger_field():
    # main path: 1 -> 3 (j 2) -> 3; shortcut: 1 (j 2); sum: 3; then 3 + 4 * 2 = 11. (Walking the modules in
    # order would count the shortcut's stride twice: 3 + 4 * 4 = 19.)
    rf = theoretical_rf(_Block(), "after")
    assert rf.side == (11, 11) and rf.stride == (2, 2)


def test_global_operations_and_attention_have_no_theoretical_field():
    class SE(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.out = nn.Identity()

        def forward(self, x):
            y = self.conv(x)
            return self.out(y * y.mean((2, 3), keepdim=True).sigmoid())

    rf = theoretical_rf(SE(), "out")
    assert rf.side is None and "whole input" in rf.reason
    assert theoretical_rf(SE(), "conv").side == (3, 3)
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=32, patch_size=16, embed_dim=16, depth=1, num_heads=2, num_classes=0)
    rf = theoretical_rf(vit)
    assert rf.side is None and "attention" in rf.reason
    stats = erf_statistics(torch.rand(32, 32).numpy() + 0.1, model=vit)
    assert stats["theoretical_rf"]["side"] is None and stats["effective_to_theoretical"] is None


def test_replknet_stages(golden_dir):
    """Tiny RepLKNet (kernels 13, 11, 9, 7; small kernel 5; blocks 1, 1, 2, 1):
    stem 3x3 s2 -> 3 (j 2); dw 3x3 -> 7; 1x1; dw 3x3 s2 -> 11 (j 4);
    stage 0: 13x13 (the 5x5 branch beside it is smaller) -> 11 + 12 * 4 = 59;
    transition dw 3x3 s2 -> 67 (j 8); stage 1: + 10 * 8 = 147;
    transition -> 163 (j 16); stage 2: two blocks + 2 * 8 * 16 = 419;
    transition -> 451 (j 32); stage 3: + 6 * 32 = 643 (the final feature map)."""
    model = fixture_model(golden_dir)
    sides = [theoretical_rf(model, f"stages.{i}").side[0] for i in range(4)]
    assert sides == [59, 147, 419, 643]
    assert theoretical_rf(model).side == (643, 643) and theoretical_rf(model).stride == (32, 32)
    model.fuse_bn()  # re-parameterised: the same field
    assert theoretical_rf(model, "stages.3").side == (643, 643)


def test_timm_resnet_and_convnext():
    import timm

    # ResNet-18: 7x7 s2 -> 7 (j 2); max pool 3 s2 -> 11 (j 4); layer1: four 3x3 -> 11 + 4 * 2 * 4 = 43;
    # layer2: 3x3 s2 -> 51 (j 8), then three 3x3 -> 51 + 3 * 16 = 99; the whole network: 435 (its known value)
    r = tiny_resnet()
    assert theoretical_rf(r, "layer1").side == (43, 43)
    assert theoretical_rf(r, "layer2").side == (99, 99)
    assert theoretical_rf(r).side == (435, 435)
    # ConvNeXt-atto: stem 4x4 s4 -> 4 (j 4); stage 0: two 7x7 -> 4 + 2 * 6 * 4 = 52;
    # stage 1: 2x2 s2 -> 56 (j 8), two 7x7 -> 56 + 2 * 6 * 8 = 152
    c = timm.create_model("convnext_atto", pretrained=False, num_classes=0)
    assert theoretical_rf(c, "stages.0").side == (52, 52)
    assert theoretical_rf(c, "stages.1").side == (152, 152)


def test_statistics_with_a_model(golden_dir):
    model = fixture_model(golden_dir)
    m = torch.rand(128, 128).numpy()
    stats = erf_statistics(m, model=model, layer="stages.0")
    assert stats["theoretical_rf"]["side"] == [59, 59] and stats["theoretical_rf"]["target"] == "stages.0"
    ratios = stats["effective_to_theoretical"]
    sides = {str(r["threshold"]): r["side"] for r in stats["area_ratios"]}
    assert ratios["0.5"] == pytest.approx(sides["0.5"] / 59)


def test_several_layers_in_one_trace():
    from erftools.erf.theoretical import theoretical_rfs

    rfs = theoretical_rfs(tiny_resnet(), ["layer2", None, "layer1"])
    assert list(rfs) == ["layer2", None, "layer1"]
    assert [rfs[k].side[0] for k in rfs] == [99, 435, 43]


class _Gate(nn.Module):
    def forward(self, x):
        return x * x.mean((2, 3), keepdim=True)


def test_a_one_pixel_probe_is_enlarged_so_global_operations_are_seen():
    # six 2x2 stride-2 convolutions: r = 1 + 1 + 2 + 4 + 8 + 16 + 32 = 64, j = 64; a 64 px probe leaves 1 pixel,
    # where a mean over the map would look local: the trace is repeated at 128 px
    convs = [nn.Conv2d(3 if i == 0 else 4, 4, 2, stride=2) for i in range(6)]
    net = nn.Sequential(*convs, _Gate())
    assert theoretical_rf(net, "5").side == (64, 64) and theoretical_rf(net, "5").stride == (64, 64)
    gated = theoretical_rf(net, "6", probe_size=64)
    assert gated.side is None and "whole input" in gated.reason


def test_effective_to_theoretical_is_taken_against_the_theoretical_field():
    """A theoretical field larger than the image: the ratio is side / theoretical side (the number printed beside
    it), not side / image side."""
    from erftools.erf.analysis import AreaRatio
    from erftools.erf.statistics import effective_to_theoretical

    got = effective_to_theoretical([AreaRatio(0.5, 75, 0.0054)], {"side": [9011, 9011]}, (1024, 1024))
    assert got["0.5"] == pytest.approx(75 / 9011)
