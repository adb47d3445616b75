"""The FastAPI app factory. The lifespan loads the model bundle once and migrates the database.

uvicorn --factory dermalens.serve.app:create_app     (settings from DERMALENS_* variables)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image

from dermalens import __version__
from dermalens.bundle import DESCRIPTION, BundleError
from dermalens.runtime.predictor import DISCLAIMER, Predictor
from dermalens.runtime.router import Router
from dermalens.serve import error_handlers, i18n
from dermalens.serve.csrf import Csrf, load_secret
from dermalens.serve.db import make_sessions, migrate, open_database
from dermalens.serve.inference import RecentShifts
from dermalens.serve.middleware import BodyLimit, SecurityHeaders
from dermalens.serve.ratelimit import RateLimits
from dermalens.serve.routes import api_router, health, lesion_page, login, page
from dermalens.serve.settings import Settings, make_settings

logger = logging.getLogger("dermalens.serve")
STATIC = Path(__file__).parent / "static"
# `serve.run`'s keyword overrides (JSON) for the worker processes it starts
OVERRIDES_ENV = "_DERMALENS_SERVE_OVERRIDES"


class ModelMissing(RuntimeError):
    """The configured model bundle is absent or unusable; the message says how to fix it."""


def check_model(path: Path) -> None:
    if not (path / DESCRIPTION).is_file():
        raise ModelMissing(
            f"no model bundle at {path} (no {DESCRIPTION}); pass the bundle folder "
            f"(`dermalens serve --model DIR`) or set DERMALENS_MODEL"
        )


def load_router(settings: Settings) -> Router:
    """The scope gate and the ONNX Runtime predictors it routes to (serving never needs
    PyTorch). A model named by DERMALENS_MODEL (or `serve --model`) is pinned: it answers
    every lesion close-up the gate accepts, unless the gate finds it was not made for it."""
    check_model(settings.model)
    options = {
        "backend": "onnx",
        "threads": settings.onnx_threads,
        "tta": settings.tta,
        "precision": settings.precision,
        "spinning": settings.spinning,
    }
    pinned = "model" in settings.model_fields_set
    try:
        if not settings.scope_gate:
            predictor = Predictor(settings.model, **options)
            return Router(predictor, {}, None, predictor)
        return Router.installed(pin=settings.model if pinned else None, **options)
    except BundleError as exc:
        raise ModelMissing(f"cannot serve model bundle {settings.model}: {exc}") from exc


def load_predictor(settings: Settings, router: Router | None = None) -> Predictor:
    """The predictor the page and the model card describe (the pinned one, else the
    default), warmed up."""
    router = router or load_router(settings)
    try:
        predictor = router.pinned or router.feature
        # Warm up: read the head weights for heatmaps and let ONNX Runtime allocate now,
        # so the first request is as fast as the others.
        pre = predictor.pre
        predictor.predict(Image.new("RGB", (pre.width, pre.height), (128, 128, 128)), explain=True)
    except BundleError as exc:
        raise ModelMissing(f"cannot serve model bundle {settings.model}: {exc}") from exc
    return predictor


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    app.state.router = load_router(settings)
    app.state.predictor = load_predictor(settings, app.state.router)
    # after the warm-up request, which is no patient's image
    app.state.recent_shifts = RecentShifts(app.state.predictor.shift, settings.shift_window)
    engine = open_database(settings.db_url)
    migrate(engine)
    app.state.engine = engine
    app.state.sessions = make_sessions(engine)
    secret = settings.secret_key.get_secret_value() if settings.secret_key else None
    app.state.csrf = Csrf(load_secret(secret, settings.data_dir), settings.cookie_secure)
    logger.info("serving %s", app.state.predictor.bundle.version)
    yield
    engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; nothing is loaded until startup (the lifespan)."""
    settings = settings or Settings()
    app = FastAPI(
        title="dermalens",
        version=__version__,
        summary="Skin-lesion classification from dermoscopic images.",
        description=DISCLAIMER,
        lifespan=lifespan,
        docs_url=None if _swagger_assets() else "/docs",
    )
    app.state.settings = settings
    app.state.rate_limits = RateLimits(settings.rate_limit_storage)
    error_handlers.install(app)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, max_upload_bytes=settings.max_upload_bytes)
    app.add_middleware(i18n.Language)  # outermost: even BodyLimit's 413 is translated
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.include_router(api_router, prefix="/api/v1")
    app.include_router(health.router)
    app.include_router(page.router)
    app.include_router(login.router)
    app.include_router(lesion_page.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if _swagger_assets():
        _offline_docs(app, _swagger_assets())
    return app


def create_worker_app() -> FastAPI:
    """The app in one of `dermalens serve --workers N`'s processes: the settings of `run`."""
    return create_app(make_settings(**json.loads(os.environ.get(OVERRIDES_ENV, "{}"))))


def _swagger_assets() -> Path | None:
    """Swagger UI files from the swagger-ui-bundle package, so /docs works offline."""
    try:
        import swagger_ui_bundle  # optional: the docs page falls back to a CDN-free message
    except ImportError:
        return None
    return Path(swagger_ui_bundle.swagger_ui_path)


def _offline_docs(app: FastAPI, assets: Path) -> None:
    app.mount("/swagger-ui", StaticFiles(directory=assets), name="swagger")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title="dermalens API",
            swagger_js_url="/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )
