"""benchmarks/gpu_check.py cannot rot: its --smoke mode (every part at toy sizes on CPU, Triton through the
interpreter) runs here in a subprocess, and its JSON, Markdown and CUDA table are checked -- the table by loading it
back through the dispatcher."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
pytestmark = pytest.mark.slow

#: gates of the smoke run against float64 from the same rounded inputs (the script's own TOL): fp32 accumulation
#: over <= 49 products is ~1e-7 (measured 1e-7..3e-7), bf16 one output rounding ~2e-3 (measured 2e-3..2.6e-3)
TOL = {"fp32": 1e-5, "bf16": 1e-2}


def _run(out: Path, *extra, env_extra=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    env.pop("ERFTOOLS_CONV_BACKEND", None)
    return subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    # on purpose: the swin-B ERF fails (recorded, everything else still runs) and the kernels process dies after
    # its first record (restarted, it measures everything)
    proc = _run(out, env_extra={"ERFTOOLS_GPU_CHECK_INJECT": "erf:swin-B,kernels:crash-once"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc, json.loads((out / "gpu_check.json").read_text())


def test_summary_and_environment(smoke):
    out, proc, res = smoke
    assert "== gpu_check summary ==" in proc.stdout
    env = res["env"]
    for key in ("gpu", "driver", "cuda", "torch", "triton", "timm", "numpy", "pillow", "arch", "date"):
        assert key in env
    assert env["torch"] == torch.__version__ and env["smoke"] is True and env["arch"] == "sm_cpu"
    assert {p: s["status"] for p, s in res["parts"].items()} == {"kernels": "ok", "erf": "ok", "shapebias": "ok"}
    attempts = res["parts"]["kernels"]["attempts"]
    assert [a["returncode"] for a in attempts] == [3, 0]  # the injected crash, then the restart
    assert res["wall_s"] < res["budget_s"]


def test_kernel_correctness_and_timings(smoke):
    _, _, res = smoke
    cases = [r for r in res["parts"]["kernels"]["records"] if r.get("kind") == "case"]
    assert len(cases) == 4  # each case once: the restart continued, it did not start again
    assert {(r["shape"], r["k"], r["dtype"]) for r in cases} == {
        ("toy-plane", 7, "fp32"), ("toy-plane", 7, "bf16"), ("toy-batch", 3, "fp32"), ("toy-batch", 3, "bf16")}
    for rec in cases:
        assert set(rec["backends"]) == {"native_nchw", "native_cl", "fft", "triton"}
        for name, r in rec["backends"].items():
            if name == "triton" and rec["dtype"] == "bf16":
                assert "interpreter" in r["skipped"]  # no bf16 arithmetic in Triton's interpreter
                continue
            assert r["error"] is None and r["skipped"] is None, (rec["shape"], name, r)
            assert set(r["errors"]) == {"fwd", "dgrad", "wgrad"}
            for p, e in r["errors"].items():
                assert e <= TOL[rec["dtype"]], (rec["shape"], rec["dtype"], name, p, e)
            assert all(r["correct"].values())
            assert all(r["ms"][p] > 0 for p in ("fwd", "dgrad", "wgrad"))
            assert r["tflops"]["fwd"] > 0 and "fwd" in r["fraction_of_peak"]
        base = rec["backends"]["native_nchw"]
        assert base["speedup_vs_native_nchw"] == {"fwd": 1.0, "dgrad": 1.0, "wgrad": 1.0}
        assert rec["backends"]["native_cl"]["speedup_vs_native_cl"]["fwd"] == 1.0
    plane = next(r for r in cases if r["shape"] == "toy-plane")
    # useful FLOPs count in-bounds taps only: along a 12-px axis a 7-tap kernel has 7*12 - 2*(1+2+3) = 72 of them,
    # so 2 * N(1) * C(3) * 72 * 72 = 31104
    assert plane["flops"] == 31104


def test_erf_part(smoke):
    _, _, res = smoke
    recs = {r["model"]: r for r in res["parts"]["erf"]["records"]}
    rep = recs["replknet-31B"]
    # the official fp32 procedure and erftools' default compute the same matrix up to fp32 rounding (BN folding and
    # re-parameterisation reorder the sums): measured 2e-7 on this toy model
    assert rep["max_relative_error_vs_official"] < 1e-4
    assert rep["sides_equal"] is True and len(rep["official"]["sides"]) == 4
    assert rep["official"]["images_per_second"] > 0 and rep["erftools"]["images_per_second"] > 0
    assert any(r["backend"] == "native" for r in rep["official"]["backends"])
    assert recs["resnet-152"]["erftools"]["images_per_second"] > 0
    assert "injected failure" in recs["swin-B"]["error"]  # recorded, and the shape-bias part still ran
    uni = recs["unireplknet-S"]  # the official procedure on the training structure (dilated branches) vs erftools
    assert uni["max_relative_error_vs_official"] < 1e-4 and uni["sides_equal"] is True


def test_shapebias_part(smoke):
    _, _, res = smoke
    recs = res["parts"]["shapebias"]["records"]
    stim = next(r for r in recs if r["kind"] == "stimuli")
    assert stim["images"] == 4
    models = {r["model"]: r for r in recs if r["kind"] == "shapebias"}
    assert set(models) == {"replknet-31B", "resnet-152", "swin-B", "unireplknet-S", "openclip:ViT-B-32"}
    assert models["openclip:ViT-B-32"]["text_classifier_s"] > 0  # the zero-shot path: text classifier, 16 logits
    for r in models.values():
        assert "error" not in r, r
        assert r["precisions"]["fp32"]["images_per_second"] > 0 and r["precisions"]["bf16"]["images_per_second"] > 0
        assert 0 <= r["changed_decisions"] <= r["images"]
        assert 0 <= r["max_probability_difference"] < 1


def test_cuda_table_loads_back_into_the_dispatcher(smoke, monkeypatch):
    from erftools.ops import _cuda_table, _dispatch

    out, _, res = smoke
    path = out / "cuda_table.json"
    _cuda_table._cache.clear()
    table = _cuda_table.load_table(path)
    assert res["cuda_table_valid"] is True and table == res["cuda_table"]
    # 2 dtypes x 2 (K, plane) groups x 3 modes, every one with a measured native NCHW baseline
    assert len(table["entries"]) == 12
    assert all(e["arch"] == "sm_cpu" for e in table["entries"])  # a smoke table can never match a real GPU
    for e in table["entries"]:
        if e["backend"] != "native" or e["layout"]:
            assert e["speedup"] >= 1.1
        if e["dtype"] == "bf16":
            assert e["backend"] != "triton"  # never measured (interpreter): never chosen
    monkeypatch.setenv(_cuda_table.TABLE_ENV, str(path))
    monkeypatch.setattr(_dispatch, "_cuda_arch", lambda device: "sm_cpu")
    monkeypatch.setattr(_dispatch, "_triton_runs_on", lambda device: None)
    _cuda_table._cache.clear()
    sizes = {"small": (12, 12), "medium": (64, 64), "large": (128, 128), "huge": (256, 256)}
    for e in table["entries"]:
        dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[e["dtype"]]
        got = _dispatch.auto_backend(torch.device("cuda"), dt, e["kernel_size"], plane=sizes[e["plane"]],
                                     mode=e["mode"])
        assert got == e["backend"], e
    _cuda_table._cache.clear()


def test_markdown(smoke):
    out, _, res = smoke
    md = (out / "gpu_check.md").read_text()
    for head in ("# GPU check", "## a. Correctness", "## b. Timings", "## c. ERF", "## d. Shape bias",
                 "## The measured CUDA table"):
        assert head in md
    block = md.split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(block) == json.loads((out / "cuda_table.json").read_text())
    assert "| toy-plane (1x3x12x12) | 7 | fp32 | triton |" in md
    assert "injected failure" in md


def test_a_crashed_part_and_the_budget_are_recorded(tmp_path):
    # the kernel process dies after its first record, the ERF part finds its budget spent: the run still writes
    # its files, with what was measured
    proc = _run(tmp_path, "--parts", "kernels,erf", "--budget-s", "0",
                env_extra={"ERFTOOLS_GPU_CHECK_INJECT": "kernels:crash"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert res["parts"]["kernels"]["status"] == "failed" and res["parts"]["kernels"]["returncode"] == 3
    assert len(res["parts"]["kernels"]["records"]) == 1  # the line written before the crash is kept
    assert all(r.get("skipped") == "time budget spent" for r in res["parts"]["erf"]["records"])
    assert len(res["parts"]["erf"]["records"]) == 4  # replknet-31B, resnet-152, swin-B, unireplknet-S
    assert (tmp_path / "gpu_check.md").is_file() and (tmp_path / "cuda_table.json").is_file()


def _load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fatal_cuda_error_stops_the_process_and_the_restart_skips_that_backend(tmp_path, monkeypatch):
    import argparse

    import torch.nn.functional as F

    gc = _load_script()

    def native(x, w):
        return F.conv2d(x, w, padding=w.shape[-1] // 2, groups=x.shape[1])

    def faulty(x, w):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gc, "_backend_fns", lambda: {"native_nchw": native, "native_cl": native, "fft": faulty,
                                                     "triton": native})
    cfg = dict(gc.SMOKE, priority=[("toy-batch", 3)])
    out = tmp_path / "kernels.jsonl"
    args = argparse.Namespace(smoke=True, skip_backends=None, ks=None)
    with pytest.raises(RuntimeError, match="illegal memory access"):  # the process must end: its context is lost
        gc.part_kernels(args, cfg, torch.device("cpu"), out, gc._now() + 60)
    first = gc._read_jsonl(out)
    fatal = [r for r in first if r.get("fatal")]
    assert len(fatal) == 1 and fatal[0]["fatal_backend"] == "fft"
    args.skip_backends = "fft"
    gc.part_kernels(args, cfg, torch.device("cpu"), out, gc._now() + 60)
    cases = gc.kernel_cases(gc._read_jsonl(out))
    assert [(c["shape"], c["k"], c["dtype"]) for c in cases] == [("toy-batch", 3, "fp32"), ("toy-batch", 3, "bf16")]
    for c in cases:
        assert "fatal" not in c and "fatal CUDA error" in c["backends"]["fft"]["skipped"]
        assert all(c["backends"]["native_nchw"]["correct"].values())
