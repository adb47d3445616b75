"""Is this a dermoscopic skin image at all? An out-of-distribution (OOD) check, NumPy only.

    detector = load_ood(bundle)  # None when the bundle has no ood.npz
    scores, not_skin, reasons = detector.check(pooled(feature_map), pixel_stats(batch, pre))

Three cheap pixel tests catch frames with nothing to classify: a flat frame (blank, black, a
lens cap: pixel spread below `min_pixel_std`), pixel noise (neighbouring pixels almost
uncorrelated, below `min_neighbour_corr`; every photograph, dermoscopic or not, is far
above it) and a greyscale frame (mean spread between the colour channels below
`min_colour`: scans, documents, black-and-white photos; dermoscopy is always colour, and
the least colourful HAM10000 image is far above the limit).

Everything else is judged twice, and an image is not skin if either judge says so.
First on the model's own features: the last feature map, mean-pooled
exactly as the classifier head pools it (so it works with ONNX Runtime or PyTorch), is
compared with the same features of a class-balanced sample of training skin images by
cosine distance to the k-th nearest of them (deep nearest neighbours, Sun et al., ICML
2022). `score` is that distance divided by its median over the training sample (each image
left out of its own neighbours), so it is about 1 on typical skin images.

Then on its colours, which do not depend on the model: a colour descriptor (a 12 x 12
histogram of rg chromaticity, r = R / (R + G + B), and an 8-bin histogram of brightness,
max(R, G, B); square-rooted, unit length) gets the same k-th-nearest-neighbour score
against the same training images. The feature score depends on how a training run
shaped the features; the colour score catches photos whose colours are far from skin
whatever the model. Its threshold is a higher quantile (`colour_threshold`). How often
each judge lets probe images through, and what each costs in false rejects of skin
images, is measured in benchmarks/RESULTS.md (and why nearest neighbours replaced a
Mahalanobis model).

The threshold is a high quantile of the scores of held-out (validation) skin images, so
its false-reject rate on skin images is known by construction; measure it again on test.
The fit lives in the bundle as `ood.npz` (the sample's unit feature vectors in float16);
`bundle.thresholds["ood_above"]` holds the threshold in force and
`bundle.info["ood_sha256"]` the file's hash. Fitting lives in `evaluation.ood_fit`.
"""

from __future__ import annotations

import functools
import io
import threading
from dataclasses import dataclass, fields

import numpy as np
from threadpoolctl import ThreadpoolController

from dermalens.bundle import Bundle, BundleError
from dermalens.files import sha256
from dermalens.preprocess import Preprocessing

OOD_FILE = "ood.npz"


FORMAT = 2  # 1 was the Mahalanobis model; its files are refused


MIN_PIXEL_STD = 3.0  # 0-255 units; real images are far above (HAM10000's lowest is ~10)


MIN_NEIGHBOUR_CORR = 0.5  # photos are ~0.9 or more at model input size; white noise is ~0


MIN_COLOUR = 2.0  # 0-255 units, mean max-min over R, G, B; greyscale is 0, HAM10000 >= 5.3


CHROMA_BINS, BRIGHTNESS_BINS = 12, 8


COLOUR_DIMS = CHROMA_BINS * CHROMA_BINS + BRIGHTNESS_BINS


PIXEL_STATS = 3 + COLOUR_DIMS  # columns of `pixel_stats`: 3 tests, then the colour descriptor


