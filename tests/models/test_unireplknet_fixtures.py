"""UniRepLKNet against golden data made with the official code: the shared tiny fixture (kernels 3, 5, 7, 13), our own
(tests/golden/unireplknet_cases.pt: kernels 0, 5, 9, 11, 15, 17 and the downstream mode, see its README), and the official state-dict
layouts and parameter counts of all nine variants (unireplknet_keys.json)."""
import pytest
import torch

from erftools.models.unireplknet import CONFIGS, DilatedReparamBlock, UniRepLKNet, merge_dilated_into_large_kernel

from ..conftest import GOLDEN, golden_file, load_golden_json

# fp32 noise across CPUs: the official training and re-parameterised logits differ by ~1e-6 themselves
ATOL = 1e-5
DATA = GOLDEN / "unireplknet_cases.pt"


@pytest.fixture(scope="module")
def tiny(fixtures_dir):
    return torch.load(golden_file(fixtures_dir, "unireplknet_tiny.pt"), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def golden():
    return torch.load(DATA, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def official_keys(fixtures_dir):
    return load_golden_json(fixtures_dir, "unireplknet_keys.json")


def _run(model, x):
    stages = []
    hooks = [s.register_forward_hook(lambda m, i, o: stages.append(o)) for s in model.stages]
    with torch.no_grad():
        out = model(x)
    for h in hooks:
        h.remove()
    return out, stages


def _close(a, b):
    if isinstance(b, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, atol=ATOL, rtol=0)
    else:
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def _loaded(case):
    model = UniRepLKNet(**case["config"]).eval()
    model.load_state_dict(case["state_dict"], strict=True)
    return model


def test_tiny_training_structure_matches_official(tiny):
    logits, stages = _run(_loaded(tiny), tiny["input"])
    _close(logits, tiny["logits"])
    _close(stages, tiny["stages"])


def test_tiny_reparam_matches_official_keys_values_and_outputs(tiny):
    model = _loaded(tiny).structural_reparam()
    sd, ref = model.state_dict(), tiny["reparam_state_dict"]
    assert list(sd) == list(ref)
    for k in ref:
        torch.testing.assert_close(sd[k], ref[k], atol=ATOL, rtol=0)
    logits, stages = _run(model, tiny["input"])
    _close(logits, tiny["reparam_logits"])
    _close(stages, tiny["reparam_stages"])
    assert model.is_reparameterized


def test_tiny_deploy_file_loads_into_deploy_structure(tiny):
    model = UniRepLKNet(**tiny["config"], deploy=True).eval()
    model.load_state_dict(tiny["reparam_state_dict"], strict=True)
    _close(_run(model, tiny["input"])[0], tiny["reparam_logits"])


def test_official_method_name_equals_uniform_one(tiny):
    a = _loaded(tiny).reparameterize_unireplknet()
    b = _loaded(tiny).structural_reparam()
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], atol=0, rtol=0)
    a.reparameterize_unireplknet()  # idempotent
    _close(_run(a, tiny["input"])[0], tiny["reparam_logits"])


@pytest.mark.parametrize("case", ["kernels", "downstream"])
def test_own_golden_cases_before_and_after_reparam(golden, case):
    g = golden[case]
    model = _loaded(g)
    out, stages = _run(model, g["input"])
    _close(out, g["outputs"])
    if g["stages"]:
        _close(stages, g["stages"])
    model.structural_reparam()
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == g["reparam_keys"]
    _close(_run(model, g["input"])[0], g["reparam_outputs"])


def test_downstream_mode_has_the_backbone_layout(golden):
    g = golden["downstream"]
    model = UniRepLKNet(**g["config"])
    keys = list(model.state_dict())
    assert [k for k in keys if k.startswith("norm")] == [f"norm{i}.{p}" for i in range(4) for p in ("weight", "bias")]
    assert not any(k.startswith("head.") for k in keys)
    assert not any(".gamma" in k and ".act." not in k for k in keys)  # layer_scale_init_value=0: no layer scale
    with pytest.raises(ValueError, match="num_classes=None"):
        UniRepLKNet(**dict(g["config"], num_classes=10), init_cfg=dict(checkpoint=None))


@pytest.mark.parametrize("variant", list(CONFIGS))
def test_state_dict_layout_and_parameter_counts(official_keys, variant):
    ref = official_keys["unireplknet_" + variant.split("-")[1].lower()]
    for deploy, form in ((False, "train"), (True, "deploy")):
        with torch.device("meta"):
            model = UniRepLKNet(**CONFIGS[variant], deploy=deploy)
        assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == ref[form]["keys"]
        assert sum(p.numel() for p in model.parameters()) == ref[form]["num_parameters"]


def test_dilated_merge_is_exact_on_random_branches():
    """Each dilated branch equals its dense, zero-padded kernel: the merged conv reproduces the branch sum."""
    torch.manual_seed(0)
    block = DilatedReparamBlock(4, 17).eval()
    for m in block.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(1, 4, 40, 40)
    with torch.no_grad():
        ref = block(x)
        block.merge_dilated_branches()
        torch.testing.assert_close(block(x), ref, atol=1e-5, rtol=0)
    assert [n for n, _ in block.named_children()] == ["lk_origin"]
    with pytest.raises(ValueError, match="does not fit"):
        merge_dilated_into_large_kernel(torch.zeros(1, 1, 5, 5), torch.zeros(1, 1, 5, 5), 2)


def test_bad_configurations_are_rejected_clearly():
    with pytest.raises(ValueError, match="no default kernel sizes"):
        UniRepLKNet(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))
    with pytest.raises(ValueError, match="one kernel size per block"):
        UniRepLKNet(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), kernel_sizes=((3,), (3,), (3, 3), (3,)))
    with pytest.raises(ValueError, match="kernel sizes are 0"):
        UniRepLKNet(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), kernel_sizes=((4,), (3,), (3,), (3,)))
    with pytest.raises(ValueError, match="Dilated Reparam Block"):
        UniRepLKNet(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), kernel_sizes=((19,), (3,), (3,), (3,)))
    with pytest.raises(ValueError, match="global_pool"):
        UniRepLKNet(**CONFIGS["unireplknet-A"], global_pool="max")


def test_gradient_checkpointing_gives_the_same_gradients(tiny):
    grads = []
    for cp in (False, True):
        model = _loaded(tiny)
        model.set_grad_checkpointing(cp)
        x = tiny["input"].clone().requires_grad_(True)
        model(x).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=0)


def test_drop_path_only_in_training(tiny):
    model = UniRepLKNet(**tiny["config"], drop_path_rate=0.5)
    model.load_state_dict(tiny["state_dict"])
    model.eval()
    _close(_run(model, tiny["input"])[0], tiny["logits"])
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        a = model(tiny["input"])
        b = model(tiny["input"])
    assert (a - b).abs().max() > 1e-4
