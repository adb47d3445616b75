"""The service in the request's language, through TestClient: the page, the switcher's
cookie, Accept-Language, API errors and a prediction's words.

    nice -n 10 pytest tests/test_i18n_serve.py -q
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from dermalens.bundle import default_model_path
from dermalens.runtime import shift
from dermalens.runtime.predictor import DISCLAIMER, Predictor
from dermalens.serve import i18n
from dermalens.serve.app import create_app
from dermalens.serve.localize import MEASURES, REASONS, measure, reword, triage_rule
from dermalens.serve.routes.model import DEFAULT_INTENDED_USE
from dermalens.serve.settings import Settings

DEFAULT_BUNDLE = default_model_path()


@pytest.fixture(scope="module")
def client(tiny_bundle, tmp_path_factory):
    settings = Settings(
        model=tiny_bundle, data_dir=tmp_path_factory.mktemp("i18n"), max_upload_bytes=200_000
    )
    with TestClient(create_app(settings)) as client:
        yield client


def strings(html: str) -> dict:
    """The JSON block of browser strings in the page."""
    block = re.search(r'<script id="strings" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(block.group(1))


def test_english_without_a_preference(client):
    page = client.get("/")
    assert page.headers["content-language"] == "en"
    assert '<html lang="en">' in page.text
    assert DISCLAIMER in page.text
    assert strings(page.text)["triage_malignant"] == "Possibly malignant: refer"


def test_accept_language_picks_the_page_language(client):
    page = client.get("/", headers={"Accept-Language": "pt-BR,pt;q=0.9,en;q=0.5"})
    assert page.headers["content-language"] == "pt"
    assert "Accept-Language" in page.headers["vary"] and "Cookie" in page.headers["vary"]
    assert '<html lang="pt">' in page.text
    assert "não é um diagnóstico" in page.text
    assert ">Analisar imagem</button>" in page.text
    assert strings(page.text)["triage_malignant"] == "Possivelmente maligna: encaminhar"
    assert '<option value="back">Costas</option>' in page.text
    assert "set-cookie" not in page.headers  # a header is no choice to remember


def test_the_switcher_sets_a_cookie_that_wins_over_the_header(tiny_bundle, tmp_path):
    settings = Settings(model=tiny_bundle, data_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        chosen = client.get("/?lang=de", headers={"Accept-Language": "fr"})
        assert chosen.headers["content-language"] == "de"
        cookie = chosen.headers["set-cookie"]
        assert cookie.startswith(f"{i18n.COOKIE}=de;") and "SameSite=Lax" in cookie
        assert "Max-Age=31536000" in cookie
        # the next visit, with the cookie and a French browser, is still German
        again = client.get("/", headers={"Accept-Language": "fr"})
        assert '<html lang="de">' in again.text
        assert "Nur eine Entscheidungshilfe, keine Diagnose." in again.text
        assert 'aria-current="true">Deutsch</a>' in again.text
        assert "set-cookie" not in again.headers
        # the cookie holds for the API too
        missing = client.get("/api/v1/predictions/0123abcd")
        assert missing.json() == {"detail": "Vorhersage '0123abcd' nicht gefunden"}


def test_an_unknown_language_is_ignored(client):
    page = client.get("/?lang=xx", headers={"Accept-Language": "es"})
    assert page.headers["content-language"] == "es"
    assert "set-cookie" not in page.headers


@pytest.mark.parametrize(
    ("lang", "detail"),
    [
        ("en", "empty file (0 bytes)"),
        ("pt", "arquivo vazio (0 bytes)"),
        ("es", "archivo vacío (0 bytes)"),
        ("fr", "fichier vide (0 octet)"),
        ("de", "leere Datei (0 Byte)"),
    ],
)
def test_an_api_error_in_each_language(client, lang, detail):
    response = client.post(
        "/api/v1/predictions",
        files={"file": ("empty.jpg", b"", "image/jpeg")},
        headers={"Accept-Language": lang},
    )
    assert response.status_code == 400
    assert response.json() == {"detail": detail}
    assert response.headers["content-language"] == lang


def test_numbers_in_errors_follow_the_locale(client):
    big = b"\xff" * 230_000  # over the limit, under the body limit (envelope)
    response = client.post(
        "/api/v1/predictions",
        files={"file": ("big.jpg", big, "image/jpeg")},
        headers={"Accept-Language": "de"},
    )
    assert response.status_code == 413
    assert response.json()["detail"] == (
        "die Datei überschreitet die Upload-Grenze von 200.000 Byte (MAX_UPLOAD_BYTES)"
    )


def test_validation_and_routing_errors_are_translated(client, fixture_images):
    files = {"file": ("a.jpg", fixture_images[0].read_bytes(), "image/jpeg")}
    fr = {"Accept-Language": "fr"}
    age = client.post("/api/v1/predictions", files=files, data={"age": "old"}, headers=fr)
    assert age.status_code == 422
    assert age.json()["detail"] == (
        "age: La valeur doit être un nombre valide\u00a0; le texte ne se lit pas comme un nombre"
    )
    assert age.json()["errors"][0]["type"] == "float_parsing"
    site = client.post("/api/v1/predictions", files=files, data={"site": "elbow"}, headers=fr)
    assert site.json()["detail"].startswith("site\u00a0: 'elbow' ne fait pas partie de [")
    missing = client.post("/api/v1/predictions", data={"age": "40"}, headers=fr)
    assert missing.json()["detail"] == "file: Champ obligatoire"
    assert client.get("/nowhere", headers=fr).json() == {"detail": "Introuvable"}


def test_a_prediction_speaks_the_language_but_is_stored_in_english(client, fixture_images):
    files = {"file": ("a.jpg", fixture_images[4].read_bytes(), "image/jpeg")}
    english = client.post("/api/v1/predictions", files=files).json()
    created = client.post(
        "/api/v1/predictions", files=files, headers={"Accept-Language": "es"}
    ).json()
    assert created["disclaimer"].startswith("Solo es una ayuda a la decisión, no un diagnóstico.")
    assert [c["code"] for c in created["top"]] == [c["code"] for c in english["top"]]
    assert [c["name"] for c in created["top"]] != [c["name"] for c in english["top"]]
    assert created["probabilities"] == english["probabilities"]
    stored = client.get(f"/api/v1/predictions/{created['id']}").json()
    assert stored["disclaimer"] == DISCLAIMER
    assert [c["name"] for c in stored["top"]] == [c["name"] for c in english["top"]]
    again = client.get(f"/api/v1/predictions/{created['id']}", headers={"Accept-Language": "es"})
    assert again.json()["top"] == created["top"]


def real_sentences(tiny_bundle) -> tuple[list[str], list[str]]:
    """Triage rules and not-skin reasons exactly as the runtime writes them."""
    default = Predictor(DEFAULT_BUNDLE, backend="onnx")  # has the OOD check and colour judge
    tiny = Predictor(tiny_bundle, backend="onnx")
    probs = np.full(len(tiny.bundle.classes), 1 / len(tiny.bundle.classes), np.float32)
    unknown = SimpleNamespace(bundle=tiny.bundle, names=tiny.names, flags=[None] * len(probs))
    rules = [
        tiny.result(probs).triage_rule,
        default.predict(Image.new("RGB", (64, 48), (128, 100, 90))).triage_rule,
        Predictor.no_triage_rule(unknown),  # names five classes "and 2 more"
        Predictor.no_triage_rule(unknown, shown=10),
    ]
    ood, skin = default.ood, np.array([[50.0, 0.99, 50.0]])  # pixel stats that pass
    reasons = [
        ood.decide(np.zeros(1), np.zeros(1), np.array([[0.0, 0.99, 50.0]]))[1][0],
        ood.decide(np.zeros(1), np.zeros(1), np.array([[50.0, 0.1, 50.0]]))[1][0],
        ood.decide(np.zeros(1), np.zeros(1), np.array([[50.0, 0.99, 0.0]]))[1][0],
        ood.decide(np.array([99.0]), np.zeros(1), skin)[1][0],
        ood.decide(np.zeros(1), np.array([99.0]), skin)[1][0],
    ]
    assert all(reasons) and len(set(reasons)) == 5
    return rules, reasons


def test_the_triage_rule_and_reasons_are_reworded(tiny_bundle):
    """Every sentence the runtime writes matches a template: the same in English, reworded
    (numbers in the locale's notation) in the others."""
    rules, reasons = real_sentences(tiny_bundle)
    for rule in rules:
        assert triage_rule(rule) == rule  # English: parsed and rebuilt unchanged
        for lang in ("pt", "es", "fr", "de"):
            with i18n.use(lang):
                worded = triage_rule(rule)
            assert all(part not in worded for part in rule.split("; ")), (lang, worded)
    for reason in reasons:
        assert reword(reason, REASONS) == reason
        with i18n.use("de"):
            assert reword(reason, REASONS) != reason
    with i18n.use("pt"):
        assert triage_rule(rules[0]).startswith("maligna se P(classes malignas) >= 0,500")
        assert "Ceratose actínica / carcinoma intraepitelial (akiec)" in triage_rule(rules[2])
        assert "e mais 2" in triage_rule(rules[2])
    with i18n.use("fr"):
        assert reword(reasons[0], REASONS) == "image uniforme (écart type des pixels 0,0 < 3)"
    assert reword("a sentence of a newer version", REASONS) == "a sentence of a newer version"


def test_shift_words_and_the_model_card(client):
    assert set(MEASURES) == set(shift.STATS)  # a new statistic needs its words
    with i18n.use("pt"):
        assert measure("saturation low") == "saturação abaixo do esperado"
        assert measure("something_new high") == "something_new high"
        assert i18n._(shift.IMAGE_WARNING).startswith("esta imagem difere dos dados")
    card = client.get("/api/v1/model", headers={"Accept-Language": "de"}).json()
    assert card["disclaimer"].startswith("Nur eine Entscheidungshilfe, keine Diagnose.")
    with i18n.use("de"):  # a bundle's own card text stays as written; the default is ours
        assert i18n._(DEFAULT_INTENDED_USE).startswith("Entscheidungshilfe für Ärztinnen")
    assert client.get("/api/v1/model").json()["disclaimer"] == DISCLAIMER


@pytest.mark.parametrize("lang", ["pt", "es", "fr", "de"])
def test_no_english_sentence_is_left_on_the_page(client, lang):
    """Every catalogue sentence the page shows (its script's included) is in `lang`."""
    from babel.messages.pofile import read_po

    with (i18n.LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po").open("rb") as fh:
        catalogue = read_po(fh)
    english = [
        m.id
        for m in catalogue
        if isinstance(m.id, str) and len(m.id) > 24 and m.string != m.id and "%" not in m.id
    ]
    page = client.get("/", headers={"Accept-Language": lang}).text  # no cookie: others rely on it
    unescaped = json.dumps(strings(page), ensure_ascii=False) + page.replace("&#39;", "'")
    assert [sentence for sentence in english if sentence in unescaped] == []
    english_page = client.get("/").text.replace("&#39;", "'")
    assert sum(sentence in english_page for sentence in english) >= 20  # the check has teeth
    assert f'<html lang="{lang}">' in page


def test_staff_pages_and_patient_errors_in_a_second_language(client):
    login = client.get("/login", headers={"Accept-Language": "pt-BR"})
    assert login.status_code == 200
    assert '<html lang="pt">' in login.text and "Acesso da equipe" in login.text
    assert ">Entrar</button>" in login.text
    wrong = client.post(
        "/login",
        data={"username": "nobody", "password": "x", "csrf_token": "forged"},
        headers={"Accept-Language": "es"},
    )
    assert wrong.status_code == 403
    assert "El formulario caducó o vino de otro sitio" in wrong.text
    patients = client.get("/api/v1/patients", headers={"Accept-Language": "de"})
    assert patients.status_code == 401
    assert patients.json()["detail"].startswith("Anmeldung erforderlich: Melden Sie sich")
