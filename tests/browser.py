"""Headless Chromium for the browser tests (the exported site and JupyterLab).

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them). Without
them the tests skip locally, but fail when ``COURSE_REQUIRE_BROWSER=1`` (CI sets it).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
LOCAL_SCHEMES = {"file", "data", "blob", "about", "chrome", "devtools", "ws"}
LOCAL_HOSTS = {"127.0.0.1", "localhost", None}


def start_chromium(page_load_timeout_s: float = 60, window: str = "1280,1600"):
    """A headless Chromium driver logging console messages and network requests.

    Skips the calling test when Chromium is absent (fails with ``COURSE_REQUIRE_BROWSER=1``).
    """
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        message = "headless Chromium not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("COURSE_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must not try to download drivers
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-quic", "--no-first-run", "--allow-file-access-from-files",
        f"--window-size={window}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(page_load_timeout_s)
    return driver


def outside_requests(performance_log: list[dict]) -> list[str]:
    """URLs of requests (from Chromium's performance log) that left this machine."""
    urls = []
    for entry in performance_log:
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            parsed = urlparse(url)
            if parsed.scheme not in LOCAL_SCHEMES and parsed.hostname not in LOCAL_HOSTS:
                urls.append(url)
    return urls


def console_errors(driver) -> list[str]:
    """SEVERE console messages since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
