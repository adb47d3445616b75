"""Jinja2 templates with gettext: `render("index.html", ...)` -> a page in the request's language.

Every template gets `_`, `ngettext`, `pgettext` (the request's catalogue, see `serve.i18n`),
`lang`, `languages` (code -> name, for the switcher), `percent`, `number` and `when`.
Autoescaping is on; `{% trans %}` blocks may hold markup, their variables are escaped.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Undefined, select_autoescape

from dermalens.serve import i18n, localize

TEMPLATES = Path(__file__).parent / "templates"


@functools.cache
def environment(strict: bool = True) -> Environment:
    """The environment; `strict=False` lets a template test a variable it was not given
    (`{% if new_token %}`), as Starlette's `Jinja2Templates(env=...)` pages do."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "xml"]),
        # a misspelt variable fails the test, not the patient
        undefined=StrictUndefined if strict else Undefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.policies["ext.i18n.trimmed"] = True  # as babel.cfg extracts {% trans %} blocks
    # newstyle: `_("%(n)s MB", n=...)` formats after translating and escapes the values
    env.install_gettext_callables(  # type: ignore[attr-defined]
        i18n.gettext, i18n.ngettext, newstyle=True, pgettext=i18n.pgettext
    )
    env.globals.update(
        languages=i18n.LANGUAGES,
        percent=i18n.percent,
        number=i18n.number,
        when=i18n.when,
        day=i18n.day,
        class_name=localize.class_name,
        triage_word=localize.triage_word,
        change_reason=localize.change_reason,
        language=i18n.current,  # `{{ language() }}`: for pages rendered without `lang`
    )
    return env


def render(
    name: str, headers: dict[str, str] | None = None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """The template `name` in the current language, as an HTML response."""
    html = environment().get_template(name).render(lang=i18n.current(), **context)
    return HTMLResponse(html, status_code=status_code, headers=headers)
