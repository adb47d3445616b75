"""Routers, one per resource; `api_router` collects those mounted under /api/v1."""

from fastapi import APIRouter

from dermalens.serve.routes import (
    audit_log,
    documents,
    feedback,
    lesion_images,
    lesions,
    me,
    model,
    patients,
    predictions,
    users,
    visit_documents,
    visits,
)

api_router = APIRouter()
api_router.include_router(predictions.router)
api_router.include_router(documents.router)
api_router.include_router(feedback.router)
api_router.include_router(model.router)
api_router.include_router(patients.router)
api_router.include_router(lesions.router)
api_router.include_router(lesion_images.router)
api_router.include_router(visits.router)
api_router.include_router(visit_documents.router)
api_router.include_router(me.router)
api_router.include_router(audit_log.router)
api_router.include_router(users.router)
