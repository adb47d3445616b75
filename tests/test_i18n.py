"""The catalogues and glossaries: complete, consistent, compiled; language choice; locale formats.

Runs no server (tests/test_i18n_serve.py and the browser test do).

    nice -n 10 pytest tests/test_i18n.py -q
"""

from __future__ import annotations

import gettext
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from dermalens.runtime.predictor import DISCLAIMER
from dermalens.serve import i18n
from dermalens.serve.localize import class_name, glossary
from dermalens.taxonomy import CLASSES

ROOT = Path(__file__).resolve().parents[1]
LOCALE = i18n.LOCALE_DIR
TRANSLATED = [lang for lang in i18n.LANGUAGES if lang != i18n.DEFAULT]
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]|%[sd]|\{\w*\}")
TAG = re.compile(r"</?\w+[^>]*>")


def catalogue(lang: str):
    with (LOCALE / lang / "LC_MESSAGES" / "messages.po").open("rb") as fh:
        return read_po(fh, locale=lang)


def messages(lang: str) -> list:
    return [m for m in catalogue(lang) if m.id]


def template_ids() -> set:
    with (LOCALE / "messages.pot").open("rb") as fh:
        return {(m.context, m.id) for m in read_po(fh) if m.id}


def test_the_template_holds_every_string_of_the_code(tmp_path):
    """A wrapped string that nobody extracted fails here: run the commands in serve/i18n.py."""
    out = tmp_path / "fresh.pot"
    subprocess.run(
        [sys.executable, "-m", "babel.messages.frontend", "-q", "extract", "-F", "babel.cfg",
         "-o", str(out), "."],
        cwd=ROOT, check=True,
    )  # fmt: skip
    with out.open("rb") as fh:
        fresh = {(m.context, m.id) for m in read_po(fh) if m.id}
    assert fresh - template_ids() == set(), "new strings: extract and update the catalogues"


@pytest.mark.parametrize("lang", TRANSLATED)
def test_every_message_has_a_translation(lang):
    entries = {(m.context, m.id): m for m in messages(lang)}
    assert set(entries) >= template_ids(), f"{lang}: run pybabel update"
    empty = [m.id for m in entries.values() if not m.string or not all(m.string)]
    fuzzy = [m.id for m in entries.values() if m.fuzzy]
    assert empty == [] and fuzzy == []


@pytest.mark.parametrize("lang", TRANSLATED)
def test_placeholders_and_markup_match(lang):
    for m in messages(lang):
        ids = m.id if isinstance(m.id, tuple) else (m.id,)
        strings = m.string if isinstance(m.string, tuple) else (m.string,)
        for text in strings:
            assert sorted(PLACEHOLDER.findall(text)) == sorted(PLACEHOLDER.findall(ids[-1])), m.id
            assert TAG.findall(text) == TAG.findall(ids[0]), m.id


@pytest.mark.parametrize("lang", TRANSLATED)
def test_the_compiled_catalogue_matches_its_po(lang):
    """The .mo is committed: it must say what the .po says (re-run pybabel compile)."""
    with (LOCALE / lang / "LC_MESSAGES" / "messages.mo").open("rb") as fh:
        compiled = gettext.GNUTranslations(fh)
    for m in messages(lang):
        if isinstance(m.id, tuple):
            assert compiled.ngettext(m.id[0], m.id[1], 1) == m.string[0], m.id
        elif m.context:
            assert compiled.pgettext(m.context, m.id) == m.string, m.id
        else:
            assert compiled.gettext(m.id) == m.string, m.id


def test_every_language_has_the_same_glossary_and_every_class():
    english = glossary("en")
    for code, lesion_class in CLASSES.items():
        assert english[f"class:{code}"].term == lesion_class.name
    for lang in TRANSLATED:
        terms = glossary(lang)
        assert set(terms) == set(english), lang
        assert all(t.term.strip() for t in terms.values()), lang


def uses(text: str, english) -> bool:
    return any(re.search(rf"\b{re.escape(form)}\b", text, re.IGNORECASE) for form in english.forms)


