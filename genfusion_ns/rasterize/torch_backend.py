"""Pure-PyTorch 2DGS backend: projection -> per-camera colours -> tile binning -> compositing -> images.

Runs on any device; gsplat 1.4.0's ``rasterization_2dgs`` definitions are followed so both backends produce the
same images (docs/rasterizer.md lists where gsplat 1.4.0 itself deviates and what we do instead).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .compositing import BlendSettings, Col, composite_reference, composite_tiles
from .output import SurfelRasterOutput, assemble_output, view_colors
from .projection import SurfelProjection, project_surfels
from .tiles import bin_surfels


def densify_handle(proj: SurfelProjection) -> tuple[Tensor, Tensor]:
    """Screen-space gradient handle, gsplat's ``gradient_2dgs``: a leaf with the projected centres as values whose
    gradient is ``z * dL/dT[0:2, 2]`` (how the loss pulls the splat's projected centre, per rasterizer stage).

    Returns ``(handle, ray_transforms)`` where the returned ray transforms route that gradient into the handle
    without changing any value (``handle - handle.detach()`` is zero).
    """
    handle = proj.means2d.detach().clone()
    rt = proj.ray_transforms
    if not torch.is_grad_enabled():
        return handle, rt
    handle.requires_grad_(True)
    shift = (handle - handle.detach()) * proj.depths.detach()[..., None]  # [C, N, 2], value 0
    col2 = rt[..., 2] + torch.cat([shift, torch.zeros_like(shift[..., :1])], dim=-1)
    return handle, torch.cat([rt[..., :2], col2[..., None]], dim=-1)


def build_table(
    ray_transforms: Tensor, proj: SurfelProjection, opacities: Tensor, feats: Tensor, width: int, height: int
) -> Tensor:
    """Packed compositor table ``[C * N + 1, D]`` (layout :class:`Col`) with an inert padding row at the end."""
    C, N = proj.depths.shape
    dtype = feats.dtype
    rt = ray_transforms.double()
    r0, r1, r2 = rt[..., 0, :], rt[..., 1, :], rt[..., 2, :]
    # c(x, y) = (x r2 - r0) x (y r2 - r1) = x (r1 x r2) + y (r2 x r0) + (r0 x r1), re-centred on a reference
    # point inside the image so the float32 table keeps the precision of the cancellation in c.
    ref = torch.nan_to_num(proj.means2d.detach().double())
    ref = torch.stack([ref[..., 0].clamp(0, width), ref[..., 1].clamp(0, height)], -1)
    coef_x = torch.linalg.cross(r1, r2, dim=-1)
    coef_y = torch.linalg.cross(r2, r0, dim=-1)
    coef_1 = torch.linalg.cross(r0, r1, dim=-1) + ref[..., 0:1] * coef_x + ref[..., 1:2] * coef_y
    # A splat with a zero-length axis has c_z == 0 at every pixel: gsplat skips all its pairs, so it is invisible.
    degenerate = (coef_x[..., 2] == 0) & (coef_y[..., 2] == 0) & (coef_1[..., 2] == 0)
    opac = opacities.expand(C, N).masked_fill(degenerate, 0.0)
    cols = [
        coef_x.to(dtype), coef_y.to(dtype), coef_1.to(dtype), ref.to(dtype), proj.means2d,
        opac[..., None].to(dtype), ray_transforms[..., 2, :].to(dtype), feats,
    ]
    table = torch.cat(cols, dim=-1)
    table = table.reshape(C * N, table.shape[-1])
    pad = torch.zeros(1, table.shape[-1], dtype=dtype, device=table.device)
    pad[0, Col.C.stop - 1] = 1.0  # c = (0, 0, 1): finite, and opacity 0 keeps it invisible
    return torch.cat([table, pad])


def tiles_to_images(tiles: Tensor, n_cameras: int, tiles_y: int, tiles_x: int, tile_size: int, H: int, W: int):
    """[C * ty * tx, ts * ts, F] -> [C, H, W, F]."""
    F_ = tiles.shape[-1]
    img = tiles.view(n_cameras, tiles_y, tiles_x, tile_size, tile_size, F_).permute(0, 1, 3, 2, 4, 5)
    return img.reshape(n_cameras, tiles_y * tile_size, tiles_x * tile_size, F_)[:, :H, :W]


def rasterize_torch(
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
    depth_mode: str = "center",
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    tile_size: int = 4,
    chunk_size: int = 16,
    backward_cache_bytes: int = 256 * 2**20,
    use_reference_backward: bool = False,
    compositor: str = "torch",
) -> SurfelRasterOutput:
    """PyTorch backend of :func:`genfusion_ns.rasterize.rasterize_surfels` (inputs already validated).

    ``chunk_size`` is the number of list entries composited per step and ``backward_cache_bytes`` how much forward
    work the backward may reuse instead of recomputing (speed / memory knobs; results are identical).
    ``use_reference_backward`` differentiates the compositor with autograd instead of the hand-written backward
    (slow; used by tests to cross-check the two). ``compositor="numba"`` composites with the compiled CPU kernels
    of :mod:`.cpu_kernels` instead of PyTorch ops (CPU tensors only; same results).
    """
    C = viewmats.shape[0]
    proj = project_surfels(means, quats, scales, viewmats, Ks, width, height, near_plane, far_plane, radius_clip)
    rgb_feats = view_colors(means, colors, viewmats, sh_degree, proj.radii)
    D = rgb_feats.shape[-1]
    intersection = depth_mode == "intersection"
    depth_col = torch.zeros_like(proj.depths) if intersection else proj.depths
    feats = torch.cat([rgb_feats, proj.normals, depth_col[..., None]], dim=-1)
    depth_channel = D + 3

    handle, ray_transforms = densify_handle(proj)
    table = build_table(ray_transforms, proj, opacities, feats, width, height)
    bins = bin_surfels(proj, opacities, width, height, tile_size=tile_size)
    if compositor == "numba":
        from .cpu_kernels import composite_tiles_cpu as composite
    else:
        composite = composite_reference if use_reference_backward else composite_tiles
    settings = BlendSettings(width, height, intersection, depth_channel, chunk_size=chunk_size,
                             cache_bytes=backward_cache_bytes)
    t_feats, t_alpha, t_median, t_dist = composite(table, bins, settings)

    args = (C, bins.tiles_y, bins.tiles_x, bins.tile_size, height, width)
    img = tiles_to_images(t_feats, *args)
    alpha = tiles_to_images(t_alpha[..., None], *args)
    median = tiles_to_images(t_median[..., None], *args)
    distortion = tiles_to_images(t_dist[..., None], *args)

    return assemble_output(
        img[..., :D], alpha, img[..., depth_channel : depth_channel + 1], img[..., D : D + 3], median, distortion,
        viewmats, Ks, backgrounds, handle, proj.radii, proj.depths, bins.n_overlaps, backend="torch",
    )
