"""Single entry point of the 2DGS rasterizer: input checks and backend dispatch."""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Literal

import torch
from torch import Tensor

from .output import SurfelRasterOutput
from .sh import MAX_SH_DEGREE, num_sh_bases

Backend = Literal["auto", "cpu", "torch", "gsplat"]
CPU_TILE_SIZE = 16
"""Default tile edge of the ``cpu`` backend (fastest measured: docs/benchmarks.md, "Tile size")."""
TORCH_TILE_SIZE = 4
"""Default tile edge of the pure-PyTorch backend."""
DepthMode = Literal["center", "intersection"]


def _fail(msg: str) -> None:
    raise ValueError(f"rasterize_surfels: {msg}")


def _check_inputs(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds, sh_degree, depth_mode
) -> None:
    tensors = {"means": means, "quats": quats, "scales": scales, "opacities": opacities, "colors": colors,
               "viewmats": viewmats, "Ks": Ks}
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            _fail(f"{name} must be a torch.Tensor, got {type(t).__name__}.")
    if not (isinstance(width, int) and isinstance(height, int)) or width <= 0 or height <= 0:
        _fail(f"width and height must be positive ints, got width={width!r}, height={height!r}.")
    if means.dim() != 2 or means.shape[-1] != 3:
        _fail(f"means must be [N, 3], got {tuple(means.shape)}.")
    N = means.shape[0]
    expected = {"quats": (N, 4), "scales": (N, 3), "opacities": (N,)}
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            hint = " (squeeze the trailing 1 of [N, 1] opacities)" if name == "opacities" else ""
            _fail(f"{name} must be {list(shape)} for N={N} surfels, got {list(tensors[name].shape)}{hint}.")
    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4):
        _fail(f"viewmats must be [C, 4, 4] world-to-camera (OpenCV axes), got {tuple(viewmats.shape)}.")
    C = viewmats.shape[0]
    if C == 0:
        _fail("at least one camera is required (viewmats has C=0).")
    if tuple(Ks.shape) != (C, 3, 3):
        _fail(f"Ks must be [C, 3, 3] with C={C} matching viewmats, got {tuple(Ks.shape)}.")
    if sh_degree is None:
        if not ((colors.dim() == 2 and colors.shape[0] == N) or (colors.dim() == 3 and colors.shape[:2] == (C, N))):
            _fail(f"colors must be [N, D] or [C, N, D] when sh_degree is None, got {tuple(colors.shape)} "
                  f"(for SH coefficients [N, K, 3] pass sh_degree).")
    else:
        if not isinstance(sh_degree, int) or not 0 <= sh_degree <= MAX_SH_DEGREE:
            _fail(f"sh_degree must be an int in [0, {MAX_SH_DEGREE}] or None, got {sh_degree!r}.")
        if colors.dim() != 3 or colors.shape[0] != N or colors.shape[2] != 3:
            _fail(f"with sh_degree set, colors must be SH coefficients [N, K, 3], got {tuple(colors.shape)}.")
        if colors.shape[1] < num_sh_bases(sh_degree):
            _fail(f"sh_degree={sh_degree} needs K >= {num_sh_bases(sh_degree)} coefficients, got K={colors.shape[1]}.")
    D = colors.shape[-1]
    if backgrounds is not None and tuple(backgrounds.shape) != (C, D):
        _fail(f"backgrounds must be [C, {D}] (one colour per camera), got {tuple(backgrounds.shape)}.")
    if depth_mode not in ("center", "intersection"):
        _fail(f"depth_mode must be 'center' or 'intersection', got {depth_mode!r}.")
    all_t = list(tensors.values()) + ([backgrounds] if backgrounds is not None else [])
    devices = {t.device for t in all_t}
    if len(devices) > 1:
        _fail(f"all tensors must be on one device, got {sorted(str(d) for d in devices)}.")
    for name, t in tensors.items():
        if not t.is_floating_point():
            _fail(f"{name} must be a floating-point tensor, got {t.dtype}.")
    if any(t.dtype != means.dtype for t in all_t):
        _fail(f"all tensors must share one dtype, got {sorted({str(t.dtype) for t in all_t})}.")
    for name in ("means", "quats", "scales", "opacities", "viewmats", "Ks"):
        if not torch.isfinite(tensors[name]).all():
            _fail(f"{name} contains NaN or Inf values.")


