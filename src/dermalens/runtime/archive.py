"""Archive-scale prediction on Ray Data: a folder or manifest of images -> a Parquet dataset.

    from dermalens.runtime.archive import predict_archive
    summary = predict_archive("scans/", "results/")  # starts a local Ray on this machine
    dermalens predict-batch s3://bucket/manifest.parquet --out s3://bucket/results \\
        --address ray://head:10001

SOURCE is a folder (every image in it, recursively) or a CSV / Parquet manifest with a
`path` column and optional `age`, `sex` and `site` columns, on the local disk or any
filesystem pyarrow opens from a URI (s3://, gs://, hdfs://); a relative path in a manifest
is relative to the manifest's folder. The driver lists the images and leaves out those
already done; then Ray Data reads each image's bytes (`read_images`: a missing or
unreadable file becomes that row's error) and `Classifier` actors decode them with
`imageio.load_image` (size limits, EXIF orientation) and answer with the same `Router` as
`dermalens predict` (`Router.predict_batch`): the scope gate in front of the installed
models (or, with `gate=False`, one model for every image), then the answering model's
preprocessing, metadata, calibration, thresholds, OOD check and shift warning. Each row
says its status, the gate's decision and which model answered (`archive_io`). Their rows
stream back to the driver, which writes them (`archive_io.ResultsWriter`: whole files
only) as Parquet under OUT/bundle=<key>/, the key being the first 16 hex digits of the
SHA-256 of every file the actors load (`archive_models`: gate and bundles). A rerun with
the same models skips each image that already has a row there (an error row included);
other models, another gate or `gate=False` write their own folder, so two models'
results never mix.

Needs the scale extra (`pip install -e ".[scale]"`): ray and pyarrow are imported inside
the functions that use them, so the default install imports this module without them.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dermalens import patient
from dermalens.imageio import ImageError
from dermalens.runtime.archive_io import (
    MAX_FILE_BYTES,
    ResultsWriter,
    filesystem,
    pending_sources,
    result_row,
    results_schema,
    summarise,
)
from dermalens.runtime.archive_models import archive_models, models_router
from dermalens.runtime.engines import cores

log = logging.getLogger(__name__)

READ_THREADS = 8  # concurrent reads per batch: object stores answer in tens of ms each
# rows per Parquet file: a few MB each; a stopped run loses at most the file being filled
ROWS_PER_FILE = 4096


@dataclass
class ArchiveSummary:
    """What one `predict_archive` run did; `rows` and `errors` count the whole results
    folder of this bundle (earlier runs included)."""

    out: str  # the results folder of this bundle: OUT/bundle=<key>
    model_version: str
    bundle_sha256: str
    images: int  # in the source
    skipped: int  # already in the results folder
    written: int  # rows this run added
    rows: int
    errors: int
    seconds: float
    actors: int
    gate: str | None = None  # the scope gate's version; None: one model answered every image
    routes: dict[str, str] = field(default_factory=dict)  # image kind -> model version
    # this run's rows by status ("ok", "uncertain", "not_skin", "out_of_scope", "error")
    # and "answered by <model>", as `runtime.router.summarise` counts them
    counts: dict[str, int] = field(default_factory=dict)


def read_images(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray Data stage: add each row's file bytes (`data`) and, when it cannot be read,
    the reason (`error`); a failure is that row's, never the job's."""

    def read(uri: str) -> tuple[bytes | None, str]:
        fs, path = filesystem(uri)
        try:
            with fs.open_input_stream(path) as stream:
                data = stream.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return None, "no such file"
        except IsADirectoryError:
            return None, "is a folder, not an image"
        except OSError as exc:  # permission, network, a folder on some filesystems
            return None, f"cannot be read ({exc})"
        if len(data) > MAX_FILE_BYTES:
            return None, f"file is over the limit of {MAX_FILE_BYTES:,} bytes"
        return data, ""

    with ThreadPoolExecutor(min(READ_THREADS, max(1, len(batch["uri"])))) as pool:
        got = list(pool.map(read, batch["uri"]))
    out = dict(batch)
    out["data"] = np.array([data for data, _ in got] + [None], dtype=object)[:-1]
    out["error"] = np.array([e for _, e in got], dtype=object)
    return out


