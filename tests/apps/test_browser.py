"""End to end: `erftools dashboard` in a real headless Chromium (Selenium + chromium-driver).

Skips when Chromium or its driver is absent, unless ERFTOOLS_REQUIRE_BROWSER=1 (CI), where it fails instead.
Set ERFTOOLS_SCREENSHOT=PATH to keep a copy of the screenshot (docs/img/dashboard.png is made that way).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import REPO, make_erf_run, make_sb_run

pytestmark = pytest.mark.browser

TIMEOUT = 40  # seconds for the server to come up and each page to render


def _find(env: str, *names: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env] if Path(os.environ[env]).is_file() else None
    for n in names:
        path = shutil.which(n)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser_paths():
    chromium = _find("ERFTOOLS_CHROMIUM", "chromium", "chromium-browser", "google-chrome")
    driver = _find("ERFTOOLS_CHROMEDRIVER", "chromedriver")
    missing = [n for n, p in (("chromium", chromium), ("chromedriver (chromium-driver)", driver)) if not p]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the Python package selenium")
    if missing:
        msg = f"needs {', '.join(missing)}"
        if os.environ.get("ERFTOOLS_REQUIRE_BROWSER", "") not in ("", "0"):
            pytest.fail(msg + " (ERFTOOLS_REQUIRE_BROWSER=1)")
        pytest.skip(msg)
    return chromium, driver


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _results(tmp_path: Path) -> Path:
    """The committed examples (what a new user sees), else a synthetic results folder."""
    examples = REPO / "reports" / "examples"
    if (examples / "erf").is_dir() and (examples / "shape-bias").is_dir():
        return examples
    root = tmp_path / "results"
    make_erf_run(root / "erf" / "replknet-31B", "replknet-31B", spread=12.0)
    make_erf_run(root / "erf" / "resnet-152", "resnet-152", spread=4.0)
    make_sb_run(root / "shape-bias" / "humans", "humans", p_shape=0.9, dm_kind="humans")
    make_sb_run(root / "shape-bias" / "model", "replknet-31B", p_shape=0.4)
    return root


@contextlib.contextmanager
def serve_dashboard(results: Path, tmp_path: Path):
    """``erftools dashboard --results RESULTS`` on a free port of 127.0.0.1, until it answers its health check;
    yields its URL and stops it afterwards."""
    port = _free_port()
    env = dict(os.environ, HOME=str(tmp_path))  # streamlit writes its config/credentials under HOME
    env.pop("ERFTOOLS_STIMULI", None)
    log = open(tmp_path / "dashboard.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "erftools.cli", "dashboard", "--results", str(results),
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("the dashboard did not start:\n" + (tmp_path / "dashboard.log").read_text()[-3000:])
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def dashboard(tmp_path):
    with serve_dashboard(_results(tmp_path), tmp_path) as url:
        yield url


def _wait_for_image(drv, css_key: str) -> None:
    """Wait until the container ``.st-key-<key>`` holds a fully loaded, non-empty image."""
    from selenium.webdriver.support.ui import WebDriverWait

    script = ("const img = document.querySelector(arguments[0]);"
              "return !!img && img.complete && img.naturalWidth > 100 && img.naturalHeight > 100;")
    WebDriverWait(drv, TIMEOUT, poll_frequency=0.25).until(
        lambda d: d.execute_script(script, f".st-key-{css_key} img"))


def _wait_for(drv, css: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(drv, TIMEOUT, poll_frequency=0.25).until(lambda d: d.find_elements(By.CSS_SELECTOR, css))


def _assert_no_exception(drv) -> None:
    from selenium.webdriver.common.by import By

    exc = drv.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert not exc, "the page shows an exception: " + " | ".join(e.text[:500] for e in exc)
    body = drv.find_element(By.TAG_NAME, "body").text
    assert "Traceback" not in body


def test_dashboard_in_chromium(browser_paths, dashboard, tmp_path):
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
    drv = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    try:
        drv.set_page_load_timeout(TIMEOUT)
        drv.get(f"{dashboard}/?page=erf")
        _wait_for_image(drv, "erf-heatmap")
        _wait_for(drv, '[data-testid="stDataFrame"]')  # the area-ratio table below the maps
        _assert_no_exception(drv)
        assert "Effective receptive fields" in drv.find_element(By.TAG_NAME, "body").text
        shot = tmp_path / "dashboard.png"
        assert drv.save_screenshot(str(shot)) and shot.stat().st_size > 20_000
        keep = os.environ.get("ERFTOOLS_SCREENSHOT")
        if keep:
            Path(keep).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, keep)

        drv.get(f"{dashboard}/?page=shape-bias")
        _wait_for_image(drv, "shape-bias-plot")
        _wait_for_image(drv, "shape-bias-bars")
        _assert_no_exception(drv)
        # the bars' smallest text, as large on screen as the page shows it (side by side it was 7 px)
        from erftools.dashboard.app import BARS_DPI
        from erftools.shapebias.plots import BAR_LABEL_PT

        shown, natural = drv.execute_script(
            "const i = document.querySelector('.st-key-shape-bias-bars img'); return [i.clientWidth, i.naturalWidth];")
        assert BAR_LABEL_PT * BARS_DPI / 72 * shown / natural >= 11, (shown, natural)
        assert "Shape bias on cue-conflict images" in drv.find_element(By.TAG_NAME, "body").text
        shot2 = tmp_path / "dashboard-shape-bias.png"
        assert drv.save_screenshot(str(shot2)) and shot2.stat().st_size > 20_000
        if keep:
            shutil.copyfile(shot2, Path(keep).with_name(Path(keep).stem + "-shape-bias.png"))
    finally:
        drv.quit()
