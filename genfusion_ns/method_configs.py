"""The four GenFusion methods, registered with nerfstudio (entry-point group ``nerfstudio.method_configs``), and
their recipes: one place for every recipe value.

A method is a reconstruction recipe (the model, optimizers and datamanager), optionally the fusion pipeline, and a
*budget*: the authors' GPU settings or the "lite" CPU ones. Lite versus full is data (:data:`FULL`, :data:`LITE`,
:data:`FUSION_FULL`, :data:`FUSION_LITE`), not separate code paths. nerfstudio imports this module for every
``ns-*`` command, so it only builds config dataclasses: no rasterizer, no diffusion model, no downloads. Importing it
also lets ``torch.load(weights_only=True)`` read checkpoints written before GenFusion's trainer stored plain types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import (
    FullImageDatamanager,
    FullImageDatamanagerConfig,
)
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from genfusion_ns.devices import default_device_type
from genfusion_ns.errors import install_user_error_hook
from genfusion_ns.ffmpeg import ensure_ffmpeg
from genfusion_ns.fusion.datamanager import GenFusionDatamanagerConfig
from genfusion_ns.fusion.pipeline import GenFusionPipelineConfig
from genfusion_ns.model.checkpoint import allow_numpy_scalars_in_checkpoints
from genfusion_ns.model.config import GenFusionModelConfig
from genfusion_ns.model.dataparser import ValidatedNerfstudioDataParserConfig
from genfusion_ns.model.densification import Vanilla2DGSStrategy
from genfusion_ns.model.depth_dataset import OptionalDepthDataset
from genfusion_ns.trainer import GenFusionTrainerConfig

allow_numpy_scalars_in_checkpoints()
install_user_error_hook()
ensure_ffmpeg()  # ns-render finds imageio-ffmpeg's binary as `ffmpeg` on a PyPI-only install


def surfel_optimizers(position_lr_steps: int = 30000) -> dict[str, dict[str, Any]]:
    """Adam per surfel attribute with the authors' learning rates (eps 1e-15).

    Positions decay exponentially from 1.6e-4 to 1.6e-6 over ``position_lr_steps`` (the authors scale both by the
    scene extent; nerfstudio normalises camera positions to |t| <= 1, so the extent is ~1 and the factor is dropped).
    """
    return {
        "means": {
            "optimizer": AdamOptimizerConfig(lr=1.6e-4, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1.6e-6, max_steps=position_lr_steps),
        },
        "features_dc": {"optimizer": AdamOptimizerConfig(lr=0.0025, eps=1e-15), "scheduler": None},
        "features_rest": {"optimizer": AdamOptimizerConfig(lr=0.0025 / 20, eps=1e-15), "scheduler": None},
        "opacities": {"optimizer": AdamOptimizerConfig(lr=0.05, eps=1e-15), "scheduler": None},
        "scales": {"optimizer": AdamOptimizerConfig(lr=0.005, eps=1e-15), "scheduler": None},
        "quats": {"optimizer": AdamOptimizerConfig(lr=0.001, eps=1e-15), "scheduler": None},
        # Used with --pipeline.model.exposure-compensation True (genfusion_ns/model/exposure.py).
        "exposure": {
            "optimizer": AdamOptimizerConfig(lr=1e-3, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=position_lr_steps),
        },
        "camera_opt": {
            "optimizer": AdamOptimizerConfig(lr=1e-4, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=5e-7, max_steps=position_lr_steps, warmup_steps=1000),
        },
    }


def surfel_dataparser() -> ValidatedNerfstudioDataParserConfig:
    """``nerfstudio-data`` with seed points, validated at start-up: a broken dataset stops ``ns-train`` before
    step 0 with one message naming the file (``genfusion_ns.model.dataparser``)."""
    return ValidatedNerfstudioDataParserConfig(load_3D_points=True)


def surfel_datamanager() -> FullImageDatamanagerConfig:
    """Full-image datamanager with optional dataset depth, caching on the pipeline device as uint8.

    ``cache_images="gpu"`` means "on the pipeline device" and is the only caching mode that works on CPU
    (``"cpu"`` pins memory, which needs CUDA).
    """
    return FullImageDatamanagerConfig(
        _target=FullImageDatamanager[OptionalDepthDataset],
        dataparser=surfel_dataparser(),
        cache_images="gpu",
        cache_images_type="uint8",
    )


DISTORTION_WEIGHT = 0.01
"""λ_dist for our rasterizer's distortion. The authors' 10 weighs the L2 distortion of NDC-mapped depth
(m = 1 - 0.2/z for near 0.2) of their rasterizer; ours is gsplat's L1 distortion of z-depth, which is 3-4 orders of
magnitude larger for the same geometry (Δm ≈ 0.05 Δz at z ≈ 2, then squared), so 10 / ~1e3 -- gsplat's own 2DGS
default, 1e-2, sits there. With 10 the distortion term dwarfs the photometric loss on our scenes."""


def sparse_view_model() -> GenFusionModelConfig:
    """The authors' sparse-view reconstruction recipe (``batch_sparse.py``), diffusion and mono depth left out.

    lambda_dssim 0.5, distortion from step 5000 (weight converted to our distortion's units, see
    ``DISTORTION_WEIGHT``), vanilla densification from 100 every 500 until 5000 with an opacity reset at 3100, SH
    degree 3. Normal consistency starts at 3500 -- the authors' gate (7000 in a 7000-step run) keeps it off for good,
    which is the bug we do not reproduce (docs/model.md).
    """
    return GenFusionModelConfig(
        lambda_dssim=0.5,
        lambda_dist=DISTORTION_WEIGHT,
        dist_start_step=5000,
        lambda_normal=0.05,
        normal_start_step=3500,
        sh_degree=3,
        sh_degree_interval=1000,
        densification=Vanilla2DGSStrategy(
            refine_start_step=100, refine_stop_step=5000, refine_every=500, reset_opacity_every=3100
        ),
    )


LITE_MAX_SEED_POINTS = 20000
"""Seed-surfel cap of the lite methods: above every ``genfusion-scene`` default (800 points per training view), so
only much larger point clouds are subsampled to keep the CPU step time in budget."""


LITE_SUPERSAMPLE_MAX_SIDE = 128
"""Largest frame side the lite methods supersample: the 96-pixel generated scenes are, ~160-pixel real captures are
not (at 2x2 they would cost 4x the rays per step)."""


def lite_model() -> GenFusionModelConfig:
    """The sparse-view recipe compressed to the CPU budget of ``genfusion-2dgs-lite`` (``LITE_MAX_STEPS`` steps).

    Every seed point up to ``LITE_MAX_SEED_POINTS`` (all 16.8k of a dense ``genfusion-scene`` room) and a 4x higher
    densification threshold than the authors' (8e-4): the surfels start where the surfaces are instead of being grown
    there from a few thousand, which measured +1.9 dB held-out PSNR on an unseen room at the same surfel count and
    step time (docs/benchmarks.md). Densification every 100 steps from 100 to 700 and no opacity reset (in a short
    run a reset costs more than it cleans up: measured 23.7 -> 8 dB training PSNR, never recovered); distortion
    from 700. View-independent colour (SH degree 0) and a stronger, earlier
    normal consistency (0.2 from step 300): a few views cannot pin down view-dependent colour, and held-out views
    of unseen rooms scored up to 0.8 dB better without it (docs/benchmarks.md). Metric depth supervision (weight
    0.5) wherever the dataset has depth files -- the authors' sparse recipe supervises depth too (monocular,
    weight 1); datasets without depth train photometrically (+0.9 dB held-out PSNR with depth on the dense
    benchmark scene at 1000 steps). 2x2 rays per pixel (``supersample=2``): pixels average light over their area,
    and one ray per pixel capped held-out PSNR on the dense benchmark rooms (+0.8 to +1.2 dB with it); only on frames
    up to ``LITE_SUPERSAMPLE_MAX_SIDE`` pixels, so real captures at ~160 px keep the lite step budget.
    """
    return GenFusionModelConfig(
        lambda_dssim=0.5,
        lambda_dist=DISTORTION_WEIGHT,
        dist_start_step=700,
        lambda_normal=0.2,
        normal_start_step=300,
        sh_degree=0,
        supersample=2,
        supersample_max_side=LITE_SUPERSAMPLE_MAX_SIDE,
        max_init_points=LITE_MAX_SEED_POINTS,
        num_random=2000,
        depth_loss="metric-l1",
        lambda_depth=0.5,
        densification=Vanilla2DGSStrategy(
            grad_threshold=8e-4, refine_start_step=100, refine_stop_step=700, refine_every=100, reset_opacity_every=10**9
        ),
    )


LITE_MAX_STEPS = 1100
"""Steps of the CPU methods: `ns-train` on a dense 96x96 scene (16.8k seed points, 2x2 rays per pixel) takes 250-253 s
on 2 cores with the compiled CPU rasterizer. 1200 steps took 273 s on one room but 311 s on an unseen one, so 1100
keeps unseen scenes inside the 5-minute budget (docs/benchmarks.md)."""
LITE_POSITION_LR_STEPS = 4000
"""Horizon of the position learning-rate decay in the lite methods, longer than the run (decaying within the run
itself measured worse)."""
SPARSE_VIEW_MAX_STEPS = 7000


@dataclass(frozen=True)
class Budget:
    """How long a method trains and how often it saves and evaluates: the only differences between a method and its
    lite version besides the model recipe and the fusion settings."""

    max_steps: int
    position_lr_steps: int
    steps_per_save: int
    steps_per_eval_image: int
    steps_per_eval_all_images: int


FULL = Budget(max_steps=SPARSE_VIEW_MAX_STEPS, position_lr_steps=30000, steps_per_save=2000,
              steps_per_eval_image=100, steps_per_eval_all_images=1000)
"""The authors' sparse-view run (7000 steps, GPU)."""
LITE = Budget(max_steps=LITE_MAX_STEPS, position_lr_steps=LITE_POSITION_LR_STEPS, steps_per_save=LITE_MAX_STEPS,
              steps_per_eval_image=250, steps_per_eval_all_images=LITE_MAX_STEPS)
