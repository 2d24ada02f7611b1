"""UniRepLKNet's weights, checkpoint layouts, downloads and timm API, against the official golden outputs
(tests/golden and ../shared/fixtures: unireplknet_tiny.pt; tests/golden/unireplknet_cases.pt for the downstream layout)."""
import dataclasses
import hashlib
import re

import pytest
import timm
import torch
from timm.layers import create_feature_extractor

import erftools.models  # noqa: F401  (registers the variants with timm)
from erftools import ErftoolsError
from erftools.models import create_model, get_model_info
from erftools.models._registry import REGISTRY
from erftools.models.unireplknet import UniRepLKNet

from ..conftest import GOLDEN, golden_file
from ..loopback import serve

ATOL = 1e-5  # fp32 noise across CPUs (see test_unireplknet_fixtures)
CASES = GOLDEN / "unireplknet_cases.pt"
VARIANTS = ["A", "F", "P", "N", "T", "S", "B", "L", "XL"]


@pytest.fixture(scope="module")
def tiny(fixtures_dir):
    return torch.load(golden_file(fixtures_dir, "unireplknet_tiny.pt"), map_location="cpu", weights_only=True)


def _arch(tiny):
    return {k: v for k, v in tiny["config"].items() if k != "num_classes"}


def _logits(model, x):
    with torch.no_grad():
        return model(x)


# ---- registry and pretrained configs -----------------------------------------------------------------------------
def test_every_official_file_is_a_registry_weight_and_a_timm_tag():
    """The 14 files of the official code's table, each once, with the hub URL, its classes and its resolution."""
    sources = [(e, w) for e in REGISTRY.values() if e.family == "unireplknet" for w in e.weights]
    files = sorted({w.url.rsplit("/", 1)[1] for _, w in sources})
    assert len(files) == 14 and len({w.url for _, w in sources}) == 14
    for entry, w in sources:
        assert w.url.startswith("https://huggingface.co/DingXiaoH/UniRepLKNet/resolve/main/unireplknet_")
        assert w.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", w.sha256)
        name = f"{entry.name.lower().replace('-', '_')}.{w.tag.replace('-', '_')}"
        cfg = timm.get_pretrained_cfg(name)
        assert cfg.url == w.url
        size = 384 if "_384_" in w.url else 224
        assert cfg.input_size == (3, size, size)
        assert cfg.crop_pct == (1.0 if size == 384 else 0.875) and cfg.interpolation == "bicubic"
        assert cfg.num_classes == (21841 if "in22k_pretrain" in w.url else 1000)
        assert cfg.license == "apache-2.0"
    assert {e.name for e, _ in sources} == {f"unireplknet-{v}" for v in VARIANTS}
    assert sum(w.sha256 is not None for _, w in sources) >= 9


def test_timm_names_and_default_tags():
    assert sorted(timm.list_models("unireplknet_*")) == sorted(f"unireplknet_{v.lower()}" for v in VARIANTS)
    assert timm.get_pretrained_cfg("unireplknet_s").tag == "in1k"
    assert timm.get_pretrained_cfg("unireplknet_b").tag == "in22k_ft_in1k_384"
    assert REGISTRY["unireplknet-b"].preprocessing.input_size == 384


# ---- checkpoint layouts ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["bare", "model", "module", "deploy"])
def test_every_layout_loads_and_reproduces_the_official_logits(tmp_path, tiny, layout):
    sd = tiny["reparam_state_dict"] if layout == "deploy" else tiny["state_dict"]
    obj = {"bare": sd, "model": {"model": sd, "epoch": 3}, "module": {f"module.{k}": v for k, v in sd.items()},
           "deploy": sd}[layout]
    path = tmp_path / f"{layout}.pth"
    torch.save(obj, path)
    model = create_model("unireplknet-A", weights=path, **_arch(tiny))
    assert model.is_reparameterized == (layout == "deploy")
    ref = tiny["reparam_logits"] if layout == "deploy" else tiny["logits"]
    torch.testing.assert_close(_logits(model, tiny["input"]), ref, atol=ATOL, rtol=0)
    model = create_model("unireplknet-A", weights=path, reparam=True, **_arch(tiny))
    torch.testing.assert_close(_logits(model, tiny["input"]), tiny["reparam_logits"], atol=ATOL, rtol=0)


