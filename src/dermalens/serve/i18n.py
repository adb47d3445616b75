"""Languages: gettext catalogues (Babel), the request's language, numbers and dates per locale.

The language of a request is, first to last: `?lang=xx` (the page's switcher; it also sets
the `dermalens_lang` cookie), the cookie, the `Accept-Language` header, English. The
`Language` middleware sets it for the whole request, so `_()` anywhere below a route
(dependencies, `serve.uploads`, exception handlers) answers in that language.

HOW TO ADD A USER-FACING STRING (page text, notice, API error `detail`):
1. Wrap it. Python: `from dermalens.serve.i18n import _` then `_("empty file (0 bytes)")`;
   values go in named placeholders, formatted for the locale, never glued on:
   `_("over the limit of %(limit)s bytes") % {"limit": number(limit)}`. A module-level
   constant: mark it `N_("...")` (no-op) and translate where it is used: `_(CONSTANT)`.
   Templates (Jinja2, `serve.templating.render`): `{{ _("Result") }}`, or
   `{% trans %}...{% endtrans %}` around text with markup. Strings the browser script needs:
   add them to `routes/page.py` `browser_strings()` (app.js reads them as `T.key`).
   Medical terms: use the wording of `locale/<lang>/glossary.csv` (tests check it).
2. Extract and merge (from the repository root):
       pybabel extract -F babel.cfg -o src/dermalens/serve/locale/messages.pot \
           --add-location=file --sort-output -w 100 .
       pybabel update -N -w 100 -i src/dermalens/serve/locale/messages.pot \
           -d src/dermalens/serve/locale
3. Fill every `msgstr` in locale/{pt,es,fr,de}/LC_MESSAGES/messages.po (no "fuzzy" left).
4. Compile and commit .po and .mo together:
       pybabel compile -d src/dermalens/serve/locale
   `tests/test_i18n.py` fails while a message lacks a translation, a placeholder differs, or
   a .mo is older than its .po.
"""

from __future__ import annotations

import functools
import gettext as stdlib_gettext
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, date, datetime
from pathlib import Path

from babel import Locale
from babel.dates import format_skeleton, format_time
from babel.numbers import format_decimal, format_percent
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dermalens.wording import N_  # noqa: F401 (re-exported: serve code marks constants with it)

# English is the source language (the msgids); the others have a catalogue under locale/.
# "pt" is written in Brazilian Portuguese, as Babel's and the browsers' "pt" locale is.
LANGUAGES = {
    "en": "English",
    "pt": "Português",
    "es": "Español",
    "fr": "Français",
    "de": "Deutsch",
}
DEFAULT = "en"
COOKIE = "dermalens_lang"
QUERY = "lang"
COOKIE_MAX_AGE = 365 * 24 * 3600  # a language preference, nothing personal: keep a year
LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "messages"

# Set per request by `Language`; the default covers code outside a request (CLI, tests).
_current: ContextVar[str] = ContextVar("dermalens_language", default=DEFAULT)


@functools.cache
def translations(lang: str) -> stdlib_gettext.NullTranslations:
    """The compiled catalogue of `lang`; English needs none (its msgids are the text)."""
    if lang == DEFAULT:
        return stdlib_gettext.NullTranslations()
    if lang not in LANGUAGES:
        raise ValueError(f"unsupported language {lang!r}; supported: {list(LANGUAGES)}")
    # A missing .mo raises here: the package was built without its catalogues.
    return stdlib_gettext.translation(DOMAIN, LOCALE_DIR, [lang])


def current() -> str:
    """The language of the request being served (English outside one)."""
    return _current.get()


def activate(lang: str) -> None:
    """Make `lang` the current language (the middleware does it for each request)."""
    translations(lang)  # fail now, not at the first string
    _current.set(lang)


@contextmanager
def use(lang: str) -> Iterator[None]:
    """Speak `lang` inside the block only (a report in the patient's language, tests)."""
    translations(lang)
    token = _current.set(lang)
    try:
        yield
    finally:
        _current.reset(token)


def _(message: str) -> str:
    """`message` in the current language."""
    return translations(current()).gettext(message)


gettext = _


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(current()).ngettext(singular, plural, n)


