"""The result type shared by the rasterizer backends, and the one place that assembles it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from .depth_normals import depth_to_normal
from .sh import spherical_harmonics


@dataclass
class SurfelRasterOutput:
    """Images are ``[C, H, W, ...]``; per-surfel fields are ``[C, N, ...]``.

    ``means2d`` is a leaf in the autograd graph: after ``backward`` its ``.grad`` is the screen-space positional
    gradient 2DGS densifies on (gsplat's ``gradient_2dgs``).
    """

    rgb: Tensor  # [C, H, W, D] background blended
    alpha: Tensor  # [C, H, W, 1]
    depth_expected: Tensor  # [C, H, W, 1] alpha-normalised, 0 where alpha == 0
    depth_median: Tensor  # [C, H, W, 1]
    normals: Tensor  # [C, H, W, 3] alpha-weighted surfel normals, world frame
    surf_normals: Tensor  # [C, H, W, 3] normals of the expected-depth map, world frame
    distortion: Tensor  # [C, H, W, 1] L1 depth distortion (gsplat definition)
    means2d: Tensor  # [C, N, 2]
    radii: Tensor  # [C, N] int32, 0 = not visible
    depth_accumulated: Tensor  # [C, H, W, 1] un-normalised sum of weights * depth
    depths: Tensor  # [C, N] camera-space z of the surfel centres
    n_overlaps: int  # (surfel, tile) pairs composited
    backend: str = "torch"

    @property
    def info(self) -> dict[str, Any]:
        """What densification reads, keyed as gsplat 1.4.0's strategies expect
        (``DefaultStrategy(key_for_gradient="gradient_2dgs")`` accepts it as is)."""
        height, width = self.rgb.shape[1:3]
        return {"width": width, "height": height, "n_cameras": self.radii.shape[0], "radii": self.radii,
                "means2d": self.means2d, "gradient_2dgs": self.means2d, "gaussian_ids": None}  # unpacked layout


SHEvaluator = Callable[[int, Tensor, Tensor], Tensor]


def view_colors(means: Tensor, colors: Tensor, viewmats: Tensor, sh_degree: int | None, radii: Tensor,
                evaluate_sh: SHEvaluator = spherical_harmonics) -> Tensor:
    """Per-camera colours [C, N, D]. SH colours follow gsplat: direction = mean - camera centre,
    ``max(SH + 0.5, 0)``, zero for surfels culled in that camera. ``evaluate_sh(degree, dirs, coeffs)`` is this
    package's PyTorch evaluation, or gsplat's CUDA kernel on that backend."""
    C = viewmats.shape[0]
    if sh_degree is None:
        return colors if colors.dim() == 3 else colors[None].expand(C, -1, -1)
    campos = torch.linalg.inv(viewmats)[:, :3, 3]
    dirs = means[None] - campos[:, None]
    rgb = evaluate_sh(sh_degree, dirs, colors[None].expand(C, -1, -1, -1))
    rgb = torch.where((radii > 0)[..., None], rgb, torch.zeros_like(rgb))
    return torch.clamp_min(rgb + 0.5, 0.0)


def assemble_output(color: Tensor, alpha: Tensor, depth_accumulated: Tensor, camera_normals: Tensor,
                    depth_median: Tensor, distortion: Tensor, viewmats: Tensor, Ks: Tensor,
                    backgrounds: Tensor | None, means2d: Tensor, radii: Tensor, depths: Tensor, n_overlaps: int,
                    backend: str) -> SurfelRasterOutput:
    """Images from the composited channels, the same way for every backend: background blend, alpha-normalised
    depth, per-camera normal rotation to the world (gsplat 1.4.0 uses camera 0 for all), depth-map normals."""
    rgb = color if backgrounds is None else color + (1.0 - alpha) * backgrounds[:, None, None, :]
    depth_expected = depth_accumulated / alpha.clamp_min(1e-10)
    # Camera -> world for row vectors: n_w^T = n_c^T R_cw.
    normals = torch.einsum("chwi,cij->chwj", camera_normals, viewmats[:, :3, :3])
    surf_normals = depth_to_normal(depth_expected, torch.linalg.inv(viewmats), Ks)
    return SurfelRasterOutput(
        rgb=rgb, alpha=alpha, depth_expected=depth_expected, depth_median=depth_median, normals=normals,
        surf_normals=surf_normals, distortion=distortion, means2d=means2d, radii=radii,
        depth_accumulated=depth_accumulated, depths=depths, n_overlaps=n_overlaps, backend=backend,
    )