@pytest.mark.parametrize("lang", TRANSLATED)
def test_sentences_and_class_names_use_the_glossary_terms(lang):
    """Where the English says "malignant", "refer", "lesion"..., the translation uses that
    language's glossary word (one of its forms), so a term means one thing everywhere."""
    terms = glossary(lang)
    english = {k: t for k, t in glossary("en").items() if k.startswith("term:")}
    texts = [(m.id, m.string) for m in messages(lang) if isinstance(m.id, str)]
    texts += [(glossary("en")[k].term, t.term) for k, t in terms.items() if k.startswith("class:")]
    wrong = [
        (key, source, text)
        for key, term in english.items()
        for source, text in texts
        if uses(source, term) and not any(f in text.lower() for f in terms[key].forms)
    ]
    assert wrong == []


@pytest.mark.parametrize("lang", TRANSLATED)
def test_the_notice_keeps_its_force(lang):
    """It says it is not a diagnosis, that a clinician must examine, and to see a dermatologist."""
    terms = glossary(lang)
    with i18n.use(lang):
        notice = i18n._(DISCLAIMER).lower()
    assert notice != DISCLAIMER.lower()
    for key in ("term:not a diagnosis", "term:clinician", "term:dermatologist", "term:lesion"):
        assert any(f in notice for f in terms[key].forms), (lang, key)


def test_class_names_follow_the_language():
    with i18n.use("pt"):
        assert class_name("mel") == "Melanoma"
        assert class_name("bcc") == "Carcinoma basocelular"
        assert class_name("my_open_class", "My open class") == "My open class"
    with i18n.use("de"):
        assert class_name("nv") == "Melanozytärer Nävus"
    assert class_name("nv", "Naevus (from bundle.json)") == "Naevus (from bundle.json)"  # English


@pytest.mark.parametrize(
    ("header", "lang"),
    [
        ("pt-BR,pt;q=0.9,en-US;q=0.8,en;q=0.7", "pt"),
        ("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5", "fr"),
        ("da, en-gb;q=0.8, de;q=0.9", "de"),  # q-values, not order
        ("es;q=0, de", "de"),  # q=0: not acceptable
        ("ja, zh-CN", "en"),
        ("*", "en"),
        ("", "en"),
        (None, "en"),
        ("de;q=abc, ;;, es", "es"),  # malformed parts are skipped
    ],
)
def test_accept_language_negotiation(header, lang):
    assert i18n.negotiate(header) == lang


def test_the_switcher_beats_the_cookie_which_beats_the_header():
    assert i18n.choose("de", "fr", "es") == "de"
    assert i18n.choose(None, "fr", "es") == "fr"
    assert i18n.choose("klingon", "xx", "es-MX") == "es"  # unknown values are ignored


@pytest.mark.parametrize(
    ("lang", "low", "mid", "high", "number"),
    [
        ("en", "0%", "12.3%", "100%", "1,234,567"),
        ("pt", "0%", "12,3%", "100%", "1.234.567"),
        ("es", "0 %", "12,3 %", "100 %", "1.234.567"),
        ("fr", "0 %", "12,3 %", "100 %", "1 234 567"),
        ("de", "0 %", "12,3 %", "100 %", "1.234.567"),
    ],
)
def test_percentages_and_numbers_per_locale(lang, low, mid, high, number):
    spaces = str.maketrans({"\u00a0": " ", "\u202f": " "})  # CLDR's no-break spaces
    with i18n.use(lang):
        got = [i18n.percent(p).translate(spaces) for p in (0.0004, 0.1234, 0.9961)]
        assert got == [low, mid, high]
        assert i18n.number(1234567).translate(spaces) == number


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        ("en", "Dec 3, 2026"),
        ("pt", "3 de dez. de 2026"),
        ("es", "3 dic 2026"),
        ("fr", "3 déc. 2026"),
        ("de", "3. Dez. 2026"),
    ],
)
def test_dates_per_locale(lang, expected):
    with i18n.use(lang):
        text = i18n.when(datetime(2026, 12, 3, 14, 5, tzinfo=UTC))
    assert text.startswith(expected)
    assert ("2:05" if lang == "en" else "14:05") in text


def test_use_restores_the_language():
    with i18n.use("fr"):
        assert i18n.current() == "fr"
    assert i18n.current() == i18n.DEFAULT
    with pytest.raises(ValueError, match="unsupported language 'xx'"):
        i18n.translations("xx")
