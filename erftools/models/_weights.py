"""Weight loading: local files in every layout users have, URLs with hash checks, and safe deserialisation.

Supported checkpoint layouts (detected from the keys, not the file name):
- official RepLKNet: a bare state dict, or wrapped in ``model`` / ``state_dict`` (the official training script);
- OpenMMLab / mmengine: ``state_dict`` with ``backbone.`` keys, final norm at ``backbone.stages.3.norm``, head at
  ``head.fc``;
- timm / safetensors files, DataParallel ``module.`` prefixes;
- training-time (``lkb_origin`` + ``small_conv``) or re-parameterised (``lkb_reparam``) RepLKNet weights.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .._io import ErftoolsError, sha256_file

WRAPPER_KEYS = ("state_dict", "model", "model_state", "state_dict_ema", "module")


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely (safetensors, or ``torch.load(weights_only=True)``) and unwrap it."""
    path = Path(path)
    if not path.is_file():
        raise ErftoolsError(f"checkpoint {path} does not exist; pass an existing file, a URL, 'pretrained' or "
                            "'random'")
    if path.stat().st_size == 0:
        raise ErftoolsError(f"the checkpoint {path} is empty (0 bytes): its download or copy did not finish. "
                            "Download it again (or copy it again from where it is complete)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ErftoolsError(
            f"cannot read checkpoint {path}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}. "
            "The file is "
            "corrupt or truncated, or it stores Python objects that erftools refuses to unpickle (only tensors and "
            "plain containers are loaded, for safety); re-download it or re-save its state_dict.") from exc
    return unwrap_state_dict(obj, str(path))


def unwrap_state_dict(obj, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    for _ in range(3):  # a known wrapper key wins over loose tensors beside it (e.g. {'state_dict', 'input'})
        if not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict) and obj[k]), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not _is_state_dict(obj):
        keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ErftoolsError(f"{where} holds no state dict (top-level keys: {keys}); expected tensors, possibly "
                            f"wrapped in one of {WRAPPER_KEYS}")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _is_state_dict(d: dict) -> bool:
    return bool(d) and sum(isinstance(v, torch.Tensor) for v in d.values()) >= max(1, len(d) // 2)


def convert_replknet_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map OpenMMLab / mmengine RepLKNet keys to the official layout (other layouts pass through)."""
    if not any(k.startswith("backbone.") for k in sd):
        return sd
    out = {}
    for k, v in sd.items():
        if k.startswith("backbone."):
            k = k[len("backbone."):]
            m = re.match(r"stages\.(\d+)\.norm\.(.*)", k)
            if m and int(m.group(1)) == _last_stage(sd):
                k = "norm." + m.group(2)
        elif k.startswith("head.fc."):
            k = "head." + k[len("head.fc."):]
        elif k.startswith("data_preprocessor."):
            continue
        out[k] = v
    return out


def _last_stage(sd) -> int:
    idx = [int(m.group(1)) for k in sd for m in [re.match(r"backbone\.stages\.(\d+)\.", k)] if m]
    return max(idx) if idx else 3


def is_reparameterized(sd: dict) -> bool:
    return any(".lkb_reparam." in k for k in sd)


def describe_mismatch(missing, unexpected, shape_errors=(), limit=6) -> str:
    parts = []
    for label, keys in (("missing from the checkpoint", missing), ("in the checkpoint but not in the model",
                                                                    unexpected), ("with the wrong shape",
                                                                                  shape_errors)):
        keys = list(keys)
        if keys:
            shown = ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
            parts.append(f"{len(keys)} keys {label} ({shown})")
    return "; ".join(parts)


def load_into(model: torch.nn.Module, sd: dict[str, torch.Tensor], where: str, name: str) -> None:
    """``load_state_dict(strict=True)`` with an error in plain words when the keys or shapes do not match."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise ErftoolsError(
            f"the checkpoint {where} does not match {name}: {describe_mismatch(missing, unexpected, shapes)}. "
            "Check that the checkpoint is for this model (variant and number of classes).")
    model.load_state_dict(sd, strict=True)


def hub_checkpoint_path(url: str) -> Path:
    """Where a URL's file is cached (torch hub's checkpoints folder, as torch.hub.load_state_dict_from_url does)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])


#: what to do offline, said when a download fails
OFFLINE_HINT = ("Download the file on a machine with network access and pass its local path (--weights PATH), or use "
                "--weights random for an untrained model.")


def fetch_url(url: str, sha256: str | None = None, *, cache_dir: str | os.PathLike | None = None,
              offline_hint: str = OFFLINE_HINT) -> Path:
    """The local copy of a checkpoint URL (downloaded once, verified): ``sha256`` or, by torch hub's naming
    convention (``name-<sha256 prefix>.ext``), the prefix in the file name; cached in ``cache_dir`` or torch hub's
    checkpoints folder. The one download path of :func:`erftools.create_model` and the timm integration."""
    from .._download import download

    name = os.path.basename(url.split("?")[0])
    if sha256 is None:
        m = re.search(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$", name)
        sha256 = m.group(1) if m else None
    dest = Path(cache_dir) / name if cache_dir else hub_checkpoint_path(url)
    return download(url, dest, sha256=sha256, progress=True, offline_hint=offline_hint)


def file_digest(path: str | os.PathLike) -> str:
    return sha256_file(path)
