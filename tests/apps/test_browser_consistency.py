"""End to end in a real headless Chromium: a zero-shot (open_clip) run beside a classifier, the error-consistency
matrix and bars on the Shape-bias page, and the ERF-against-shape-bias correlation on the Study page (skips without
Chromium, as test_browser.py)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ..study.test_correlation import THRESHOLDS, craft_study
from .conftest import make_sb_run
from .test_browser import (TIMEOUT, _assert_no_exception, _wait_for, _wait_for_image, browser_paths,  # noqa: F401
                           serve_dashboard)

pytestmark = pytest.mark.browser
ZERO_SHOT = "openclip:ViT-B-32"


def _results(root: Path) -> Path:
    make_sb_run(root / "shape-bias" / "model-a", "model-a", p_shape=0.4, seed=3)
    make_sb_run(root / "shape-bias" / "model-b", "model-b", p_shape=0.2, seed=4)
    make_sb_run(root / "shape-bias" / "clip", ZERO_SHOT, p_shape=0.6, seed=5,
                zero_shot={"prompts": {"set": "imagenet-80", "n": 80, "sha256": "ab" * 32}})
    models = [(f"m{i}", 0.1 * i, {t: 0.02 * i + t / 100 for t in THRESHOLDS}) for i in range(1, 6)]
    models[1] = ("m2", 0.45, models[1][2])  # not a perfect ranking
    craft_study(root / "studies" / "corr", models, name="corr-study")
    return root


def test_consistency_and_correlation_in_chromium(browser_paths, tmp_path):  # noqa: F811
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    chromium, driver = browser_paths
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1500,1250", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    results = _results(tmp_path / "results")
    with serve_dashboard(results, tmp_path) as url:
        drv = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
        try:
            drv.set_page_load_timeout(TIMEOUT)
            drv.get(f"{url}/?page=shape-bias")
            _wait_for_image(drv, "error-consistency")
            _assert_no_exception(drv)
            box = drv.find_element(By.CSS_SELECTOR, ".st-key-error-consistency")
            assert len(box.find_elements(By.TAG_NAME, "img")) == 2  # the matrix and the bars
            body = drv.find_element(By.TAG_NAME, "body").text
            assert "Error consistency with humans" in body
            assert ZERO_SHOT in body  # the zero-shot run is listed with the other decision makers
            assert box.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"]')

            drv.get(f"{url}/?page=study")
            _wait_for_image(drv, "study-correlation")
            _wait_for(drv, '.st-key-study-correlation [data-testid="stDataFrame"]')
            _assert_no_exception(drv)
            text = drv.find_element(By.TAG_NAME, "body").text
            assert "ERF against shape bias" in text and "Spearman rank correlation" in text
            tables = drv.find_elements(By.CSS_SELECTOR, '.st-key-study-correlation [data-testid="stDataFrame"]')
            assert len(tables) == 2  # the models' values and the correlations
            drv.execute_script("arguments[0].scrollIntoView()",
                               drv.find_element(By.CSS_SELECTOR, ".st-key-study-correlation"))
            shot = tmp_path / "study.png"
            assert drv.save_screenshot(str(shot)) and shot.stat().st_size > 20_000
            keep = os.environ.get("ERFTOOLS_SCREENSHOT_CORRELATION")
            if keep:
                import shutil

                shutil.copyfile(shot, keep)
        finally:
            drv.quit()
