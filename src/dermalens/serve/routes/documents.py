"""A stored prediction as a document: a FHIR R4B Bundle, or the printable PDF report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from dermalens.runtime.predictor import Predictor
from dermalens.serve import fhir_export, report_items, visit_report
from dermalens.serve.deps import PredictorDep, SettingsDep, StoredPredictionDep
from dermalens.serve.report_items import ReportItem
from dermalens.serve.settings import Settings

router = APIRouter(prefix="/predictions", tags=["documents"])

FHIR_JSON = "application/fhir+json"
NOT_FOUND = {404: {"description": "unknown id"}}
FHIR_OK = {200: {"content": {FHIR_JSON: {}}, "description": "a FHIR R4B Bundle"}}
PDF_OK = {
    200: {"content": {"application/pdf": {}}, "description": "the printable report"},
    503: {"description": "the report font is not installed"},
}
BundleType = Annotated[
    str,
    Query(
        alias="type",
        pattern="^(collection|transaction)$",
        description="collection: to read; transaction: to POST to a FHIR server as is",
    ),
]


def pdf_response(
    items: list[ReportItem],
    settings: Settings,
    predictor: Predictor,
    patient: str | None,
    name: str,
) -> Response:
    """The PDF of `items`, heatmaps redrawn where the serving model made the prediction."""
    heatmaps = {}
    for entry in items:
        drawn = visit_report.heatmap_image(predictor, entry)
        if drawn is not None:
            heatmaps[entry.out.id] = drawn
    try:
        pdf = visit_report.render(
            items, settings.report_font, heatmaps, patient, serving_version=predictor.bundle.version
        )
    except visit_report.ReportFontMissing as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    headers = {"Content-Disposition": f'inline; filename="dermalens-report-{name}.pdf"'}
    return Response(pdf, media_type="application/pdf", headers=headers)


@router.get("/{prediction_id}/fhir", response_class=Response, responses={**FHIR_OK, **NOT_FOUND})
def prediction_fhir(
    prediction: StoredPredictionDep,
    settings: SettingsDep,
    request: Request,
    bundle_type: BundleType = "collection",
) -> Response:
    """The prediction as a FHIR R4B Bundle: a preliminary DiagnosticReport with SNOMED CT and
    ICD-11 conclusion codes, Observations, the model as a Device, the kept image as Media."""
    entry = report_items.item(prediction, settings.uploads_dir)
    pdf = str(request.url_for("prediction_report_pdf", prediction_id=prediction.id))
    bundle = fhir_export.report_bundle([entry], prediction.id, pdf, bundle_type=bundle_type)
    return Response(bundle.model_dump_json(exclude_none=True), media_type=FHIR_JSON)


@router.get(
    "/{prediction_id}/report.pdf", response_class=Response, responses={**PDF_OK, **NOT_FOUND}
)
def prediction_report_pdf(
    prediction: StoredPredictionDep, settings: SettingsDep, predictor: PredictorDep
) -> Response:
    """The printable report: image and heatmap (when the image was kept), probabilities,
    triage, model version and the notice."""
    entry = report_items.item(prediction, settings.uploads_dir)
    return pdf_response([entry], settings, predictor, None, prediction.id[:8])
