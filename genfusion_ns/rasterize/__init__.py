"""2DGS surfel rasterizer with two backends: gsplat 1.4.0 on CUDA, pure PyTorch anywhere.

``rasterize_surfels`` is the one entry point; both backends return a :class:`SurfelRasterOutput` with the same
definitions (see docs/rasterizer.md). Importing this package never touches gsplat's CUDA extension.
"""

from .api import rasterize_surfels, resolve_backend
from .output import SurfelRasterOutput
from .projection import project_surfels, quat_to_rotmat
from .sh import spherical_harmonics

__all__ = [
    "SurfelRasterOutput",
    "project_surfels",
    "quat_to_rotmat",
    "rasterize_surfels",
    "resolve_backend",
    "spherical_harmonics",
]