def pgettext(context: str, message: str) -> str:
    """A message whose meaning depends on `context` (an English word used two ways)."""
    return translations(current()).pgettext(context, message)


# --- choosing the language ---------------------------------------------------------------

_TAG = re.compile(r"^\s*([A-Za-z]{1,8})(?:[-_][A-Za-z0-9]{1,8})*\s*$")


def supported(tag: str | None) -> str | None:
    """'pt-BR' -> 'pt', 'de' -> 'de'; None when the language is not one we have."""
    match = _TAG.match(tag or "")
    lang = match.group(1).lower() if match else None
    return lang if lang in LANGUAGES else None


def accept_language(header: str | None) -> list[str]:
    """Language tags of an Accept-Language header, most wanted first (RFC 9110 q-values)."""
    ranked = []
    for position, part in enumerate((header or "").split(",")):
        tag, _sep, params = part.partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _eq, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0  # a malformed weight: ignore that tag
        if tag.strip() and quality > 0:
            ranked.append((-quality, position, tag.strip()))
    return [tag for *_key, tag in sorted(ranked)]


def negotiate(header: str | None) -> str:
    """The first supported language of an Accept-Language header, else English."""
    for tag in accept_language(header):
        if tag == "*":
            return DEFAULT
        if lang := supported(tag):
            return lang
    return DEFAULT


def choose(query: str | None, cookie: str | None, header: str | None) -> str:
    """The switcher's choice, else the remembered cookie, else the browser's header."""
    return supported(query) or supported(cookie) or negotiate(header)


class Language:
    """ASGI middleware: sets the request's language, remembers a `?lang=` choice in a cookie,
    and says which language answered (`Content-Language`, `Vary`).

    The context variable is not reset after the response: each request runs in its own
    context, and the 500 handler (outside every middleware) still answers in its language.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        chosen = supported(request.query_params.get(QUERY))
        lang = choose(chosen, request.cookies.get(COOKIE), request.headers.get("accept-language"))
        activate(lang)
        scope.setdefault("state", {})["language"] = lang

        async def send_with_language(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Language"] = lang
                headers.add_vary_header("Accept-Language")
                headers.add_vary_header("Cookie")
                if chosen:
                    headers.append(
                        "Set-Cookie",
                        f"{COOKIE}={chosen}; Path=/; Max-Age={COOKIE_MAX_AGE}; SameSite=Lax",
                    )
            await send(message)

        await self.app(scope, receive, send_with_language)


# --- numbers and dates for the locale ----------------------------------------------------


def number(value: float, digits: int | None = None) -> str:
    """12345.6 -> '12,345.6' (en), '12.345,6' (de/pt/es), '12 345,6' (fr)."""
    if digits is None:
        return format_decimal(value, locale=current())
    return format_decimal(
        value, format=f"#,##0.{'0' * digits}" if digits else "#,##0", locale=current()
    )


def percent_digits(p: float) -> int:
    """Decimals shown for a probability; app.js's `percent` uses the same rule."""
    return 0 if p >= 0.995 or p < 0.001 else 1


def percent(p: float) -> str:
    """0.1234 -> '12.3%' (en), '12,3%' (pt), '12,3 %' (fr, de, es): as Intl.NumberFormat."""
    pattern = Locale.parse(current()).percent_formats[None].pattern
    if percent_digits(p):
        pattern = pattern.replace("0", "0.0", 1)  # CLDR percent patterns hold one '0'
    return format_percent(p, format=pattern, locale=current())


def signed_percent(p: float) -> str:
    """+0.12 -> '+12%' (en), '+12 %' (fr): a whole-number change with its sign."""
    pattern = Locale.parse(current()).percent_formats[None].pattern
    return format_percent(p, format=f"+{pattern};-{pattern}", locale=current())


def day(moment: date) -> str:
    """A date in the locale: 'Mar 4, 2026', '4 de mar. de 2026', '4. März 2026'."""
    return format_skeleton("yMMMd", moment, locale=current())


def when(moment: datetime) -> str:
    """A date and time in the locale, as the page's Intl.DateTimeFormat writes it (UTC)."""
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    day = format_skeleton("yMMMd", moment, locale=current())
    return f"{day} {format_time(moment, 'short', tzinfo=UTC, locale=current())}"
