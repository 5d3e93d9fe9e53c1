"""Photo textures for the procedural scenes: crops of the public-domain / CC0 photos that ship inside scikit-image
(a nerfstudio dependency, so nothing is downloaded), tinted and tiled over the surfaces.

Why: a video model trained on procedural checkers and stripes repairs real captures with the procedural rooms'
colours. Real surface statistics (brick, gravel, grass, fur, fabric) in the training scenes close part of that gap
while the generator keeps its exact ground truth. The photos are never the ones anything is evaluated on.
"""

from __future__ import annotations

from functools import cache

import numpy as np

PHOTO_SOURCES: dict[str, str] = {
    "brick": "CC0 (CC0Textures Bricks25)",
    "grass": "CC0 (CC0Textures)",
    "gravel": "CC0 (CC0Textures Gravel04)",
    "coffee": "CC0 (Rachel Michetti)",
    "chelsea": "CC0 (Stefan van der Walt)",
    "astronaut": "public domain (NASA)",
    "rocket": "public domain (SpaceX)",
}
"""The scikit-image sample photos used, with their licences (from ``skimage.data``'s docstrings)."""
GROUND_PHOTOS = ("gravel", "brick", "grass")
WALL_PHOTOS = ("brick", "gravel", "coffee", "chelsea", "astronaut", "rocket", "grass")
MAX_SIDE = 256
"""Photos are box-downscaled to this long side once: surfaces are seen at ≤ a few hundred pixels."""


@cache
def load_photo(name: str) -> np.ndarray:
    """``[H,W,3]`` float32 in [0,1] (greyscale photos repeated to RGB), long side ≤ :data:`MAX_SIDE`."""
    import skimage.data

    if name not in PHOTO_SOURCES:
        raise ValueError(f"unknown photo {name!r}; choose one of {sorted(PHOTO_SOURCES)}")
    image = np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255.0
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = image[:, :, :3]
    factor = int(np.ceil(max(image.shape[:2]) / MAX_SIDE))
    if factor > 1:
        h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
        image = image[:h, :w].reshape(h // factor, factor, w // factor, factor, 3).mean(axis=(1, 3))
    image.setflags(write=False)
    return image


@cache
def is_greyscale(name: str) -> bool:
    """Whether the photo's three channels are equal (a greyscale source), decided once per photo."""
    image = load_photo(name)
    return bool(np.allclose(image[..., 0], image[..., 1]))


def photo_crop(rng: np.random.Generator, names: tuple[str, ...]) -> np.ndarray:
    """A random crop (40–100 % of each side) of one of ``names``, randomly flipped, tinted and exposure-shifted.

    Greyscale sources get a colour tint, colour ones a milder white-balance change, so one photo yields many
    materials."""
    name = str(rng.choice(names))
    image = load_photo(name)
    h, w = image.shape[:2]
    ch, cw = (max(8, round(s * rng.uniform(0.4, 1.0))) for s in (h, w))
    y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = image[y0:y0 + ch, x0:x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    grey = is_greyscale(name)
    tint = rng.uniform(0.55, 1.0, size=3) if grey else rng.uniform(0.85, 1.15, size=3)
    gain = rng.uniform(0.7, 1.25)
    return np.ascontiguousarray(np.clip(crop * tint * gain, 0.0, 1.0), dtype=np.float32)


def sample_tiled(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear lookup at texture coordinates ``u, v`` (1 = one image width / height), mirror-tiled so that the
    repeats have no seams. Returns ``[N,3]``."""
    h, w = image.shape[:2]

    def mirrored(x: np.ndarray, size: int) -> np.ndarray:
        period = 2 * size
        x = np.mod(x, period)
        return np.where(x >= size, period - 1 - x, x)

    x, y = u * w - 0.5, v * h - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    xa, xb = mirrored(x0, w), mirrored(x0 + 1, w)
    ya, yb = mirrored(y0, h), mirrored(y0 + 1, h)
    top = image[ya, xa] * (1 - fx) + image[ya, xb] * fx
    bottom = image[yb, xa] * (1 - fx) + image[yb, xb] * fx
    return top * (1 - fy) + bottom * fy


def triplanar(image: np.ndarray, points: np.ndarray, normals: np.ndarray, scale: float) -> np.ndarray:
    """The photo projected along the three world axes and blended by the surface normal (sharpness 4), so walls,
    floors and the sides of objects all show it unstretched. ``scale``: metres per image width."""
    weights = np.abs(normals) ** 4
    weights = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-8)
    p = points / scale
    out = np.zeros((len(points), 3))
    for axis, (a, b) in enumerate(((1, 2), (0, 2), (0, 1))):
        used = weights[:, axis] > 1e-3
        if used.any():
            # Image rows run down the world z axis on walls (so facades stay upright).
            out[used] += weights[used, axis, None] * sample_tiled(image, p[used, a], -p[used, b])
    return out
