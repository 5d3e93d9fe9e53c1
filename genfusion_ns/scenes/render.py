"""Ray caster for :class:`SceneLayout`: nearest-hit visibility, solid textures, hemisphere + directional Lambert
shading with hard shadows from the objects. Shading is view-independent, so every view agrees on a surface's colour."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cameras import PinholeCameras
from .layout import SceneLayout
from .primitives import rowdot


@dataclass
class RenderedView:
    rgb: np.ndarray  # [H,W,3] float in [0,1]
    depth: np.ndarray  # [H,W] z-depth in metres (0 where no surface)


def pixel_rays(cameras: PinholeCameras, index: int, supersample: int) -> tuple[np.ndarray, np.ndarray]:
    """World rays through ``supersample``² stratified points of every pixel (row-major, sub-samples last).

    Directions have camera-space z = 1, so the hit parameter is the z-depth.
    """
    s = supersample
    offsets = (np.arange(s) + 0.5) / s
    u = (np.arange(cameras.width)[:, None] + offsets[None, :]).reshape(-1)
    v = (np.arange(cameras.height)[:, None] + offsets[None, :]).reshape(-1)
    uu, vv = np.meshgrid(u, v, indexing="xy")
    dirs_cam = np.stack([(uu - cameras.cx) / cameras.fx, (vv - cameras.cy) / cameras.fy, np.ones_like(uu)], -1)
    c2w = cameras.c2w_opencv[index]
    dirs = (dirs_cam.reshape(-1, 3) @ c2w[:3, :3].T).astype(np.float32)
    origins = np.broadcast_to(c2w[:3, 3].astype(np.float32), dirs.shape)
    return origins, dirs


def cast(layout: SceneLayout, origins: np.ndarray, dirs: np.ndarray, only: list[int] | None = None
         ) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit over the primitives (or the subset ``only``): returns ``t`` (inf if none) and primitive index."""
    indices = range(len(layout.primitives)) if only is None else only
    best_t = np.full(len(origins), np.inf, dtype=origins.dtype)
    best_id = np.full(len(origins), -1, dtype=np.int64)
    for i in indices:
        primitive = layout.primitives[i]
        candidates = _rays_near(primitive.bounding_sphere(), origins, dirs)
        if candidates is None:
            t = primitive.intersect(origins, dirs)
            closer = t < best_t
            best_t[closer], best_id[closer] = t[closer], i
        elif len(candidates):
            t = primitive.intersect(origins[candidates], dirs[candidates])
            closer = t < best_t[candidates]
            best_t[candidates[closer]], best_id[candidates[closer]] = t[closer], i
    return best_t, best_id


def _rays_near(sphere: tuple[np.ndarray, float] | None, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray | None:
    """Indices of rays that pass within the bounding sphere (``None`` = test all rays: unbounded primitive)."""
    if sphere is None:
        return None
    center, radius = sphere
    oc = origins - center
    b = rowdot(oc, dirs)
    disc = b * b - rowdot(dirs, dirs) * (rowdot(oc, oc) - radius * radius)
    return np.nonzero(disc >= 0)[0]


def shade(layout: SceneLayout, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colour [R,3] and hit parameter [R] of each ray (black and 0 for rays that hit nothing)."""
    t, prim = cast(layout, origins, dirs)
    hit = np.isfinite(t)
    rgb = np.zeros((len(t), 3))
    points = origins[hit] + t[hit, None] * dirs[hit]
    normals = np.zeros_like(points)
    albedo = np.zeros_like(points)
    hit_prim = prim[hit]
    for i, primitive in enumerate(layout.primitives):
        sel = hit_prim == i
        if sel.any():
            normals[sel] = primitive.normal(points[sel])
            albedo[sel] = layout.materials[primitive.material].albedo(points[sel], normals[sel])
    emissive = [i for i, p in enumerate(layout.primitives) if layout.materials[p.material].emissive]
    glow = np.isin(hit_prim, emissive)  # unlit (the sky): no shading, no shadow ray
    n_dot_l = np.clip(normals @ layout.light_dir, 0.0, None)
    lit_points = ~glow
    if layout.shadow_casters and lit_points.any():
        shadow_origins = points[lit_points] + 1e-3 * normals[lit_points]
        shadow_dirs = np.broadcast_to(layout.light_dir.astype(points.dtype), shadow_origins.shape)
        blocked, _ = cast(layout, shadow_origins, shadow_dirs, only=layout.shadow_casters)
        n_dot_l[lit_points] *= np.where(np.isfinite(blocked), 0.25, 1.0)
    sky = 0.5 + 0.5 * normals[:, 2]  # hemisphere ambient: upward-facing surfaces are brighter
    lit = albedo * (0.30 + 0.25 * sky + 0.55 * n_dot_l)[:, None]
    lit[glow] = albedo[glow]
    rgb[hit] = lit
    return np.clip(rgb, 0.0, 1.0), np.where(hit, t, 0.0)


def render_view(layout: SceneLayout, cameras: PinholeCameras, index: int, supersample: int = 2) -> RenderedView:
    """Anti-aliased colour (box filter over sub-pixel rays) and exact pixel-centre z-depth."""
    h, w, s = cameras.height, cameras.width, supersample
    origins, dirs = pixel_rays(cameras, index, s)
    rgb, _ = shade(layout, origins, dirs)
    rgb = rgb.reshape(h, s, w, s, 3).mean(axis=(1, 3))
    if s == 1:
        depth_origins, depth_dirs = origins, dirs
    else:
        depth_origins, depth_dirs = pixel_rays(cameras, index, 1)
    t, _ = cast(layout, depth_origins, depth_dirs)
    depth = np.where(np.isfinite(t), t, 0.0).reshape(h, w)
    return RenderedView(rgb=rgb, depth=depth)
