"""The GenFusion model family as data: the authors' lvdm config of the released model and smaller members.

Kept apart from their translation (:mod:`.lvdm`) and loading (:mod:`.configs`) so that an architecture is
read, or added, in one place. The smaller members are copies of the released config with other sizes, so
everything the sizes do not change (schedule, conditioning, the 77-token split) stays the authors'.
"""

from __future__ import annotations

import copy
from typing import Any

# The LDM3D-4c VAE (Intel/ldm3d-4c, subfolder "vae") that the authors hard-code instead of their YAML first stage:
# the SD KL-f8 autoencoder with 4 input/output channels (RGB + depth code).
LDM3D_4C_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 4,
    "out_channels": 4,
    "latent_channels": 4,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
LDM3D_4C_HUB_ID = "Intel/ldm3d-4c"
CLIP_VIT_H_14_HUB_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"

# OpenCLIP architectures by name (open_clip's model configs; only the vision tower matters here).
OPENCLIP_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "ViT-H-14": {
        "embed_dim": 1024,
        "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
    },
}

# The authors' inference model config (Reconstruction/generation_infer.yaml, ``model:``), restricted to the fields
# that shape the network or the sampler. Values from the reference notes §1.4, §1.6, §1.9.
AUTHORS_FULL_LVDM_CONFIG: dict[str, Any] = {
    "target": "lvdm.models.ddpm3d.LatentVisualDiffusion",
    "params": {
        "rescale_betas_zero_snr": True,
        "parameterization": "v",
        "linear_start": 0.00085,
        "linear_end": 0.012,
        "timesteps": 1000,
        "conditioning_key": "hybrid",
        "image_size": [64, 120],
        "channels": 4,
        "scale_factor": 0.18215,
        "use_dynamic_rescale": True,
        "base_scale": 0.7,
        "fps_condition_type": "fps",
        "perframe_ae": True,
        "interp_mode": True,
        "unet_config": {
            "target": "lvdm.modules.networks.openaimodel3d.UNetModel",
            "params": {
                "in_channels": 8,
                "out_channels": 4,
                "model_channels": 320,
                "attention_resolutions": [4, 2, 1],
                "num_res_blocks": 2,
                "channel_mult": [1, 2, 4, 4],
                "dropout": 0.1,
                "num_head_channels": 64,
                "transformer_depth": 1,
                "context_dim": 1024,
                "use_linear": True,
                "use_checkpoint": False,
                "temporal_conv": True,
                "temporal_attention": True,
                "temporal_selfatt_only": True,
                "use_relative_position": False,
                "use_causal_attention": False,
                "temporal_length": 16,
                "addition_attention": True,
                "image_cross_attention": True,
                "default_fs": 30,
                "fs_condition": True,
            },
        },
        "img_cond_stage_config": {
            "target": "lvdm.modules.encoders.condition.FrozenOpenCLIPImageEmbedderV2",
            "params": {"freeze": True, "arch": "ViT-H-14", "version": "laion2b_s32b_b79k"},
        },
        "image_proj_stage_config": {
            "target": "lvdm.modules.encoders.resampler.Resampler",
            "params": {
                "dim": 1024,
                "depth": 4,
                "dim_head": 64,
                "heads": 12,
                "num_queries": 16,
                "embedding_dim": 1280,
                "output_dim": 1024,
                "ff_mult": 4,
                "video_length": 16,
            },
        },
    },
}


def _derived(
    base: dict[str, Any],
    image_size: list[int],
    unet: dict[str, Any],
    image_proj: dict[str, Any],
    img_cond: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A copy of lvdm config ``base`` with another latent size and other UNet / resampler / image-tower
    params."""
    config = copy.deepcopy(base)
    params = config["params"]
    params.update(image_size=image_size)
    for section, changes in (("unet_config", unet), ("image_proj_stage_config", image_proj),
                             ("img_cond_stage_config", img_cond or {})):
        params[section]["params"].update(changes)
    return config


# A small model of the same family: 256 context tokens (so the 77-token split matters), 4 frames at 64x96 pixels.
# Fast enough for a 25-step CPU sample in seconds; also the starting point for training experiments.
TINY_LVDM_CONFIG: dict[str, Any] = _derived(
    AUTHORS_FULL_LVDM_CONFIG,
    image_size=[8, 12],
    unet={"model_channels": 32, "attention_resolutions": [1, 2], "num_res_blocks": 1, "channel_mult": [1, 2],
          "dropout": 0.0, "num_head_channels": 16, "context_dim": 64, "temporal_length": 4},
    image_proj={"dim": 64, "depth": 1, "dim_head": 16, "heads": 2, "embedding_dim": 64, "output_dim": 64},
    img_cond={"arch": "genfusion-tiny", "version": None},
)
TINY_OPENCLIP_ARCHITECTURE: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 14},
}
TINY_VAE_CONFIG: dict[str, Any] = {
    **LDM3D_4C_VAE_CONFIG,
    "block_out_channels": [32, 32, 32, 32],
    "layers_per_block": 1,
    "sample_size": 96,
}

# The shipped default model's architecture: 8 frames at 96 x 96 (the size of genfusion-scene's lite scenes), a VAE
# that downsamples 4x (24 x 24 latents; the released model's 8x would leave 12 x 12, too coarse for a VAE trained from
# scratch on CPU) and a three-level UNet (64/128/128 channels) whose attention runs at the 12 x 12 and 6 x 6 levels;
# 8-channel heads keep the full-resolution temporal transformer cheap. 12.6 M parameters, ~25 MB in float16.
SMALL_LVDM_CONFIG: dict[str, Any] = _derived(
    TINY_LVDM_CONFIG,
    image_size=[24, 24],
    unet={"model_channels": 64, "attention_resolutions": [2, 4], "num_res_blocks": 1,
          "channel_mult": [1, 2, 2], "num_head_channels": 8, "context_dim": 96, "temporal_length": 8},
    image_proj={"dim": 96, "depth": 2, "dim_head": 24, "heads": 4, "num_queries": 8, "embedding_dim": 64,
                "output_dim": 96, "video_length": 8},
)
SMALL_VAE_CONFIG: dict[str, Any] = {
    **LDM3D_4C_VAE_CONFIG,
    "block_out_channels": [32, 64, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "layers_per_block": 1,
    "norm_num_groups": 16,
    "sample_size": 96,
}
