"""Configuration of the GenFusion 2DGS model (one dataclass, nerfstudio ``_target`` wiring).

It subclasses splatfacto's config because the model subclasses ``SplatfactoModel`` and inherited code (viewer,
exporter, ``get_gt_img``, metrics) reads some of its fields. Splatfacto's own densification and loss knobs do nothing
here, so they are hidden from the command line (``tyro.conf.Suppress``); the 2DGS rules live in ``densification``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import tyro
from nerfstudio.models.splatfacto import SplatfactoModelConfig

from genfusion_ns.model.densification import SparseAwareStrategy, Vanilla2DGSStrategy

DensificationConfig = (
    Annotated[Vanilla2DGSStrategy, tyro.conf.subcommand(name="vanilla")]
    | Annotated[SparseAwareStrategy, tyro.conf.subcommand(name="sparse-aware")]
)
"""Choose on the command line with ``pipeline.model.densification:vanilla`` or ``...:sparse-aware``."""

DepthLossKind = Literal["none", "metric-l1", "scale-shift-invariant"]


def _genfusion_model_class() -> type:
    # Imported lazily: the model module imports this one.
    from genfusion_ns.model.genfusion_model import GenFusionModel

    return GenFusionModel


@dataclass
class GenFusionModelConfig(SplatfactoModelConfig):
    """2D Gaussian surfels with the losses and densification of GenFusion's reconstruction stage (no diffusion)."""

    _target: type = field(default_factory=_genfusion_model_class)

    # --- scene and rendering ------------------------------------------------------------------------------------
    background_color: Literal["random", "black", "white"] = "black"
    """Training background; the authors train on black. Evaluation always uses the configured colour."""
    num_downscales: int = 0
    """Train at full resolution from the start (2DGS recipe); >0 enables splatfacto's coarse-to-fine schedule."""
    sh_degree: int = 3
    """Maximum spherical-harmonics degree; raised by one every ``sh_degree_interval`` steps."""
    rasterizer_backend: Literal["auto", "cpu", "torch", "gsplat"] = "auto"
    """``auto``: gsplat's CUDA kernels for CUDA tensors, the rasterizer with Numba-compiled compositing (``cpu``) for
    CPU tensors, the pure-PyTorch one (``torch``) where neither applies."""
    depth_mode: Literal["center", "intersection"] = "center"
    """Depth blended into depth / distortion / depth normals: surfel centre z (gsplat; the only mode gsplat's CUDA
    kernels have, so CPU and GPU runs agree) or the ray-surfel intersection of the official 2DGS rasterizer
    (``intersection`` always renders with the PyTorch backend, also on CUDA)."""
    supersample: int = 1
    """Rays per pixel and axis: render at this multiple of the camera resolution and box-filter down (SSAA). Real
    pixels integrate light over their area; one ray per pixel can only fit that with a blur that is right for one
    view, so held-out views alias. 2 costs about 1.4x per training step with the ``cpu`` rasterizer (docs/benchmarks.md);
    the regularisers stay per ray."""
    supersample_max_side: int | None = None
    """Supersample only frames whose long side is at most this many pixels (None: every frame). Aliasing is worst
    at the tiny sizes of CPU runs, while the cost grows with supersample squared: real captures at 160 px and more
    train at one ray per pixel within the lite step budget."""
    exposure_compensation: bool = False
    """Learn a colour affine per training photo (gain and offset per channel, mean held at identity) applied to the
    render in the photometric loss: absorbs exposure and white-balance changes between phone photos. Held-out views
    and repaired frames are rendered without it (genfusion_ns/model/exposure.py)."""
    surfel_thickness: float = 1e-3
    """Normal-axis scale of each surfel relative to its in-plane size at initialisation. The rasterizer ignores it;
    it only keeps exported PLYs (read as 3D Gaussians by viewers) flat."""
    max_init_points: int | None = None
    """Seed at most this many surfels from the dataset's points (uniform random subset, seeded); None keeps all.
    The CPU rasterizer's cost grows with the surfel count, so the lite recipe caps it."""
    scene_extent: float | None = None
    """World size that densification thresholds are relative to. None: 1.1 x the largest distance of a training
    camera from the cameras' mean, as the authors compute it."""

    # --- losses (authors' names in brackets) ------------------------------------------------------------------
    lambda_dssim: float = 0.2
    """Weight of D-SSIM in the photometric loss [lambda_dssim]; L1 gets 1 - lambda_dssim."""
    lambda_dist: float = 0.0
    """2DGS depth-distortion weight [lambda_dist]."""
    dist_start_step: int = 3000
    """Distortion term is on for step > this [start_dist_iter]."""
    lambda_normal: float = 0.05
    """2DGS normal-consistency weight [lambda_normal]."""
    normal_start_step: int = 7000
    """Normal consistency is on for step > this. The authors gate it at 7000 in 7000-step runs so it never switches
    on; set a smaller value (the recipes do) to get the intended regulariser."""
    depth_loss: DepthLossKind = "none"
    """Depth supervision of training views: ``metric-l1`` against dataset depth (same units as the scene), or
    ``scale-shift-invariant`` against a monocular / relative depth (the authors' mono-depth term)."""
    depth_key: str = "depth_image"
    """Batch key holding the depth map ``[H, W, 1]`` for ``depth_loss``."""
    lambda_depth: float = 1.0
    """Weight of the depth term."""
    depth_start_step: int = 0
    """Depth term is on for step >= this."""
    ssi_num_bands: int = 32
    """Scale-and-shift-invariant loss: number of horizontal bands with their own affine fit."""
    ssi_gradient_weight: float = 0.5
    """Scale-and-shift-invariant loss: weight of the gradient-matching term."""

    # --- densification ------------------------------------------------------------------------------------------
    densification: DensificationConfig = field(default_factory=Vanilla2DGSStrategy)
    """Densification strategy: vanilla 2DGS or GenFusion's sparse-aware variant."""

    # --- evaluation ---------------------------------------------------------------------------------------------
    compute_lpips: bool = True
    """Report LPIPS (AlexNet) when its backbone weights are available locally; otherwise warn once and omit it."""

    # --- splatfacto knobs that do nothing here (hidden from the CLI) ------------------------------------------
    warmup_length: tyro.conf.Suppress[int] = 500
    refine_every: tyro.conf.Suppress[int] = 100
    reset_alpha_every: tyro.conf.Suppress[int] = 30
    densify_grad_thresh: tyro.conf.Suppress[float] = 0.0008
    use_absgrad: tyro.conf.Suppress[bool] = False
    densify_size_thresh: tyro.conf.Suppress[float] = 0.01
    n_split_samples: tyro.conf.Suppress[int] = 2
    cull_alpha_thresh: tyro.conf.Suppress[float] = 0.1
    cull_scale_thresh: tyro.conf.Suppress[float] = 0.5
    cull_screen_size: tyro.conf.Suppress[float] = 0.15
    split_screen_size: tyro.conf.Suppress[float] = 0.05
    stop_screen_size_at: tyro.conf.Suppress[int] = 4000
    stop_split_at: tyro.conf.Suppress[int] = 15000
    ssim_lambda: tyro.conf.Suppress[float] = 0.2
    use_scale_regularization: tyro.conf.Suppress[bool] = False
    max_gauss_ratio: tyro.conf.Suppress[float] = 10.0
    output_depth_during_training: tyro.conf.Suppress[bool] = True
    rasterize_mode: tyro.conf.Suppress[Literal["classic", "antialiased"]] = "classic"
    use_bilateral_grid: tyro.conf.Suppress[bool] = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.lambda_dssim <= 1.0:
            raise ValueError(f"lambda_dssim must lie in [0, 1], got {self.lambda_dssim}.")
        for name in ("lambda_dist", "lambda_normal", "lambda_depth"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if not isinstance(self.supersample, int) or not 1 <= self.supersample <= 8:
            raise ValueError(f"supersample must be an int from 1 to 8 (rays per pixel and axis), got {self.supersample!r}.")
        if self.supersample_max_side is not None and self.supersample_max_side < 1:
            raise ValueError(f"supersample_max_side must be >= 1 pixel (or None), got {self.supersample_max_side}.")
        if self.surfel_thickness <= 0:
            raise ValueError(f"surfel_thickness must be > 0, got {self.surfel_thickness}.")
        if self.max_init_points is not None and self.max_init_points < 4:
            raise ValueError(f"max_init_points must be >= 4 (or None for all points), got {self.max_init_points}.")
        if self.scene_extent is not None and self.scene_extent <= 0:
            raise ValueError(f"scene_extent must be > 0 (or None to derive it), got {self.scene_extent}.")
