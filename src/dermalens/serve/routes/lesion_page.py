"""The staff page of one lesion over time: its images side by side in visit order, a small
chart of P(malignant) and the class probabilities, and the "changed since last visit" flag.

GET /patients/{patient_id}/lesions/{lesion_id} (HTML; the same body as the API's
/api/v1/patients/{patient_id}/lesions/{lesion_id}/history). The chart is an inline SVG drawn
here, so the page needs no script.
"""

from __future__ import annotations

import math

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from dermalens.serve import audit, patient_crud
from dermalens.serve.clinic_deps import MISSING
from dermalens.serve.clinic_schemas import LesionHistory
from dermalens.serve.deps import PredictorDep, SessionDep, SettingsDep
from dermalens.serve.i18n import _, signed_percent
from dermalens.serve.routes.lesions import history_of
from dermalens.serve.routes.login import render, signed_in
from dermalens.serve.tables import LesionRecord

router = APIRouter(include_in_schema=False)
WIDTH, HEIGHT, PAD = 560, 180, 28  # the chart's size and margin, in SVG units
SHOWN = 4  # classes drawn besides P(malignant): those with the highest peak


def chart(history: LesionHistory) -> dict:
    """SVG polylines: P(malignant) and the classes that peak highest, one point per image."""
    results = [p.prediction for p in history.predictions]
    n = len(results)

    def x(i: int) -> float:
        return PAD + (WIDTH - 2 * PAD) * (i / (n - 1) if n > 1 else 0.5)

    def y(p: float) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD) * p

    def points(values: list[float | None]) -> str:
        # None: no model answered that image (out of scope), so it has no point
        return " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values) if v is not None)

    answered = [r for r in results if r.probabilities]
    classes = list(dict.fromkeys(c for r in answered for c in r.probabilities))
    peaks = sorted(classes, key=lambda c: -max(r.probabilities.get(c, 0) for r in answered))
    lines = [
        {"name": c, "points": points([_p(r, c) for r in results]), "kind": k}
        for k, c in enumerate(peaks[:SHOWN])
    ]
    malignant = [r.triage.malignant_probability for r in results]
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "malignant": points(malignant),
        "dots": [{"x": x(i), "y": y(v)} for i, v in enumerate(malignant) if v is not None],
        "classes": lines,
        "grid": [{"y": y(v), "label": f"{v:.0%}", "value": v} for v in (0, 0.5, 1)],
        "ticks": [
            {"x": x(i), "label": p.visit_date.isoformat(), "date": p.visit_date}
            for i, p in enumerate(history.predictions)
        ],
        "left": PAD,
        "right": WIDTH - PAD,
    }


def _p(result, code: str) -> float | None:
    """A class's probability in one answer (0 for a class that model lacks); None: no
    model answered."""
    return result.probabilities.get(code, 0) if result.probabilities else None


@router.get("/patients/{patient_id}/lesions/{lesion_id}", response_class=HTMLResponse)
def lesion_page(
    patient_id: str,
    lesion_id: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    predictor: PredictorDep,
) -> Response:
    """One lesion over time, for staff (others are sent to the login page)."""
    staff = signed_in(request, session, settings)
    if staff is None:
        target = f"/login?next=/patients/{patient_id}/lesions/{lesion_id}"
        return RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
    lesion = patient_crud.child(session, LesionRecord, lesion_id, patient_id)
    if lesion is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, _(MISSING["lesion"]) % {"id": repr(lesion_id)}
        )
    history = history_of(session, lesion, settings, predictor)
    audit.record(session, staff, request, "lesion", patient_id, lesion_id)
    changes = {c.after_prediction_id: c for c in history.changes}
    # the area's change as a percentage of its share of the image (growth is a log ratio)
    area = {
        c.after_prediction_id: signed_percent(math.expm1(c.change.growth)) if c.change else "-"
        for c in history.changes
    }
    return render(
        request,
        "lesion_history.html",
        staff=staff,
        history=history,
        changes=changes,
        area=area,
        chart=chart(history) if history.predictions else None,
    )
