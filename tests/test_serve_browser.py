"""End to end in real headless Chromium: open the page, upload an image, see the top class and
the heatmap, send feedback, save a screenshot.

Needs Debian's chromium (/usr/bin/chromium) and the `playwright` Python package (its driver
only; browsers are never downloaded). Skips, saying why, only when one of them is missing.

    nice -n 10 pytest tests/test_serve_browser.py -q
    DERMALENS_SCREENSHOT=docs/screenshot.png nice -n 10 pytest tests/test_serve_browser.py
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from dermalens.runtime.predictor import Predictor
from dermalens.serve.app import create_app
from dermalens.serve.settings import Settings

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "browser-token"
# the heatmap canvas's most opaque pixel: its opacity and colour
HEAT_PEAK = """() => {
  const canvas = document.getElementById("heatmap");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let best = 3;
  for (let k = 3; k < data.length; k += 4) if (data[k] > data[best]) best = k;
  return { width: canvas.width, alpha: data[best], rgb: [...data.slice(best - 3, best)] };
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def sync_playwright():
    if not CHROMIUM.is_file():
        pytest.skip(
            f"{CHROMIUM} not found: install Debian's chromium package (apt-get install chromium)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is not installed (pip install playwright)")
    return sync_playwright


@pytest.fixture(scope="module")
def server(tiny_bundle, tmp_path_factory):
    """uvicorn on a free local port, in a background thread."""
    import uvicorn

    bundle = os.environ.get("DERMALENS_SCREENSHOT_MODEL") or tiny_bundle
    settings = Settings(model=bundle, data_dir=tmp_path_factory.mktemp("web"), api_token=TOKEN)
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=free_port(), log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{config.port}", Path(bundle)
    server.should_exit = True
    thread.join(timeout=10)


def test_page_end_to_end(sync_playwright, server, fixture_images, tmp_path):
    base, bundle = server
    image = fixture_images[4]
    # the page sends these patient fields too; a metadata model's answer depends on them
    expected = (
        Predictor(bundle, backend="onnx")
        .predict(image, age=62, sex="female", site="back")
        .top[0]
        .name
    )
    errors: list[str] = []
    foreign: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        sent: list[str] = []
        page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
        page.on(
            "request",
            lambda r: (
                foreign.append(r.url)
                if urlparse(r.url).hostname not in ("127.0.0.1", None)
                and not r.url.startswith("data:")
                else None
            ),
        )
        page.goto(base)
        assert "not a diagnosis" in page.locator(".notice").inner_text()
        analyse = page.get_by_role("button", name="Analyse image")
        assert analyse.is_disabled()

        page.set_input_files("#file", str(image))
        page.get_by_label("Age", exact=True).fill("62")
        page.get_by_label("Sex", exact=True).select_option("female")
        page.get_by_label("Body site", exact=True).select_option("back")
        analyse.click()

        page.wait_for_selector("#result:not([hidden])", timeout=30_000)
        first = page.locator("#top li").first
        assert expected in first.inner_text()
        assert page.locator("#top li").count() == 3
        assert page.locator("#triage").inner_text().strip()
        # the page asks for the CAM grid only and colours it on a canvas (see drawHeatmap)
        assert sent[0].endswith("/api/v1/predictions?explain=true&overlay=false")
        peak = page.evaluate(HEAT_PEAK)
        assert peak["width"] >= 64 and 0.4 * 255 <= peak["alpha"] <= 0.45 * 255 + 1
        assert peak["rgb"][0] > 100 and peak["rgb"][2] < 20  # heat ~1 is dark red
        page.get_by_text("Heatmap", exact=True).click()
        assert "no-heatmap" in page.locator("#viewer").get_attribute("class")
        page.get_by_text("Heatmap", exact=True).click()
        assert "no-heatmap" not in page.locator("#viewer").get_attribute("class")
        assert (
            page.get_by_role("link", name="Find a dermatologist near me").get_attribute("target")
            == "_blank"
        )

        page.get_by_label("Disagree; the correct class is:").check()
        page.get_by_label("Correct class", exact=True).select_option("mel")
        page.get_by_label("Note (optional)").fill("Dermoscopy suggests melanoma; excised.")
        page.keyboard.press("Tab")  # to the button, then submit by keyboard
        page.keyboard.press("Enter")
        page.wait_for_selector("text=Thank you: feedback saved.", timeout=10_000)

        screenshot = tmp_path / "page.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 10_000
        if target := os.environ.get("DERMALENS_SCREENSHOT"):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(screenshot, target)

        page.set_viewport_size({"width": 390, "height": 844})  # a phone: no sideways scrolling
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        browser.close()

    assert errors == []
    assert foreign == []
    exported = httpx.get(
        f"{base}/api/v1/feedback", headers={"Authorization": f"Bearer {TOKEN}"}
    ).json()
    assert exported["count"] == 1
    row = exported["feedback"][0]
    assert (row["agree"], row["correct_label"], row["age"], row["site"]) == (
        False,
        "mel",
        62.0,
        "back",
    )
    assert row["note"] == "Dermoscopy suggests melanoma; excised."
