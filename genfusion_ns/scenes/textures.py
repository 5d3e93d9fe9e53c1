"""Solid (3D) procedural textures: colour is a function of the world position (and, for photo textures, the surface
normal), so every view sees the same surface pattern (multi-view consistency) without any UV parameterisation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .photos import triplanar


def _hash3(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic lattice hash to [0, 1): integer mixing, identical on every platform."""
    h = (ix * 73856093) ^ (iy * 19349663) ^ (iz * 83492791) ^ (seed * 2654435761)
    h = h.astype(np.uint64) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(1274126177)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(16)
    return (h & np.uint64(0xFFFFFF)).astype(np.float64) / float(0x1000000)


def value_noise(points: np.ndarray, frequency: float, seed: int) -> np.ndarray:
    """Trilinearly interpolated lattice noise in [0, 1) with a smoothstep fade."""
    p = points * frequency
    base = np.floor(p).astype(np.int64)
    f = p - base
    f = f * f * (3.0 - 2.0 * f)
    out = np.zeros(len(points))
    for dx in (0, 1):
        wx = f[:, 0] if dx else 1.0 - f[:, 0]
        for dy in (0, 1):
            wy = f[:, 1] if dy else 1.0 - f[:, 1]
            for dz in (0, 1):
                wz = f[:, 2] if dz else 1.0 - f[:, 2]
                out += wx * wy * wz * _hash3(base[:, 0] + dx, base[:, 1] + dy, base[:, 2] + dz, seed)
    return out


def fbm(points: np.ndarray, frequency: float, seed: int, octaves: int = 3) -> np.ndarray:
    """Fractal sum of value noise, normalised back to [0, 1)."""
    total, amplitude, norm = np.zeros(len(points)), 1.0, 0.0
    for octave in range(octaves):
        total += amplitude * value_noise(points, frequency * 2**octave, seed + octave)
        norm += amplitude
        amplitude *= 0.5
    return total / norm


@dataclass
class Material:
    """A two-colour solid texture (``pattern`` picks how the two colours are mixed), or a tiled photo
    (``pattern="photo"``: ``photo`` projected triplanarly, ``scale`` metres per photo width)."""

    pattern: str  # "checker" | "stripes" | "noise" | "marble" | "plain" | "photo"
    color_a: np.ndarray
    color_b: np.ndarray
    scale: float = 0.3  # feature size in metres
    direction: np.ndarray | None = None  # stripe / marble direction
    seed: int = 0
    photo: np.ndarray | None = None  # [H,W,3] in [0,1], for pattern "photo"
    emissive: bool = False  # shown as is, unlit and unshadowed (a sky)

    def albedo(self, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
        if self.pattern == "photo":
            return triplanar(self.photo, points, normals, self.scale)
        mix = self._mix(points)[:, None]
        return (1.0 - mix) * self.color_a + mix * self.color_b

    def _mix(self, points: np.ndarray) -> np.ndarray:
        if self.pattern == "plain":
            return 0.15 * fbm(points, 1.0 / self.scale, self.seed)
        if self.pattern == "checker":
            # Half-cell offset: axis-aligned walls and floors (z = 0) would otherwise sit exactly on a cell boundary,
            # where float rounding flips the parity pixel by pixel.
            cells = np.floor(points / self.scale + 0.5).astype(np.int64).sum(axis=1)
            return (cells % 2).astype(np.float64) * 0.85 + 0.15 * fbm(points, 2.0 / self.scale, self.seed)
        direction = self.direction if self.direction is not None else np.array([1.0, 0.0, 0.0])
        phase = points @ direction / self.scale
        if self.pattern == "stripes":
            return 0.5 + 0.5 * np.sin(2.0 * np.pi * phase)
        if self.pattern == "marble":
            return 0.5 + 0.5 * np.sin(2.0 * np.pi * (phase + 1.5 * fbm(points, 1.0 / self.scale, self.seed)))
        if self.pattern == "noise":
            return fbm(points, 1.0 / self.scale, self.seed, octaves=4)
        raise ValueError(f"unknown texture pattern {self.pattern!r}")