class Classifier:
    """Ray Data actor: one `Router` (one ONNX Runtime session per model) per actor, built
    from `archive_models`' files; each call turns a batch of image bytes into result rows."""

    def __init__(self, files_ref: list, key: str, layout: dict, threads: int, top_k: int):
        """`files_ref`: [the object-store reference of the models' files], in a list so Ray
        passes the reference and each actor fetches the files itself, once."""
        # ray: the scale extra
        import ray

        self.router = models_router(ray.get(files_ref[0]), layout, threads)
        first = self.router.pinned or self.router.feature
        self.key, self.version, self.top_k = key, first.bundle.version, top_k
        # validated as any of the models would: a bad age is that row's error
        models = [self.router.feature, *self.router.routes.values(), first]
        self.validates = any(m.bundle.metadata_fields for m in models)
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def _prepare(self, data: bytes | None, error: str, source: str, meta: tuple):
        """(input array for the gate's feature model, error) for one row."""
        if error:
            return None, f"{source}: {error}"
        try:
            x = self.router.feature.prepare(data)  # imageio.load_image: limits, EXIF
        except ImageError as exc:  # named "<bytes>": the row's source names it instead
            return None, f"{source}: {str(exc).removeprefix('<bytes>: ')}"
        try:
            if self.validates:
                patient.validate(*meta)
        except ValueError as exc:  # age / sex / site out of range or unknown, named
            return None, f"{source}: {exc}"
        return x, ""

    def __call__(self, batch: dict[str, np.ndarray]):
        # pyarrow: the scale extra
        import pyarrow as pa

        sources = [str(s) for s in batch["source"]]
        metas = [_meta(*m) for m in zip(batch["age"], batch["sex"], batch["site"])]
        jobs = list(zip(batch["data"], batch["error"], sources, metas))
        run = self.pool.map if self.pool else map
        prepared = list(run(lambda job: self._prepare(*job), jobs))
        ok = [i for i, (x, _) in enumerate(prepared) if x is not None]
        predictions = {}
        if ok:
            x = np.stack([prepared[i][0] for i in ok])
            got = self.router.predict_batch(
                [batch["data"][i] for i in ok],
                x,
                top_k=self.top_k,
                patients=[metas[i] for i in ok],
                names=[sources[i] for i in ok],
            )
            predictions = dict(zip(ok, got))
        rows = []
        for i, source in enumerate(sources):
            found = predictions.get(i)
            by = self.router.answered_by(found) if found is not None else None
            answered = None if by is None else by.bundle.name
            error = prepared[i][1]
            rows.append(
                result_row(source, metas[i], found, error, self.version, self.key, answered)
            )
        return pa.Table.from_pylist(rows, schema=results_schema())


def _meta(age, sex, site) -> tuple:
    """A batch row's age / sex / site as `Predictor.meta_vector` takes them: None when
    missing (Ray turns an all-null column into NaN)."""

    def missing(v) -> bool:
        return v is None or (isinstance(v, float | np.floating) and np.isnan(v)) or v == ""

    return (
        None if missing(age) else float(age),
        None if missing(sex) else str(sex),
        None if missing(site) else str(site),
    )


def start_ray(address: str | None, num_cpus: int = 0) -> bool:
    """Connect to the cluster at `address` (or $RAY_ADDRESS), or start a local Ray on
    this machine's cores; True when this call started it (and so should shut it down)."""
    # ray: the scale extra
    import ray

    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        # a local Ray turns token authentication on by itself; its note about that is muted
        logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
        ray.init(num_cpus=num_cpus or cores(), **quiet)
    return True


