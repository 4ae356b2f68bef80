"""Synthetic fingerprints: the embedded "fingerprints" data set.

A print is made in three steps (the SFinGe recipe, much simplified):

1. Orientation field: the zero-pole model of Sherlock and Monro. Each core adds
   +1/2 arg(z - core) and each delta -1/2 arg(z - delta) to the ridge angle, so the
   angle turns by +pi around a core and by -pi around a delta, which is what makes
   loops (1 core + 1 delta, the loop opening away from the delta), whorls (2 cores +
   2 deltas: concentric, spiral or double loop) and tented arches (a core just above
   a delta). Plain arches have their core-delta pair at the faded bottom edge plus an
   explicit upward bend, which the zero-pole model alone draws too flat. Classes
   occur about as often as on real fingers; a random global rotation and a weak
   smooth random warp make the fields less ideal.
2. Ridges: white noise is filtered again and again with an oriented band-pass
   (Gabor-like) filter bank tuned to the ridge period; every pixel keeps the
   response of the filters nearest to its local orientation, and a tanh squashes
   the result. After a few rounds the noise has turned into continuous ridges that
   follow the orientation field and split or end where they must.
3. Rendering: dark ridges on a light background inside an elliptical finger mask
   that fades to the background at the border, with smoothly varying contrast
   (finger pressure) and a little pixel noise.

Everything is deterministic given the seed and takes a few milliseconds per
96-pixel print.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import UserError
from .image_io import check_channels, check_image_size, resize_uint8
from .images import InMemoryImageSource
from .splits import check_split, check_val_fraction, split_counts

# Bump when the synthesizer changes, so that stale disk caches are not reused.
SYNTHESIZER_VERSION = 2

NATIVE_PRINT_SIZE = 96
"""Side of the prints FingerprintSource synthesizes before resizing to image_size."""

_NUM_ORIENTATIONS = 16  # filter bank size; 180/16 = 11.25 degrees between neighbours
_NUM_ITERATIONS = 5  # rounds of filtering; 3 leave blotches, more than 6 changes nothing visible
_RIDGE_PERIOD_AT_96 = 9.0  # ridge-to-ridge distance in px at 96 px (a 500 dpi scan has about 9 px too)

_filter_bank_cache: dict[tuple[int, float], np.ndarray] = {}


def _filter_bank(size: int, period: float) -> np.ndarray:
    """Frequency responses (orientations, size, size//2+1) of an oriented band-pass bank.

    Filter k passes the wave vectors normal to ridge angle k*pi/16 with wavelength ``period``
    (in pixels): a Gaussian in radial frequency around 1/period times a Gaussian in angle.
    """
    key = (size, period)
    cached = _filter_bank_cache.get(key)
    if cached is not None:
        return cached
    freq_y = np.fft.fftfreq(size)[:, None]
    freq_x = np.fft.rfftfreq(size)[None, :]
    radius = np.hypot(freq_x, freq_y)
    direction = np.arctan2(freq_y, freq_x)
    center = 1.0 / period
    # Polar Gaussian: narrow in radius (fixes the period), ~0.3 rad wide in angle (curved ridges still pass).
    radial = np.exp(-((radius - center) ** 2) / (2 * (0.2 * center) ** 2))
    bank = np.empty((_NUM_ORIENTATIONS, size, size // 2 + 1))
    for k in range(_NUM_ORIENTATIONS):
        # Ridges at angle a run along (cos a, sin a); the intensity oscillates along the normal, angle a + pi/2.
        normal = k * np.pi / _NUM_ORIENTATIONS + np.pi / 2
        offset = np.mod(direction - normal + np.pi / 2, np.pi) - np.pi / 2  # both lobes: angles mod pi
        bank[k] = radial * np.exp(-(offset**2) / (2 * 0.3**2))
    if len(_filter_bank_cache) > 64:  # periods vary per print; keep the cache bounded
        _filter_bank_cache.clear()
    _filter_bank_cache[key] = bank
    return bank


def _singular_points(rng: np.random.Generator) -> tuple[str, list[complex], list[complex]]:
    """Pattern class, cores and deltas in normalized coordinates (x right, y down, the print spans [-1, 1]).

    Class frequencies roughly follow real fingers: loops ~60 %, whorls ~30 %, arches ~10 %.
    """
    kind = rng.choice(["left_loop", "right_loop", "whorl", "tented_arch", "arch"], p=[0.3, 0.3, 0.3, 0.05, 0.05])
    if kind in ("left_loop", "right_loop"):
        side = -1.0 if kind == "left_loop" else 1.0
        core = complex(rng.uniform(-0.15, 0.15), rng.uniform(-0.25, 0.05))
        delta = core + complex(side * rng.uniform(0.3, 0.6), rng.uniform(0.4, 0.7))
        return str(kind), [core], [delta]
    if kind == "whorl":
        center = complex(rng.uniform(-0.15, 0.15), rng.uniform(-0.25, 0.05))
        # Two cores close together: a small offset gives a concentric whorl, a larger one a spiral / double loop.
        half_gap = complex(rng.uniform(-0.15, 0.15), rng.uniform(0.03, 0.18))
        cores = [center - half_gap, center + half_gap]
        deltas = [
            center + complex(-rng.uniform(0.4, 0.7), rng.uniform(0.4, 0.7)),
            center + complex(rng.uniform(0.4, 0.7), rng.uniform(0.4, 0.7)),
        ]
        return str(kind), cores, deltas
    if kind == "tented_arch":
        core = complex(rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.15))
        delta = core + complex(rng.normal(0, 0.03), rng.uniform(0.25, 0.45) + rng.normal(0, 0.03))
        return str(kind), [core], [delta]
    # Plain arch: a core-delta pair at the bottom edge (faded out by the mask) tilts the lower ridges;
    # _orientation_field adds the arch bend, which the zero-pole model alone makes too flat.
    core = complex(rng.uniform(-0.1, 0.1), rng.uniform(0.8, 1.0))
    return str(kind), [core], [core + complex(0, rng.uniform(0.25, 0.45))]


def _orientation_field(size: int, rng: np.random.Generator) -> np.ndarray:
    """Ridge angle in radians, (size, size), in [0, pi); 0 = horizontal ridges."""
    kind, cores, deltas = _singular_points(rng)
    rotation = rng.normal(0.0, 0.2)  # global finger rotation, radians (~11 degrees std)
    turn = complex(np.cos(rotation), np.sin(rotation))
    coords = (np.arange(size) - (size - 1) / 2) / (size / 2)
    z = coords[None, :] + 1j * coords[:, None]
    angle = np.full((size, size), rotation)
    for core in cores:
        angle += 0.5 * np.angle(z - core * turn)
    for delta in deltas:
        angle -= 0.5 * np.angle(z - delta * turn)
    if kind == "arch":
        # Ridges y = y0 - height * exp(-x^2 / (2 width^2)) rise in the middle, more so lower down.
        height = rng.uniform(0.3, 0.5) * np.clip((z.imag + 1.3) / 2.3, 0.0, 1.0)
        width = rng.uniform(0.35, 0.5)
        angle += np.arctan(height * z.real / width**2 * np.exp(-(z.real**2) / (2 * width**2)))
    # A weak smooth warp (a few random low-frequency waves) so the fields are not textbook-perfect.
    for _ in range(3):
        wave = rng.normal(0, 1.2, size=2)
        angle += rng.normal(0, 0.08) * np.cos(wave[0] * z.real + wave[1] * z.imag + rng.uniform(0, 2 * np.pi))
    return np.mod(angle, np.pi)


def _smooth_field(size: int, rng: np.random.Generator, num_waves: int = 4) -> np.ndarray:
    """A smooth random field with values in about [-1, 1] (sum of low-frequency cosines)."""
    coords = np.linspace(-1, 1, size)
    field = np.zeros((size, size))
    for _ in range(num_waves):
        fx, fy = rng.normal(0, 1.5, size=2)
        field += np.cos(fx * coords[None, :] + fy * coords[:, None] + rng.uniform(0, 2 * np.pi))
    return field / np.sqrt(num_waves)


def synthesize_fingerprint(size: int = 96, seed: int = 0) -> np.ndarray:
    """One synthetic fingerprint, float32 (size, size) in [0, 1]: dark ridges (~0.1) on light paper (~0.95).

    The ridge period is about 9 px at size 96 and scales with ``size``, with +-10 % variation
    between prints. Deterministic: the same (size, seed) always gives the same array.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 32:
        # Below 32 px the ridge period would fall under 3 px, which pixels cannot show.
        raise UserError(f"fingerprint size must be an integer >= 32, got {size!r}")
    rng = np.random.default_rng(seed)
    period = _RIDGE_PERIOD_AT_96 * size / NATIVE_PRINT_SIZE * rng.uniform(0.9, 1.1)
    period = round(period * 20) / 20  # 0.05 px steps, so the filter bank cache gets hits
    orientation = _orientation_field(size, rng)

    # Each pixel blends the two filters whose angles bracket its orientation.
    position = orientation / (np.pi / _NUM_ORIENTATIONS)
    lower = np.floor(position).astype(np.intp) % _NUM_ORIENTATIONS
    upper = (lower + 1) % _NUM_ORIENTATIONS
    upper_weight = position - np.floor(position)
    lower_weight = 1.0 - upper_weight

    bank = _filter_bank(size, period)
    ridges = rng.standard_normal((size, size))
    for _ in range(_NUM_ITERATIONS):
        responses = np.fft.irfft2(np.fft.rfft2(ridges)[None] * bank, s=(size, size))
        local = (
            lower_weight * np.take_along_axis(responses, lower[None], axis=0)[0]
            + upper_weight * np.take_along_axis(responses, upper[None], axis=0)[0]
        )
        # Normalise and squash: the tanh equalises the ridge contrast and sharpens the edges,
        # which is what lets the next round grow the pattern into continuous ridges.
        ridges = np.tanh(2.0 * local / (local.std() + 1e-12))

    # Soft threshold to near-binary ridges: +1 ridge, -1 valley.
    ridge_profile = np.tanh(1.5 * ridges)
    pressure = 0.8 + 0.2 * _smooth_field(size, rng)  # contrast varies like finger pressure
    ridge_dark, valley_light, paper = 0.12, 0.9, 0.95
    finger = 0.5 * (valley_light + ridge_dark) - 0.5 * (valley_light - ridge_dark) * ridge_profile * np.clip(
        pressure, 0.3, 1.0
    )

    # Elliptical fingertip mask (taller than wide), fading over the outer ~15 % of the radius.
    coords = (np.arange(size) - (size - 1) / 2) / (size / 2)
    center_x, center_y = rng.normal(0, 0.03, size=2)
    half_width, half_height = rng.uniform(0.74, 0.86), rng.uniform(0.9, 1.0)
    radius = np.sqrt(
        ((coords[None, :] - center_x) / half_width) ** 2 + ((coords[:, None] - center_y) / half_height) ** 2
    )
    fade = np.clip((1.0 - radius) / 0.15, 0.0, 1.0)
    mask = fade * fade * (3 - 2 * fade)  # smoothstep: no visible edge

    image = paper + mask * (finger - paper) + rng.normal(0, 0.02, size=(size, size))
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def default_cache_dir() -> Path:
    """Where derived data is cached: $XDG_CACHE_HOME/kuramoto-diffusion, else ~/.cache/kuramoto-diffusion."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kuramoto-diffusion"


def print_seed(seed: int, index: int) -> int:
    """The synthesizer seed of print ``index`` of the set made from ``seed`` (distinct for distinct pairs)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0])


