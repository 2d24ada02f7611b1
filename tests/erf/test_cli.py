import json

import numpy as np

from erftools.cli import main
from erftools.results import ERF_FIGURE, ERF_MATRIX, read_record

from ._erf_helpers import CONVERTED, SKIPPED, fixture_data, write_problem_images

TINY = ["--weights", "random", "--size", "64", "--num-images", "2", "--no-progress"]


def test_erf_analyze_compare(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["erf", "--model", "resnet18", *TINY, "--out", str(a)]) == 0
    out = capsys.readouterr().out
    assert "t=20%" in out and "2 images at 64x64" in out
    rec = read_record(a, "erf")
    assert rec["complete"] and rec["model"]["name"] == "resnet18" and rec["model"]["weights"] == "random"
    assert rec["images"]["source"] == "bundled" and rec["model_kwargs"] == {}
    assert (a / ERF_FIGURE).is_file() and np.load(a / ERF_MATRIX).shape == (64, 64)
    assert main(["erf", "--model", "resnet18", *TINY, "--seed", "1", "--label", "other", "--out", str(b)]) == 0
    capsys.readouterr()

    assert main(["analyze", str(a / ERF_MATRIX), "--heatmap"]) == 0
    out = capsys.readouterr().out
    assert "t=99%" in out and "radius" in out
    saved = json.loads((a / "erf_area_ratios.json").read_text())
    assert [r["side"] for r in saved["area_ratios"]] == [r["side"] for r in rec["area_ratios"]]
    assert (a / "erf_area_ratios.md").is_file() and (a / "erf_heatmap.png").is_file()

    cmp_dir = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--out", str(cmp_dir), "--squares"]) == 0
    out = capsys.readouterr().out
    assert "resnet18" in out and "other" in out
    for name in ("erf_compare.png", "erf_compare_radial.png", "erf_compare.md", "erf_compare.json"):
        assert (cmp_dir / name).is_file(), name
    assert len(json.loads((cmp_dir / "erf_compare.json").read_text())["runs"]) == 2


