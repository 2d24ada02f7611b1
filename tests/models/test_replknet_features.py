"""RepLKNet features beyond the fixtures: dense outputs, checkpointing, drop-path, no global state."""
from __future__ import annotations

import pytest
import torch

from erftools.models import RepLKNet
from erftools.ops import DepthwiseConv2d

SMALL = dict(large_kernel_sizes=[7, 7, 5, 3], layers=[1, 1, 2, 1], channels=[8, 16, 32, 64], small_kernel=3)


def test_out_indices_returns_stage_outputs():
    m = RepLKNet(**SMALL, out_indices=(0, 1, 2, 3), num_classes=None, norm_intermediate_features=True).eval()
    outs = m(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 2, 2)]
    assert isinstance(m.stages[0].norm, torch.nn.BatchNorm2d)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    a = RepLKNet(**SMALL, num_classes=5).train()
    b = RepLKNet(**SMALL, num_classes=5, use_checkpoint=True).train()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    for m in (a, b):
        m(x).square().sum().backward()
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=n)


def test_drop_path_only_in_training():
    torch.manual_seed(0)
    m = RepLKNet(**SMALL, num_classes=5, drop_path_rate=0.5)
    x = torch.randn(4, 3, 32, 32)
    m.eval()
    # eval mode: no path is dropped, so two passes agree; a dropped path (rate 0.5) would change outputs by O(1),
    # while a multi-threaded kernel may reorder sums (fp32 noise, far below 1e-6 here)
    torch.testing.assert_close(m(x), m(x), atol=1e-6, rtol=0)
    m.train()
    torch.manual_seed(1)
    y1 = m(x)
    torch.manual_seed(2)
    assert not torch.allclose(y1, m(x))


def test_sync_bn_is_per_instance_not_global():
    a = RepLKNet(**SMALL, num_classes=5, use_sync_bn=True)
    b = RepLKNet(**SMALL, num_classes=5)
    assert any(isinstance(x, torch.nn.SyncBatchNorm) for x in a.modules())
    assert not any(isinstance(x, torch.nn.SyncBatchNorm) for x in b.modules())


def test_large_kernel_module_is_replaceable_and_keeps_conv_attributes():
    m = RepLKNet(**SMALL, num_classes=5).eval()
    convs = [x for x in m.modules() if isinstance(x, DepthwiseConv2d)]
    assert len(convs) == 2 * 5  # large + small per RepLK block
    c = m.stages[0].blocks[0].large_kernel.lkb_origin.conv
    assert c.kernel_size == (7, 7) and c.padding == (3, 3) and c.stride == (1, 1) and c.groups == 8
    m.set_conv_backend("native")
    assert all(x.backend == "native" for x in m.modules() if isinstance(x, DepthwiseConv2d))
    m.structural_reparam()
    assert isinstance(m.stages[0].blocks[0].large_kernel.lkb_reparam, DepthwiseConv2d)
    assert m.stages[0].blocks[0].large_kernel.lkb_reparam.backend == "native"


def test_bad_configurations_are_rejected():
    with pytest.raises(ValueError, match="small_kernel"):
        RepLKNet(large_kernel_sizes=[3, 3, 3, 3], layers=[1, 1, 1, 1], channels=[8, 8, 8, 8], small_kernel=5)
    with pytest.raises(ValueError, match="one entry per stage"):
        RepLKNet(large_kernel_sizes=[3, 3], layers=[1, 1, 1, 1], channels=[8, 8, 8, 8], small_kernel=None)
