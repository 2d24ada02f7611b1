"""RepLKNet against the golden data made with the official implementation."""
from __future__ import annotations

import pytest
import torch

from erftools.models import RepLKNet, count_parameters, create_model

from ..conftest import load_golden_json

FIXTURES = ["replknet_tiny.pt", "replknet_tiny_xl.pt"]
ATOL = 1e-6


def _load(fixtures_dir, name):
    return torch.load(fixtures_dir / name, map_location="cpu", weights_only=True)


def _record_intermediates(model, x):
    out = {}
    hooks = []
    names = [f"stem.{i}" for i in range(4)] + [f"stages.{i}" for i in range(4)] + \
            [f"transitions.{i}" for i in range(3)] + ["norm"]
    modules = dict(model.named_modules())
    for n in names:
        hooks.append(modules[n].register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, o.detach().clone())))
    logits = model(x)
    for h in hooks:
        h.remove()
    return logits, out


@pytest.mark.parametrize("name", FIXTURES)
def test_training_time_model_matches_official(fixtures_dir, name):
    fx = _load(fixtures_dir, name)
    model = RepLKNet(**fx["config"]).eval()
    model.load_state_dict(fx["state_dict"], strict=True)
    assert list(model.state_dict().keys()) == list(fx["state_dict"].keys())  # same layout, same order
    with torch.no_grad():
        feats = model.forward_features(fx["input"])
        logits, inter = _record_intermediates(model, fx["input"])
    torch.testing.assert_close(feats, fx["features"], atol=ATOL, rtol=0)
    torch.testing.assert_close(logits, fx["logits"], atol=ATOL, rtol=0)
    assert set(inter) == set(fx["intermediates"])
    for k, v in fx["intermediates"].items():
        torch.testing.assert_close(inter[k], v, atol=ATOL, rtol=0, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("name", FIXTURES)
def test_structural_reparam_matches_official(fixtures_dir, name):
    fx = _load(fixtures_dir, name)
    model = RepLKNet(**fx["config"]).eval()
    model.load_state_dict(fx["state_dict"], strict=True)
    model.structural_reparam()
    assert model.is_reparameterized
    sd = model.state_dict()
    assert list(sd.keys()) == list(fx["reparam_state_dict"].keys())
    for k, v in fx["reparam_state_dict"].items():
        torch.testing.assert_close(sd[k], v, atol=ATOL, rtol=0, msg=lambda m: f"{k}: {m}")
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(fx["input"]), fx["reparam_features"], atol=ATOL, rtol=0)
        torch.testing.assert_close(model(fx["input"]), fx["reparam_logits"], atol=ATOL, rtol=0)
    # idempotent
    model.structural_reparam()
    assert list(model.state_dict().keys()) == list(fx["reparam_state_dict"].keys())


@pytest.mark.parametrize("name", FIXTURES)
def test_reparam_state_dict_loads_into_merged_model(fixtures_dir, name):
    fx = _load(fixtures_dir, name)
    merged = RepLKNet(**fx["config"], small_kernel_merged=True).eval()
    merged.load_state_dict(fx["reparam_state_dict"], strict=True)
    with torch.no_grad():
        torch.testing.assert_close(merged(fx["input"]), fx["reparam_logits"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", FIXTURES)
def test_fuse_bn_is_exact(fixtures_dir, name):
    fx = _load(fixtures_dir, name)
    model = RepLKNet(**fx["config"]).eval()
    model.load_state_dict(fx["state_dict"], strict=True)
    model.fuse_bn()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for n, m in model.named_modules() if n != "norm")
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(fx["input"]), fx["features"], atol=2e-6, rtol=1e-5)
        torch.testing.assert_close(model(fx["input"]), fx["logits"], atol=2e-6, rtol=1e-5)


def test_fuse_bn_refuses_training_mode(fixtures_dir):
    fx = _load(fixtures_dir, "replknet_tiny.pt")
    model = RepLKNet(**fx["config"]).train()
    with pytest.raises(RuntimeError, match="eval"):
        model.fuse_bn()


KEY_LISTS = {"replknet-31B": "RepLKNet-31B", "replknet-31L": "RepLKNet-31L", "replknet-XL": "RepLKNet-XL",
             "replknet-13": "ERF/RepLKNet-13", "replknet-31": "ERF/RepLKNet-31B"}


@pytest.fixture(scope="module")
def official_keys(fixtures_dir):
    return load_golden_json(fixtures_dir, "replknet_keys.json")


@pytest.mark.parametrize("name", list(KEY_LISTS))
def test_state_dict_layout_and_parameter_counts(official_keys, name):
    ref = official_keys[KEY_LISTS[name]]
    with torch.device("meta"):  # no memory for the 335M-parameter XL
        model = create_model(name, weights="random")
    for mode in ("train", "reparam"):
        if mode == "reparam":
            _reparam_meta(model)
        expected = [(k, list(s)) for k, s in ref[mode]["keys"]]
        got = [(k, list(v.shape)) for k, v in model.state_dict().items()]
        assert got == expected, f"{name} {mode}: first difference " + str(
            next(((a, b) for a, b in zip(got, expected) if a != b), (len(got), len(expected))))
        assert count_parameters(model) == ref[mode]["num_parameters"]


def _reparam_meta(model):
    """structural_reparam() on a meta-device model (shapes only)."""
    from erftools.models.replknet import ReparamLargeKernelConv
    from erftools.ops import DepthwiseConv2d

    for m in model.modules():
        if isinstance(m, ReparamLargeKernelConv) and not hasattr(m, "lkb_reparam"):
            src = m.lkb_origin.conv
            with torch.device("meta"):
                m.lkb_reparam = DepthwiseConv2d(src.in_channels, src.out_channels, src.kernel_size, src.stride,
                                                src.padding, groups=src.groups, bias=True)
            del m.lkb_origin
            if hasattr(m, "small_conv"):
                del m.small_conv


def test_31b_parameter_count_on_real_tensors():
    model = create_model("replknet-31B", weights="random")
    assert count_parameters(model) == 79_864_168
    model.structural_reparam()
    assert count_parameters(model) == 79_527_272
