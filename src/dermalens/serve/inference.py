"""One request's inference: decoded image -> `Router.predict` -> response body.

The service calls the same `Router` (the scope gate in front of the installed models) and
`Predictor` as the CLI and decodes with the same draft size, so the API returns the same
probabilities as `dermalens predict` for the same file.
`RecentShifts` keeps the shift warnings of the latest requests for the batch test.
"""

from __future__ import annotations

import base64
import io
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, replace
from datetime import UTC, datetime

from fastapi import UploadFile
from PIL import Image

from dermalens.imageio import ImageError
from dermalens.preprocess import resize
from dermalens.runtime.explain import overlay
from dermalens.runtime.predictor import DISCLAIMER, Prediction, Predictor
from dermalens.runtime.router import Router
from dermalens.runtime.shift import ShiftMonitor
from dermalens.serve import uploads
from dermalens.serve.schemas import (
    ClassScore,
    Heatmap,
    ModelRef,
    Patient,
    PredictionOut,
    Scope,
    Shift,
    ShiftBatch,
    Triage,
)
from dermalens.serve.settings import Settings
from dermalens.serve.uploads import image_error


class RecentShifts:
    """The shift flags of the latest `size` requests of this process, and their batch test.

    Requests are answered in parallel threads, so adding and testing hold a lock. The test
    depends only on how many of how many requests were flagged, so each (images, flagged)
    pair's answer is kept (at most `size` x `size` of them) instead of SciPy's binomial
    tail on every request."""

    def __init__(self, monitor: ShiftMonitor | None, size: int):
        self.monitor = monitor
        self.flags: deque[bool] = deque(maxlen=size)
        self.lock = threading.Lock()
        self.tests: dict[tuple[int, int], dict] = {}

    def add(self, flagged: bool) -> ShiftBatch | None:
        if self.monitor is None:
            return None
        with self.lock:
            self.flags.append(flagged)
            counts = len(self.flags), sum(self.flags)
            if counts not in self.tests:
                self.tests[counts] = self.monitor.batch_warning(list(self.flags))
            test = self.tests[counts]
        return ShiftBatch(**test)


def png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)  # fast; the overlay is small
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def heatmap_overlay(predictor: Predictor, image: Image.Image, result: Prediction, width: int):
    """The heatmap over the model's own crop of the image, `width` pixels wide."""
    pre = predictor.pre
    display = replace(pre, width=width, height=max(8, round(width * pre.height / pre.width)))
    return png_data_url(overlay(resize(image, display), result.heatmap))


def predict(
    predictor: Predictor | Router,
    image: Image.Image,
    patient: Patient,
    explain: bool = True,
    top_k: int = 3,
    display_width: int = 480,
    overlay: bool = True,
    recent: RecentShifts | None = None,
) -> PredictionOut:
    """Run the model on a decoded image and build the response (not yet stored).

    With `explain`, the heatmap always carries the small CAM grid; `overlay` adds the PNG
    overlay, which costs most of a heatmap request's time (see benchmarks/load.py).
    A `Router` answers with the model made for the image, or out of scope (no heatmap)."""
    try:
        result = predictor.predict(
            image,
            top_k,
            explain,
            patient.age,
            patient.sex,
            patient.site,
            clinical=patient.clinical,
        )
    except ImageError as exc:
        raise image_error(exc) from None
    if isinstance(predictor, Router):
        predictor = predictor.answered_by(result) or predictor.feature
    t1 = time.perf_counter()
    heatmap = None
    if explain and result.heatmap_grid is not None:
        grid = result.heatmap_grid
        heatmap = Heatmap(
            image=heatmap_overlay(predictor, image, result, display_width) if overlay else None,
            grid=grid.round(4).tolist(),
            shape=grid.shape,
            target=result.top[0].code,
        )
    timings = {**result.timings_ms, "overlay": round((time.perf_counter() - t1) * 1e3, 2)}
    answered = result.scope is None or result.scope.model is not None
    name = predictor.bundle.name if answered else "scope-gate"
    shift = None if result.shift is None else Shift(**asdict(result.shift))
    return PredictionOut(
        id=uuid.uuid4().hex,
        status=result.status,
        scope=None if result.scope is None else Scope(**vars(result.scope)),
        created_at=datetime.now(UTC),
        model=ModelRef(name=name, version=result.model_version),
        top=[ClassScore(**vars(c)) for c in result.top],
        probabilities=dict(zip(result.classes, result.probabilities)),
        triage=Triage(
            result=result.triage,
            rule=result.triage_rule,
            malignant_probability=result.malignant_probability,
        ),
        uncertain=result.uncertain,
        not_skin=result.not_skin,
        not_skin_reason=result.not_skin_reason,
        ood_score=result.ood_score,
        tta=result.tta,
        shift=shift,
        shift_recent=None if recent is None or shift is None else recent.add(shift.flagged),
        heatmap=heatmap,
        timings_ms=timings,
        patient=patient,
        image_kept=False,
        disclaimer=DISCLAIMER,
    )


def classify_upload(
    predictor: Predictor | Router,
    file: UploadFile,
    settings: Settings,
    patient: Patient,
    draft_size: tuple[int, int] | None,
    keep_image: bool,
    explain: bool,
    top_k: int,
    overlay: bool,
    recent: RecentShifts | None,
) -> tuple[PredictionOut, str | None]:
    """An upload within the service's limits, decoded, classified (`predict`) and kept when
    asked: the one path of POST /api/v1/predictions and of a lesion's upload at a visit.
    Returns the response (not yet stored) and the kept file's name (or None)."""
    t0 = time.perf_counter()
    data = uploads.read_limited(file, settings.max_upload_bytes)
    image = uploads.decode(data, settings.max_pixels, draft_size)
    decoded = time.perf_counter()
    out = predict(
        predictor, image, patient, explain, top_k, settings.display_width, overlay, recent
    )
    image_file = None
    if keep_image:
        image_file = uploads.keep(data, settings.uploads_dir, settings.max_pixels)
        out.image_kept = True
    out.timings_ms["decode"] = round((decoded - t0) * 1e3, 2)
    return out, image_file
