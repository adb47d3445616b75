"""The archive job's inputs and outputs (see `runtime.archive`): which images a source
names, which of them a results folder already holds, and the rows written as Parquet.

    from dermalens.runtime.archive_io import pending_sources, filesystem
    fs, folder = filesystem("results/bundle=0123456789abcdef")
    table, skipped = pending_sources("scans/", fs, folder)  # what is left to predict

Paths are local or URIs of any filesystem pyarrow opens (s3://, gs://, hdfs://, file://).
Needs the scale extra: pyarrow is imported inside the functions that use it.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from pathlib import Path, PurePosixPath

from dermalens.data.records import DataError
from dermalens.imageio import IMAGE_SUFFIXES
from dermalens.runtime.predictor import Prediction

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 256 * 2**20  # an image file larger than this is a row error, never read whole
MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")
META_COLUMNS = ("age", "sex", "site")  # optional manifest columns, as `Predictor.predict` takes


@functools.lru_cache(maxsize=32)
def _remote(prefix: str):
    # pyarrow: the scale extra
    from pyarrow import fs

    return fs.FileSystem.from_uri(prefix)  # one client per bucket / host, not per file


def filesystem(uri: str, folder: bool = False):
    """(pyarrow filesystem, path on it) for a local path or a URI. `folder`: the path is
    a folder that may not exist yet (it is created)."""
    # pyarrow: the scale extra
    from pyarrow import fs

    scheme, sep, rest = uri.partition("://")
    if not sep or scheme == "file":
        local, path = fs.LocalFileSystem(), str(Path(rest if sep else uri).absolute())
        if folder:
            Path(path).mkdir(parents=True, exist_ok=True)
        return local, path
    host, _, key = rest.partition("/")
    remote, base = _remote(f"{scheme}://{host}")
    return remote, f"{base.rstrip('/')}/{key}" if key else base


def results_schema(partitioned: bool = False):
    """The columns of every results file: `Prediction.to_dict()`'s fields (less the
    heatmap, timings and disclaimer) with the image's metadata, its answer (`label`),
    the bundle's content hash and the reason it got no answer (`error`, "" when none);
    then (added with the scope gate, so older files lack them) `status`, the bundle that
    answered (`answered_by`), the gate's kind of image (`scope_kind`), the shift warning
    (`shifted`), and the whole `scope` and `shift` objects. `partitioned`: with the
    `bundle` column a reader of OUT takes from the folder names; reading with this schema
    (`pd.read_parquet(OUT, schema=results_schema(True))`) gives files written before a
    column existed nulls there, whichever file a reader looks at first."""
    # pyarrow: the scale extra
    import pyarrow as pa

    top = pa.struct(
        [("code", pa.string()), ("name", pa.string()), ("probability", pa.float64())]
        + [("malignant", pa.bool_())]
    )
    columns = [("source", pa.string()), ("age", pa.float64())]
    columns += [("sex", pa.string()), ("site", pa.string()), ("label", pa.string())]
    columns += [("classes", pa.list_(pa.string())), ("probabilities", pa.list_(pa.float64()))]
    columns += [("top", pa.list_(top)), ("malignant_probability", pa.float64())]
    columns += [(name, pa.string()) for name in ("triage", "triage_rule")]
    columns += [("uncertain", pa.bool_()), ("not_skin", pa.bool_())]
    columns += [("not_skin_reason", pa.string()), ("ood_score", pa.float64())]
    columns += [("tta", pa.bool_()), ("model_version", pa.string())]
    columns += [("bundle_sha256", pa.string()), ("error", pa.string())]
    columns += [(name, pa.string()) for name in ("status", "answered_by", "scope_kind")]
    columns += [("shifted", pa.bool_()), ("scope", _scope_type()), ("shift", _shift_type())]
    return pa.schema(columns + ([("bundle", pa.string())] if partitioned else []))


def _scope_type():
    """`runtime.scope.Scope` as a Parquet struct (`scores`: a map, the gate's scores)."""
    # pyarrow: the scale extra
    import pyarrow as pa

    words = [(name, pa.string()) for name in ("kind", "reason", "model", "why", "rule")]
    return pa.struct(
        words
        + [("scores", pa.map_(pa.string(), pa.float64())), ("covers", pa.list_(pa.string()))]
        + [("advice", pa.string())]
    )


def _shift_type():
    """`runtime.shift.ShiftFlag` as a Parquet struct."""
    # pyarrow: the scale extra
    import pyarrow as pa

    return pa.struct(
        [("flagged", pa.bool_()), ("measures", pa.list_(pa.string())), ("message", pa.string())]
    )


RESULT_FIELDS = (
    "classes",
    "probabilities",
    "top",
    "malignant_probability",
    "triage",
    "triage_rule",
    "uncertain",
    "not_skin",
    "not_skin_reason",
    "ood_score",
    "tta",
    "status",
    "scope",
    "shift",
)


def result_row(
    source: str,
    meta: tuple,
    prediction: Prediction | None,
    error: str,
    version: str,
    key: str,
    answered_by: str | None = None,
) -> dict:
    """One image's row; without a prediction the answer's columns are null and `status`
    is "error". `version`: the model the row names when no model answered it (an error
    row; an answer from no model names the gate); `answered_by`: the bundle that
    answered (None: none did)."""
    row = {"source": source, **dict(zip(META_COLUMNS, meta))}
    if row["age"] is not None:
        row["age"] = float(row["age"])
    found = prediction.to_dict() if prediction is not None else {}
    row.update({name: found.get(name) for name in RESULT_FIELDS})
    row["label"] = (prediction.label or None) if prediction is not None else None
    if prediction is not None:
        version = prediction.model_version
    row.update(model_version=version, bundle_sha256=key, error=error)
    row.update(status=row["status"] or "error", answered_by=answered_by)
    row["scope_kind"] = (row["scope"] or {}).get("kind")
    row["shifted"] = (row["shift"] or {}).get("flagged")
    return row


class ResultsWriter:
    """Writes result tables into `folder` as Parquet files of about `rows_per_file` rows,
    each written under a `_tmp-` name (skipped by every reader) and then renamed: a file
    is there whole or not at all."""

    def __init__(self, fs, folder: str, rows_per_file: int):
        self.fs, self.folder, self.rows_per_file = fs, folder, rows_per_file
        self.pending: list = []
        self.rows = 0  # written so far
        self.stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.count = 0
        fs.create_dir(folder, recursive=True)

    def add(self, table) -> None:
        self.pending.append(table)
        if sum(t.num_rows for t in self.pending) >= self.rows_per_file:
            self.flush()

    def flush(self) -> None:
        # pyarrow: the scale extra
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.concat_tables(self.pending) if self.pending else None
        self.pending = []
        if table is None or not table.num_rows:
            return
        name = f"{self.stamp}-{self.count:05d}.parquet"
        temporary, final = f"{self.folder}/_tmp-{name}", f"{self.folder}/{name}"
        pq.write_table(table.cast(results_schema()), temporary, filesystem=self.fs)
        self.fs.move(temporary, final)
        self.count += 1
        self.rows += table.num_rows

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.flush()  # also when stopped: what was predicted is kept


def _results_files(fs, folder: str) -> list[str]:
    # pyarrow: the scale extra
    from pyarrow import fs as pafs

    found = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True, recursive=True))
    # a name starting with "_" or "." is skipped by every Parquet reader (and by us)
    return sorted(
        f.path
        for f in found
        if f.type == pafs.FileType.File
        and f.path.endswith(".parquet")
        and not PurePosixPath(f.path).name.startswith(("_", "."))
    )