def pooled(fmap: np.ndarray) -> np.ndarray:
    """N x C x h x w feature map -> N x C, the mean the classifier head pools with."""
    fmap = np.asarray(fmap, dtype=np.float32)
    return fmap.mean(axis=(2, 3)) if fmap.ndim == 4 else fmap


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equal-shape 2-D arrays, from sums (no centred copies)."""
    n = a.size
    sa, sb = float(a.sum()), float(b.sum())
    cov = float(np.einsum("ij,ij->", a, b)) - sa * sb / n
    var = (float(np.einsum("ij,ij->", a, a)) - sa * sa / n) * (
        float(np.einsum("ij,ij->", b, b)) - sb * sb / n
    )
    # a flat image has no correlation to speak of; the flat test catches it instead
    return cov / var**0.5 if var > 0 else 1.0


def colour_descriptor(rgb: np.ndarray) -> np.ndarray:
    """3 x H x W pixels in 0-255 -> COLOUR_DIMS: rg-chromaticity and brightness histograms,
    each a distribution, square-rooted (Hellinger) and the whole scaled to unit length."""
    rgb = np.clip(rgb.reshape(3, -1), 0, 255)
    total = rgb.sum(axis=0) + 1e-3
    # bins centred on multiples of 1 / CHROMA_BINS, so grey (r = g = 1/3) is a bin's centre
    r = np.minimum((rgb[0] / total * CHROMA_BINS + 0.5).astype(np.int64), CHROMA_BINS - 1)
    g = np.minimum((rgb[1] / total * CHROMA_BINS + 0.5).astype(np.int64), CHROMA_BINS - 1)
    chroma = np.bincount(r * CHROMA_BINS + g, minlength=CHROMA_BINS * CHROMA_BINS)
    bright = np.minimum(
        (rgb.max(axis=0) * (BRIGHTNESS_BINS / 256)).astype(np.int64), BRIGHTNESS_BINS - 1
    )
    light = np.bincount(bright, minlength=BRIGHTNESS_BINS)
    x = np.sqrt(np.concatenate([chroma / chroma.sum(), light / light.sum()]))
    return x / np.linalg.norm(x)


def pixel_stats(batch: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Per preprocessed image: [pixel std, neighbouring-pixel correlation, colour spread,
    *colour descriptor] (PIXEL_STATS columns).

    The grey level is the channel mean in 0-255 units (offset removed); the correlation
    is the mean of the horizontal and vertical neighbour correlations; the colour spread is
    the mean over pixels of max - min over the three channels, in 0-255 units; the colour
    descriptor is `colour_descriptor` of the same pixels."""
    std = np.asarray(pre.std, np.float32)
    mean = np.asarray(pre.mean, np.float32)
    scale = std / 3
    out = np.empty((len(batch), PIXEL_STATS), np.float32)
    for i, image in enumerate(np.asarray(batch, np.float32)):
        rgb = image * std[:, None, None] + mean[:, None, None]
        out[i, 2] = float((rgb.max(axis=0) - rgb.min(axis=0)).mean())
        out[i, 3:] = colour_descriptor(rgb)
        grey = image[0] * scale[0]
        grey += image[1] * scale[1]
        grey += image[2] * scale[2]
        grey -= grey.mean()  # centred once: keeps the float32 sums below exact enough
        out[i, 0] = (float(np.einsum("ij,ij->", grey, grey)) / grey.size) ** 0.5
        horizontal = _correlation(grey[:, 1:], grey[:, :-1])
        out[i, 1] = (horizontal + _correlation(grey[1:], grey[:-1])) / 2
    return out


@dataclass
class OodDetector:
    """A fitted OOD check; see the module docstring for what the score means."""

    bank: np.ndarray  # N x C: unit-length pooled features of training skin images (float16)
    k: int  # which nearest neighbour's distance is the score
    scale: float  # median k-NN distance within the bank (leave-one-out): score ~1 on skin
    threshold: float = float("inf")  # not skin when score > threshold
    min_pixel_std: float = MIN_PIXEL_STD
    min_neighbour_corr: float = MIN_NEIGHBOUR_CORR
    min_colour: float = MIN_COLOUR
    # the colour judge (absent in files written before it existed: then features only)
    colour_bank: np.ndarray | None = None  # N x COLOUR_DIMS colour descriptors (float16)
    colour_scale: float = 1.0
    colour_threshold: float = float("inf")

    def __post_init__(self) -> None:
        self._bank = np.asarray(self.bank, np.float32)  # compute in float32
        self.k = int(self.k)
        if self.colour_bank is not None:
            self._colour_bank = np.asarray(self.colour_bank, np.float32)

    def colour_score(self, pixels: np.ndarray) -> np.ndarray | None:
        """Colour score per row of `pixel_stats` (about 1 on skin), None without a colour fit."""
        if self.colour_bank is None:
            return None
        x = np.asarray(pixels, np.float32)[:, 3:]
        if x.shape[1] != self._colour_bank.shape[1]:
            raise BundleError(
                f"{OOD_FILE} has {self._colour_bank.shape[1]} colour dimensions but this "
                f"version computes {x.shape[1]}: re-run `dermalens calibrate`"
            )
        return knn_distance(unit_rows(x), self._colour_bank, self.k) / self.colour_scale

    def score(self, features: np.ndarray) -> np.ndarray:
        """OOD score per row of pooled features (N x C); about 1 on typical skin images."""
        x = np.asarray(features, np.float32)
        if x.ndim != 2 or x.shape[1] != self._bank.shape[1]:
            raise BundleError(
                f"{OOD_FILE} was fitted on {self._bank.shape[1]} features but the model "
                f"gives {x.shape[-1]}: re-run `dermalens calibrate`"
            )
        return knn_distance(unit_rows(x), self._bank, self.k) / self.scale

    def pixel_reasons(self, pixels: np.ndarray) -> list[str]:
        """The three pixel tests alone, per row of `pixel_stats`: the reason, or "" if passed."""
        reasons = []
        for spread, corr, colour in np.asarray(pixels)[:, :3]:
            if spread < self.min_pixel_std:
                reasons.append(f"flat frame (pixel std {spread:.1f} < {self.min_pixel_std:g})")
            elif corr < self.min_neighbour_corr:
                reasons.append(
                    f"pixel noise (neighbour correlation {corr:.2f} < {self.min_neighbour_corr:g})"
                )
            elif colour < self.min_colour:
                reasons.append(
                    f"greyscale frame (colour spread {colour:.1f} < {self.min_colour:g}; "
                    f"dermoscopic images are colour)"
                )
            else:
                reasons.append("")
        return reasons

    def check(
        self, features: np.ndarray, pixels: np.ndarray, threshold: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(scores, not-skin flags, reasons: "" when skin) for pooled features and pixel stats.

        The pixel tests come first, then the feature judge, then the colour judge."""
        scores = self.score(features)
        not_skin, reasons = self.decide(scores, self.colour_score(pixels), pixels, threshold)
        return scores, not_skin, reasons

    def decide(
        self,
        scores: np.ndarray,
        colour_scores: np.ndarray | None,
        pixels: np.ndarray,
        threshold: float | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        """(not-skin flags, reasons) from scores already computed by `score` and
        `colour_score` (None without a colour fit) and the same images' pixel stats."""
        limit = self.threshold if threshold is None else threshold
        scores = np.asarray(scores)
        if colour_scores is None:
            colour_scores = np.zeros(len(scores), np.float32)
        reasons = self.pixel_reasons(pixels)
        if not len(scores) == len(colour_scores) == len(reasons):
            raise ValueError(
                f"OOD decide: {len(scores)} scores, {len(colour_scores)} colour scores and "
                f"{len(reasons)} pixel rows; they must describe the same images"
            )
        for i, (score, colour_score) in enumerate(zip(scores, colour_scores)):
            if reasons[i]:
                continue
            if score > limit:
                reasons[i] = f"unlike dermoscopic images (OOD score {score:.2f} > {limit:.2f})"
            elif colour_score > self.colour_threshold:
                reasons[i] = (
                    f"colours unlike dermoscopic images (colour score {colour_score:.2f} > "
                    f"{self.colour_threshold:.2f})"
                )
        return np.array([bool(r) for r in reasons], bool), reasons

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        values = {
            f.name: np.asarray(getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) is not None
        }
        np.savez(buffer, format=np.array(FORMAT), **values)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, where: str = OOD_FILE) -> OodDetector:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise BundleError(f"{where}: not a readable OOD file ({exc})") from exc
        if int(arrays.get("format", -1)) != FORMAT:
            raise BundleError(
                f"{where}: OOD file format {arrays.get('format')} is not {FORMAT}; "
                f"re-run `dermalens calibrate` on the bundle"
            )
        names = [f.name for f in fields(cls) if f.name in arrays]
        # the pixel-test limits have defaults: a file written before a test existed gets it
        missing = [n for n in ("bank", "k", "scale", "threshold") if n not in arrays]
        if missing:
            raise BundleError(f"{where}: OOD file lacks {missing}")
        values = {n: arrays[n] if arrays[n].ndim else arrays[n].item() for n in names}
        return cls(**values)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