def predict_archive(
    source: str | Path,
    out: str | Path,
    model: str | Path | None = None,
    address: str | None = None,
    actors: int = 0,
    cpus_per_actor: int = 1,
    batch_size: int = 32,
    top_k: int = 3,
    progress: bool = False,
    gate: bool = True,
) -> ArchiveSummary:
    """Predict every image of `source` not yet done by these models into `out` (Parquet).

    The scope gate in front of the installed models, as `dermalens predict`: `model` (or
    $DERMALENS_MODEL) pinned, answering the images the gate takes for its kind; with
    `gate=False` that model (default: the bundled one) answers every image.
    `address`: a Ray cluster (`ray://host:10001`, or "auto"); None starts a local Ray on
    this machine, or joins $RAY_ADDRESS when set. `actors` Classifier actors (0: one per
    `cpus_per_actor` cores of the cluster), each with that many ONNX Runtime and decoding
    threads; `batch_size` images per model call; `top_k` ranked classes in `top`.
    """
    # ray: the scale extra
    import ray

    if actors < 0 or cpus_per_actor < 1 or batch_size < 1 or top_k < 1:
        raise ValueError(
            f"actors must be >= 0 and cpus_per_actor, batch_size, top_k >= 1, got "
            f"{actors}, {cpus_per_actor}, {batch_size}, {top_k}"
        )
    t0 = time.perf_counter()
    models = archive_models(model, gate)
    key = models.key
    out_fs, out_root = filesystem(str(out), folder=True)
    folder = f"{out_root.rstrip('/')}/bundle={key[:16]}"
    table, skipped = pending_sources(str(source), out_fs, folder)
    written, counts = 0, {}
    if table.num_rows:  # nothing left to do: no Ray to start
        started = start_ray(address)
        try:
            _quiet(progress)
            cpus = int(ray.cluster_resources().get("CPU", 1))
            actors = actors or max(1, cpus // cpus_per_actor)
            actors = min(actors, -(-table.num_rows // batch_size))  # no actor without work
            written, counts = _run(
                table, models, out_fs, folder, actors, cpus_per_actor, batch_size, top_k
            )
        finally:
            if started:
                ray.shutdown()
    rows, errors = summarise(out_fs, folder)
    return ArchiveSummary(
        out=f"{str(out).rstrip('/')}/bundle={key[:16]}",
        model_version=models.version,
        bundle_sha256=key,
        images=table.num_rows + skipped,
        skipped=skipped,
        written=written,
        rows=rows,
        errors=errors,
        seconds=round(time.perf_counter() - t0, 2),
        actors=actors if table.num_rows else 0,
        gate=models.gate,
        routes=models.routes,
        counts=counts,
    )


def _quiet(progress: bool) -> None:
    """Ray Data's progress bars and notes only when `progress`; errors always."""
    # ray: the scale extra
    import ray.data

    # set first: switching the bars off is itself logged as a warning
    logging.getLogger("ray.data").setLevel(logging.INFO if progress else logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.print_on_execution_start = progress


def _run(table, models, out_fs, folder, actors, cpus_per_actor, batch_size, top_k):
    # ray: the scale extra
    import ray
    import ray.data

    # blocks of a few batches each, so every actor has work from the start
    step = max(1, min(batch_size * 4, -(-table.num_rows // (actors * 2))))
    blocks = [table.slice(i, step) for i in range(0, table.num_rows, step)]
    files_ref = ray.put(models.files)
    ds = ray.data.from_arrow(blocks).map_batches(
        read_images, batch_size=batch_size, batch_format="numpy", num_cpus=cpus_per_actor
    )
    ds = ds.map_batches(
        Classifier,
        fn_constructor_args=([files_ref], models.key, models.layout, cpus_per_actor, top_k),
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=cpus_per_actor,
        compute=ray.data.ActorPoolStrategy(size=actors),
    )
    # the rows come back to this process and are written here: a few hundred bytes an
    # image, where a Ray write task would start a worker process (seconds of CPU) per file
    counts: dict[str, int] = {}
    with ResultsWriter(out_fs, folder, ROWS_PER_FILE) as writer:
        for rows in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            writer.add(rows)
            names = rows["answered_by"].to_pylist()
            for key in rows["status"].to_pylist() + [f"answered by {n}" for n in names if n]:
                counts[key] = counts.get(key, 0) + 1
    return writer.rows, counts