def synthesize_print_set(num_prints: int, seed: int, size: int = NATIVE_PRINT_SIZE) -> np.ndarray:
    """uint8 (num_prints, size, size): prints 0..num_prints-1 of the set made from ``seed``, 0 = black."""
    prints = np.empty((num_prints, size, size), dtype=np.uint8)
    for index in range(num_prints):
        prints[index] = np.rint(synthesize_fingerprint(size, print_seed(seed, index)) * 255.0)
    return prints


class FingerprintSource(InMemoryImageSource):
    """Synthetic fingerprints: a fixed set of ``num_prints`` prints of 96 px, resized to image_size.

    Print i of the set comes from seed ``print_seed(seed, i)``; the validation split is the last
    ``val_fraction`` of the set (at least one print), so train and val use disjoint seeds. Each
    sample is a whole print (no crop), horizontally flipped with probability 1/2 if ``flip``.

    The prints are synthesized on first use (~10 ms each, ~5 s for 512) and kept in memory; with
    ``disk_cache`` they are also stored in ``cache_dir`` (default ``default_cache_dir()``) as
    ``fingerprints-v<version>-96px-n<num_prints>-seed<seed>.npz`` and reused by later runs.
    Above 96 px the prints are upsampled and so look soft.
    """

    def __init__(
        self,
        image_size: int = NATIVE_PRINT_SIZE,
        *,
        channels: int | None = None,
        split: str = "train",
        val_fraction: float = 0.1,
        seed: int = 0,
        flip: bool = True,
        num_prints: int = 512,
        disk_cache: bool = True,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        image_size = check_image_size(image_size)
        split = check_split(split)
        val_fraction = check_val_fraction(val_fraction)
        channels = check_channels(channels)
        if isinstance(num_prints, bool) or not isinstance(num_prints, int) or num_prints < 1:
            raise UserError(f"num_prints must be a positive integer, got {num_prints!r}")
        num_train, num_val = split_counts(num_prints, val_fraction)
        if split == "val" and num_val == 0:
            raise UserError(
                f"fingerprints: {num_prints} print(s) with val_fraction {val_fraction} leave nothing for validation; "
                "raise num_prints or val_fraction, or use split 'all'"
            )
        self.indices = {"train": range(num_train), "val": range(num_train, num_prints), "all": range(num_prints)}[split]
        self.seed = int(seed)
        self.num_prints = num_prints
        self.disk_cache = disk_cache
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        super().__init__(None, image_size, name="fingerprints", channels=channels or 1, flip=flip)

    def __len__(self) -> int:
        return len(self.indices)  # known without synthesizing anything

    @property
    def cache_path(self) -> Path:
        return self.cache_dir / (
            f"fingerprints-v{SYNTHESIZER_VERSION}-{NATIVE_PRINT_SIZE}px-n{self.num_prints}-seed{self.seed}.npz"
        )

    def _read_cache(self) -> np.ndarray | None:
        expected = (self.num_prints, NATIVE_PRINT_SIZE, NATIVE_PRINT_SIZE)
        try:
            with np.load(self.cache_path, allow_pickle=False) as stored:  # never unpickle
                prints = stored["prints"]
        except Exception:  # missing, partial or foreign file: it is only a cache, so synthesize again
            return None
        return prints if prints.shape == expected and prints.dtype == np.uint8 else None

    def _write_cache(self, prints: np.ndarray) -> None:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            # Write to a temporary file and rename, so a crash or a concurrent run never leaves half a file.
            handle, temporary = tempfile.mkstemp(dir=self.cache_dir, prefix=".fingerprints-", suffix=".tmp")
            try:
                with os.fdopen(handle, "wb") as file:
                    np.savez_compressed(file, prints=prints)
                os.replace(temporary, self.cache_path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError:
            pass  # a read-only or full disk only costs the time to synthesize again next run

    def _load_images(self) -> np.ndarray:
        prints = self._read_cache() if self.disk_cache else None
        if prints is None:
            prints = synthesize_print_set(self.num_prints, self.seed)
            if self.disk_cache:
                self._write_cache(prints)
        chosen = prints[self.indices.start : self.indices.stop]
        size = self.image_size
        resized = np.stack([resize_uint8(p[..., None], size, size) for p in chosen])
        return np.repeat(resized, self.channels, axis=-1) if self.channels == 3 else resized
