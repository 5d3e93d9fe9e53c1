"""The result type shared by both rasterizer backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass
class SurfelRasterOutput:
    """Images are ``[C, H, W, ...]``; per-surfel fields are ``[C, N, ...]``.

    ``means2d`` is a leaf in the autograd graph: after ``backward`` its ``.grad`` is the screen-space positional
    gradient 2DGS densifies on (gsplat's ``gradient_2dgs``). ``info`` is a dict that gsplat 1.4.0's
    ``DefaultStrategy(key_for_gradient="gradient_2dgs")`` accepts as is.
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
    backend: str = "torch"
    info: dict[str, Any] = field(default_factory=dict)
