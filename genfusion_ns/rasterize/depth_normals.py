"""Surface normals from a rendered depth map, with gsplat 1.4.0's definition (``gsplat.utils.depth_to_normal``).

Pixels are back-projected through their centres (``x + 0.5``) using z-depth, central differences are taken along
image rows and columns, and the normal is ``normalize(d/dy x d/dx)`` in the world frame; the one-pixel border is
zero. 2DGS's normal-consistency loss compares this with the rendered surfel normals.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def depth_to_points(depths: Tensor, camtoworlds: Tensor, Ks: Tensor) -> Tensor:
    """World points [C, H, W, 3] from z-depth maps [C, H, W, 1]."""
    C, H, W, _ = depths.shape
    ys, xs = torch.meshgrid(
        torch.arange(H, device=depths.device, dtype=depths.dtype),
        torch.arange(W, device=depths.device, dtype=depths.dtype),
        indexing="ij",
    )
    fx, fy = Ks[:, 0, 0, None, None], Ks[:, 1, 1, None, None]
    cx, cy = Ks[:, 0, 2, None, None], Ks[:, 1, 2, None, None]
    dirs_cam = torch.stack([(xs - cx + 0.5) / fx, (ys - cy + 0.5) / fy, torch.ones_like(xs).expand(C, H, W)], -1)
    dirs = torch.einsum("cij,chwj->chwi", camtoworlds[:, :3, :3], dirs_cam)
    return camtoworlds[:, None, None, :3, 3] + depths * dirs


def depth_to_normal(depths: Tensor, camtoworlds: Tensor, Ks: Tensor) -> Tensor:
    """World-frame normals [C, H, W, 3] from z-depth [C, H, W, 1]; zero on the border (all zero if H or W < 3)."""
    C, H, W, _ = depths.shape
    if H < 3 or W < 3:
        return depths.new_zeros(C, H, W, 3)
    pts = depth_to_points(depths, camtoworlds, Ks)
    d_rows = pts[:, 2:, 1:-1] - pts[:, :-2, 1:-1]
    d_cols = pts[:, 1:-1, 2:] - pts[:, 1:-1, :-2]
    normals = F.normalize(torch.cross(d_rows, d_cols, dim=-1), dim=-1)
    return F.pad(normals, (0, 0, 1, 1, 1, 1), value=0.0)
