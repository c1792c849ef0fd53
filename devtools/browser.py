"""Headless Chromium from Debian's packages (`make chromium`), driven by Selenium through the
distribution's chromedriver. Both paths are given to Selenium, so Selenium Manager is never
asked for a driver and nothing is downloaded."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


class BrowserMissing(Exception):
    pass


@contextmanager
def chromium(width: int = 1280, height: int = 1000) -> Iterator[webdriver.Chrome]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        raise BrowserMissing(f"{', '.join(missing)} missing: run `make chromium`")
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        # The pages are our own local server's; containers (and root) often lack the
        # namespaces Chromium's sandbox needs.
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        # Offline machines: no update checks, sync or other calls home.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    # The console log, for tests to find CSP violations and failed loads.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
