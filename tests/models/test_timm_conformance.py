"""RepLKNet as a timm model: pretrained configs, features_only / forward_intermediates, heads, TorchScript and FX in
the training-time and the re-parameterised form, and pretrained_cfg_overlay loading of every checkpoint layout.

Numbers are checked against the golden official outputs of the tiny fixture (replknet_tiny.pt) wherever they apply;
timm's own test suite (tests/test_models.py of the installed timm) runs on the full variants in .ci/timm_suite.sh.
"""
import hashlib
import re

import pytest
import timm
import torch
from timm.layers import create_feature_extractor

import erftools.models  # noqa: F401  (registers the variants with timm)
from erftools import ErftoolsError
from erftools.models._registry import REGISTRY
from erftools.models.replknet import RepLKNet, ScriptableDepthwiseConv2d
from erftools.ops import DepthwiseConv2d

from ..conftest import load_golden_json
from ..loopback import serve

# The fixture's outputs were made by the official code; 1e-6 absolute is the tolerance the golden tests use (the two
# input rows differ by ~1e-4 in their logits, so anything looser would not notice a wrong row).
ATOL = 1e-6
# TorchScript and FX rebuild the same float32 operations; TorchScript runs the large kernels through PyTorch's own
# convolution whatever eager's backend, so results may differ by float32 rounding only (~1e-7 relative here).
RTOL_FP32 = 1e-5


@pytest.fixture(scope="module")
def tiny(fixtures_dir):
    return torch.load(fixtures_dir / "replknet_tiny.pt", map_location="cpu", weights_only=True)


def _arch(tiny):
    """The fixture's constructor arguments, minus the ones timm passes itself (num_classes) or that are defaults."""
    return {k: v for k, v in tiny["config"].items() if k not in ("num_classes", "use_checkpoint", "use_sync_bn")}


def _timm_tiny(tiny, path=None, scriptable=False, **kwargs):
    """replknet_31b.in1k with the fixture's architecture, from a local file when ``path`` is given (offline)."""
    overlay = dict(num_classes=tiny["config"]["num_classes"])
    if path is not None:
        overlay["file"] = str(path)
    return timm.create_model("replknet_31b.in1k", pretrained=path is not None, pretrained_cfg_overlay=overlay,
                             scriptable=scriptable, **_arch(tiny), **kwargs).eval()