def read_results(fs, folder: str, columns: list[str]):
    """The results folder's rows (these columns), as one pyarrow table. A file that cannot
    be read (a write cut short when a run was stopped) is renamed `_unreadable-NAME`, so
    no reader trips on it, and its images count as not done."""
    # pyarrow: the scale extra
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables, schema = [], results_schema()
    for path in _results_files(fs, folder):
        try:  # a file from before a column existed: nulls there
            tables.append(pq.read_table(path, columns=columns, filesystem=fs, schema=schema))
        except (OSError, pa.ArrowException) as exc:
            parent, name = path.rsplit("/", 1)
            fs.move(path, f"{parent}/_unreadable-{name}")
            log.warning("%s: cannot be read (%s); renamed, its images will be redone", path, exc)
    empty = pa.table({c: pa.array([], schema.field(c).type) for c in columns})
    return pa.concat_tables([empty, *tables]) if tables else empty


def summarise(fs, folder: str) -> tuple[int, int]:
    """(rows, rows with an error) in a results folder."""
    # pyarrow: the scale extra
    import pyarrow.compute as pc

    table = read_results(fs, folder, ["error"])
    return table.num_rows, int(pc.sum(pc.not_equal(table["error"], "")).as_py() or 0)


def pending_sources(source: str, out_fs, folder: str):
    """(table of `source`, `uri`, age, sex, site for each image not yet in `folder`,
    how many were skipped as done). `source`: a folder or a CSV / Parquet manifest."""
    # pyarrow: the scale extra
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import fs as pafs

    src_fs, path = filesystem(source)
    info = src_fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{source}: no such file or folder")
    if info.type == pafs.FileType.Directory:
        table = _folder_table(source, src_fs, path)
    elif path.lower().endswith(MANIFEST_SUFFIXES):
        table = _manifest_table(source, src_fs, path)
    else:
        raise DataError(
            f"{source}: not a folder or a manifest ({', '.join(MANIFEST_SUFFIXES)}); "
            f"`dermalens predict` takes single images"
        )
    first = pc.equal(pc.index_in(table["source"], table["source"]), pa.array(range(len(table))))
    table = table.filter(first)  # a path named twice is predicted once
    done = read_results(out_fs, folder, ["source"])["source"]
    keep = pc.invert(pc.is_in(table["source"], value_set=done))
    return table.filter(keep), int(len(table) - pc.sum(keep).as_py()) if len(table) else 0


