"""Headless Chromium driven by Selenium, offline: the driver path is given, so Selenium Manager
never tries to download a browser or a driver."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@contextmanager
def chromium(width: int = 1280, height: int = 1100) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def data_uri_image(src: str) -> Image.Image:
    """The picture a `data:image/png;base64,...` src holds (raises unless it is a PNG)."""
    head, _, payload = src.partition(",")
    assert head == "data:image/png;base64", head[:40]
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    image.load()
    assert image.format == "PNG"
    return image


def submit(browser: webdriver.Chrome, button: WebElement, timeout: float = 60.0) -> None:
    """Click a form's button and wait until the page it leads to has replaced this one (a click
    returns before the navigation it starts has finished)."""
    page = browser.find_element("tag name", "html")
    button.click()
    WebDriverWait(browser, timeout).until(expected_conditions.staleness_of(page))
