"""Model preparation for inference and model identity: what every measurement does to a model before it runs it.

Preparation (:func:`prepare_for_inference`, in place, no copy) computes the same function in eval mode with fewer
layers and a faster memory layout:

* eval mode, every parameter frozen (``requires_grad=False``);
* :func:`rewrite_model`: RepLKNet's structural re-parameterisation with every BatchNorm folded into its convolution
  (``fuse_bn``); in timm ResNets every BatchNorm folded into the convolution before it (:func:`fold_batchnorm_pairs`);
* the channels-last memory layout when asked (each measurement states its default);
* the large-kernel convolution backend, by ONE rule (:func:`choose_conv_backend`);
* UniRepLKNet's fast forwards (:mod:`erftools.models._unireplknet_fast`: the GRN's norm as a stepped sum of
  squares, the GRN folded into the next linear per image, fused channels-first LayerNorms).

The logits (and input gradients) equal the unprepared model's to float rounding. What was done is returned as a dict
that the run record stores (``prepared``). The ERF adds what only an input gradient needs
(:mod:`erftools.erf._frozen`); the shape bias uses the preparation as it is.

Identity (:func:`parameters_sha256`, :func:`parameter_dtype`): what both fingerprints record about the network
itself, whatever made it (another seed, other constructor arguments, another checkpoint, a fine-tuned copy).
"""
from __future__ import annotations

import hashlib
import os

import torch
import torch.nn as nn

from ..ops._dispatch import ENV_VAR as CONV_BACKEND_ENV  # forces the large-kernel backend (read by erftools.ops)
from ._unireplknet_fast import speed_up_unireplknet

__all__ = ["prepare_for_inference", "rewrite_model", "fold_batchnorm_pairs", "choose_conv_backend",
           "parameters_sha256", "parameter_dtype", "timm_class", "CONV_BACKEND_ENV"]


# --------------------------------------------------------------------------------------------------- identity
def parameters_sha256(model: nn.Module) -> str:
    """A hash of every tensor of the model's state dict (names, shapes, dtypes and values).

    It tells two networks apart whatever made them: another random seed, other constructor arguments, another
    checkpoint, a fine-tuned copy.
    """
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}\n".encode("utf-8"))
        if t.numel():
            h.update(t.to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def parameter_dtype(model: nn.Module) -> str | None:
    """The dtype of the model's first floating-point parameter (``"float32"``), None when it has none."""
    for p in model.parameters():
        if p.is_floating_point():
            return str(p.dtype).replace("torch.", "")
    return None


# ------------------------------------------------------------------------------------------------ preparation
def timm_class(model, module: str, cls: str) -> bool:
    """Whether ``model`` is timm's class ``cls`` (or a subclass) from the timm module ending in ``module``."""
    mod = type(model).__module__
    return (mod.startswith("timm.models.") and mod.endswith(module)
            and any(c.__name__ == cls for c in type(model).__mro__))


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
    bias = shift if conv.bias is None else conv.bias * scale + shift
    conv.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)


def _foldable(conv, bn) -> bool:
    return (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats
            and bn.running_mean is not None and not bn.training and bn.num_features == conv.out_channels)


@torch.no_grad()
def fold_batchnorm_pairs(model: nn.Module) -> int:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` into it, in place, for the layouts of
    timm's ResNet family: attribute pairs ``convN``/``bnN`` of one module, and ``nn.Sequential`` (conv, bn) pairs
    (the downsample branches). The BN becomes ``nn.Identity``. Exact in eval mode. Returns the number folded."""
    n = 0
    for m in list(model.modules()):
        names = dict(m.named_children())
        for name, child in list(names.items()):
            if name.startswith("conv") and name[4:].isdigit() and _foldable(child, names.get("bn" + name[4:])):
                _fold(child, names["bn" + name[4:]])
                setattr(m, "bn" + name[4:], nn.Identity())
                n += 1
        if isinstance(m, nn.Sequential):
            items = list(m._modules.items())
            for (_k0, c), (k1, b) in zip(items, items[1:]):
                if _foldable(c, b):
                    _fold(c, b)
                    m._modules[k1] = nn.Identity()
                    n += 1
    return n


def large_kernel_families() -> tuple:
    """The model classes with ``fuse_bn()`` (re-parameterisation + BN folding), ``is_reparameterized`` and
    ``set_conv_backend()``: RepLKNet and UniRepLKNet."""
    from .replknet import RepLKNet
    from .unireplknet import UniRepLKNet

    return RepLKNet, UniRepLKNet


def rewrite_model(model: nn.Module) -> dict:
    """The structural part of the preparation, in place: RepLKNet and UniRepLKNet ``fuse_bn()`` (re-parameterisation
    and BN folding);
    timm ResNets: every BN folded into the convolution before it. Returns what was done. The other preparation
    steps (freezing, layout, backend) change no module's output."""
    done = {}
    if isinstance(model, large_kernel_families()):
        model.fuse_bn()  # implies structural_reparam()
        done["structural_reparam"] = done["fuse_bn"] = True
    elif timm_class(model, "resnet", "ResNet"):
        done["fuse_bn"] = fold_batchnorm_pairs(model) > 0
    return done


def choose_conv_backend(model: nn.Module, device: torch.device, channels_last: bool,
                        requested: str | None = None) -> str | None:
    """The large-kernel convolution backend of a RepLKNet run (None for a model without large kernels), one rule:
    the ``requested`` one; else the environment's (``ERFTOOLS_CONV_BACKEND``); else one already set on the model
    (``create_model(conv_backend=...)``); else ``native`` on CPU with channels-last tensors (oneDNN's channels-last
    depthwise kernel beats the FFT at every RepLKNet kernel size there); else ``auto`` (:mod:`erftools.ops`)."""
    if not isinstance(model, large_kernel_families()):
        return None
    if requested or os.environ.get(CONV_BACKEND_ENV):
        return requested or os.environ[CONV_BACKEND_ENV]
    already = {getattr(m, "backend", None) for m in model.modules() if hasattr(m, "backend")} - {None, "auto"}
    if len(already) == 1:
        return already.pop()
    return "native" if channels_last and device.type == "cpu" else "auto"


def prepare_for_inference(model: nn.Module, device: torch.device | str, *, fuse: bool = True,
                          channels_last: bool = False, conv_backend: str | None = None) -> dict:
    """Make ``model`` ready for inference on ``device``, in place; return what was done (the record's ``prepared``):
    ``eval``, ``frozen_parameters``, ``structural_reparam``, ``fuse_bn``, ``channels_last``, ``conv_backend``.

    ``fuse``: :func:`rewrite_model` (re-parameterise, fold BatchNorms); ``channels_last``: the memory layout;
    ``conv_backend``: the requested large-kernel backend (see :func:`choose_conv_backend`)."""
    device = torch.device(device)
    model.eval()
    done = {"eval": True, "frozen_parameters": True, "structural_reparam": False, "fuse_bn": False,
            "channels_last": False, "conv_backend": None}
    if fuse:
        done.update(rewrite_model(model))
    elif isinstance(model, large_kernel_families()) and model.is_reparameterized:
        done["structural_reparam"] = True
    backend = choose_conv_backend(model, device, channels_last, conv_backend)
    if backend not in (None, "auto"):
        model.set_conv_backend(backend)
    done["conv_backend"] = backend
    for p in model.parameters():  # after fusion, which creates new parameters
        p.requires_grad_(False)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        done["channels_last"] = True
    speed_up_unireplknet(model)  # any UniRepLKNet modules in it: the same functions in fewer passes
    return done