"""The CPU budget: a 96x96 scene in a few minutes on 2 cores."""


def make_trainer_config(method_name: str, model: GenFusionModelConfig, budget: Budget,
                        pipeline: VanillaPipelineConfig | None = None) -> GenFusionTrainerConfig:
    """A complete nerfstudio ``TrainerConfig`` (GenFusion's trainer, see :mod:`genfusion_ns.trainer`).

    ``pipeline`` defaults to a ``VanillaPipelineConfig`` with :func:`surfel_datamanager`; ``model`` replaces its model.
    """
    pipeline = pipeline if pipeline is not None else VanillaPipelineConfig(datamanager=surfel_datamanager())
    pipeline.model = model
    return GenFusionTrainerConfig(
        method_name=method_name,
        steps_per_eval_image=budget.steps_per_eval_image,
        steps_per_eval_batch=0,
        steps_per_save=budget.steps_per_save,
        steps_per_eval_all_images=budget.steps_per_eval_all_images,
        max_num_iterations=budget.max_steps,
        mixed_precision=False,
        pipeline=pipeline,
        optimizers=surfel_optimizers(budget.position_lr_steps),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
        machine=MachineConfig(device_type=default_device_type()),
    )


# ---------------------------------------------------------------------------------------------------- fusion
FUSION_FULL: dict[str, Any] = dict(fusion_start_fraction=1 / 7, fusion_every_fraction=1 / 7, fusion_until_fraction=1.0,
                                   trajectory_frames=85)
