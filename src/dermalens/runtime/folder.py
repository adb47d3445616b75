"""Batch prediction over files and folders, streamed: decoding overlaps the model.

    from dermalens.runtime.folder import predict_folder
    for item in predict_folder(Predictor(bundle), ["scans/"]):
        print(item.path, item.prediction.label if item.prediction else item.error)

Decoder threads (one per core by default) read and preprocess images into batch arrays;
a bounded queue holds at most `prefetch` batches, so memory stays flat however large the
folder; the model runs on one batch while the next ones decode (Pillow, NumPy and ONNX
Runtime all release the GIL). Results come back in input order; an unusable input
yields an item with `error` set instead of stopping the run. `folder_summary` sums a run up:
counts, and the shift warning's share of flagged images with its test of the whole batch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from dermalens.imageio import ImageError, find_images, load_image
from dermalens.preprocess import Preprocessing, channel_planes, resize
from dermalens.runtime.checks import ImageStats, image_checks
from dermalens.runtime.engines import cores
from dermalens.runtime.ood import PIXEL_STATS, pixel_stats
from dermalens.runtime.predictor import Prediction, Predictor
from dermalens.runtime.router import Router, summarise

_DONE = object()  # end-of-stream marker on the queue


@dataclass
class FolderItem:
    path: Path
    prediction: Prediction | None = None
    error: str = ""  # why the image could not be used (prediction is None then)


def _decode_into(
    path: Path, problem: str, pre: Preprocessing, out: np.ndarray, stats: np.ndarray
) -> None:
    """`Predictor.prepare(path)`, written straight into `out` (one batch row), and its
    `ood.pixel_stats` into `stats`: in the decoder threads, off the model's path.
    `problem`: why `find_images` found no image at `path` (then nothing is read)."""
    if problem:
        raise ImageError(problem)
    image = load_image(path, draft_size=(pre.width, pre.height))
    normalise_into(resize(image, pre), pre, out)
    stats[:] = pixel_stats(out[None], pre)[0]


def _produce(
    files: Sequence[tuple[Path, str]],
    pre: Preprocessing,
    pool: ThreadPoolExecutor,
    batch_size: int,
    out: queue.Queue,
    stop: threading.Event,
) -> None:
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        array = np.empty((len(chunk), 3, pre.height, pre.width), np.float32)
        stats = np.empty((len(chunk), PIXEL_STATS), np.float32)
        jobs = [
            pool.submit(_decode_into, path, problem, pre, array[i], stats[i])
            for i, (path, problem) in enumerate(chunk)
        ]
        while not stop.is_set():  # put, but give up when the consumer has gone
            try:
                out.put(([path for path, _ in chunk], array, stats, jobs), timeout=0.1)
                break
            except queue.Full:
                continue
        if stop.is_set():
            return
    out.put(_DONE)


def _errors(jobs: list[Future]) -> list[str]:
    # load_image turns every decoding failure into an ImageError; anything else is a bug
    errors = []
    for job in jobs:
        exc = job.exception()
        if exc is not None and not isinstance(exc, ImageError):
            raise exc
        errors.append(str(exc) if exc is not None else "")
    return errors


def predict_folder(
    predictor: Predictor | Router,
    paths: Sequence[str | Path],
    batch_size: int = 32,
    workers: int = 0,
    prefetch: int = 3,
    top_k: int = 3,
    progress: bool = True,
) -> Iterator[FolderItem]:
    """Predict every image in `paths` (files and folders, recursively), in order.

    A path that cannot be used (missing, not an image, truncated, too many pixels, a
    folder without images) yields an item with `error` set, and the run goes on.

    `workers` decoder threads (0: one per core), at most `prefetch` decoded batches
    waiting. Metadata is not used (unknown for every image); TTA follows `predictor.tta`.
    A `Router` puts its scope gate in front (images decoded for its feature model; one
    routed to another model is decoded again for it).
    """
    files = find_images(list(paths))
    pre = predictor.pre  # a Router's is its feature model's
    jobs: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()
    bar = tqdm(total=len(files), desc="predict", unit="img", disable=not progress)
    with ThreadPoolExecutor(max_workers=workers or cores(), thread_name_prefix="decode") as pool:
        producer = threading.Thread(
            target=_produce, args=(files, pre, pool, batch_size, jobs, stop), daemon=True
        )
        producer.start()
        try:
            while (item := jobs.get()) is not _DONE:
                chunk, array, stats, futures = item
                errors = _errors(futures)
                yield from _predict_chunk(predictor, chunk, array, stats, errors, top_k)
                bar.update(len(chunk))
        finally:
            stop.set()  # the caller may stop early: let the producer end
            producer.join()
            bar.close()


def _predict_chunk(
    predictor: Predictor | Router,
    chunk: list[Path],
    array: np.ndarray,
    stats: np.ndarray,
    errors: list[str],
    top_k: int,
) -> Iterator[FolderItem]:
    ok = [i for i, e in enumerate(errors) if not e]
    results: dict[int, Prediction] = {}
    if ok:
        whole = len(ok) == len(chunk)
        batch = array if whole else array[ok]
        if isinstance(predictor, Router):
            routed = predictor.predict_batch(
                [chunk[i] for i in ok], batch, stats if whole else stats[ok], top_k
            )
            results = dict(zip(ok, routed))
        else:
            results = _model_results(
                predictor, chunk, ok, batch, stats if whole else stats[ok], top_k
            )
    for i, path in enumerate(chunk):
        yield FolderItem(path, results.get(i), errors[i])


def folder_summary(predictor: Predictor | Router, items: Sequence[FolderItem]) -> dict:
    """Counts over a run's items, and the shift warning taken over the whole batch.

    `shift` is None when the bundle has no shift warning; else `ShiftMonitor.batch_warning`
    over the images that got an answer: the share flagged one by one, and whether that
    share is clearly above the validation images' (the batch then differs as a whole,
    even when few images do on their own)."""
    done = [item.prediction for item in items if item.prediction is not None]
    if isinstance(predictor, Router):  # the shift warning is the feature (default) model's
        predictor = predictor.feature
    shift = None
    if predictor.shift is not None:
        flags = np.array([bool(p.shift and p.shift.flagged) for p in done], bool)
        shift = predictor.shift.batch_warning(flags)
    return {
        "images": len(items),
        "failed": len(items) - len(done),
        "not_skin": sum(p.not_skin for p in done),
        "uncertain": sum(p.uncertain and not p.not_skin for p in done),
        # the scope gate's answers: statuses, and which model answered (runtime.router)
        "out_of_scope": sum(p.status == "out_of_scope" for p in done),
        "answered_by": {
            k[12:]: n for k, n in summarise(done).items() if k.startswith("answered by")
        },
        "shift": shift,
    }


def _model_results(predictor: Predictor, chunk, ok, batch, stats, top_k) -> dict[int, Prediction]:
    logits, fmap = predictor.forward(batch)  # metadata unknown: the engine fills it in
    probs = predictor.calibrated(logits)
    measured = ImageStats(batch, fmap, predictor.pre, stats)
    ood, shift = image_checks(predictor.ood, predictor.shift, measured)
    results = {}
    for j, i in enumerate(ok):
        results[i] = predictor.result(
            probs[j],
            top_k,
            str(chunk[i]),
            ood_score=None if ood is None else float(ood[0][j]),
            not_skin_reason="" if ood is None else ood[2][j],
            shift=None if shift is None else shift[j],
        )
        results[i].tta = bool(predictor.tta)
    return results


def normalise_into(image: Image.Image, pre: Preprocessing, out: np.ndarray) -> np.ndarray:
    """Write `preprocess.normalise(image, pre)` into `out` (float32, 3 x H x W) in place.

    Same float32 operations in the same order ((x - mean) / std), so the values are equal
    bit for bit; only the intermediate copies are gone.
    """
    pixels = channel_planes(image, pre)
    np.subtract(pixels, np.asarray(pre.mean, np.float32)[:, None, None], out=out)
    np.divide(out, np.asarray(pre.std, np.float32)[:, None, None], out=out)
    return out
