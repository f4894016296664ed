"""Natural-like grayscale scenes, procedurally generated: the simulated source's images.

1/f^alpha noise backgrounds (natural images have alpha near 1), crossed by soft oriented
edges and occluded by textured objects (:func:`generate_scenes`); deterministic given the
generator's state, so the simulated source's 118 scenes follow from its seed.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

# Scenes: amplitude spectra 1/f^alpha (natural images have alpha near 1;
# slightly steeper backgrounds leave room for the objects to carry the fine detail).
_BACKGROUND_ALPHA = (1.1, 1.6)
_TEXTURE_ALPHA = (0.8, 2.0)
_N_EDGES = 2
_N_OBJECTS = 6
_OBJECT_PROBABILITY = 0.7
_CLIP_PERCENTILES = (0.5, 99.5)


def generate_scenes(n_images: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Natural-like grayscale scenes: 1/f noise, oriented edges and textured occluding objects.

    Each image is a 1/f^alpha amplitude-spectrum background (alpha drawn per
    image), crossed by soft oriented luminance edges, with up to a few
    ellipses and rectangles painted over it in depth order, each filled with
    its own 1/f texture, mean luminance and contrast (so objects occlude one
    another with sharp, one-pixel anti-aliased borders). Each image is then
    stretched so that its 0.5th and 99.5th luminance percentiles map to 0 and
    255. All images are built at once; only the few edges and objects are
    looped over.

    Parameters
    ----------
    n_images, height, width : int
    rng : numpy.random.Generator
        The only source of randomness: the same generator state gives the same images.

    Returns
    -------
    scenes : ndarray of uint8, shape (n_images, height, width)
    """
    if min(n_images, height, width) < 1:
        raise ValueError(f"generate_scenes: need positive sizes, got {(n_images, height, width)}")
    scale = float(max(height, width))
    y = ((np.arange(height, dtype=np.float32) - height / 2) / scale)[:, None]
    x = ((np.arange(width, dtype=np.float32) - width / 2) / scale)[None, :]
    pixel = np.float32(1.0 / scale)

    image = _power_law_noise(n_images, height, width, rng.uniform(*_BACKGROUND_ALPHA, n_images), rng)
    for _ in range(_N_EDGES):
        angle = _per_image(rng.uniform(0, np.pi, n_images))
        offset = _per_image(rng.uniform(-0.3, 0.3, n_images))
        contrast = _per_image(rng.uniform(0.2, 1.0, n_images) * rng.choice([-1.0, 1.0], n_images))
        softness = _per_image(rng.uniform(1.0, 8.0, n_images)) * pixel
        distance = np.cos(angle) * x + np.sin(angle) * y - offset
        image += contrast * np.tanh(distance / softness)

    textures = _power_law_noise(n_images, height, width, rng.uniform(*_TEXTURE_ALPHA, n_images), rng)
    for _ in range(_N_OBJECTS):
        # One shape per depth slot (images differ in size, place, texture and
        # presence), so each slot computes one shape's geometry only.
        is_ellipse = rng.random() < 0.5
        present = rng.random(n_images) < _OBJECT_PROBABILITY
        # An absent object is placed far outside the image rather than masked out.
        center_x = np.where(present, rng.uniform(-0.45, 0.45, n_images) * width / scale, 10.0)
        center_y = rng.uniform(-0.45, 0.45, n_images) * height / scale
        half_a = rng.uniform(0.04, 0.3, n_images)
        half_b = rng.uniform(0.04, 0.3, n_images)
        rotation = rng.uniform(0, np.pi, n_images)
        luminance = _per_image(rng.normal(0.0, 1.5, n_images))
        contrast = _per_image(rng.uniform(0.2, 1.2, n_images))
        texture = textures[rng.permutation(n_images)]
        # Coordinates along the object's axes in units of its half-axes; each is
        # a (n, 1, W) + (n, H, 1) sum, one pass over the images.
        dx, dy = x - _per_image(center_x), y - _per_image(center_y)
        cos, sin = np.cos(rotation), np.sin(rotation)
        u = _per_image(cos / half_a) * dx + _per_image(sin / half_a) * dy
        v = _per_image(-sin / half_b) * dx + _per_image(cos / half_b) * dy
        if is_ellipse:
            np.square(u, out=u)
            u += np.square(v, out=v)
            radius = np.sqrt(u, out=u)
        else:
            radius = np.maximum(np.abs(u, out=u), np.abs(v, out=v), out=u)
        # (1 - radius) * smaller half-axis approximates the signed distance to
        # the border: a one-pixel linear ramp anti-aliases the edge.
        ramp = _per_image(np.minimum(half_a, half_b)) / pixel
        coverage = radius
        coverage *= -ramp
        coverage += ramp + 0.5
        np.clip(coverage, 0.0, 1.0, out=coverage)
        texture *= contrast
        texture += luminance
        texture -= image
        texture *= coverage
        image += texture

    low, high = np.percentile(image.reshape(n_images, -1), _CLIP_PERCENTILES, axis=1)
    span = np.maximum(high - low, np.finfo(np.float32).eps)
    stretched = (image - _per_image(low)) / _per_image(span)
    return np.rint(np.clip(stretched, 0.0, 1.0) * 255.0).astype(np.uint8)


def _per_image(values: np.ndarray) -> np.ndarray:
    """Per-image parameters shaped to broadcast against (n_images, height, width) float32 arrays."""
    return np.asarray(values, dtype=np.float32)[:, None, None]


def _power_law_noise(n_images: int, height: int, width: int, alpha: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise images with amplitude spectrum 1/f^alpha, zero mean and unit s.d. each."""
    white = rng.standard_normal((n_images, height, width), dtype=np.float32)
    spectrum = scipy.fft.rfft2(white, workers=-1)
    frequency = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :])
    frequency[0, 0] = 1.0  # the mean is removed below; avoid 0 ** -alpha
    log_f = np.log(frequency).astype(np.float32)
    spectrum *= np.exp(-_per_image(alpha) * log_f)
    spectrum[:, 0, 0] = 0.0
    noise = scipy.fft.irfft2(spectrum, s=(height, width), workers=-1)
    noise /= noise.std(axis=(1, 2), keepdims=True)
    return noise.astype(np.float32, copy=False)
