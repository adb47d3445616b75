"""Image corruptions at five severities, for an acquisition-shift benchmark (after ImageNet-C).

Each corruption imitates something that changes between dermatoscopes, clinics and phones:
exposure and colour of the light, focus, compression, sensor noise, resolution, framing,
the dermatoscope's black ring and hair over the lesion. Evaluating one model on every
corruption at every severity shows how fast its accuracy and calibration fall as the
acquisition drifts away from the training data.

    from dermalens.evaluation import corruptions as C

    for name in C.CORRUPTIONS:  # or C.FAMILIES["blur"]
        for severity in C.SEVERITIES:
            shifted = C.apply(image, name, severity, seed=C.image_seed("ISIC_0024306"))

`image` is an RGB PIL image or an HxWx3 uint8 array; the result has the same type and size.
Severity 0 (or None) returns the clean image. Severities run 1 (mild) to 5 (severe), and every
parameter table below grows monotonically in strength. The same image, name, severity and seed
give identical bytes; `image_seed` turns a stable key (an image id) into a seed, so a benchmark
run is reproducible image by image. `FAMILIES` groups the corruptions, so a training recipe
can hold a whole family out. Sizes (blur radii, hair widths) are fractions of the image's short
side, so a severity means the same at 600x450 as at the model's input size.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

SEVERITIES = (1, 2, 3, 4, 5)

ImageLike = Image.Image | np.ndarray
Kernel = Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]

VIGNETTE_EDGE = 0.08  # width of the ring's soft edge, as a fraction of the half-diagonal
HAIR_COLOUR = (0.12, 0.08, 0.06)  # dark brown-black, RGB in [0, 1]
HAIR_OPACITY = 0.9
HAIR_COUNTS = (3, 6, 10, 15, 22)  # hairs per severity
HAIR_SUPERSAMPLE = 4
# sensor_noise per severity: (photons at full scale, read-noise sigma)
NOISE_LEVELS = ((400, 0.01), (200, 0.02), (100, 0.03), (50, 0.045), (25, 0.06))


def _to_float(image: ImageLike) -> np.ndarray:
    """HxWx3 float32 in [0, 1]; kernels work on this and may return values outside it."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(
            "expected an RGB PIL image or an HxWx3 uint8 array, "
            f"got a {array.dtype} array of shape {array.shape}"
        )
    return array.astype(np.float32) / 255.0


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray(_to_uint8(x), "RGB")


def _short_side(x: np.ndarray) -> int:
    return min(x.shape[0], x.shape[1])


def _brightness(x: np.ndarray, gain: float, rng: np.random.Generator) -> np.ndarray:
    return x * gain  # over-exposure: highlights clip as they would on the sensor