# ---- pretrained configs ----------------------------------------------------------------------------------------
def test_every_openmmlab_file_of_the_protocol_is_a_pretrained_tag(shared):
    """The six OpenMMLab mirror files listed in the protocol are each the URL of one pretrained tag, whose
    preprocessing matches the resolution in the file name and the protocol's normalisation."""
    files = sorted(set(re.findall(r"replknet-[\w.-]+?\.pth", (shared / "docs" / "protocol.md").read_text())))
    assert len(files) == 6
    cfgs = {name: timm.get_pretrained_cfg(name) for name in timm.list_pretrained("replknet*")}
    by_file = {c.url.rsplit("/", 1)[-1]: (name, c) for name, c in cfgs.items() if c.url}
    assert sorted(by_file) == files
    for fname, (name, cfg) in by_file.items():
        m = re.search(r"-(\d+)px_", fname)
        size = int(m.group(1)) if m else 224
        assert cfg.input_size == (3, size, size) and cfg.pool_size == (size // 32, size // 32), name
        assert cfg.crop_pct == (0.875 if size == 224 else 1.0)
        assert cfg.interpolation == "bicubic" and cfg.num_classes == 1000
        half = fname.startswith("replknet-XL")  # the XL model is trained on inputs normalised with mean = std = 0.5
        assert cfg.mean == ((0.5,) * 3 if half else (0.485, 0.456, 0.406)), name
        assert cfg.std == ((0.5,) * 3 if half else (0.229, 0.224, 0.225)), name
        assert cfg.url.startswith("https://download.openmmlab.com/mmclassification/v0/replknet/")
        sha_prefix = fname.rsplit("-", 1)[1].split(".")[0]
        assert any(sha_prefix in note for note in cfg.notes), name
        assert cfg.license == "mit" and cfg.paper_ids == "arXiv:2203.06717"
        assert cfg.origin_url == "https://github.com/DingXiaoH/RepLKNet-pytorch"
        assert cfg.first_conv == "stem.0.conv" and cfg.classifier == "head"
    assert timm.get_pretrained_cfg("replknet_31b").tag == "in1k"  # the registry's default weights


def test_every_registry_variant_is_a_timm_model():
    variants = {e.name.lower().replace("-", "_") for e in REGISTRY.values() if e.family == "replknet"}
    assert variants == set(timm.list_models("replknet*"))
    assert {"replknet_31b", "replknet_31l", "replknet_xl", "replknet_3", "replknet_13", "replknet_31"} <= variants


def test_timm_model_has_the_official_state_dict_layout(fixtures_dir):
    ref = load_golden_json(fixtures_dir, "replknet_keys.json")["RepLKNet-31B"]["train"]
    model = timm.create_model("replknet_31b", device="meta")
    got = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert got == [(k, list(s)) for k, s in ref["keys"]]
    assert all(t.device.type == "meta" for t in model.state_dict().values())


def test_manual_only_weights_say_where_to_get_them():
    with pytest.raises(ErftoolsError, match="drive.google.com.*pretrained_cfg_overlay"):
        timm.create_model("replknet_13", pretrained=True)
    with pytest.raises(ErftoolsError, match="no published pretrained weights"):
        timm.create_model("replknet_7", pretrained=True)


# ---- loading local files in every layout ---------------------------------------------------------------------
def _save(tmp_path, tiny, layout):
    sd = tiny["state_dict"]
    path = tmp_path / f"{layout}.pth"
    if layout == "bare":
        torch.save(sd, path)
    elif layout == "module-prefix":
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    elif layout == "nested":
        torch.save({"model_state": sd, "epoch": 3}, path)
    elif layout == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "tiny.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


@pytest.mark.parametrize("source", ["replknet_tiny.pt", "replknet_tiny_mmpretrain.pth",
                                    "replknet_tiny_official_wrapped.pth", "bare", "module-prefix", "nested",
                                    "safetensors"])
def test_overlay_file_in_any_layout_loads_the_official_weights(fixtures_dir, tmp_path, tiny, source):
    path = fixtures_dir / source if source.endswith((".pt", ".pth")) else _save(tmp_path, tiny, source)
    model = _timm_tiny(tiny, path)
    sd = model.state_dict()
    assert list(sd) == list(tiny["state_dict"])
    for k, v in tiny["state_dict"].items():  # a load is a copy: exact
        assert torch.equal(sd[k], v), k
    with torch.no_grad():
        torch.testing.assert_close(model(tiny["input"]), tiny["logits"], atol=ATOL, rtol=0)


def test_overlay_file_reparameterised_checkpoint_gives_a_merged_model(tmp_path, tiny):
    path = tmp_path / "tiny_reparam.pth"
    torch.save({"state_dict": tiny["reparam_state_dict"]}, path)
    model = _timm_tiny(tiny, path)
    assert model.is_reparameterized
    assert list(model.state_dict()) == list(tiny["reparam_state_dict"])
    with torch.no_grad():
        torch.testing.assert_close(model(tiny["input"]), tiny["reparam_logits"], atol=ATOL, rtol=0)


def test_overlay_file_errors_are_clear(tmp_path, fixtures_dir, tiny):
    with pytest.raises(ErftoolsError, match="small_kernel_merged"):
        _timm_tiny(tiny, fixtures_dir / "replknet_tiny.pt", small_kernel_merged=True)
    with pytest.raises(ErftoolsError, match="missing from the checkpoint.*small_conv"):
        _timm_tiny(tiny, fixtures_dir / "replknet_tiny_xl.pt")


def test_new_class_count_and_one_input_channel_adapt_like_timm(fixtures_dir, tiny):
    model = timm.create_model("replknet_31b.in1k", pretrained=True, num_classes=3, in_chans=1,
                              pretrained_cfg_overlay=dict(file=str(fixtures_dir / "replknet_tiny.pt"),
                                                          num_classes=10), **_arch(tiny))
    assert model.head.out_features == 3 and model.in_chans == 1
    # timm's adapt_input_conv sums the RGB filters for a single input channel
    torch.testing.assert_close(model.stem[0].conv.weight, tiny["state_dict"]["stem.0.conv.weight"].sum(1, True))
    assert torch.equal(model.stages[1].blocks[0].pw1.conv.weight,
                       tiny["state_dict"]["stages.1.blocks.0.pw1.conv.weight"])


@pytest.fixture()
def served(tmp_path, fixtures_dir):
    root = tmp_path / "www"
    root.mkdir()
    data = (fixtures_dir / "replknet_tiny_mmpretrain.pth").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    (root / f"replknet-tiny_in1k-{sha[:8]}.pth").write_bytes(data)
    (root / f"replknet-tiny_bad-{sha[:8]}.pth").write_bytes(data[:-100] + bytes(100))
    return root, sha


def test_pretrained_url_is_downloaded_with_its_hash_checked(served, tiny):
    from erftools._download import HashMismatchError

    root, sha = served
    with serve(root) as (base, log):
        overlay = dict(url=f"{base}/replknet-tiny_in1k-{sha[:8]}.pth", num_classes=10)
        model = timm.create_model("replknet_31b.in1k", pretrained=True, pretrained_cfg_overlay=overlay,
                                  **_arch(tiny)).eval()
        with pytest.raises(HashMismatchError):
            timm.create_model("replknet_31b.in1k", pretrained=True, **_arch(tiny),
                              pretrained_cfg_overlay=dict(overlay, url=f"{base}/replknet-tiny_bad-{sha[:8]}.pth"))
    with torch.no_grad():
        torch.testing.assert_close(model(tiny["input"]), tiny["logits"], atol=ATOL, rtol=0)
    assert [r[0] for r in log][0] == f"replknet-tiny_in1k-{sha[:8]}.pth"


# ---- features ----------------------------------------------------------------------------------------------------
def test_features_only_gives_the_official_stage_outputs(fixtures_dir, tiny):
    feats = timm.create_model("replknet_31b.in1k", pretrained=True, features_only=True, **_arch(tiny),
                              pretrained_cfg_overlay=dict(file=str(fixtures_dir / "replknet_tiny.pt"),
                                                          num_classes=10)).eval()
    assert feats.feature_info.channels() == tiny["config"]["channels"]
    assert feats.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        outs = feats(tiny["input"])
    assert len(outs) == 4
    for i, (o, c, r) in enumerate(zip(outs, feats.feature_info.channels(), feats.feature_info.reduction())):
        assert tuple(o.shape) == (2, c, 64 // r, 64 // r)
        torch.testing.assert_close(o, tiny["intermediates"][f"stages.{i}"], atol=ATOL, rtol=0)


def test_features_only_out_indices_prunes_the_rest(tiny):
    feats = timm.create_model("replknet_31b", features_only=True, out_indices=(0, 2), **_arch(tiny)).eval()
    ch = tiny["config"]["channels"]
    assert feats.feature_info.channels() == [ch[0], ch[2]]
    assert len(feats.model.stages) == 3 and len(feats.model.transitions) == 2
    assert not any(n.startswith(("head.", "norm.")) for n, _ in feats.named_parameters())
    with torch.no_grad():
        assert [tuple(o.shape) for o in feats(torch.randn(1, 3, 64, 64))] == [(1, ch[0], 16, 16), (1, ch[2], 4, 4)]


def _random_bn_stats(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def test_forward_intermediates_equal_the_official_out_indices_outputs(tiny):
    """With stage norms (norm_intermediate_features), forward_intermediates == the official dense mode."""
    arch = dict(_arch(tiny), norm_intermediate_features=True)
    model = _random_bn_stats(RepLKNet(**arch, num_classes=10)).eval()
    dense = RepLKNet(**arch, num_classes=None, out_indices=(0, 1, 2, 3)).eval()
    dense.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(("norm.", "head."))})
    x = tiny["input"]
    with torch.no_grad():
        expected = dense(x)
        final, inter = model.forward_intermediates(x)
        some = model.forward_intermediates(x, indices=[1, -1], intermediates_only=True)
        early = model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
        normed = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        features = model.forward_features(x)
    # the same float operations in the same order: only the tolerance of the golden tests is allowed
    for a, b in zip(inter, expected):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    torch.testing.assert_close(final, features, atol=ATOL, rtol=0)
    torch.testing.assert_close(some[0], expected[1], atol=ATOL, rtol=0)
    torch.testing.assert_close(some[1], expected[3], atol=ATOL, rtol=0)
    torch.testing.assert_close(early[0], expected[1], atol=ATOL, rtol=0)
    torch.testing.assert_close(normed[0], model.norm(expected[3]), atol=ATOL, rtol=0)
    assert not torch.allclose(normed[0], expected[3])  # the norm really was applied


def test_pruned_model_taps_equal_the_full_models(tiny):
    model = _random_bn_stats(RepLKNet(**_arch(tiny), num_classes=10)).eval()
    x = tiny["input"]
    with torch.no_grad():
        taps = model.forward_intermediates(x, intermediates_only=True)
        kept = model.prune_intermediate_layers([1])
        assert kept == [1] and model.num_features == model.head_hidden_size == tiny["config"]["channels"][1]
        pruned = model.forward_intermediates(x, indices=kept, intermediates_only=True)
        features = model.forward_features(x)
    torch.testing.assert_close(pruned[0], taps[1], atol=ATOL, rtol=0)
    torch.testing.assert_close(features, taps[1], atol=ATOL, rtol=0)
    assert model(x).shape == (2, tiny["config"]["channels"][1], 8, 8)  # head and pooling pruned


# ---- heads -------------------------------------------------------------------------------------------------------
def test_forward_head_pre_logits_and_reset_classifier(fixtures_dir, tiny):
    model = _timm_tiny(tiny, fixtures_dir / "replknet_tiny.pt")
    x = tiny["input"]
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        torch.testing.assert_close(feats, tiny["features"], atol=ATOL, rtol=0)
        # the official head: BN, global average pool, linear
        torch.testing.assert_close(model.head(pre), tiny["logits"], atol=ATOL, rtol=0)
        torch.testing.assert_close(pre, model.norm(tiny["features"]).mean((2, 3)), atol=ATOL, rtol=1e-6)
        width = tiny["config"]["channels"][-1]
        assert model.head_hidden_size == model.num_features == pre.shape[1] == width
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pre, atol=ATOL, rtol=0)
        model.reset_classifier(7, "")
        assert model.num_classes == 7 and model.get_classifier().out_features == 7
        model.reset_classifier(0)
        assert model(x).shape == (2, width, 2, 2)  # pooling stays off until asked for again
        model.reset_classifier(0, "avg")
        assert model(x).shape == (2, width)