def _uri(source: str, path: str) -> str:
    """The URI of `path` (as the filesystem of `source` names it) on that filesystem."""
    scheme, sep, rest = source.partition("://")
    if not sep or scheme == "file":
        return path
    host = rest.partition("/")[0]
    if path == host or path.startswith(f"{host}/"):  # s3, gs: the bucket leads the path
        return f"{scheme}://{path}"
    return f"{scheme}://{host}/{path.lstrip('/')}"  # hdfs: the path starts below the host


def _folder_table(source: str, fs, path: str):
    # pyarrow: the scale extra
    import pyarrow as pa
    from pyarrow import fs as pafs

    found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    names = sorted(
        f.path
        for f in found
        if f.type == pafs.FileType.File and PurePosixPath(f.path).suffix.lower() in IMAGE_SUFFIXES
    )
    if not names:
        raise DataError(f"{source}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
    uris = [_uri(source, name) for name in names]
    missing = pa.nulls(len(uris))
    columns = {"source": uris, "uri": uris, "age": missing.cast(pa.float64())}
    return pa.table(
        {**columns, "sex": missing.cast(pa.string()), "site": missing.cast(pa.string())}
    )


def _manifest_table(source: str, fs, path: str):
    # pyarrow: the scale extra
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    try:
        if path.lower().endswith(".csv"):
            with fs.open_input_stream(path) as stream:
                table = pcsv.read_csv(stream)
        else:
            table = pq.read_table(path, filesystem=fs)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{source}: cannot read the manifest ({exc})") from exc
    if "path" not in table.column_names:
        raise DataError(
            f"{source}: the manifest has no 'path' column (columns: {table.column_names}); "
            f"optional columns: {', '.join(META_COLUMNS)}"
        )
    paths = table["path"].cast(pa.string()).to_pylist()
    named = [i for i, p in enumerate(paths) if p]
    if len(named) < len(paths):  # no path: nothing to predict, nothing to report it under
        log.warning("%s: %d rows without a path left out", source, len(paths) - len(named))
        table, paths = table.take(named), [paths[i] for i in named]
    base = path.rsplit("/", 1)[0] if "/" in path else ""
    resolved = [
        p if "://" in p else _uri(source, p if p.startswith("/") else f"{base}/{p}") for p in paths
    ]
    out = {"source": pa.array(paths, pa.string()), "uri": pa.array(resolved, pa.string())}
    for name, kind in zip(META_COLUMNS, (pa.float64(), pa.string(), pa.string())):
        if name not in table.column_names:
            out[name] = pa.nulls(len(paths), kind)
            continue
        try:
            out[name] = table[name].cast(kind)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(f"{source}: column {name!r} is not {kind} ({exc})") from exc
    return pa.table(out)
