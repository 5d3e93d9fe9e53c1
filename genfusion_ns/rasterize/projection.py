"""Surfel -> camera set-up for ray-splat intersection (2DGS), matching gsplat 1.4.0's 2DGS projection.

A 2DGS surfel is a disk in the plane spanned by its first two rotated, scaled axes. For a pixel ``p`` the renderer
needs the splat-local point ``(u, v)`` where the pixel's ray meets that plane. With the *ray transform*
``T = K [s_u R_u, s_v R_v, mu_c]`` (3x3, camera frame, skew ignored as in gsplat) a splat point maps to the
homogeneous pixel ``T (u, v, 1)``, and the 2DGS paper inverts this with one cross product per pixel:
``(u, v, 1) ~ (x T_2 - T_0) x (y T_2 - T_1)``.

Expanding that cross product gives ``c(x, y) = x (T_1 x T_2) + y (T_2 x T_0) + (T_0 x T_1)``, i.e. three per-surfel
vectors (``cross_x, cross_y, cross_1`` below). The compositor uses this affine form so each (pixel, surfel) pair
costs two fused multiply-adds per component instead of a full cross product.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Per-pair threshold below which a splat is skipped (gsplat: ``alpha < 1/255``).
ALPHA_THRESHOLD = 1.0 / 255.0
# Cap on per-splat alpha (gsplat 1.4.0 2DGS kernels: ``min(0.999f, ...)``).
ALPHA_MAX = 0.999
# Compositing stops *before* a splat that would drop transmittance to or below this value.
TRANSMITTANCE_MIN = 1e-4
# Weight of the 2D low-pass fallback: sigma_2d = FILTER_INV_SQUARE * |p - mean2d|^2 (gsplat FILTER_INV_SQUARE).
FILTER_INV_SQUARE = 2.0
# gsplat bins surfels into 16x16 tiles; a surfel can only shade pixels of the tiles its 3-sigma box touches.
GSPLAT_TILE_SIZE = 16


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] from (not necessarily normalised) wxyz quaternions [..., 4]."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    rows = (
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    )
    return torch.stack(rows, dim=-1).reshape(quats.shape[:-1] + (3, 3))


def conic_aabb(ray_transforms: Tensor, radius_sq: Tensor | float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """Image-space AABB of the projected splat-local disk ``u^2 + v^2 <= radius_sq``.

    A pixel column ``x`` is an extreme of the projected disk when the line ``x T_2 - T_0`` is tangent to the
    disk, which gives a quadratic in ``x`` (same for ``y``). Returns ``(center [..., 2], half_extent_sq [..., 2],
    denom [...])``; the box is bounded only where ``denom < 0`` (the whole disk lies in front of the camera plane).
    With ``radius_sq = 1`` ``center`` is gsplat's 2DGS ``means2d`` and ``half_extent_sq`` its ``half_extend``.
    """
    t = ray_transforms
    w = t[..., 2, :]
    denom = radius_sq * (w[..., 0] ** 2 + w[..., 1] ** 2) - w[..., 2] ** 2
    safe = torch.where(denom == 0, torch.ones_like(denom), denom)
    centers, halves = [], []
    for i in range(2):
        row = t[..., i, :]
        lin = radius_sq * (row[..., 0] * w[..., 0] + row[..., 1] * w[..., 1]) - row[..., 2] * w[..., 2]
        quad = radius_sq * (row[..., 0] ** 2 + row[..., 1] ** 2) - row[..., 2] ** 2
        c = lin / safe
        centers.append(c)
        halves.append(c * c - quad / safe)
    center = torch.stack(centers, dim=-1)
    half_sq = torch.stack(halves, dim=-1)
    return center, half_sq, denom


@dataclass
class SurfelProjection:
    """Per-(camera, surfel) quantities of the 2DGS set-up. Shapes are ``[C, N, ...]``."""

    ray_transforms: Tensor  # [C, N, 3, 3] rows T_0, T_1, T_2 (gsplat ``ray_transforms``)
    means2d: Tensor  # [C, N, 2] centre of the unit-disk AABB (gsplat ``means2d``), drives the 2D low-pass filter
    depths: Tensor  # [C, N] camera-space z of the surfel centre
    normals: Tensor  # [C, N, 3] camera-frame normal, flipped to face the camera
    radii: Tensor  # [C, N] int32, 0 = culled (gsplat semantics)


def project_surfels(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
) -> SurfelProjection:
    """Differentiable 2DGS projection with gsplat 1.4.0's culling rules (``fully_fused_projection_fwd_2dgs``).

    Culled when: z outside [near, far]; the AABB denominator is exactly zero; the 3-sigma radius
    ``ceil(3 sqrt(max(1e-4, max half-extent^2)))`` is <= ``radius_clip``; or the box misses the image.
    """
    rot = quat_to_rotmat(quats)  # [N, 3, 3]
    r_cw = viewmats[:, :3, :3]
    t_cw = viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", r_cw, means) + t_cw[:, None, :]
    axes_c = torch.einsum("cij,njk->cnik", r_cw, rot)  # columns: rotated local axes in camera frame
    tangent_u = axes_c[..., 0] * scales[None, :, 0:1]
    tangent_v = axes_c[..., 1] * scales[None, :, 1:2]
    # Camera-frame [s_u R_u, s_v R_v, mu_c] as columns, then K (fx, fy, cx, cy; skew ignored like gsplat).
    fx, fy = Ks[:, 0, 0], Ks[:, 1, 1]
    cx, cy = Ks[:, 0, 2], Ks[:, 1, 2]
    cols = torch.stack([tangent_u, tangent_v, means_c], dim=-1)  # [C, N, 3(xyz), 3(col)]
    row0 = fx[:, None, None] * cols[..., 0, :] + cx[:, None, None] * cols[..., 2, :]
    row1 = fy[:, None, None] * cols[..., 1, :] + cy[:, None, None] * cols[..., 2, :]
    ray_transforms = torch.stack([row0, row1, cols[..., 2, :]], dim=-2)  # [C, N, 3, 3]

    normals = axes_c[..., 2]
    facing = (-(normals * means_c).sum(-1, keepdim=True) > 0).to(normals.dtype) * 2 - 1
    normals = normals * facing

    center, half_sq, denom = conic_aabb(ray_transforms)
    depths = means_c[..., 2]
    with torch.no_grad():
        radius = torch.ceil(3.0 * torch.sqrt(half_sq.detach().amax(-1).clamp_min(1e-4)))
        cx_d, cy_d = center.detach().unbind(-1)
        visible = (
            (depths.detach() >= near_plane)
            & (depths.detach() <= far_plane)
            & (denom.detach() != 0)
            & (radius > radius_clip)
            & (cx_d + radius > 0)
            & (cx_d - radius < width)
            & (cy_d + radius > 0)
            & (cy_d - radius < height)
            & torch.isfinite(radius)
        )
        radii = torch.where(visible, radius, torch.zeros_like(radius)).to(torch.int32)
    return SurfelProjection(ray_transforms, center, depths, normals, radii)
