"""The web service: REST API under /api/v1, a web page at /, OpenAPI docs at /docs.

    dermalens serve [--model BUNDLE]     (the CLI calls `run`; default: the bundled model)
    uvicorn --factory dermalens.serve.app:create_app

Serving needs NumPy, Pillow, ONNX Runtime and the `serve` extras, never PyTorch.
"""

from __future__ import annotations

import json
import os
from typing import Any

from dermalens.serve.app import OVERRIDES_ENV, ModelMissing, check_model, create_app
from dermalens.serve.db import migrate, open_database
from dermalens.serve.settings import make_settings


def run(
    model: str | None = None, host: str | None = None, port: int | None = None, **overrides: Any
) -> None:
    """Start the service with uvicorn and block until it stops.

    Arguments left as None come from DERMALENS_* environment variables, then the defaults
    (127.0.0.1:8000, the bundled model). `overrides` are other `Settings` fields, e.g.
    `api_token="..."`; an unknown name raises ValueError naming it.
    """
    import uvicorn  # only to start a server, not for create_app

    settings = make_settings(model=model, host=host, port=port, **overrides)
    try:
        check_model(settings.model)
    except ModelMissing as exc:
        raise SystemExit(f"dermalens serve: {exc}") from None
    where = {"host": settings.host, "port": settings.port, "log_level": "info"}
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **where)
        return
    # Several processes: uvicorn imports the app factory in each, so the keyword overrides
    # travel in the environment (the DERMALENS_* variables are inherited anyway). The
    # schema is brought up to date here, once, before the workers open the database.
    explicit = {"model": model, "host": host, "port": port, **overrides}
    os.environ[OVERRIDES_ENV] = json.dumps(
        {k: v for k, v in explicit.items() if v is not None}, default=str
    )
    engine = open_database(settings.db_url)
    migrate(engine)
    engine.dispose()
    uvicorn.run(
        "dermalens.serve.app:create_worker_app", factory=True, workers=settings.workers, **where
    )
