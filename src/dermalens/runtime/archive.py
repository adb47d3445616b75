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
unreadable file becomes that row's error) and `Classifier` actors, one ONNX Runtime session
each, decode with `imageio.load_image` (size limits, EXIF orientation) and run the same
`Predictor` steps as `dermalens predict`: preprocessing, metadata, model, calibration,
thresholds and the OOD check. Their rows stream back to the driver, which writes them
(`archive_io.ResultsWriter`: whole files only) as Parquet under OUT/bundle=<key>/, the key
being the first 16 hex digits of the SHA-256 of every bundle file the actors load. A rerun
with the same bundle skips each image that already has a row there (an error row
included); another bundle writes its own folder, so two models' results never mix.

Needs the scale extra (`pip install -e ".[scale]"`): ray and pyarrow are imported inside
the functions that use them, so the default install imports this module without them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dermalens.bundle import ONNX, WEIGHTS, Bundle, BundleError, default_model_path, load_bundle
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
from dermalens.runtime.engines import cores
from dermalens.runtime.predictor import Predictor

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


def bundle_files(bundle: Bundle) -> dict[str, bytes]:
    """Every file of the bundle folder the actors need, by relative path: all but the
    PyTorch weights (the actors run ONNX Runtime). Sent to each actor through Ray's object
    store, so cluster nodes need no copy of the bundle."""
    if not bundle.is_ensemble and not bundle.has(ONNX):
        raise BundleError(f"{bundle.path}: no {ONNX}; run `dermalens export {bundle.path}`")
    files = sorted(p for p in bundle.path.rglob("*") if p.is_file() and p.name != WEIGHTS)
    return {p.relative_to(bundle.path).as_posix(): p.read_bytes() for p in files}


def bundle_key(files: dict[str, bytes]) -> str:
    """SHA-256 over every file's path and content: a change to the weights, calibration,
    thresholds or OOD check gives a new key, and so a new results folder."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


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
    """Ray Data actor: one `Predictor` (one ONNX Runtime session) per actor, built from
    the bundle's files; each call turns a batch of image bytes into result rows."""

    def __init__(self, files_ref: list, key: str, threads: int, top_k: int):
        """`files_ref`: [the object-store reference of `bundle_files`], in a list so Ray
        passes the reference and each actor fetches the bundle itself, once."""
        # ray: the scale extra
        import ray

        files = ray.get(files_ref[0])
        folder = Path(tempfile.mkdtemp(prefix="dermalens-bundle-"))
        try:
            for name, data in files.items():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(data)
            # the hashes in bundle.json are checked again here: a damaged copy fails
            self.predictor = Predictor(
                folder, backend="onnx", threads=threads, precision="fp32", spinning=False
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # everything is in memory now
        self.key = key
        self.version = self.predictor.bundle.version
        self.top_k = top_k
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def _prepare(self, data: bytes | None, error: str, source: str, meta: tuple):
        """(input array, metadata vector, error) for one row."""
        if error:
            return None, None, f"{source}: {error}"
        try:
            x = self.predictor.prepare(data)  # imageio.load_image: limits, EXIF orientation
        except ImageError as exc:  # named "<bytes>": the row's source names it instead
            return None, None, f"{source}: {str(exc).removeprefix('<bytes>: ')}"
        try:
            m = self.predictor.meta_vector(*meta)
        except ValueError as exc:  # age / sex / site out of range or unknown, named
            return None, None, f"{source}: {exc}"
        return x, m, ""

    def __call__(self, batch: dict[str, np.ndarray]):
        # pyarrow: the scale extra
        import pyarrow as pa

        sources = [str(s) for s in batch["source"]]
        metas = [_meta(*m) for m in zip(batch["age"], batch["sex"], batch["site"])]
        jobs = list(zip(batch["data"], batch["error"], sources, metas))
        run = self.pool.map if self.pool else map
        prepared = list(run(lambda job: self._prepare(*job), jobs))
        ok = [i for i, (x, _, _) in enumerate(prepared) if x is not None]
        predictions = {}
        if ok:
            p = self.predictor
            x = np.stack([prepared[i][0] for i in ok])
            meta = None
            if p.bundle.metadata_fields:
                meta = np.concatenate([prepared[i][1] for i in ok])
            logits, fmap = p.forward(x, meta, tta=False)
            probs = p.calibrated(logits)
            ood = p.ood_check(x, fmap)
            for j, i in enumerate(ok):
                predictions[i] = p.result(
                    probs[j],
                    self.top_k,
                    sources[i],
                    ood_score=None if ood is None else float(ood[0][j]),
                    not_skin_reason="" if ood is None else ood[2][j],
                )
        rows = [
            result_row(
                sources[i], metas[i], predictions.get(i), prepared[i][2], self.version, self.key
            )
            for i in range(len(sources))
        ]
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
) -> ArchiveSummary:
    """Predict every image of `source` not yet done by this bundle into `out` (Parquet).

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
    bundle = load_bundle(model or default_model_path())
    files = bundle_files(bundle)
    key = bundle_key(files)
    out_fs, out_root = filesystem(str(out), folder=True)
    folder = f"{out_root.rstrip('/')}/bundle={key[:16]}"
    table, skipped = pending_sources(str(source), out_fs, folder)
    written = 0
    if table.num_rows:  # nothing left to do: no Ray to start
        started = start_ray(address)
        try:
            _quiet(progress)
            cpus = int(ray.cluster_resources().get("CPU", 1))
            actors = actors or max(1, cpus // cpus_per_actor)
            actors = min(actors, -(-table.num_rows // batch_size))  # no actor without work
            written = _run(
                table, files, key, out_fs, folder, actors, cpus_per_actor, batch_size, top_k
            )
        finally:
            if started:
                ray.shutdown()
    rows, errors = summarise(out_fs, folder)
    return ArchiveSummary(
        out=f"{str(out).rstrip('/')}/bundle={key[:16]}",
        model_version=bundle.version,
        bundle_sha256=key,
        images=table.num_rows + skipped,
        skipped=skipped,
        written=written,
        rows=rows,
        errors=errors,
        seconds=round(time.perf_counter() - t0, 2),
        actors=actors if table.num_rows else 0,
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


def _run(table, files, key, out_fs, folder, actors, cpus_per_actor, batch_size, top_k):
    # ray: the scale extra
    import ray
    import ray.data

    # blocks of a few batches each, so every actor has work from the start
    step = max(1, min(batch_size * 4, -(-table.num_rows // (actors * 2))))
    blocks = [table.slice(i, step) for i in range(0, table.num_rows, step)]
    files_ref = ray.put(files)
    ds = ray.data.from_arrow(blocks).map_batches(
        read_images, batch_size=batch_size, batch_format="numpy", num_cpus=cpus_per_actor
    )
    ds = ds.map_batches(
        Classifier,
        fn_constructor_args=([files_ref], key, cpus_per_actor, top_k),
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=cpus_per_actor,
        compute=ray.data.ActorPoolStrategy(size=actors),
    )
    # the rows come back to this process and are written here: a few hundred bytes an
    # image, where a Ray write task would start a worker process (seconds of CPU) per file
    with ResultsWriter(out_fs, folder, ROWS_PER_FILE) as writer:
        for rows in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            writer.add(rows)
    return writer.rows
