"""One definition of "which device": ``auto`` is CUDA when PyTorch sees it (``cuda:LOCAL_RANK`` under torchrun),
else the CPU. Errors name the argument (the CLI turns it into ``--device``)."""
from __future__ import annotations

import os


def resolve_device(device=None):
    """A ``torch.device`` for ``None``/``"auto"``/``"cpu"``/``"cuda"``/``"cuda:N"`` or a ``torch.device``."""
    import torch

    if isinstance(device, torch.device):
        dev = device
    else:
        name = str(device or "auto").lower()
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            dev = torch.device(name)
        except RuntimeError as exc:
            from ._io import ErftoolsError

            raise ErftoolsError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            from ._io import ErftoolsError

            raise ErftoolsError(f"device {str(device)!r} was asked for but PyTorch sees no CUDA device; use "
                                "device='cpu'")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return dev
