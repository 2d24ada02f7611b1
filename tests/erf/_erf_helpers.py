"""Small builders shared by the ERF tests (tiny models, image folders) and the independent reference ERF."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def fixture_model(folder: Path):
    """The tiny official RepLKNet of a golden-data folder (tests/golden or ../shared/fixtures), eval mode."""
    from erftools.models import RepLKNet

    ck = torch.load(folder / "replknet_tiny.pt", weights_only=True)
    model = RepLKNet(**ck["config"])
    model.load_state_dict(ck["state_dict"])
    return model.eval()


def fixture_data(folder: Path):
    """The official ERF of that model on three 128 x 128 images (``erf_tiny.npz``)."""
    return np.load(folder / "erf_tiny.npz")


def stages_golden(folder: Path) -> Path:
    """The official per-stage ERFs of that model: tests/golden has its own; the one of ../shared lives in tests/erf/data."""
    own = folder / "replknet_tiny_stages.npz"
    return own if own.is_file() else Path(__file__).parent / "data" / "replknet_tiny_stages.npz"


def tiny_resnet(seed: int = 0):
    import timm

    torch.manual_seed(seed)
    return timm.create_model("resnet18", pretrained=False, num_classes=10).eval()


def write_image(path: Path, size=(48, 40), mode="RGB", seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    if mode == "L":
        img = Image.fromarray(arr[..., 0], "L")
    elif mode == "RGBA":
        img = Image.fromarray(arr, "RGBA")
    elif mode == "P":
        img = Image.fromarray(arr[..., :3], "RGB").convert("P")
    else:
        img = Image.fromarray(arr[..., :3], "RGB")
    img.save(path)
    return path


def write_truncated_jpeg(path: Path):
    src = write_image(path.with_suffix(".full.jpg"), (64, 64))
    data = src.read_bytes()
    src.unlink()
    path.write_bytes(data[: len(data) // 2])
    return path


#: the problem images of write_problem_images: converted ones are kept, the others skipped with a reason
CONVERTED = {"gray.png": "L", "rgba.png": "RGBA"}
SKIPPED = ("corrupt.jpg", "tiny.png", "trunc.jpg")


def write_problem_images(folder: Path, size=(64, 64)) -> Path:
    """One good image, a grayscale and an RGBA one (converted), a tiny, a corrupt and a truncated one (skipped)."""
    write_image(folder / "good.png", size)
    write_image(folder / "gray.png", size, mode="L")
    write_image(folder / "rgba.png", size, mode="RGBA")
    write_image(folder / "tiny.png", (4, 4))
    (folder / "corrupt.jpg").write_bytes(b"\x00garbage")
    write_truncated_jpeg(folder / "trunc.jpg")
    return folder


def reference_matrix(features, images: torch.Tensor, objective: str, reduction: str) -> np.ndarray:
    """The mean map over ``images`` (N, 3, H, W), one image at a time, from the definitions (docs/erf.md)."""
    total = np.zeros(images.shape[-2:], dtype=np.float64)
    for i in range(images.shape[0]):
        x = images[i:i + 1].clone().requires_grad_(True)
        y = features(x)
        centre = y[0, :, y.shape[2] // 2, y.shape[3] // 2]
        s = torch.relu(centre).sum() if objective == "paper" else centre.sum()  # Luo et al.: d s / d y = 1
        (g,) = torch.autograd.grad(s, x)
        g = g[0].double().numpy()
        if reduction == "relu":
            m = np.maximum(g, 0).sum(0)
        elif reduction == "abs":
            m = np.abs(g).sum(0)
        else:
            m = np.sqrt((g ** 2).sum(0))
        total += m
    return total / images.shape[0]
