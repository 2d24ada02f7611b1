"""Checkpoint formats, safe loading, mismatch errors, and downloads against a loopback server."""
from __future__ import annotations

import hashlib

import pytest
import torch

from erftools import ErftoolsError
from erftools.models import create_model, get_model_info

from ..loopback import serve


@pytest.fixture(scope="module")
def tiny(fixtures_dir):
    return torch.load(fixtures_dir / "replknet_tiny.pt", map_location="cpu", weights_only=True)


def _logits(model, x):
    with torch.no_grad():
        return model(x)


def _assert_same_logits(a, b):
    # Computed floats: the last bits depend on the CPU's kernels (AVX2 vs AVX-512, thread count), measured up to
    # ~6e-8 apart across x86-64 machines on these tiny logits; 1e-6 absolute is far below the ~1e-4 gap between
    # the two fixture rows, so a wrong weight still fails.
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def _assert_loaded_exactly(model, state_dict):
    """Loading is a copy, so it is exact: every tensor of the checkpoint equals the model's bit for bit."""
    own = model.state_dict()
    assert set(state_dict) <= set(own), sorted(set(state_dict) - set(own))[:5]
    for k, v in state_dict.items():
        assert torch.equal(own[k], v), k


@pytest.mark.parametrize("fname", ["replknet_tiny_mmpretrain.pth", "replknet_tiny_official_wrapped.pth"])
def test_other_layouts_load_exactly_and_reproduce_tiny_logits(fixtures_dir, tiny, fname):
    model = create_model("replknet-31B", weights=fixtures_dir / fname, **tiny["config"])
    _assert_loaded_exactly(model, tiny["state_dict"])
    _assert_same_logits(_logits(model, tiny["input"]), tiny["logits"])
    info = get_model_info(model)
    assert info.weights_sha256 == hashlib.sha256((fixtures_dir / fname).read_bytes()).hexdigest()


def test_bare_training_checkpoint_then_reparam_on_request(tmp_path, tiny):
    path = tmp_path / "tiny.pth"
    torch.save(tiny["state_dict"], path)
    model = create_model("replknet-31B", weights=path, reparam=True, **tiny["config"])
    assert model.is_reparameterized
    torch.testing.assert_close(_logits(model, tiny["input"]), tiny["reparam_logits"], atol=1e-6, rtol=0)


def test_reparameterised_checkpoint_loads_into_merged_model(tmp_path, tiny):
    path = tmp_path / "tiny_reparam.pth"
    torch.save({"state_dict": tiny["reparam_state_dict"]}, path)
    model = create_model("replknet-31B", weights=path, **tiny["config"])
    assert model.is_reparameterized and not hasattr(model.stages[0].blocks[0].large_kernel, "lkb_origin")
    torch.testing.assert_close(_logits(model, tiny["input"]), tiny["reparam_logits"], atol=1e-6, rtol=0)


def test_mismatched_checkpoint_names_the_keys(fixtures_dir, tiny):
    # the XL-style tiny checkpoint (no small kernel, dw_ratio 1.5) into the plain tiny config
    with pytest.raises(ErftoolsError) as err:
        create_model("replknet-31B", weights=fixtures_dir / "replknet_tiny_xl.pt", **tiny["config"])
    msg = str(err.value)
    assert "missing from the checkpoint" in msg and "small_conv" in msg
    assert "wrong shape" in msg


def test_truncated_checkpoint_is_a_clear_error(tmp_path, fixtures_dir, tiny):
    bad = tmp_path / "truncated.pth"
    bad.write_bytes((fixtures_dir / "replknet_tiny_official_wrapped.pth").read_bytes()[:5000])
    with pytest.raises(ErftoolsError, match="corrupt or truncated"):
        create_model("replknet-31B", weights=bad, **tiny["config"])


class _NotWeights:
    pass


def test_pickled_objects_are_refused(tmp_path, tiny):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": tiny["state_dict"], "obj": _NotWeights()}, path)
    with pytest.raises(ErftoolsError, match="refuses to unpickle"):
        create_model("replknet-31B", weights=path, **tiny["config"])


def test_missing_file_and_bad_weights_word(tmp_path):
    with pytest.raises(ErftoolsError, match="neither 'random', 'pretrained'"):
        create_model("replknet-3", weights=tmp_path / "nope.pth")


def test_timm_safetensors_file_roundtrip(tmp_path):
    from safetensors.torch import save_file

    src = create_model("resnet18", weights="random")
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    loaded = create_model("resnet18", weights=path)
    x = torch.randn(1, 3, 64, 64)
    _assert_loaded_exactly(loaded, src.state_dict())
    _assert_same_logits(_logits(src, x), _logits(loaded, x))
    assert get_model_info(loaded).weights == str(path)


def test_pretrained_offline_errors_say_what_to_do():
    with pytest.raises(ErftoolsError, match="random"):
        create_model("resnet-152", weights="pretrained")  # HF_HUB_OFFLINE=1 and an empty cache (conftest)
    with pytest.raises(ErftoolsError, match="Google Drive"):
        create_model("replknet-13", weights="pretrained")
    with pytest.raises(ErftoolsError, match="no published pretrained"):
        create_model("replknet-7", weights="pretrained")



@pytest.fixture()
def unreachable_hub(monkeypatch):
    """The Hugging Face hub at a closed port of 127.0.0.1 (a connection is refused at once), offline mode off, no
    proxy."""
    import socket

    from erftools._download import PROXY_VARS

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    for k in PROXY_VARS:
        monkeypatch.delenv(k, raising=False)


