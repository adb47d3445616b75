"""The single-page web interface at `/`; its script and styles are served from /static."""

from __future__ import annotations

import functools
from html import escape
from pathlib import Path
from string import Template
from urllib.parse import quote_plus

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from dermalens.data.records import SEXES, SITES
from dermalens.runtime.predictor import DISCLAIMER, NOT_SKIN_ADVICE
from dermalens.serve.deps import PredictorDep, SettingsDep
from dermalens.taxonomy import display_name

router = APIRouter(include_in_schema=False)
TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "index.html"
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@functools.cache
def template() -> Template:
    return Template(TEMPLATE.read_text(encoding="utf-8"))


def options(values: list[tuple[str, str]]) -> str:
    return "\n".join(f'<option value="{escape(v)}">{escape(text)}</option>' for v, text in values)


@router.get("/", response_class=HTMLResponse)
def index(predictor: PredictorDep, settings: SettingsDep) -> HTMLResponse:
    """The web page: upload or photograph a lesion, see the result, give feedback."""
    bundle, pre = predictor.bundle, predictor.pre
    feedback_classes = [*bundle.classes, *(["unk"] if "unk" not in bundle.classes else [])]
    html = template().substitute(
        model_name=escape(bundle.name),
        version=escape(bundle.version),
        disclaimer=escape(DISCLAIMER),
        not_skin_advice=escape(NOT_SKIN_ADVICE[0].upper() + NOT_SKIN_ADVICE[1:]),
        max_mb=f"{settings.max_upload_bytes / 1e6:.0f}",
        aspect=f"{pre.width} / {pre.height}",
        fit="fill" if pre.resize == "stretch" else "cover",
        maps_href=escape(settings.maps_url.format(query=quote_plus(settings.maps_query))),
        sex_options=options([(s, s.capitalize()) for s in SEXES]),
        site_options=options([(s, s.capitalize()) for s in SITES]),
        class_options=options([(c, display_name(c)) for c in feedback_classes]),
    )
    return HTMLResponse(html, headers={"Content-Security-Policy": CSP})
