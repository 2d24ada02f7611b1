import numpy as np
import pytest
import torch

from erftools import ErftoolsError
from erftools.images import (ImageError, default_image_dir, find_images, load_image, sample_images, select_images)

from ._erf_helpers import write_image, write_truncated_jpeg


@pytest.fixture
def folder(tmp_path):
    for cls, n in (("b_cls", 3), ("a_cls", 2), ("c_cls", 1)):
        for i in range(n):
            write_image(tmp_path / cls / f"img{i}.png", seed=i)
    write_image(tmp_path / "a_cls" / "sub" / "deep.jpg")
    (tmp_path / "a_cls" / "notes.txt").write_text("not an image")
    write_image(tmp_path / ".hidden" / "x.png")
    write_image(tmp_path / "b_cls" / ".x.png")
    return tmp_path


def test_find_images_imagefolder_order(folder):
    files = find_images(folder)
    assert files == ["a_cls/img0.png", "a_cls/img1.png", "a_cls/sub/deep.jpg",
                     "b_cls/img0.png", "b_cls/img1.png", "b_cls/img2.png", "c_cls/img0.png"]
    with pytest.raises(ErftoolsError, match="does not exist"):
        find_images(folder / "missing")


def test_samplers(folder):
    files = find_images(folder)
    assert sample_images(files, 3, "sequential") == files[:3]
    r1 = sample_images(files, 4, "random", seed=1)
    assert r1 == sample_images(files, 4, "random", seed=1) and len(set(r1)) == 4
    strat = sample_images(files, 3, "stratified", seed=0)
    assert sorted(f.split("/")[0] for f in strat) == ["a_cls", "b_cls", "c_cls"]  # one per class folder
    more = sample_images(files, 5, "stratified", seed=0)
    assert len(set(more)) == 5
    assert sample_images(files, 100, "random") and len(sample_images(files, 100, "random")) == len(files)
    with pytest.raises(ErftoolsError, match="sampler"):
        sample_images(files, 2, "bogus")


def test_select_images_records(folder):
    imgs = select_images(folder, 3, "random", seed=0, size=32)
    d = imgs.to_dict()
    assert d["files"] == imgs.files and len(d["sha256"]) == 64 and d["num_available"] == 7
    assert d["sampler"] == "random" and d["seed"] == 0 and d["num_requested"] == 3
    with pytest.raises(ErftoolsError, match="at least 1"):
        select_images(folder, 0)
    empty = folder / "empty"
    empty.mkdir()
    with pytest.raises(ErftoolsError, match="no image files"):
        select_images(empty)


def test_preprocessing_matches_torchvision(tmp_path):
    tv = pytest.importorskip("torchvision.transforms")
    from PIL import Image

    path = write_image(tmp_path / "x.png", (70, 50))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x, converted = load_image(path, 64, mean, std)
    ref = tv.Compose([tv.Resize((64, 64), interpolation=tv.InterpolationMode.BICUBIC), tv.ToTensor(),
                      tv.Normalize(mean, std)])(Image.open(path).convert("RGB"))
    assert converted is None and x.shape == (3, 64, 64) and x.dtype == torch.float32
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-6)


def test_modes_converted(tmp_path):
    for mode in ("L", "RGBA", "P"):
        x, converted = load_image(write_image(tmp_path / f"{mode}.png", mode=mode), 32)
        assert x.shape == (3, 32, 32) and converted == mode
    gray = load_image(write_image(tmp_path / "g.png", mode="L"), 32, (0, 0, 0), (1, 1, 1))[0]
    torch.testing.assert_close(gray[0], gray[1])  # grayscale replicated to RGB
    from PIL import Image

    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    clear = load_image(tmp_path / "clear.png", 32, (0, 0, 0), (1, 1, 1))[0]
    assert torch.allclose(clear, torch.ones_like(clear))  # transparent -> white


def test_bad_files_raise_image_error(tmp_path):
    (tmp_path / "corrupt.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(tmp_path / "corrupt.jpg", 32)
    with pytest.raises(ImageError, match="truncated"):
        load_image(write_truncated_jpeg(tmp_path / "trunc.jpg"), 32)
    with pytest.raises(ImageError, match="tiny"):
        load_image(write_image(tmp_path / "tiny.png", (8, 40)), 32)


def test_bundled_images_are_documented():
    root = default_image_dir()
    files = find_images(root)
    assert len(files) >= 4
    attribution = (root / "ATTRIBUTION.md").read_text()
    total = 0
    for f in files:
        assert f"`{f}`" in attribution
        total += (root / f).stat().st_size
        x, converted = load_image(root / f, 64)
        assert converted is None and np.isfinite(x.numpy()).all()
    assert total < 3 * 2 ** 20
    assert "CC0" in attribution and "public domain" in attribution