def _contrast(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    mean = x.mean()
    return (x - mean) * factor + mean


def _saturation(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    grey = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]  # luma
    return grey + (x - grey) * factor


def _hue_shift(x: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    # Rotation about the grey axis (Rodrigues): turns the hue, keeps the channel mean.
    t = np.deg2rad(degrees)
    u = np.full(3, 1 / np.sqrt(3))
    cross = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    rotation = np.cos(t) * np.eye(3) + np.sin(t) * cross + (1 - np.cos(t)) * np.outer(u, u)
    return x @ rotation.T.astype(np.float32)


def _gamma(x: np.ndarray, gamma: float, rng: np.random.Generator) -> np.ndarray:
    return x**gamma  # gamma > 1 darkens the mid-tones: an under-exposed or dim light


def _white_balance(x: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    # Channel gains 1 + s*cos(phi - 2*pi*k/3) average to 1: a cast of random hue phi, no
    # change in overall brightness.
    phi = rng.uniform(0.0, 2 * np.pi)
    gains = 1 + strength * np.cos(phi - 2 * np.pi * np.arange(3) / 3)
    return x * gains.astype(np.float32)


def _gaussian_blur(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    s = sigma * _short_side(x)
    return ndimage.gaussian_filter(x, sigma=(s, s, 0), mode="reflect")


def _convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Same-size convolution with reflected borders, through the FFT (large disks are slow
    as direct sums)."""
    r = kernel.shape[0] // 2
    h, w = x.shape[:2]
    padded = np.pad(x, ((r, r), (r, r), (0, 0)), mode="reflect")
    shape = padded.shape[:2]
    spectrum = np.fft.rfft2(padded, axes=(0, 1)) * np.fft.rfft2(kernel, s=shape)[..., None]
    out = np.fft.irfft2(spectrum, s=shape, axes=(0, 1))
    return out[2 * r : 2 * r + h, 2 * r : 2 * r + w].astype(np.float32)


def _defocus_blur(x: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    r = radius * _short_side(x)
    n = int(np.ceil(r))
    if n < 1:
        return x
    yy, xx = np.mgrid[-n : n + 1, -n : n + 1]
    disk = np.clip(r + 0.5 - np.hypot(yy, xx), 0.0, 1.0)  # anti-aliased edge
    return _convolve(x, disk / disk.sum())


def _jpeg(x: np.ndarray, quality: int, rng: np.random.Generator) -> np.ndarray:
    buffer = io.BytesIO()
    _pil(x).save(buffer, format="JPEG", quality=quality)
    return _to_float(Image.open(buffer))


def _low_resolution(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    image = _pil(x)
    w, h = image.size
    small = (max(1, round(w / factor)), max(1, round(h / factor)))
    # PIL's bilinear filter widens with the reduction, so the downscale is anti-aliased.
    return _to_float(image.resize(small, Image.BILINEAR).resize((w, h), Image.BILINEAR))


def _sensor_noise(x: np.ndarray, param: tuple, rng: np.random.Generator) -> np.ndarray:
    # Shot noise as its Gaussian approximation (variance x / photons at full scale), plus
    # signal-independent read noise; independent per channel, as in a raw Bayer sensor.
    photons, read_sigma = param
    shot, read = rng.standard_normal((2, *x.shape), dtype=np.float32)
    return x + np.sqrt(np.clip(x, 0, 1) / photons) * shot + read_sigma * read


def _zoom_in(x: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    image = _pil(x)
    w, h = image.size
    cw, ch = w / scale, h / scale
    box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
    return _to_float(image.resize((w, h), Image.BILINEAR, box=box))


def _zoom_out(x: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    # The lesion shrinks inside a black frame, as when the dermatoscope sits further back.
    image = _pil(x)
    w, h = image.size
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = Image.new("RGB", (w, h), (0, 0, 0))
    canvas.paste(image.resize((sw, sh), Image.BILINEAR), ((w - sw) // 2, (h - sh) // 2))
    return _to_float(canvas)


def _rotation(x: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    # Lesions have no canonical orientation; what shifts is interpolation and black corners.
    return _to_float(_pil(x).rotate(degrees, Image.BILINEAR, fillcolor=(0, 0, 0)))


def _vignette(x: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    # The dermatoscope's black ring: dark outside a circle of `radius` half-diagonals.
    h, w = x.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.hypot(yy + 0.5 - h / 2, xx + 0.5 - w / 2) / (np.hypot(h, w) / 2)
    mask = np.clip((radius - d) / VIGNETTE_EDGE + 0.5, 0.0, 1.0).astype(np.float32)
    return x * mask[..., None]


def _hair_curve(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, float]:
    """One hair: a quadratic Bezier from a random point, 0.3-1.0 short sides long, and its
    width in pixels (0.4-0.9% of the short side: 2-4 px on a 600x450 dermoscopic image)."""
    short = min(w, h)
    start = rng.uniform((0, 0), (w, h))
    angle = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    end = start + rng.uniform(0.3, 1.0) * short * direction
    bend = rng.uniform(-0.3, 0.3) * np.linalg.norm(end - start)
    control = (start + end) / 2 + bend * np.array([-direction[1], direction[0]])
    t = np.linspace(0, 1, 24)[:, None]
    points = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
    return points, rng.uniform(0.004, 0.009) * short


def _hair(x: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    h, w = x.shape[:2]
    # Always draw the severity-5 set and keep the first `count`: a milder severity shows a
    # subset of the same hairs, so strength is monotone image by image.
    hairs = [_hair_curve(rng, w, h) for _ in range(max(HAIR_COUNTS))]
    # Drawn at HAIR_SUPERSAMPLE times the size and box-averaged down, so a hair thinner than
    # a pixel covers it partly, as it would on the sensor.
    k = HAIR_SUPERSAMPLE
    mask = Image.new("L", (w * k, h * k), 0)
    draw = ImageDraw.Draw(mask)
    for points, width in hairs[:count]:
        draw.line([tuple(p) for p in points * k], fill=255, width=max(1, round(width * k)))
    mask = mask.resize((w, h), Image.BOX)
    alpha = (HAIR_OPACITY * np.asarray(mask, np.float32) / 255)[..., None]
    return x * (1 - alpha) + np.array(HAIR_COLOUR, np.float32) * alpha


@dataclass(frozen=True)
class Corruption:
    """One corruption: its family, one parameter per severity 1..5 (mildest first), and
    whether it draws random numbers from the seed."""

    name: str
    family: str
    params: tuple
    kernel: Kernel
    random: bool = False

    def __call__(self, image: ImageLike, severity: int | None, seed: int = 0) -> ImageLike:
        return apply(image, self.name, severity, seed)


_ALL = (
    # exposure gain (x * g)
    Corruption("brightness", "photometric", (1.15, 1.3, 1.5, 1.75, 2.0), _brightness),
    # contrast kept around the image mean
    Corruption("contrast", "photometric", (0.75, 0.6, 0.45, 0.32, 0.2), _contrast),
    # chroma kept around the luma
    Corruption("saturation", "photometric", (0.75, 0.55, 0.4, 0.25, 0.1), _saturation),
    # hue rotation in degrees
    Corruption("hue_shift", "photometric", (6, 12, 20, 30, 45), _hue_shift),
    # exponent on [0, 1] intensities (darkening)
    Corruption("gamma", "photometric", (1.2, 1.45, 1.75, 2.1, 2.5), _gamma),
    # amplitude of the channel gains of a cast of random hue
    Corruption("white_balance", "photometric", (0.08, 0.16, 0.24, 0.32, 0.4), _white_balance, True),
    # Gaussian sigma, in short sides
    Corruption("gaussian_blur", "blur", (0.004, 0.008, 0.013, 0.019, 0.027), _gaussian_blur),
    # disk radius, in short sides
    Corruption("defocus_blur", "blur", (0.006, 0.012, 0.018, 0.026, 0.036), _defocus_blur),
    # JPEG quality
    Corruption("jpeg", "digital", (30, 20, 14, 9, 6), _jpeg),
    # downscale factor (then back up, bilinear)
    Corruption("low_resolution", "digital", (1.5, 2, 3, 4, 6), _low_resolution),
    # (photons at full scale, read-noise sigma), see NOISE_LEVELS
    Corruption("sensor_noise", "noise", NOISE_LEVELS, _sensor_noise, True),
    # magnification of the centre crop
    Corruption("zoom_in", "geometric", (1.1, 1.2, 1.35, 1.5, 1.7), _zoom_in),
    # scale of the image inside a black frame
    Corruption("zoom_out", "geometric", (0.9, 0.8, 0.7, 0.6, 0.5), _zoom_out),
    # counter-clockwise rotation in degrees, black corners
    Corruption("rotation", "geometric", (5, 10, 20, 30, 45), _rotation),
    # radius of the clear circle, in half-diagonals
    Corruption("vignette", "occlusion", (0.95, 0.87, 0.79, 0.71, 0.63), _vignette),
    # number of hairs
    Corruption("hair", "occlusion", HAIR_COUNTS, _hair, True),
)

CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in _ALL}
FAMILIES: dict[str, tuple[str, ...]] = {
    family: tuple(c.name for c in _ALL if c.family == family)
    for family in dict.fromkeys(c.family for c in _ALL)
}


def image_seed(key: str, seed: int = 0) -> int:
    """A stable per-image seed from a key such as an image id (unlike `hash`, the same in
    every process)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _check(name: str, severity: int | None) -> None:
    if name not in CORRUPTIONS:
        close = difflib.get_close_matches(str(name), CORRUPTIONS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown corruption {name!r}{hint}; valid: {', '.join(CORRUPTIONS)}")
    valid = isinstance(severity, int | np.integer) and not isinstance(severity, bool)
    if severity is not None and not (valid and 0 <= severity <= max(SEVERITIES)):
        raise ValueError(
            f"severity must be one of {', '.join(map(str, SEVERITIES))} "
            f"(or 0/None for the clean image), got {severity!r}"
        )


def apply(image: ImageLike, name: str, severity: int | None, seed: int = 0) -> ImageLike:
    """Corrupt `image` with corruption `name` at `severity` (1..5; 0 or None: unchanged).

    Returns a new image of the input's type and size (a PIL image comes back in RGB). `seed`
    (a non-negative int, see `image_seed`) drives the random corruptions; others ignore it.
    """
    _check(name, severity)
    x = _to_float(image)
    if severity:
        corruption = CORRUPTIONS[name]
        # The seed stream depends on the corruption but not on the severity, so the severities
        # of one image share their random draws (the same cast hue, noise field, hairs).
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        x = corruption.kernel(x, corruption.params[severity - 1], rng)
    out = _to_uint8(x)
    return Image.fromarray(out, "RGB") if isinstance(image, Image.Image) else out