def test_grad_checkpointing_gives_the_same_gradients(tiny):
    torch.manual_seed(0)
    a = timm.create_model("replknet_31b", num_classes=5, **_arch(tiny)).train()
    b = timm.create_model("replknet_31b", num_classes=5, **_arch(tiny)).train()
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing()
    assert b.grad_checkpointing and all(s.grad_checkpointing for s in b.stages)
    x = torch.randn(2, 3, 32, 32)
    for m in (a, b):
        m(x).square().sum().backward()
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        # recomputation repeats the same operations: float32 rounding at most
        torch.testing.assert_close(pa.grad, pb.grad, rtol=RTOL_FP32, atol=1e-6, msg=n)


def test_group_matcher_orders_stem_blocks_head(tiny):
    from timm.models._manipulate import group_parameters

    model = RepLKNet(**_arch(tiny), num_classes=10)
    groups = group_parameters(model, model.group_matcher())
    order = [g for g in groups]
    first = {n: i for i, g in enumerate(order) for n in groups[g]}
    assert first["stem.0.conv.weight"] < first["stages.0.blocks.0.pw1.conv.weight"] < \
        first["transitions.0.0.conv.weight"] < first["stages.1.blocks.0.pw1.conv.weight"] < first["head.weight"]


# ---- TorchScript and FX --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["training-time", "reparameterised"])
def test_torchscript_equals_eager_and_the_official_outputs(fixtures_dir, tiny, form):
    model = _timm_tiny(tiny, fixtures_dir / "replknet_tiny.pt")
    expected = tiny["logits"]
    if form == "reparameterised":
        model.structural_reparam()
        expected = tiny["reparam_logits"]
    scripted = torch.jit.script(model)
    # scripting works on a copy: the eager model keeps its dispatching convolutions and shares the parameters
    assert all(type(m) is DepthwiseConv2d for m in model.modules() if isinstance(m, DepthwiseConv2d))
    assert scripted.stem[0].conv.weight.data_ptr() == model.stem[0].conv.weight.data_ptr()
    with torch.no_grad():
        eager = model(tiny["input"])
        out = scripted(tiny["input"])
    torch.testing.assert_close(eager, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(out, eager, atol=ATOL, rtol=RTOL_FP32)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=RTOL_FP32)


