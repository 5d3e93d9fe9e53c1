"""Translate sections of the authors' lvdm config (and OpenCLIP's) into diffusers / transformers kwargs.

One function per component, each refusing options the diffusers class cannot express instead of silently
building another network; :func:`~.configs.config_from_lvdm` assembles them into a
:class:`~.configs.VideoModelConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def vae_downsample_factor(vae_config: Mapping[str, Any]) -> int:
    """Pixel → latent downsampling of an ``AutoencoderKL`` (one ×2 per block except the last)."""
    return 2 ** (len(vae_config["block_out_channels"]) - 1)


def section_params(section: Mapping[str, Any], what: str) -> dict[str, Any]:
    """The ``params`` of an lvdm ``{target, params}`` section (or the section itself when it is flat)."""
    if not isinstance(section, Mapping):
        raise TypeError(f"{what} must be a mapping, got {type(section).__name__}")
    params = section.get("params", section)
    return dict(params)


def require_key(params: Mapping[str, Any], key: str, what: str) -> Any:
    """``params[key]``, or an error naming the section (a bare ``KeyError`` would not say where to look)."""
    if key not in params:
        raise ValueError(f"{what} has no {key!r}; the GenFusion model config needs it")
    return params[key]


def _check_supported_unet(unet: Mapping[str, Any]) -> None:
    """Refuse lvdm UNet variants that ``GenFusionUNet`` cannot express (instead of silently building another net)."""
    expected = {
        "temporal_conv": True,
        "temporal_attention": True,
        "temporal_selfatt_only": True,
        "use_relative_position": False,
        "use_causal_attention": False,
        "addition_attention": True,
        "transformer_depth": 1,
        "use_linear": True,
        "use_scale_shift_norm": False,
        "resblock_updown": False,
        "conv_resample": True,
        "image_cross_attention_scale_learnable": False,
    }
    wrong = {k: unet[k] for k, v in expected.items() if k in unet and unet[k] != v}
    if wrong:
        raise NotImplementedError(
            f"unsupported lvdm UNet options {wrong}; GenFusionUNet implements {expected} "
            "(the GenFusion/DynamiCrafter-interp architecture)"
        )
    if int(unet.get("num_head_channels", -1)) <= 0:
        raise NotImplementedError(
            "the lvdm UNet must set num_head_channels (per-head width); num_heads is unsupported"
        )


def unet_kwargs_from_lvdm(
    unet: Mapping[str, Any], text_context_len: int = 77, cross_scale: float = 1.0
) -> dict:
    """``GenFusionUNet`` kwargs from the lvdm ``UNetModel`` params."""
    _check_supported_unet(unet)
    what = "unet_config.params"
    model_channels = int(require_key(unet, "model_channels", what))
    channel_mult = [int(m) for m in require_key(unet, "channel_mult", what)]
    attention_resolutions = {int(r) for r in require_key(unet, "attention_resolutions", what)}
    has_attention = [2**level in attention_resolutions for level in range(len(channel_mult))]
    down = ["CrossAttnDownBlock3D" if a else "DownBlock3D" for a in has_attention]
    up = ["CrossAttnUpBlock3D" if a else "UpBlock3D" for a in reversed(has_attention)]
    image_cross_attention = bool(unet.get("image_cross_attention", False))
    return {
        "in_channels": int(require_key(unet, "in_channels", what)),
        "out_channels": int(require_key(unet, "out_channels", what)),
        "down_block_types": down,
        "up_block_types": up,
        "block_out_channels": [model_channels * m for m in channel_mult],
        "layers_per_block": int(require_key(unet, "num_res_blocks", what)),
        "cross_attention_dim": int(require_key(unet, "context_dim", what)),
        "attention_head_dim": int(unet["num_head_channels"]),
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "fps_conditioning": bool(unet.get("fs_condition", False)),
        "default_fps": int(unet.get("default_fs", 30)),
        "context_split_index": int(text_context_len) if image_cross_attention else None,
        "image_cross_attention_scale": float(cross_scale),
        "resnet_dropout": float(unet.get("dropout", 0.0)),
    }


def resampler_kwargs_from_lvdm(resampler: Mapping[str, Any]) -> dict[str, Any]:
    """``GenFusionResampler`` (diffusers ``IPAdapterPlusImageProjection``) kwargs from the lvdm ``Resampler``."""
    what = "image_proj_stage_config.params"
    return {
        "embed_dims": int(require_key(resampler, "embedding_dim", what)),
        "output_dims": int(require_key(resampler, "output_dim", what)),
        "hidden_dims": int(require_key(resampler, "dim", what)),
        "depth": int(require_key(resampler, "depth", what)),
        "dim_head": int(require_key(resampler, "dim_head", what)),
        "heads": int(require_key(resampler, "heads", what)),
        # The authors' queries are num_queries per frame × video_length frames, all used for one reference image.
        "num_queries": int(require_key(resampler, "num_queries", what)) * int(resampler.get("video_length", 1)),
        "ffn_ratio": float(resampler.get("ff_mult", 4)),
    }


def clip_vision_kwargs_from_openclip(architecture: Mapping[str, Any]) -> dict[str, Any]:
    """``transformers.CLIPVisionConfig`` kwargs from an OpenCLIP model config (``embed_dim`` + ``vision_cfg``)."""
    vision = section_params(require_key(architecture, "vision_cfg", "OpenCLIP architecture"), "vision_cfg")
    width = int(require_key(vision, "width", "vision_cfg"))
    head_width = int(vision.get("head_width", 64))
    if width % head_width:
        raise ValueError(f"OpenCLIP vision width {width} is not a multiple of head_width {head_width}")
    unsupported = {
        k: vision[k] for k in ("input_patchnorm", "attentional_pool", "no_ln_pre") if vision.get(k)
    }
    if unsupported:
        raise NotImplementedError(
            f"OpenCLIP vision options {unsupported} have no transformers CLIPVision equivalent"
        )
    return {
        "hidden_size": width,
        "intermediate_size": int(width * float(vision.get("mlp_ratio", 4.0))),
        "num_hidden_layers": int(require_key(vision, "layers", "vision_cfg")),
        "num_attention_heads": width // head_width,
        "patch_size": int(require_key(vision, "patch_size", "vision_cfg")),
        "image_size": int(vision.get("image_size", 224)),
        "projection_dim": int(architecture.get("embed_dim", 512)),
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
    }


def scheduler_kwargs_from_lvdm(params: Mapping[str, Any]) -> dict[str, Any]:
    """``GenFusionDDIMScheduler`` kwargs: the training schedule plus the reconstruction loop's "uniform" spacing."""
    schedule = params.get("beta_schedule", "linear")
    if schedule != "linear":  # lvdm "linear" = linspace in sqrt(beta), i.e. diffusers "scaled_linear"
        raise NotImplementedError(f"lvdm beta_schedule {schedule!r} is not supported (only 'linear')")
    parameterization = params.get("parameterization", "eps")
    prediction = {"v": "v_prediction", "eps": "epsilon", "x0": "sample"}.get(parameterization)
    if prediction is None:
        raise ValueError(f"unknown lvdm parameterization {parameterization!r}")
    return {
        "num_train_timesteps": int(params.get("timesteps", 1000)),
        "beta_start": float(params.get("linear_start", 0.00085)),
        "beta_end": float(params.get("linear_end", 0.012)),
        "beta_schedule": "scaled_linear",
        "prediction_type": prediction,
        "rescale_betas_zero_snr": bool(params.get("rescale_betas_zero_snr", False)),
        "set_alpha_to_one": False,
        "clip_sample": False,
        "timestep_spacing": "uniform",
    }
