"""Trainer configs of the fusion methods ``genfusion`` (the authors' sparse-view defaults, GPU) and
``genfusion-lite`` (a CPU budget: a 96×96 scene with several repair rounds in minutes)."""

from __future__ import annotations

from nerfstudio.engine.trainer import TrainerConfig

from genfusion_ns.fusion.datamanager import GenFusionDatamanagerConfig
from genfusion_ns.fusion.pipeline import GenFusionPipelineConfig
from genfusion_ns.model.recipes import (
    LITE_MAX_STEPS,
    LITE_POSITION_LR_STEPS,
    SPARSE_VIEW_MAX_STEPS,
    lite_model,
    make_trainer_config,
    sparse_view_model,
    surfel_dataparser,
)


def fusion_datamanager() -> GenFusionDatamanagerConfig:
    """Like the baseline's datamanager (optional depth, cached as uint8 on the pipeline device), plus repaired views."""
    return GenFusionDatamanagerConfig(dataparser=surfel_dataparser(), cache_images="gpu", cache_images_type="uint8")


def genfusion_config() -> TrainerConfig:
    """The authors' sparse-view run: rounds every 1/7 of training (1000, 2000, ..., 6000 of 7000 steps) on an 85-frame
    ellipse, lambda_reg 1."""
    pipeline = GenFusionPipelineConfig(datamanager=fusion_datamanager(), fusion_start_fraction=1 / 7,
                                       fusion_every_fraction=1 / 7, fusion_until_fraction=1.0, trajectory_frames=85)
    return make_trainer_config("genfusion", sparse_view_model(), max_steps=SPARSE_VIEW_MAX_STEPS, pipeline=pipeline)


def genfusion_lite_config() -> TrainerConfig:
    """``genfusion-2dgs-lite``'s budget plus three repair rounds of 16 frames, at 1/4, 2/4 and 3/4 of training.

    CPU economies against the authors' loop (measured in docs/benchmarks.md): 10 DDIM steps instead of 25, of which
    only those below half the noise schedule run (repair strength 0.5: the small shipped model repairs renders better
    from their noised latent than from pure noise), CFG 1.5 instead of 3.2 (also measured better for that model), and
    a repaired view every 2nd step instead of every step."""
    pipeline = GenFusionPipelineConfig(datamanager=fusion_datamanager(), fusion_start_fraction=0.25,
                                       fusion_every_fraction=0.25, fusion_until_fraction=1.0, trajectory_frames=16,
                                       num_inference_steps=10,
                                       repair_strength=0.5, guidance_scale=1.5, repaired_every=2)
    config = make_trainer_config("genfusion-lite", lite_model(), max_steps=LITE_MAX_STEPS, pipeline=pipeline,
                                 position_lr_steps=LITE_POSITION_LR_STEPS, steps_per_save=LITE_MAX_STEPS,
                                 steps_per_eval_image=250, steps_per_eval_all_images=LITE_MAX_STEPS)
    return config