def test_scriptable_build_and_features_only_script(tiny):
    with timm.layers.set_scriptable(True):
        model = timm.create_model("replknet_31b", features_only=True, **_arch(tiny)).eval()
    assert any(isinstance(m, ScriptableDepthwiseConv2d) for m in model.modules())
    x = torch.randn(1, 3, 64, 64)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        for a, b in zip(scripted(x), model(x)):
            torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL_FP32)


@pytest.mark.parametrize("form", ["training-time", "reparameterised"])
def test_fx_feature_extraction_equals_eager(fixtures_dir, tiny, form):
    # built as timm builds models that are to be scripted (set_scriptable), so that the FX graph can be scripted too
    model = _timm_tiny(tiny, fixtures_dir / "replknet_tiny.pt", scriptable=True)
    if form == "reparameterised":
        model.structural_reparam()
    fx = create_feature_extractor(model, return_nodes={"stages.1": "c3", "head": "logits"})
    # the large-kernel convolutions stay leaf modules (their backend dispatch is not symbolic)
    assert isinstance(fx.get_submodule("stages.0.blocks.0.large_kernel"
                                       + (".lkb_reparam" if form == "reparameterised" else ".lkb_origin.conv")),
                      DepthwiseConv2d)
    with torch.no_grad():
        out = fx(tiny["input"])
        eager = model(tiny["input"])
    expected = tiny["reparam_logits"] if form == "reparameterised" else tiny["logits"]
    torch.testing.assert_close(out["logits"], eager, atol=ATOL, rtol=RTOL_FP32)
    torch.testing.assert_close(out["logits"], expected, atol=ATOL, rtol=RTOL_FP32)
    if form == "training-time":
        torch.testing.assert_close(out["c3"], tiny["intermediates"]["stages.1"], atol=ATOL, rtol=RTOL_FP32)
    scripted = torch.jit.script(fx)  # FX, then TorchScript (timm's test_model_forward_fx_torchscript)
    with torch.no_grad():
        torch.testing.assert_close(scripted(tiny["input"])["logits"], eager, atol=ATOL, rtol=RTOL_FP32)