def test_unreachable_hub_fails_at_once_without_timm_retrying(unreachable_hub, monkeypatch):
    """Offline, huggingface_hub retries for about a minute; erftools probes the hub's host first (a closed port on
    127.0.0.1 here: refused at once) and never starts timm's download."""
    import timm

    real = timm.create_model

    def no_download(name, pretrained=False, **kw):
        assert not pretrained, "timm's hub download started although the hub cannot be reached"
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", no_download)
    with pytest.raises(ErftoolsError, match=r"resnet101.tv_in1k .*127.0.0.1 did not answer.*weights=PATH"):
        create_model("resnet-101", weights="pretrained")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ErftoolsError, match="HF_HUB_OFFLINE is set.*not in the cache"):
        create_model("resnet-101", weights="pretrained")


# ---- downloads from a server on 127.0.0.1 ------------------------------------------------------------------------
@pytest.fixture()
def served(tmp_path, fixtures_dir):
    root = tmp_path / "www"
    root.mkdir()
    data = (fixtures_dir / "replknet_tiny_mmpretrain.pth").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    good = f"replknet-tiny_in1k-{sha[:8]}.pth"
    (root / good).write_bytes(data)
    corrupted = data[:-100] + bytes(100)
    (root / f"replknet-tiny_bad-{sha[:8]}.pth").write_bytes(corrupted)
    return root, good, sha


def test_url_download_verifies_and_caches(served, tiny, monkeypatch, tmp_path):
    root, good, sha = served
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torchhome"))
    with serve(root) as (base, log):
        model = create_model("replknet-31B", weights=f"{base}/{good}", **tiny["config"])
        _assert_loaded_exactly(model, tiny["state_dict"])
        _assert_same_logits(_logits(model, tiny["input"]), tiny["logits"])
        assert get_model_info(model).weights_sha256 == sha
        create_model("replknet-31B", weights=f"{base}/{good}", **tiny["config"])  # cached: no second request
    assert [r[0] for r in log] == [good]


def test_url_download_with_wrong_hash_is_refused_and_deleted(served, tiny, monkeypatch, tmp_path):
    from erftools._download import HashMismatchError
    from erftools.models._weights import hub_checkpoint_path

    root, good, sha = served
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torchhome"))
    url_bad = None
    with serve(root) as (base, _):
        url_bad = f"{base}/replknet-tiny_bad-{sha[:8]}.pth"
        with pytest.raises(HashMismatchError, match="deleted"):
            create_model("replknet-31B", weights=url_bad, **tiny["config"])
        with pytest.raises(ErftoolsError, match="HTTP 404"):
            create_model("replknet-31B", weights=f"{base}/missing-0123abcd.pth", **tiny["config"])
    assert not hub_checkpoint_path(url_bad).exists()


def test_interrupted_download_resumes(served, tmp_path):
    from erftools._download import DownloadError, download

    root, good, sha = served
    dest = tmp_path / "dl" / good
    with serve(root, break_after={good: 4096}) as (base, log):
        with pytest.raises(DownloadError, match="resume"):
            download(f"{base}/{good}", dest, sha256=sha)
        assert not dest.exists() and dest.with_name(dest.name + ".part").stat().st_size == 4096
        download(f"{base}/{good}", dest, sha256=sha)
    assert dest.read_bytes() == (root / good).read_bytes()
    assert log[-1] == (good, "bytes=4096-")


def test_pretrained_registry_source_goes_through_download(served, tiny, monkeypatch, tmp_path):
    """weights='pretrained' uses the entry's URL and its sha256 prefix (here pointed at the loopback server)."""
    import dataclasses

    from erftools.models import _registry

    root, good, sha = served
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torchhome"))
    entry = _registry.REGISTRY["replknet-31b"]
    with serve(root) as (base, _):
        src = dataclasses.replace(entry.weight_source(), url=f"{base}/{good}", sha256=sha[:8])
        monkeypatch.setitem(_registry.REGISTRY, "replknet-31b",
                            dataclasses.replace(entry, weights=(src,), default_weights=src.tag))
        model = create_model("replknet-31B", weights="pretrained", **tiny["config"])
    _assert_loaded_exactly(model, tiny["state_dict"])
    _assert_same_logits(_logits(model, tiny["input"]), tiny["logits"])
    assert get_model_info(model).weights == "pretrained:in1k"


def test_stale_cached_copy_with_wrong_hash_is_fetched_again(served, tmp_path):
    from erftools._download import download

    root, good, sha = served
    dest = tmp_path / "dl" / good
    dest.parent.mkdir()
    dest.write_bytes(b"stale")
    with serve(root) as (base, log):
        download(f"{base}/{good}", dest, sha256=sha[:8])
    assert dest.read_bytes() == (root / good).read_bytes() and len(log) == 1


def test_result_files_are_not_owner_only(tmp_path):
    import os
    import stat

    from erftools._io import write_json

    old = os.umask(0o022)
    try:
        p = write_json(tmp_path / "r.json", {"a": float("nan")})
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    assert p.read_text().strip().endswith("}") and '"a": null' in p.read_text()


def test_unreachable_hub_fails_at_once_for_open_clip_tags(unreachable_hub, monkeypatch):
    """The same for an open_clip pretrained tag on the hub: refused before open_clip starts its download."""
    open_clip = pytest.importorskip("open_clip")

    def no_download(*a, **kw):
        raise AssertionError("open_clip's download started although the hub cannot be reached")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", no_download)
    with pytest.raises(ErftoolsError, match=r"'laion2b_s34b_b79k' of openclip:ViT-B-32 .*127.0.0.1 did not answer"):
        create_model("openclip:ViT-B-32", weights="laion2b_s34b_b79k")