@lru_cache(maxsize=1)
def cpu_kernels_available() -> bool:
    """Whether the compiled CPU compositor can be used (Numba importable; it compiles on first use)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=1)
def gsplat_kernels_available() -> bool:
    """Whether gsplat's CUDA extension loads (prebuilt, or JIT-built by gsplat on first use). Only call with CUDA."""
    try:
        from gsplat.cuda._backend import _C
    except Exception as err:  # noqa: BLE001 - any build/import failure means "not available"
        warnings.warn(f"gsplat CUDA kernels unavailable ({err}); using the PyTorch 2DGS backend.", stacklevel=3)
        return False
    if _C is None:
        warnings.warn("gsplat CUDA kernels unavailable; using the PyTorch 2DGS backend.", stacklevel=3)
    return _C is not None


def resolve_backend(backend: str, device: torch.device, depth_mode: str) -> str:
    """``auto``: gsplat for CUDA tensors when its kernels load (centre depth only; gsplat has no intersection
    depth); for CPU tensors the compiled CPU compositor (``cpu``) when Numba is installed; torch otherwise."""
    if backend not in ("auto", "cpu", "torch", "gsplat"):
        _fail(f"backend must be 'auto', 'cpu', 'torch' or 'gsplat', got {backend!r}.")
    if backend == "auto":
        if device.type == "cuda":
            use_gsplat = depth_mode == "center" and gsplat_kernels_available()
            return "gsplat" if use_gsplat else "torch"
        return "cpu" if device.type == "cpu" and cpu_kernels_available() else "torch"
    if backend == "gsplat":
        if device.type != "cuda":
            _fail(f"backend='gsplat' needs CUDA tensors (got {device}); use backend='cpu', 'torch' or 'auto'.")
        if depth_mode != "center":
            _fail("backend='gsplat' only supports depth_mode='center'; use backend='torch' for 'intersection'.")
    if backend == "cpu":
        if device.type != "cpu":
            _fail(f"backend='cpu' needs CPU tensors (got {device}); use backend='torch' or 'auto'.")
        if not cpu_kernels_available():
            _fail("backend='cpu' needs Numba (`pip install numba`); or use backend='torch'.")
    return backend


def rasterize_surfels(
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
    backend: Backend = "auto",
    depth_mode: DepthMode = "center",
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    tile_size: int | None = None,
) -> SurfelRasterOutput:
    """Render 2D Gaussian surfels (2DGS) into C cameras.

    Args:
        means: [N, 3] world centres. quats: [N, 4] wxyz (normalised internally). scales: [N, 3] activated; the
            first two span the disk, the third is ignored (as in gsplat). opacities: [N] activated, in [0, 1].
        colors: [N, D] / [C, N, D] post-activation colours, or [N, K, 3] SH coefficients when ``sh_degree`` is set.
        viewmats: [C, 4, 4] world-to-camera, OpenCV axes. Ks: [C, 3, 3] pinhole intrinsics (skew ignored).
        backgrounds: [C, D] colour blended behind the surfels, or None (black).
        backend: "auto" (gsplat for CUDA + centre depth, "cpu" for CPU tensors, else torch), "cpu" (the torch
            backend with its compositing loops compiled by Numba; CPU only, same results, several times faster),
            "torch" (pure PyTorch, any device) or "gsplat" (CUDA only).
        depth_mode: "center" blends each surfel's centre z (gsplat 1.4.0); "intersection" blends the z of the
            ray-splat hit point (official 2DGS / GenFusion rasterizer; torch backend only).
        radius_clip: surfels whose 3-sigma radius (pixels) is <= this are skipped (gsplat semantics).
        tile_size: tile edge of the torch / cpu backends' binning (1, 2, 4, 8 or 16); a speed knob, results
            identical. None: 16 for ``cpu`` (its kernels skip the rows a surfel misses, so big tiles cost little
            and binning stays cheap) and 4 for ``torch`` (which evaluates every pixel of a tile).
    """
    _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds, sh_degree,
                  depth_mode)
    chosen = resolve_backend(backend, means.device, depth_mode)
    kwargs = {"backgrounds": backgrounds, "sh_degree": sh_degree, "near_plane": near_plane, "far_plane": far_plane,
                  "radius_clip": radius_clip}
    if chosen == "gsplat":
        from .gsplat_backend import rasterize_gsplat

        return rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kwargs)
    from .torch_backend import rasterize_torch

    if tile_size is None:
        tile_size = CPU_TILE_SIZE if chosen == "cpu" else TORCH_TILE_SIZE
    out = rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                          depth_mode=depth_mode, tile_size=tile_size,
                          compositor="numba" if chosen == "cpu" else "torch", **kwargs)
    out.backend = chosen
    return out