SMALL_QUERY = 64  # up to a batch of rows scored on one BLAS thread (see `knn_distance`)


_BLAS_LOCK = threading.Lock()


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()  # the BLAS libraries loaded by now (NumPy's among them)


def _similarities(part: np.ndarray, bank: np.ndarray) -> np.ndarray:
    if len(part) > SMALL_QUERY:  # large fits (calibration): every BLAS thread
        return part @ bank.T
    # One image or one batch (serving, folders). BLAS on all cores wakes its worker
    # threads, which then spin on the cores ONNX Runtime needs next (predict() was ~5 ms
    # slower on 2 cores, folder prediction ~25% slower). On the calling thread alone it
    # wakes nothing: 1.6 ms for 32 rows against 7.9 ms in NumPy's own einsum loop.
    # The limit is process-wide: one caller at a time sets and restores it (the service
    # answers requests in parallel threads; the product takes well under a millisecond).
    with _BLAS_LOCK, _blas().limit(limits=1, user_api="blas"):
        return part @ bank.T


def knn_distance(x: np.ndarray, bank: np.ndarray, k: int, skip_self: bool = False):
    """Cosine distance of each unit row of `x` to its k-th nearest unit row of `bank`."""
    out = np.empty(len(x), np.float32)
    kth = k + 1 if skip_self else k  # a bank image's nearest neighbour is itself
    for start in range(0, len(x), 1024):  # bounded memory for large queries
        part = x[start : start + 1024]
        sims = _similarities(part, bank)
        kth_sim = np.partition(sims, sims.shape[1] - kth, axis=1)[:, sims.shape[1] - kth]
        out[start : start + 1024] = 1.0 - kth_sim
    return out


def load_ood(bundle: Bundle) -> OodDetector | None:
    """The bundle's OOD check, or None if it has none; its hash must match bundle.json."""
    if not bundle.has(OOD_FILE):
        return None
    path = bundle.file(OOD_FILE)
    expected = bundle.info.get("ood_sha256")
    if expected and sha256(path) != expected:
        raise BundleError(
            f"{path}: content hash does not match bundle.json; the file was changed or corrupted"
        )
    detector = OodDetector.from_bytes(path.read_bytes(), str(path))
    if "ood_above" in bundle.thresholds:
        detector.threshold = float(bundle.thresholds["ood_above"])
    return detector
