"""A visit as a document: one FHIR report with the patient as subject, or one PDF for the
patient file, over every prediction filed at the visit. Staff only, and audited."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status

from dermalens.serve import audit, fhir_export, patient_crud, report_items
from dermalens.serve.clinic_deps import AUTH_ERRORS, PatientRecordDep, VisitDep, image_url
from dermalens.serve.deps import PredictorDep, SessionDep, SettingsDep, StaffDep
from dermalens.serve.i18n import _
from dermalens.serve.report_items import PatientRef, ReportItem
from dermalens.serve.routes.documents import FHIR_JSON, BundleType, pdf_response
from dermalens.serve.tables import LesionRecord, VisitRecord

router = APIRouter(prefix="/patients/{patient_id}/visits", tags=["visits"], responses=AUTH_ERRORS)
NOT_FOUND = {404: {"description": "unknown patient or visit id, or nothing filed at the visit"}}


def visit_items(visit: VisitRecord, session, settings, request: Request) -> list[ReportItem]:
    """The visit's predictions, each with its lesion's label and its image's staff URL."""
    base = str(request.base_url).rstrip("/")
    items = []
    for prediction, _visit in patient_crud.visit_timeline(session, visit.id):
        lesion = session.get(LesionRecord, prediction.lesion_id)
        url = base + image_url(visit.patient_id, prediction.lesion_id, prediction.id)
        label = lesion.label if lesion else None
        items.append(report_items.item(prediction, settings.uploads_dir, label, url))
    if not items:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            _("visit %(id)s has no predictions filed at it: there is nothing to report")
            % {"id": repr(visit.id)},
        )
    return items


@router.get(
    "/{visit_id}/fhir",
    response_class=Response,
    responses={200: {"content": {FHIR_JSON: {}}, "description": "a FHIR R4B Bundle"}, **NOT_FOUND},
)
def visit_fhir(
    visit: VisitDep,
    patient: PatientRecordDep,
    staff: StaffDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
    bundle_type: BundleType = "collection",
) -> Response:
    """The visit as one FHIR R4B report: the patient (pseudonymous identifier only) as
    subject, one Observation per top class and a triage per lesion image."""
    items = visit_items(visit, session, settings, request)
    subject = PatientRef(settings.fhir_patient_system, patient.clinic_id)
    pdf = str(request.url_for("visit_report_pdf", patient_id=patient.id, visit_id=visit.id))
    bundle = fhir_export.report_bundle(items, f"visit:{visit.id}", pdf, subject, bundle_type)
    audit.record(session, staff, request, "visit", patient.id, visit.id, action="export")
    return Response(bundle.model_dump_json(exclude_none=True), media_type=FHIR_JSON)


@router.get(
    "/{visit_id}/report.pdf",
    response_class=Response,
    responses={
        200: {"content": {"application/pdf": {}}},
        503: {"description": "no font"},
        **NOT_FOUND,
    },
)
def visit_report_pdf(
    visit: VisitDep,
    patient: PatientRecordDep,
    staff: StaffDep,
    session: SessionDep,
    settings: SettingsDep,
    predictor: PredictorDep,
    request: Request,
) -> Response:
    """The printable visit report for the patient file: each lesion's image and heatmap,
    probabilities, triage, the model version and the notice."""
    items = visit_items(visit, session, settings, request)
    who = f"{patient.clinic_id}, {visit.date.isoformat()}"
    response = pdf_response(items, settings, predictor, who, f"visit-{visit.date.isoformat()}")
    audit.record(session, staff, request, "visit", patient.id, visit.id, action="export")
    return response
