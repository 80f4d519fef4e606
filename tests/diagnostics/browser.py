"""Open an HTML file in headless Chromium (Debian's chromium + chromedriver, via Selenium)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def require_browser():
    """Skip without Chromium, unless BIGMALI_REQUIRE_BROWSER=1 (CI), where its absence fails."""
    if CHROMIUM and CHROMEDRIVER:
        return
    message = "headless Chromium and chromedriver are needed (Debian: apt-get install chromium chromium-driver)"
    if os.environ.get("BIGMALI_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def render(html: Path, screenshot: Path, width: int = 1280) -> dict:
    """Load the page, wait for it, and return what the browser saw:
    ``{"images": [{"src_kind", "complete", "width", "height"}], "screenshot": Path, "title": str,
    "page_height": int}``. The screenshot covers the whole page."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.get(Path(html).resolve().as_uri())
        driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null))).then(() => done(true));"
        )
        images = driver.execute_script(
            "return Array.from(document.images).map(i => ({src_kind: i.src.slice(0, 22), complete: i.complete,"
            " width: i.naturalWidth, height: i.naturalHeight}));"
        )
        height = int(driver.execute_script("return document.documentElement.scrollHeight;"))
        driver.set_window_size(width, min(max(height, 900), 16000))
        driver.save_screenshot(str(screenshot))
        return {"images": images, "screenshot": Path(screenshot), "title": driver.title, "page_height": height}
    finally:
        driver.quit()


def screenshot_is_not_blank(path: Path) -> float:
    """The fraction of the screenshot's pixels that are not the page background."""
    import matplotlib.image as mpimg

    pixels = mpimg.imread(path)[..., :3]
    background = np.median(pixels.reshape(-1, 3), axis=0)
    return float(np.mean(np.any(np.abs(pixels - background) > 0.05, axis=-1)))