def test_analyze_official_npy(fixtures_dir, tmp_path, capsys):
    d = fixture_data(fixtures_dir)
    npy = tmp_path / "official.npy"
    np.save(npy, d["matrix"])  # what the official visualize_erf.py writes
    assert main(["analyze", str(npy), "--thresholds", "20", "30", "50", "99", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    for side in d["side_lengths"]:
        assert f"({int(side)} px)" in out
    saved = json.loads((tmp_path / "o" / "official_area_ratios.json").read_text())
    assert [r["side"] for r in saved["area_ratios"]] == [int(s) for s in d["side_lengths"]]
    assert main(["analyze", str(tmp_path / "missing.npy")]) == 1
    bad = tmp_path / "bad.npy"
    np.save(bad, np.ones((2, 3, 4)))
    assert main(["analyze", str(bad)]) == 1
    assert "2-D" in capsys.readouterr().err


def test_bad_image_folder(tmp_path, capsys, caplog):
    write_problem_images(tmp_path / "imgs" / "class_a", (80, 60))
    out = tmp_path / "run"
    args = ["erf", "--model", "resnet18", "--weights", "random", "--size", "64", "--num-images", "10",
            "--sampler", "sequential", "--images", str(tmp_path / "imgs"), "--out", str(out), "--no-progress"]
    with caplog.at_level("WARNING"):
        assert main(args) == 0
    text = caplog.text
    for name in (*SKIPPED, *CONVERTED):
        assert name in text, name
    rec = read_record(out, "erf")
    assert rec["num_images"] == 3 and rec["num_skipped"] == 3
    assert "3 skipped" in capsys.readouterr().out


def test_empty_folder_and_bad_arguments(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["erf", "--model", "resnet18", *TINY, "--images", str(empty), "--out", str(tmp_path / "r")]) == 1
    assert "no image files" in capsys.readouterr().err
    assert main(["erf", "--model", "resnet18", *TINY, "--images", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["erf", "--model", "no-such-model", *TINY]) == 1
    assert "unknown model" in capsys.readouterr().err
    assert main(["erf", "--model", "resnet18", *TINY, "--resume", "--overwrite"]) == 1


def test_interrupt_then_wrong_and_right_resume(tmp_path, capsys, monkeypatch):
    import erftools.erf.run as run_mod

    out = tmp_path / "run"
    base = ["erf", "--model", "resnet18", "--weights", "random", "--num-images", "3", "--no-progress",
            "--out", str(out)]
    real_save = run_mod.checkpoint.save_state
    calls = {"n": 0}

    def save_then_stop(path, acc, gen):
        real_save(path, acc, gen)
        if path.name.startswith("rank"):
            calls["n"] += 1
            if calls["n"] == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(run_mod.checkpoint, "save_state", save_then_stop)
    assert main(base + ["--size", "64"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "continue with the same command" in err
    monkeypatch.setattr(run_mod.checkpoint, "save_state", real_save)
    assert main(base + ["--size", "96"]) == 1  # other settings: refused, the flag is named
    err = capsys.readouterr().err
    assert "refusing to resume" in err and "size" in err and "--overwrite" in err and "overwrite=True" not in err
    assert main(base + ["--size", "64"]) == 0  # the same command continues
    summary = capsys.readouterr().out
    rec = read_record(out, "erf")
    whole = rec["timings"]["run_compute_s"]  # the timing line covers the whole run, not only this session
    assert "this session 2 of them in" in summary and f"the whole run {whole:.1f} s of computation" in summary
    assert rec["resumed"] and rec["num_images"] == 3
    assert main(base + ["--size", "64", "--resume"]) == 0  # finished with these settings: nothing to do
    assert read_record(out, "erf")["created"] == rec["created"]
    assert main(base + ["--size", "96"]) == 1
    assert "already holds a finished ERF run with other settings" in capsys.readouterr().err
    fresh = tmp_path / "fresh"
    assert main(base[:-1] + [str(fresh), "--size", "64", "--resume"]) == 1
    assert "nothing to resume" in capsys.readouterr().err


def test_replknet_31b_random_small(tmp_path):
    """The registry path of the paper's model (at 64 px to stay fast)."""
    out = tmp_path / "r"
    assert main(["erf", "--model", "replknet-31B", "--weights", "random", "--size", "64", "--num-images", "1",
                 "--no-progress", "--conv-backend", "native", "--out", str(out)]) == 0
    rec = read_record(out, "erf")
    assert rec["prepared"]["fuse_bn"] and rec["prepared"]["conv_backend"] == "native"
    assert rec["target"]["feature_shape"] == [1, 1024, 2, 2]


def test_python_path_equals_the_cli_for_a_model_with_its_own_normalisation(tmp_path, capsys):
    """A timm model normalised with mean/std 0.5 (not ImageNet's): the documented Python path (seeded random
    weights, select_images without mean/std, compute_erf) gives the CLI's matrix, because compute_erf fills in the
    model's preprocessing; ImageNet's normalisation would give another matrix."""
    import torch

    from erftools.erf import compute_erf
    from erftools.images import select_images
    from erftools.models import create_model, get_model_info

    name = "test_resnet.r160_in1k"
    assert main(["erf", "--model", name, *TINY, "--seed", "0", "--out", str(tmp_path / "cli")]) == 0
    capsys.readouterr()
    cli = np.load(tmp_path / "cli" / ERF_MATRIX)
    assert read_record(tmp_path / "cli", "erf")["images"]["mean"] == [0.5, 0.5, 0.5]

    torch.manual_seed(0)
    model = create_model(name, weights="random")
    assert get_model_info(model).preprocessing.mean == (0.5, 0.5, 0.5)
    images = select_images(None, 2, "random", seed=0, size=64)
    res = compute_erf(model, images)
    np.testing.assert_allclose(res.matrix, cli, rtol=1e-5, atol=1e-6 * float(cli.max()))
    other = compute_erf(model, select_images(None, 2, "random", seed=0, size=64, mean=(0.485, 0.456, 0.406),
                                             std=(0.229, 0.224, 0.225)))
    assert float(np.abs(other.matrix - cli).max()) > 1e-3 * float(cli.max())  # the normalisation matters


def test_one_formatter_per_statistic(tmp_path, capsys):
    """erf and analyze print the same radii for the same matrix (the record's definition, one formatter), and an
    area ratio below 0.1 % is not printed as 0.0."""
    import re

    from erftools.erf.analysis import AreaRatio, format_table, percent_text

    run = tmp_path / "r"
    assert main(["erf", "--model", "resnet18", *TINY, "--out", str(run)]) == 0
    erf_out = capsys.readouterr().out
    assert main(["analyze", str(run / ERF_MATRIX)]) == 0
    analyze_out = capsys.readouterr().out
    radii = read_record(run, "erf")["statistics"]["radii"]
    want = " / ".join(f"{float(radii[k]):.1f}" for k in ("0.5", "0.9", "0.99"))
    pattern = r"radius holding 50/90/99%[^:]*: ([0-9.\- /]+) px"
    assert re.search(pattern, erf_out).group(1).strip() == want
    assert re.search(pattern, analyze_out).group(1).strip() == want
    assert percent_text(0.00049) == "0.049" and percent_text(0.0449) == "4.5" and percent_text(None) == "none"
    assert "0.049 (3 px)" in format_table([("x", [AreaRatio(0.2, 3, 0.00049)])])


def test_more_images_grow_a_finished_run(tmp_path, capsys):
    """The Quick start's run, then the same command with more images: the finished images are kept and only the new
    ones computed; the matrix equals a run of all of them from scratch (the kept mean is float32: ~1e-7)."""
    out = ["--out", str(tmp_path / "r")]
    more = [a if a != "2" else "4" for a in TINY]
    assert main(["erf", "--model", "resnet18", *TINY, *out]) == 0
    first = read_record(tmp_path / "r", "erf")
    assert main(["erf", "--model", "resnet18", *more, *out]) == 0
    grown = read_record(tmp_path / "r", "erf")
    assert grown["num_images"] == 4 and grown["resumed"] and set(first["processed"]) < set(grown["processed"])
    assert grown["timings"]["images_computed_this_session"] == 2
    assert main(["erf", "--model", "resnet18", *more, "--out", str(tmp_path / "fresh")]) == 0
    a, b = np.load(tmp_path / "r" / ERF_MATRIX), np.load(tmp_path / "fresh" / ERF_MATRIX)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(np.abs(b).max()))
    capsys.readouterr()
    assert main(["erf", "--model", "resnet18", *TINY, *out]) == 1  # fewer images: refused, naming the setting
    err = capsys.readouterr().err
    assert "num_images: 4 -> 2" in err and "never fewer" in err and "images_sha256" not in err and "--overwrite" in err


def test_a_larger_random_sample_without_the_finished_images_is_refused(tmp_path, capsys):
    from erftools.images import sample_images

    from ._erf_helpers import write_image

    names = [f"im{i:02d}.png" for i in range(25)]
    for i, n in enumerate(names):
        write_image(tmp_path / "imgs" / n, (40, 40), seed=i)
    # the precondition (CPython's random.sample): this seeded draw of 6 does not contain the draw of 2
    assert not set(sample_images(names, 2, "random", 0)) <= set(sample_images(names, 6, "random", 0))
    base = ["erf", "--model", "resnet18", "--weights", "random", "--size", "32", "--no-progress", "--images",
            str(tmp_path / "imgs"), "--out", str(tmp_path / "r"), "--sampler", "random"]
    assert main(base + ["--num-images", "2"]) == 0
    capsys.readouterr()
    assert main(base + ["--num-images", "6"]) == 1
    err = capsys.readouterr().err
    assert "num_images: 2 -> 6" in err and "does not contain the 2" in err and "--sampler sequential" in err
    assert read_record(tmp_path / "r", "erf")["num_images"] == 2  # the finished run is untouched
    assert main(base[:-2] + ["--sampler", "sequential", "--num-images", "2", "--overwrite"]) == 0
    assert main(base[:-2] + ["--sampler", "sequential", "--num-images", "6"]) == 0  # sequential: always grows
    assert read_record(tmp_path / "r", "erf")["num_images"] == 6
