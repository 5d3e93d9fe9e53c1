"""gsplat 1.4.0 CUDA backend.

Runs the same kernels, in the same order, as ``gsplat.rasterization_2dgs`` (projection, tile intersection, SH,
``rasterize_to_pixels_2dgs`` with an "RGB+D" colour layout) but assembles the result itself, because the wrapper
in 1.4.0 (a) creates its densification handle filled with zeros (we want the projected centres as values, so
``means2d`` means the same on both backends), (b) would read past a 3-channel background when depth is appended,
and (c) rotates rendered normals to the world with camera 0's rotation for every camera. Only import this module
with CUDA tensors: gsplat's first kernel call tries to build its extension.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .output import SurfelRasterOutput, assemble_output, view_colors

GSPLAT_TILE = 16
_SUPPORTED_CHANNELS = (1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512)


def rasterize_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    backgrounds: Tensor | None = None,
    sh_degree: int | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
) -> SurfelRasterOutput:
    if not means.is_cuda:
        raise ValueError("rasterize_gsplat: gsplat kernels need CUDA tensors; use the torch backend on CPU.")
    if means.dtype != torch.float32:
        raise ValueError(f"rasterize_gsplat: gsplat kernels are float32 only, got {means.dtype}; "
                         "cast inputs with .float() or use backend='torch'.")
    from gsplat import (
        fully_fused_projection_2dgs,
        isect_offset_encode,
        isect_tiles,
        rasterize_to_pixels_2dgs,
        spherical_harmonics,
    )

    C = viewmats.shape[0]
    radii, means2d, depths, ray_transforms, normals = fully_fused_projection_2dgs(
        means, quats, scales, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip, packed=False,
    )
    tiles_x = math.ceil(width / GSPLAT_TILE)
    tiles_y = math.ceil(height / GSPLAT_TILE)
    _, isect_ids, flatten_ids = isect_tiles(means2d, radii, depths, GSPLAT_TILE, tiles_x, tiles_y, n_cameras=C)
    isect_offsets = isect_offset_encode(isect_ids, C, tiles_x, tiles_y)

    rgb = view_colors(means, colors, viewmats, sh_degree, radii, evaluate_sh=spherical_harmonics)
    D = rgb.shape[-1]
    if D + 1 not in _SUPPORTED_CHANNELS:
        raise ValueError(f"rasterize_gsplat: {D} colour channels + depth must be one of {_SUPPORTED_CHANNELS} "
                         "(gsplat would pad and lose the depth channel); use backend='torch'.")
    feats = torch.cat([rgb, depths[..., None]], dim=-1)

    handle = means2d.detach().clone().requires_grad_(torch.is_grad_enabled())
    render, alpha, render_normals, distortion, median = rasterize_to_pixels_2dgs(
        means2d, ray_transforms, feats, opacities.expand(C, -1).contiguous(), normals, handle, width, height,
        GSPLAT_TILE, isect_offsets, flatten_ids, backgrounds=None, distloss=True,
    )
    return assemble_output(
        render[..., :D], alpha, render[..., D : D + 1], render_normals, median, distortion, viewmats, Ks,
        backgrounds, handle, radii, depths, int(flatten_ids.numel()), backend="gsplat",
    )
