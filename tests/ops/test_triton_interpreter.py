"""Triton kernels on CPU through TRITON_INTERPRET=1 (in a subprocess: the variable must be set before Triton compiles).

Tolerances, as max|err| / max|ref| against a float64 reference built from the same rounded inputs:
* fp32: 2e-6. Each output is a sum of up to K^2 = 961 fp32 products accumulated in fp32; the measured error is
  ~1e-7 and a naive worst case bound is far above it, so 2e-6 leaves 10x margin while still catching any wrong tap,
  missing tile or wrong mask (those produce O(1) errors).
* fp16: 2e-3. fp32 accumulation, so the error is the final rounding of the output to fp16 (half an ulp, 2^-11 =
  4.9e-4 of the value) plus the fp16 rounding of the gradient that feeds the backward kernels: about 2 ulp.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

from ._triton_interp_cases import CASES  # noqa: E402

HERE = Path(__file__).resolve().parent

TOL = {"fp32": 2e-6, "fp16": 2e-3}


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(HERE / "_triton_interp_cases.py")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            out[d["case"]] = d
    return out


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_kernel_case(results, case):
    r = results[case]
    tol = TOL[r["dtype"]]
    assert r["shape_ok"] and r["dtype_ok"] and r["channels_last_kept"]
    for key in ("fwd", "dgrad", "wgrad", "bgrad"):
        if r[key] is not None:
            assert r[key] <= tol, (key, r[key])
    spec = next(c for c in CASES if c[0] == case)
    wants_wgrad = spec[-1]
    assert r["wgrad_is_none"] == (not wants_wgrad)


def test_dispatch_uses_triton_under_interpreter(results):
    r = results["dispatch"]
    assert "triton" in r["available"]
    assert r["resolved"] == "triton"
    assert r["fwd"] <= TOL["fp32"]


def test_tiny_model_triton_error_not_above_native(results):
    r = results["tiny-model"]
    assert r["triton_vs_native"] <= 1e-5
    assert r["err_triton"] <= 1.25 * r["err_native"] + 1e-7, r


def test_selfcheck_passes_for_the_real_kernels(results):
    r = results["selfcheck"]
    checks = {(c["dtype"], c["kernel_size"]): c for c in r["checks"]}
    assert set(checks) == {("float32", 7), ("float16", 5)}
    assert all(c["backend"] == "triton" and c["device"] == "cpu" and c["ok"] for c in checks.values())
    assert checks[("float32", 7)]["forward_error"] <= TOL["fp32"]
    assert checks[("float16", 5)]["input_grad_error"] <= TOL["fp16"]
    assert {x["backend"] for x in r["runs"]} == {"triton"}


def test_selfcheck_disables_a_broken_triton_launcher(results):
    r = results["selfcheck"]
    (chk,) = r["broken_checks"]
    assert chk["ok"] is False and chk["forward_error"] > chk["tolerance"]
    assert r["broken_disabled"][0]["backend"] == "triton"
    assert r["broken_resolved"] == "native"
    assert {x["backend"] for x in r["broken_runs"]} == {"native"}
    assert r["broken_output_error"] <= TOL["fp32"]  # native's result, not the shifted one
