"""The model registry: names, aliases, preprocessing, timm integration, the `erftools models` command."""
from __future__ import annotations

import json

import pytest
import timm
import torch

from erftools import ErftoolsError
from erftools.cli import main
from erftools.models import create_model, get_model_info, list_models, resolve


@pytest.mark.parametrize("name,arch", [("REPLKNET-31b", "replknet-31B"), ("replknet-xl", "replknet-XL"),
                                       ("resnet-152", "resnet152"), ("resnet152", "resnet152"),
                                       ("swin-b", "swin_base_patch4_window7_224"), ("Swin-B", "swin_base_patch4_window7_224")])
def test_names_are_case_insensitive_and_aliased(name, arch):
    assert resolve(name)[0].arch == arch


def test_every_required_name_is_listed():
    names = set(list_models())
    for n in ["replknet-31B", "replknet-31L", "replknet-XL", "replknet-3", "replknet-7", "replknet-13", "replknet-25",
              "replknet-31", "resnet-101", "resnet-152", "swin-B"]:
        assert n in names


def test_preprocessing_per_entry():
    assert resolve("replknet-XL")[0].preprocessing.mean == (0.5, 0.5, 0.5)
    assert resolve("replknet-31B")[0].preprocessing.std == (0.229, 0.224, 0.225)
    assert resolve("replknet-31L")[0].preprocessing.input_size == 384
    # the paper's torchvision ResNet weights, not timm's default a1h recipe
    assert resolve("resnet-152")[0].default_weights == "tv_in1k"
    # any timm name takes its preprocessing from timm's pretrained config
    e, tag = resolve("vit_base_patch16_224.augreg_in21k_ft_in1k")
    assert tag == "augreg_in21k_ft_in1k" and e.preprocessing.mean == (0.5, 0.5, 0.5)


def test_unknown_name_suggests():
    with pytest.raises(ErftoolsError, match="Did you mean replknet-31B"):
        resolve("replknet31b")


def test_model_info_records_weights_and_preprocessing():
    m = create_model("resnet18", weights="random")
    info = get_model_info(m)
    assert info.family == "timm" and info.weights == "random" and info.weights_sha256 is None
    assert info.num_parameters == sum(p.numel() for p in m.parameters())
    assert not m.training


def test_timm_create_model_knows_replknet():
    with torch.device("meta"):
        m = timm.create_model("replknet_31b")
    assert sum(p.numel() for p in m.parameters()) == 79_864_168
    assert m.pretrained_cfg["mean"] == (0.485, 0.456, 0.406)
    assert "replknet_xl" in timm.list_models("replknet*")


def test_models_command_lists_registry(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["replknet-31B"]["params"] == 79_864_168
    assert rows["replknet-XL"]["params"] == 335_435_752
    assert rows["replknet-31L"]["params"] == 172_671_016
    assert rows["replknet-31B"]["kernels"] == [31, 29, 27, 13]
    assert rows["replknet-31B"]["cached"] is False
    assert rows["replknet-13"]["weights"][0]["manual"].startswith("https://drive.google.com/")


def test_cli_user_error_has_no_traceback(capsys):
    assert main(["models", "--json"]) == 0
    capsys.readouterr()
