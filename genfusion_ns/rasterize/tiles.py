"""Tile binning for the PyTorch 2DGS backend.

Cost must scale with (surfel, pixel) overlaps, not pixels x surfels. Each visible surfel gets a *tight* pixel box
that provably contains every pixel where it can pass the ``alpha >= 1/255`` test:

* 3D branch: ``opacity * exp(-q/2) >= 1/255`` needs ``q <= 2 ln(255 opacity)``, i.e. the ray hits the splat-local
  disk of that radius; its exact image AABB comes from :func:`conic_aabb` (unbounded disks fall back to gsplat's box).
* 2D low-pass branch: a circle of radius ``sqrt(ln(255 opacity))`` around ``means2d``.

The box is intersected with the 16x16-tile rectangle gsplat would assign (so both backends shade exactly the same
pairs) and then binned into small square tiles (``tile_size`` must divide 16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .projection import ALPHA_THRESHOLD, FILTER_INV_SQUARE, GSPLAT_TILE_SIZE, SurfelProjection, conic_aabb

# Relative safety margin on the cut-off radius, plus one pixel, so float rounding can never cull a pair that the
# per-pair alpha test would keep.
_RADIUS_MARGIN = 1.02
_PIXEL_MARGIN = 1


@dataclass
class TileBins:
    """Ragged, depth-sorted surfel lists of the non-empty tiles, longest list first.

    Tile ``k`` owns ``surfel_ids[starts[k] : starts[k] + counts[k]]``; ids are flat ``camera * N + surfel``.
    """

    tile_size: int
    tiles_x: int
    tiles_y: int
    n_cameras: int
    pad_id: int  # index of the inert padding row appended to every per-surfel table (= C * N)
    tile_ids: Tensor  # [T] int64 global tile index (camera-major) into the C x tiles_y x tiles_x grid
    origins: Tensor  # [T, 2] int64 pixel (x, y) of each tile's top-left corner
    starts: Tensor  # [T] int64
    counts: Tensor  # [T] int64, non-increasing
    surfel_ids: Tensor  # [n_overlaps] int64
    rows: Tensor  # [C * N + 1, 2] int64 first / last pixel row a surfel can shade (empty for culled / pad rows)

    @property
    def n_overlaps(self) -> int:
        return self.surfel_ids.numel()


def surfel_pixel_boxes(
    proj: SurfelProjection, opacities: Tensor, width: int, height: int
) -> tuple[Tensor, Tensor]:
    """Inclusive pixel boxes ``[C, N, 4]`` (x0, y0, x1, y1) that contain all pixels a surfel can shade.

    Returns ``(boxes, has_box)``; ``has_box`` is False for culled surfels, empty boxes or opacity < 1/255.
    Computed in float64 so the bound is safe for float32 inputs too.
    """
    rt = proj.ray_transforms.detach().double()
    opac = opacities.detach().double().expand(rt.shape[:2])
    visible = (proj.radii > 0) & (opac >= ALPHA_THRESHOLD)
    q_max = 2.0 * torch.log((255.0 * opac).clamp_min(1.0))  # largest q with alpha >= 1/255
    r3_sq = q_max * _RADIUS_MARGIN**2 + 1e-6
    center3, half3_sq, denom3 = conic_aabb(rt, r3_sq)
    bounded = denom3 < 0
    half3 = half3_sq.clamp_min(0).sqrt()
    lo3, hi3 = center3 - half3, center3 + half3

    r2 = torch.sqrt(q_max / FILTER_INV_SQUARE) * _RADIUS_MARGIN
    m2 = proj.means2d.detach().double()
    lo = torch.minimum(lo3, m2 - r2[..., None])
    hi = torch.maximum(hi3, m2 + r2[..., None])

    # gsplat's 16x16-tile rectangle (tile_min inclusive / tile_max exclusive), in pixels.
    radius = proj.radii.double()
    tmin = torch.floor((m2 - radius[..., None]) / GSPLAT_TILE_SIZE).clamp_min(0)
    tmax = torch.ceil((m2 + radius[..., None]) / GSPLAT_TILE_SIZE).clamp_min(0)
    gs_lo = tmin * GSPLAT_TILE_SIZE
    gs_hi = tmax * GSPLAT_TILE_SIZE - 1
    big = torch.tensor(1e12, dtype=torch.float64, device=rt.device)
    lo = torch.where(bounded[..., None], lo, -big)
    hi = torch.where(bounded[..., None], hi, big)
    # Pixel j is shaded at j + 0.5.
    lo_px = torch.ceil(lo - 0.5).clamp(-1e9, 1e9) - _PIXEL_MARGIN
    hi_px = torch.floor(hi - 0.5).clamp(-1e9, 1e9) + _PIXEL_MARGIN
    lo_px = torch.maximum(lo_px, gs_lo).clamp_min(0)
    hi_px = torch.minimum(hi_px, gs_hi)
    hi_px = torch.minimum(hi_px, torch.tensor([width - 1, height - 1], dtype=torch.float64, device=rt.device))
    nonempty = (hi_px >= lo_px).all(-1)
    boxes = torch.cat([lo_px, hi_px], dim=-1).to(torch.int64)
    return boxes, visible & nonempty & torch.isfinite(lo_px).all(-1) & torch.isfinite(hi_px).all(-1)


def bin_surfels(proj: SurfelProjection, opacities: Tensor, width: int, height: int, tile_size: int = 8) -> TileBins:
    """Assign visible surfels to ``tile_size`` tiles, depth-sorted per tile (ties by surfel index, like gsplat)."""
    if tile_size not in (1, 2, 4, 8, 16):
        raise ValueError(f"tile_size must divide {GSPLAT_TILE_SIZE} (1, 2, 4, 8 or 16), got {tile_size}.")
    C, N = proj.radii.shape
    device = proj.radii.device
    tiles_x = math.ceil(width / tile_size)
    tiles_y = math.ceil(height / tile_size)
    boxes, has_box = surfel_pixel_boxes(proj, opacities, width, height)

    # Depth rank within each camera: stable sort by depth, so ties keep surfel order (as gsplat's radix sort).
    order = torch.sort(proj.depths.detach(), dim=1, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(N, device=device).expand(C, N).contiguous())

    flat = torch.nonzero(has_box.reshape(-1)).squeeze(1)  # visible (camera * N + surfel)
    b = boxes.reshape(-1, 4).index_select(0, flat) // tile_size  # tile-space inclusive boxes
    bw = b[:, 2] - b[:, 0] + 1
    counts = bw * (b[:, 3] - b[:, 1] + 1)
    first = torch.cumsum(counts, 0) - counts
    cam = torch.div(flat, max(N, 1), rounding_mode="floor")
    # One gather per overlap: (x0, y0, box width, first overlap, flat id, camera, depth rank).
    per_surfel = torch.stack([b[:, 0], b[:, 1], bw, first, flat, cam, rank.reshape(-1).index_select(0, flat)], 1)
    owner = torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts)
    rows = per_surfel.index_select(0, owner)
    local = torch.arange(owner.numel(), device=device) - rows[:, 3]
    tx = rows[:, 0] + local % rows[:, 2]
    ty = rows[:, 1] + torch.div(local, rows[:, 2], rounding_mode="floor")
    tile_global = (rows[:, 5] * tiles_y + ty) * tiles_x + tx
    key = tile_global * max(N, 1) + rows[:, 6]
    if key.numel() and int(key.max()) < 2**31 - 1:
        key = key.int()  # int32 sorts ~3x faster
    key_sorted, perm = torch.sort(key)
    flat_ids = rows[:, 4].index_select(0, perm)
    key_sorted = key_sorted.long()
    tiles, tile_counts = torch.unique_consecutive(torch.div(key_sorted, max(N, 1), rounding_mode="floor"),
                                                  return_counts=True)
    tile_start = torch.cumsum(tile_counts, 0) - tile_counts
    by_len = torch.argsort(tile_counts, descending=True, stable=True)
    tiles = tiles[by_len]
    within = tiles % (tiles_x * tiles_y)
    origins = torch.stack([(within % tiles_x) * tile_size, (within // tiles_x) * tile_size], dim=-1)
    rows_of = torch.ones(C * N + 1, 2, dtype=torch.int64, device=device)
    rows_of[:, 1] = 0  # empty range for culled surfels and the padding row
    rows_of.index_copy_(0, flat, boxes.reshape(-1, 4).index_select(0, flat)[:, 1::2])
    return TileBins(tile_size, tiles_x, tiles_y, C, C * N, tiles, origins, tile_start[by_len], tile_counts[by_len],
                    flat_ids, rows_of)