def test_openmmlab_backbone_file_gives_the_downstream_model(tmp_path):
    g = torch.load(CASES, weights_only=True)["downstream"]
    arch = {k: v for k, v in g["config"].items() if k != "num_classes"}
    sd = {f"backbone.{k}": v for k, v in g["state_dict"].items()}
    sd["decode_head.conv_seg.weight"] = torch.zeros(3, 3, 1, 1)
    path = tmp_path / "upernet.pth"
    torch.save({"state_dict": sd, "meta": {"epoch": 1}}, path)
    model = create_model("unireplknet-A", weights=path, **arch)
    assert model.for_downstream
    for a, b in zip(_logits(model, g["input"]), g["outputs"]):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    # the official init_cfg route reads the same file
    official = UniRepLKNet(**dict(g["config"], init_cfg=dict(checkpoint=str(path)))).eval()
    for a, b in zip(_logits(official, g["input"]), g["outputs"]):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_22k_head_size_follows_the_checkpoint(tmp_path, tiny):
    sd = dict(tiny["state_dict"])
    sd["head.weight"], sd["head.bias"] = torch.zeros(21841, 32), torch.zeros(21841)
    torch.save(sd, tmp_path / "in22k.pth")
    model = create_model("unireplknet-A", weights=tmp_path / "in22k.pth", **_arch(tiny))
    assert model.head.out_features == 21841


def test_a_file_that_does_not_fit_names_missing_unexpected_and_misshaped_keys(tmp_path, tiny):
    sd = dict(tiny["state_dict"])
    dilated = next(k for k in sd if ".dil_conv_" in k)  # a dilated branch of a Dilated Reparam Block
    sd.pop(dilated)
    sd["stages.0.0.extra.weight"] = torch.zeros(1)
    sd["norm.weight"] = torch.zeros(5)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ErftoolsError) as err:
        create_model("unireplknet-A", weights=tmp_path / "bad.pth", **_arch(tiny))
    msg = str(err.value)
    assert dilated in msg and "stages.0.0.extra.weight" in msg and "norm.weight (5,)" in msg


# ---- downloads (a loopback server) -------------------------------------------------------------------------------
@pytest.fixture()
def hosted(tmp_path, tiny):
    root = tmp_path / "www"
    root.mkdir()
    torch.save({"model": tiny["state_dict"]}, root / "unireplknet_a_in1k_224_acc77.03.pth")
    data = (root / "unireplknet_a_in1k_224_acc77.03.pth").read_bytes()
    (root / "corrupt.pth").write_bytes(data[:-64] + bytes(64))
    return root, hashlib.sha256(data).hexdigest()


def _point_registry_at(monkeypatch, base, fname, sha):
    from erftools.models import _registry

    entry = _registry.REGISTRY["unireplknet-a"]
    src = dataclasses.replace(entry.weight_source(), url=f"{base}/{fname}", sha256=sha)
    monkeypatch.setitem(_registry.REGISTRY, "unireplknet-a", dataclasses.replace(entry, weights=(src,)))


def test_pretrained_download_is_hash_checked_and_cached(hosted, tiny, monkeypatch, tmp_path):
    from erftools._download import HashMismatchError

    root, sha = hosted
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torchhome"))
    with serve(root) as (base, log):
        _point_registry_at(monkeypatch, base, "unireplknet_a_in1k_224_acc77.03.pth", sha)
        model = create_model("unireplknet-A", weights="pretrained", **_arch(tiny))
        create_model("unireplknet-A", weights="in1k", **_arch(tiny))  # cached: no second request
        _point_registry_at(monkeypatch, base, "corrupt.pth", sha)
        with pytest.raises(HashMismatchError):
            create_model("unireplknet-A", weights="pretrained", **_arch(tiny))
    assert [r[0] for r in log] == ["unireplknet_a_in1k_224_acc77.03.pth", "corrupt.pth"]
    torch.testing.assert_close(_logits(model, tiny["input"]), tiny["logits"], atol=ATOL, rtol=0)
    info = get_model_info(model)
    assert info.weights == "pretrained:in1k" and info.weights_sha256 == sha


def test_unpinned_file_downloads_with_a_warning(hosted, tiny, monkeypatch, tmp_path):
    root, sha = hosted
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torchhome"))
    with serve(root) as (base, _):
        _point_registry_at(monkeypatch, base, "unireplknet_a_in1k_224_acc77.03.pth", None)
        with pytest.warns(UserWarning, match="unverified"):
            model = create_model("unireplknet-A", weights="pretrained", **_arch(tiny))
    assert get_model_info(model).weights_sha256 == sha


def test_timm_pretrained_url_goes_through_the_checked_download(hosted, tiny, tmp_path):
    from erftools._download import HashMismatchError

    root, sha = hosted
    with serve(root) as (base, _):
        overlay = dict(url=f"{base}/unireplknet_a_in1k_224_acc77.03.pth", num_classes=10)
        with pytest.warns(UserWarning, match="unverified"):  # an overlay URL is not the registry's: no pin
            model = timm.create_model("unireplknet_a.in1k", pretrained=True, pretrained_cfg_overlay=overlay,
                                      cache_dir=str(tmp_path / "c1"), **_arch(tiny)).eval()
        torch.testing.assert_close(_logits(model, tiny["input"]), tiny["logits"], atol=ATOL, rtol=0)
        from erftools.models import _timm_unireplknet as tu

        tu._SOURCES[("unireplknet_a", "in1k")] = dataclasses.replace(
            tu._SOURCES[("unireplknet_a", "in1k")], url=f"{base}/corrupt.pth", sha256=sha)
        try:
            with pytest.raises(HashMismatchError):
                timm.create_model("unireplknet_a.in1k", pretrained=True, cache_dir=str(tmp_path / "c2"),
                                  pretrained_cfg_overlay=dict(overlay, url=f"{base}/corrupt.pth"), **_arch(tiny))
        finally:
            tu._SOURCES[("unireplknet_a", "in1k")] = dataclasses.replace(
                tu._SOURCES[("unireplknet_a", "in1k")], url=REGISTRY["unireplknet-a"].weights[0].url,
                sha256=REGISTRY["unireplknet-a"].weights[0].sha256)