"""The authors' sparse-view fusion: rounds every 1/7 of training (1000, 2000, ..., 6000 of 7000 steps) on an 85-frame
ellipse, lambda_reg 1, 25 DDIM steps, CFG 3.2."""
FUSION_LITE: dict[str, Any] = dict(fusion_start_fraction=0.25, fusion_every_fraction=0.25, fusion_until_fraction=1.0,
                                   trajectory_frames=16, num_inference_steps=10, repair_strength=0.5,
                                   guidance_scale=1.5, repaired_every=2, repaired_pixels="unobserved")
"""Three rounds of 16 frames at 1/4, 2/4 and 3/4 of training. CPU economies against the authors' loop (measured in
docs/benchmarks.md): 10 DDIM steps instead of 25, of which only those below half the noise schedule run (repair
strength 0.5: the small shipped model repairs renders better from their noised latent than from pure noise), CFG 1.5
instead of 3.2 (also measured better for that model), and a repaired view every 2nd step instead of every step. The
repaired frames train only the pixels no training photo sees (``repaired_pixels`` 'unobserved'): where a photo sees
the surface, the small model's reproduction cost and its training textures' speckle only compete with the photo."""


def fusion_datamanager() -> GenFusionDatamanagerConfig:
    """Like the baseline's datamanager (validated parser, optional depth, cached as uint8 on the pipeline device),
    plus repaired views."""
    return GenFusionDatamanagerConfig(dataparser=surfel_dataparser(), cache_images="gpu", cache_images_type="uint8")


def fusion_pipeline(settings: dict[str, Any]) -> GenFusionPipelineConfig:
    return GenFusionPipelineConfig(datamanager=fusion_datamanager(), **settings)


def genfusion_config() -> GenFusionTrainerConfig:
    return make_trainer_config("genfusion", sparse_view_model(), FULL, fusion_pipeline(FUSION_FULL))


def genfusion_lite_config() -> GenFusionTrainerConfig:
    return make_trainer_config("genfusion-lite", lite_model(), LITE, fusion_pipeline(FUSION_LITE))


# ---------------------------------------------------------------------------------------------------- methods
genfusion_2dgs = MethodSpecification(
    config=make_trainer_config("genfusion-2dgs", sparse_view_model(), FULL),
    description="GenFusion's 2D Gaussian surfel reconstruction without diffusion (sparse-view recipe, 7000 steps).",
)
genfusion_2dgs_lite = MethodSpecification(
    config=make_trainer_config("genfusion-2dgs-lite", lite_model(), LITE),
    description="genfusion-2dgs with a CPU budget: a 96x96 scene in a few minutes on 2 cores.",
)
genfusion = MethodSpecification(
    config=genfusion_config(),
    description="GenFusion: 2DGS reconstruction with cyclic RGB-D video-diffusion repair of novel views.",
)
genfusion_lite = MethodSpecification(
    config=genfusion_lite_config(),
    description="genfusion with a CPU budget: a 96x96 scene with three repair rounds in minutes on 2 cores.",
)
