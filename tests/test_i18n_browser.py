"""The page in a second language, in real headless Chromium: the switcher and its cookie, the
browser's Accept-Language, a prediction's result text, numbers and dates as the server's
Babel writes them, and an API error, all in Portuguese (and German for the header).

Needs Debian's chromium and the `playwright` package, like tests/test_serve_browser.py; skips,
saying why, when one is missing.

    nice -n 10 pytest tests/test_i18n_browser.py -q
"""

from __future__ import annotations

import socket
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from dermalens.runtime.predictor import DISCLAIMER, Predictor
from dermalens.serve import i18n
from dermalens.serve.app import create_app
from dermalens.serve.localize import class_name
from dermalens.serve.settings import Settings

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SPACES = str.maketrans({"\u00a0": " ", "\u202f": " "})  # CLDR's no-break spaces


@pytest.fixture(scope="module")
def sync_playwright():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is not installed (pip install playwright)")
    return sync_playwright


@pytest.fixture(scope="module")
def base(tiny_bundle, tmp_path_factory):
    """uvicorn on a free local port, in a background thread."""
    import uvicorn  # the serve extra; only this fixture needs a real server

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(model=tiny_bundle, data_dir=tmp_path_factory.mktemp("i18n-web"))
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def text(locator) -> str:
    return locator.inner_text().translate(SPACES).strip()


def test_page_and_result_in_portuguese(
    sync_playwright, base, tiny_bundle, fixture_images, tmp_path
):
    image = fixture_images[4]
    expected = Predictor(tiny_bundle, backend="onnx").predict(image, age=62, site="back")
    with i18n.use("pt"):
        disclaimer = i18n._(DISCLAIMER)
        names = [class_name(c.code) for c in expected.top]
        percents = [i18n.percent(c.probability).translate(SPACES) for c in expected.top]
        triage_words = {"Provavelmente benigna", "Possivelmente maligna: encaminhar",
                        "Incerto: encaminhar", "Não reconhecida como imagem de pele"}  # fmt: skip
    errors: list[str] = []
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        # an English browser: the switcher, not the header, makes the page Portuguese
        context = browser.new_context(locale="en-US", timezone_id="UTC")
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base}/?lang=pt")
        page.goto(base)  # remembered by the cookie
        assert page.locator("html").get_attribute("lang") == "pt"
        assert disclaimer in page.locator(".notice").inner_text()
        assert "não é um diagnóstico" in disclaimer

        page.set_input_files("#file", str(empty))  # the API's error, in Portuguese
        page.get_by_role("button", name="Analisar imagem").click()
        page.wait_for_selector("#error:not([hidden])", timeout=10_000)
        assert page.locator("#error").inner_text() == (
            "Não foi possível analisar a imagem: arquivo vazio (0 bytes)"
        )

        page.set_input_files("#file", str(image))
        page.get_by_label("Idade", exact=True).fill("62")
        page.get_by_label("Local do corpo", exact=True).select_option("back")
        page.get_by_role("button", name="Analisar imagem").click()
        page.wait_for_selector("#result:not([hidden])", timeout=30_000)

        rows = page.locator("#top li")
        assert [text(rows.nth(i).locator(".bar-label > span").first) for i in range(3)] == [
            f"{name}{code}" + ("classe maligna" if c.malignant else "")
            for name, code, c in zip(names, [c.code for c in expected.top], expected.top)
        ]
        assert [text(rows.nth(i).locator(".bar-value")) for i in range(3)] == percents
        assert text(page.locator("#triage")) in triage_words
        assert "Resultado" in page.locator("#result-title").inner_text()
        stamp = page.locator("#result-time").get_attribute("datetime")
        with i18n.use("pt"):
            assert text(page.locator("#result-time")) == i18n.when(
                datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            ).translate(SPACES)
        assert " de " in text(page.locator("#result-time"))  # "3 de dez. de 2026"

        page.get_by_role("button", name="Enviar avaliação").click()
        page.wait_for_selector("text=Obrigado: avaliação salva.", timeout=10_000)

        page.get_by_role("link", name="Deutsch").click()
        page.wait_for_load_state()
        assert page.locator("html").get_attribute("lang") == "de"
        assert "keine Diagnose" in page.locator(".notice").inner_text()
        context.close()

        # no cookie, a German browser: Accept-Language decides
        german = browser.new_context(locale="de-DE").new_page()
        german.goto(base)
        assert german.locator("html").get_attribute("lang") == "de"
        assert german.get_by_role("button", name="Bild analysieren").is_disabled()
        browser.close()
    assert errors == []