# ---- timm API ----------------------------------------------------------------------------------------------------
def _timm_tiny(tiny, fixtures_dir, **kwargs):
    overlay = dict(file=str(golden_file(fixtures_dir, "unireplknet_tiny.pt")), num_classes=10)
    return timm.create_model("unireplknet_a.in1k", pretrained=True, pretrained_cfg_overlay=overlay, **_arch(tiny),
                             **kwargs).eval()


def test_overlay_file_and_features_only_give_the_official_outputs(tiny, fixtures_dir, tmp_path):
    # the shared fixture is a dict with the state dict under 'state_dict' (a wrapper key erftools reads)
    model = _timm_tiny(tiny, fixtures_dir)
    torch.testing.assert_close(_logits(model, tiny["input"]), tiny["logits"], atol=ATOL, rtol=0)
    feats = _timm_tiny(tiny, fixtures_dir, features_only=True)
    assert feats.feature_info.channels() == list(tiny["config"]["dims"])
    assert feats.feature_info.reduction() == [4, 8, 16, 32]
    for a, b in zip(_logits(feats, tiny["input"]), tiny["stages"]):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    torch.save(tiny["reparam_state_dict"], tmp_path / "deploy.pth")
    deploy = timm.create_model("unireplknet_a", pretrained=True, **_arch(tiny),
                               pretrained_cfg_overlay=dict(file=str(tmp_path / "deploy.pth"), num_classes=10)).eval()
    assert deploy.is_reparameterized
    torch.testing.assert_close(_logits(deploy, tiny["input"]), tiny["reparam_logits"], atol=ATOL, rtol=0)


def test_forward_intermediates_head_and_reset_classifier(tiny, fixtures_dir):
    model = _timm_tiny(tiny, fixtures_dir)
    x = tiny["input"]
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        only = model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
    for a, b in zip(inter, tiny["stages"]):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    torch.testing.assert_close(final, tiny["stages"][3], atol=ATOL, rtol=0)
    torch.testing.assert_close(only[0], tiny["stages"][1], atol=ATOL, rtol=0)
    torch.testing.assert_close(model.head(pre), tiny["logits"], atol=ATOL, rtol=0)
    model.reset_classifier(0)
    torch.testing.assert_close(_logits(model, x), pre, atol=ATOL, rtol=0)
    model.reset_classifier(3, "")
    assert _logits(model, x).shape == (2, 3, 2, 2)  # NCHW: every position classified


@pytest.mark.parametrize("form", ["train", "deploy"])
def test_torchscript_and_fx_equal_the_official_outputs(tiny, fixtures_dir, form):
    model = _timm_tiny(tiny, fixtures_dir)
    ref = tiny["logits"]
    if form == "deploy":
        model.structural_reparam()
        ref = tiny["reparam_logits"]
    kinds = [type(m).__name__ for m in model.modules()]
    assert "DilatedReparamBlock" in kinds
    scripted = torch.jit.script(model)
    torch.testing.assert_close(_logits(scripted, tiny["input"]), ref, atol=ATOL, rtol=0)
    fx = create_feature_extractor(model, return_nodes={"stages.2": "s2", "head": "logits"})
    with torch.no_grad():
        out = fx(tiny["input"])
    torch.testing.assert_close(out["s2"], (tiny["stages"] if form == "train" else tiny["reparam_stages"])[2],
                               atol=ATOL, rtol=0)
    torch.testing.assert_close(out["logits"], ref, atol=ATOL, rtol=0)
    assert [type(m).__name__ for m in model.modules()] == kinds  # the eager model is unchanged


def test_pruned_model_and_in_chans(tiny, fixtures_dir):
    model = _timm_tiny(tiny, fixtures_dir)
    kept = model.prune_intermediate_layers([1])
    assert kept == [1] and len(model.stages) == 2
    torch.testing.assert_close(_logits(model.forward_features, tiny["input"]), tiny["stages"][1], atol=ATOL, rtol=0)
    one = timm.create_model("unireplknet_a", in_chans=1, num_classes=4)
    assert _logits(one, torch.randn(1, 1, 64, 64)).shape == (1, 4)
