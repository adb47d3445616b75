"""The single-page web interface at `/`; its script and styles are served from /static.

The page is rendered in the request's language (`serve.i18n`); the strings its script needs
travel with it as a JSON block (`browser_strings`), so app.js holds no English of its own.
"""

from __future__ import annotations

from urllib.parse import quote_plus

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from dermalens.data.records import SEXES, SITES
from dermalens.runtime.predictor import DISCLAIMER, NOT_SKIN_ADVICE
from dermalens.serve import auth
from dermalens.serve.deps import PredictorDep, SessionDep, SettingsDep
from dermalens.serve.i18n import N_, _, pgettext
from dermalens.serve.localize import class_name
from dermalens.serve.templating import render

router = APIRouter(include_in_schema=False)
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

# The form's choices: the stored values are these English codes, the page shows the words.
SEX_WORDS = {"female": N_("Female"), "male": N_("Male")}
SITE_WORDS = {
    "abdomen": N_("Abdomen"),
    "acral": N_("Acral (palms, soles, nails)"),
    "back": N_("Back"),
    "chest": N_("Chest"),
    "ear": N_("Ear"),
    "face": N_("Face"),
    "foot": N_("Foot"),
    "genital": N_("Genitals"),
    "hand": N_("Hand"),
    "head/neck": N_("Head or neck"),
    "lower extremity": N_("Leg"),
    "neck": N_("Neck"),
    "oral/genital": N_("Mouth or genitals"),
    "palms/soles": N_("Palms or soles"),
    "scalp": N_("Scalp"),
    "trunk": N_("Trunk"),
    "upper extremity": N_("Arm"),
}
# the map search's default words (DERMALENS_MAPS_QUERY); another setting is sent as it is
MAPS_QUERY = N_("dermatologist")


def word(words: dict[str, str], value: str) -> str:
    """The shown word for a stored code; a code with no entry is shown as itself."""
    return _(words[value]) if value in words else value.capitalize()


def browser_strings() -> dict[str, str]:
    """Every sentence app.js shows, in the request's language (placeholders: %(name)s)."""
    return {
        "triage_benign": pgettext("triage", "Likely benign"),
        "triage_malignant": pgettext("triage", "Possibly malignant: refer"),
        "triage_uncertain": pgettext("triage", "Uncertain: refer"),
        "triage_not_skin": pgettext("triage", "Not recognised as a skin image"),
        "selected_image": _("Selected image: %(name)s"),
        "kilobytes": _("%(size)s kB"),
        "megabytes": _("%(size)s MB"),
        "malignant_class": _("malignant class"),
        "malignancy_unknown": _("malignancy not known"),
        "confidence_of": _("%(name)s confidence"),
        "not_skin": _(
            "This does not look like a dermoscopic skin image%(reason)s; the classes below "
            "are unreliable."
        ),
        "not_skin_reason": _(" (%(reason)s)"),
        "not_skin_advice": _(NOT_SKIN_ADVICE)[:1].upper() + _(NOT_SKIN_ADVICE)[1:] + ".",
        "low_confidence": _("Low confidence: the model is unsure about this image."),
        "milliseconds": _("%(ms)s ms"),
        "analysing": _("Analysing…"),
        "analyse": _("Analyse image"),
        "server_answered": _("the server answered %(status)s"),
        "analyse_failed": _("Could not analyse the image: %(error)s"),
        "sending": _("Sending…"),
        "feedback_saved": _("Thank you: feedback saved."),
        "feedback_failed": _("Feedback not saved: %(error)s"),
        # the scope gate's answer (runtime.router), by scope.reason and scope.kind
        "scope_other_skin": _(
            "This photo seems to show skin that is not a close-up of a single lesion, for "
            "example a rash, a wider body area, a nail or hair."
        ),
        "scope_not_skin": _("This does not seem to be a photo of skin."),
        "scope_no_model_clinical": _(
            "This seems to be a camera or phone close-up of a skin lesion, but no installed "
            "model covers such photos."
        ),
        "scope_no_model_dermoscopic": _(
            "This seems to be a dermoscopic close-up of a skin lesion, but no installed model "
            "covers such images."
        ),
        "scope_not_made_for": _(
            "The chosen model was not made for this kind of photo, so it gives no answer."
        ),
        "scope_covers": _("What the installed models cover: %(covers)s."),
        "covers_dermoscopic": _("dermoscopic close-ups of skin lesions"),
        "covers_clinical": _("camera or phone close-ups of skin lesions"),
        "scope_advice": _(
            "Please show the skin to a doctor or dermatologist: this tool cannot assess this image."
        ),
        "answered_dermoscopic": _(
            "Answered by the model for dermoscopic close-ups of skin lesions."
        ),
        "answered_clinical": _(
            "Answered by the model for camera or phone close-ups of skin lesions."
        ),
    }


def options(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"value": value, "text": text} for value, text in pairs]


@router.get("/", response_class=HTMLResponse)
def index(
    predictor: PredictorDep, settings: SettingsDep, request: Request, session: SessionDep
) -> Response:
    """The web page: upload or photograph a lesion, see the result, give feedback."""
    signed_in = _signed_in(request, session, settings)
    if not settings.anonymous_predictions and not signed_in:
        return RedirectResponse("/login?next=/", status_code=status.HTTP_303_SEE_OTHER)
    # A signed-in page's POSTs carry the session cookie, so they need the CSRF token
    # (serve.csrf); an anonymous visitor gets no cookie at all.
    csrf, new_cookie = request.app.state.csrf.token(request) if signed_in else ("", None)
    bundle, pre = predictor.bundle, predictor.pre
    feedback_classes = [*bundle.classes, *(["unk"] if "unk" not in bundle.classes else [])]
    names = dict(zip(bundle.classes, predictor.names))
    response = render(
        "index.html",
        headers={"Content-Security-Policy": CSP},
        model_name=bundle.name,
        version=bundle.version,
        disclaimer=_(DISCLAIMER),
        max_mb=f"{settings.max_upload_bytes / 1e6:.0f}",
        aspect=f"{pre.width} / {pre.height}",
        fit="fill" if pre.resize == "stretch" else "cover",
        maps_href=settings.maps_url.format(query=quote_plus(_(settings.maps_query))),
        sex_options=options([(s, word(SEX_WORDS, s)) for s in SEXES]),
        site_options=options([(s, word(SITE_WORDS, s)) for s in SITES]),
        class_options=options([(c, class_name(c, names.get(c))) for c in feedback_classes]),
        strings=browser_strings(),
        csrf_token=csrf,
    )
    request.app.state.csrf.set_cookie(response, new_cookie)
    return response


def _signed_in(request: Request, session, settings) -> bool:
    try:
        auth.authenticate(request, session, settings, None)
    except HTTPException:
        return False
    return True
