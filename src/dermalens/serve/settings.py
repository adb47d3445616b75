"""Service settings: defaults here, overridden by DERMALENS_* environment variables, then by
keyword arguments (`Settings(max_pixels=...)`, `dermalens.serve.run(..., max_pixels=...)`)."""

from __future__ import annotations

import difflib
import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any

import limits
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from dermalens.bundle import default_model_path
from dermalens.imageio import MAX_PIXELS

MAX_TOKEN_DAYS = 3650  # ten years: the longest any API token may be given
MAX_WORKERS = 64  # each worker holds a copy of every model


def default_model() -> Path:
    """The bundled default model (or $DERMALENS_MODEL, which pydantic-settings reads too)."""
    return default_model_path()


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "dermalens"


class Settings(BaseSettings):
    """Every knob of the service; environment variable = DERMALENS_ + the name in capitals."""

    model_config = SettingsConfigDict(env_prefix="DERMALENS_", extra="forbid")

    model: Path = Field(default_factory=default_model)  # model bundle folder
    host: str = "127.0.0.1"  # used by `run`
    port: int = Field(8000, ge=1, le=65535)
    data_dir: Path = Field(default_factory=default_data_dir)  # database and kept uploads
    database_url: str = ""  # any SQLAlchemy URL; empty: SQLite file data_dir/dermalens.db
    api_token: SecretStr | None = None  # needed to export feedback; unset: export disabled
    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0)  # larger uploads get 413
    max_pixels: int = Field(MAX_PIXELS, gt=0)  # width x height; guards decompression bombs
    cors_origins: Annotated[list[str], NoDecode] = []  # comma-separated; "*" allows any
    keep_uploads_dir: Path | None = None  # consented images; unset: data_dir/uploads
    maps_url: str = "https://www.google.com/maps/search/?api=1&query={query}"
    maps_query: str = "dermatologist"
    top_k: int = Field(3, ge=1, le=50)
    threads: int = Field(0, ge=0)  # ONNX Runtime intra-op threads; 0: cores / workers
    # uvicorn worker processes of `dermalens serve`: each loads the model and holds its own
    # GIL (one process is GIL-bound near one core, benchmarks/RESULTS.md "Worker processes");
    # rate limits (memory://) and the shift window are then per process
    workers: int = 1
    # ONNX Runtime's idle threads busy-wait for the next call (True) or sleep at once: under
    # concurrent requests a spinning thread holds a core the other requests' NumPy work needs
    # (benchmarks/RESULTS.md, "Per-request path")
    spinning: bool = False
    # "auto": the bundle's optimised graph when it was accepted and measured faster (else the
    # plain model.onnx); "fp32": always the plain model.onnx
    precision: str = Field("auto", pattern="^(auto|fp32)$")
    tta: bool = False  # average over flips and a 180-degree turn (4x the inference time)
    display_width: int = Field(480, ge=64, le=2048)  # width of the heatmap overlay PNG
    # change between visits: "any" (any two photographs) or "same" (same device and zoom);
    # see runtime.change.PRESETS and benchmarks/RESULTS.md ("Change score")
    change_framing: str = Field("any", pattern="^(any|same)$")
    # the scope gate (runtime.scope) in front of the models; False: the one model answers all
    scope_gate: bool = True
    # TrueType font of the PDF reports (Debian's fonts-dejavu-core); a -Bold file beside it
    # is used for headings when present
    report_font: Path = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    # FHIR Patient.identifier.system of the clinic's own patient ids (e.g. urn:oid:...); the
    # visit reports name the patient by that identifier only
    fhir_patient_system: str = "urn:dermalens:clinic-patient-id"
    # the shift warning's batch test runs over this many latest requests (per process)
    shift_window: int = Field(50, ge=1, le=100_000)
    # Access control (staff accounts, patient records; README "For a clinic").
    anonymous_predictions: bool = True  # the quick check without an account (page and API)
    # Per client address, `limits` notation ("120/minute", "1000 per day; 20/minute"); "" for
    # none (e.g. for a load test from one address).
    anonymous_rate_limit: str = "120/minute"
    login_rate_limit: str = "10/minute"  # login attempts per client address
    login_max_failures: int = Field(5, ge=1)  # failed logins in a row before a lockout
    login_lockout_minutes: float = Field(15, gt=0)
    password_min_length: int = Field(12, ge=8)
    session_hours: float = Field(12, gt=0)  # a login lasts at most this long
    session_idle_minutes: float = Field(30, gt=0)  # and ends after this long unused
    # Staff API tokens expire: a new one lasts token_days, or the days its maker asks for, up
    # to token_max_days (whole days, 1 to 3650).
    token_days: int = 90
    token_max_days: int = 365
    cookie_secure: bool = False  # Secure cookies (and the __Host- prefix): set behind HTTPS
    secret_key: SecretStr | None = None  # signs CSRF tokens; unset: data_dir/secret_key
    # Proxies whose X-Forwarded-For is believed (addresses or CIDRs, comma-separated); empty:
    # the client address is the TCP peer and the header is ignored.
    trusted_proxies: Annotated[list[str], NoDecode] = []
    rate_limit_storage: str = "memory://"  # `limits` storage URI, e.g. redis://host:6379

    @field_validator("cors_origins", "trusted_proxies", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value

    @field_validator("anonymous_rate_limit", "login_rate_limit")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        if not value.strip():
            return ""
        try:
            limits.parse_many(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a rate limit; write e.g. '10/minute' or '100 per hour'"
            ) from None
        return value

    @field_validator("workers", mode="before")
    @classmethod
    def _check_workers(cls, value: Any) -> int:
        workers = _whole_number("DERMALENS_WORKERS", value, "")
        if not 1 <= workers <= MAX_WORKERS:
            raise ValueError(f"DERMALENS_WORKERS={workers}: from 1 to {MAX_WORKERS} processes")
        return workers

    @field_validator("token_days", "token_max_days", mode="before")
    @classmethod
    def _check_days(cls, value: Any, info: ValidationInfo) -> int:
        name = f"DERMALENS_{info.field_name.upper()}"
        days = _whole_number(name, value, " of days")
        if not 1 <= days <= MAX_TOKEN_DAYS:
            raise ValueError(f"{name}={days}: a token lasts from 1 to {MAX_TOKEN_DAYS} days")
        return days

    @model_validator(mode="after")
    def _check_token_lifetimes(self) -> Settings:
        if self.token_days > self.token_max_days:
            raise ValueError(
                f"DERMALENS_TOKEN_DAYS={self.token_days} is longer than "
                f"DERMALENS_TOKEN_MAX_DAYS={self.token_max_days}"
            )
        return self

    @field_validator("maps_url")
    @classmethod
    def _check_maps_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")) or "{query}" not in value:
            raise ValueError("must be an http(s) URL containing {query}")
        return value

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'dermalens.db'}"

    @property
    def onnx_threads(self) -> int:
        """ONNX Runtime intra-op threads per process: DERMALENS_THREADS, else this process's
        share of the cores, so N workers do not each start a thread per core."""
        if self.threads:
            return self.threads
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        return 0 if self.workers == 1 else max(1, cores // self.workers)

    @property
    def uploads_dir(self) -> Path:
        return self.keep_uploads_dir or self.data_dir / "uploads"


def make_settings(**overrides: Any) -> Settings:
    """Settings from the environment plus keyword overrides; unknown keys fail loudly."""
    known = list(Settings.model_fields)
    for key in overrides:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; valid: {known}"
            raise ValueError(f"unknown serve setting {key!r}{hint}")
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _whole_number(name: str, value: Any, unit: str) -> int:
    """`value` as an int, or an error naming the setting (`unit`: e.g. " of days")."""
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a whole number{unit}") from None
