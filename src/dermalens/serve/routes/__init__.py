"""Routers, one per resource; `api_router` collects those mounted under /api/v1."""

from fastapi import APIRouter

from dermalens.serve.routes import documents, feedback, model, predictions

api_router = APIRouter()
api_router.include_router(predictions.router)
api_router.include_router(documents.router)
api_router.include_router(feedback.router)
api_router.include_router(model.router)
