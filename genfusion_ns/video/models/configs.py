"""Named GenFusion model configurations and their derivation from the authors' lvdm configuration.

One path builds every configuration: an authors'-style lvdm model config (the ``model:`` section of
``generation_infer.yaml``, or the ``official.lvdm_model_config`` of a fixture ``config.json``) is translated into
the kwargs of the diffusers/transformers components by :func:`config_from_lvdm`. The built-in ``"full"`` config is
the released model's lvdm config written out as a Python dict; ``"tiny"`` is a small lvdm config for tests and for
starting training from scratch. Nothing here hard-codes a size that could be read from the config instead.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
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

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

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

# A small model of the same family: 256 context tokens (so the 77-token split matters), 4 frames at 64x96 pixels.
# Fast enough for a 25-step CPU sample in seconds; also the starting point for training experiments.
TINY_LVDM_CONFIG: dict[str, Any] = copy.deepcopy(AUTHORS_FULL_LVDM_CONFIG)
TINY_LVDM_CONFIG["params"].update(image_size=[8, 12])
TINY_LVDM_CONFIG["params"]["unet_config"]["params"].update(
    model_channels=32,
    attention_resolutions=[1, 2],
    num_res_blocks=1,
    channel_mult=[1, 2],
    dropout=0.0,
    num_head_channels=16,
    context_dim=64,
    temporal_length=4,
)
TINY_LVDM_CONFIG["params"]["img_cond_stage_config"]["params"].update(arch="genfusion-tiny", version=None)
TINY_LVDM_CONFIG["params"]["image_proj_stage_config"]["params"].update(
    dim=64, depth=1, dim_head=16, heads=2, embedding_dim=64, output_dim=64
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
SMALL_LVDM_CONFIG: dict[str, Any] = copy.deepcopy(TINY_LVDM_CONFIG)
SMALL_LVDM_CONFIG["params"].update(image_size=[24, 24])
SMALL_LVDM_CONFIG["params"]["unet_config"]["params"].update(
    model_channels=64,
    attention_resolutions=[2, 4],
    num_res_blocks=1,
    channel_mult=[1, 2, 2],
    num_head_channels=8,
    context_dim=96,
    temporal_length=8,
)
SMALL_LVDM_CONFIG["params"]["image_proj_stage_config"]["params"].update(
    dim=96, depth=2, dim_head=24, heads=4, num_queries=8, embedding_dim=64, output_dim=96, video_length=8
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


@dataclass(frozen=True)
class GenFusionModelSettings:
    """Model-level facts the pipeline needs besides the modules (all derived from the authors' config).

    Attributes:
        num_frames: frames per clip the UNet was trained on (``temporal_length``).
        height, width: native pixel resolution (latent ``image_size`` × the VAE's downsampling).
        fps: frame-rate condition used at inference (the authors always pass 30).
        latent_scale_factor: multiplier applied to VAE latents (``scale_factor``; the authors ignore the VAE's own).
        use_dynamic_rescale, dynamic_rescale_base_scale, dynamic_rescale_turning_step: DynamiCrafter's x0 rescale
            ``s(t)`` (linear 1 → base over ``turning_step`` timesteps, then flat).
        clip_image_size, clip_mean, clip_std: CLIP input size and normalisation for the reference image.
        residual_decode: add the model's change to the input render instead of decoding the repaired latent
            alone (for models whose VAE blurs; off for the authors' model).

    The field names are the model-setting kwargs of ``GenFusionVideoPipeline`` (stored in its ``model_index.json``).
    """

    num_frames: int
    height: int
    width: int
    fps: int = 30
    latent_scale_factor: float = 0.18215
    use_dynamic_rescale: bool = True
    dynamic_rescale_base_scale: float = 0.7
    dynamic_rescale_turning_step: int = 400
    clip_image_size: int = 224
    clip_mean: tuple[float, float, float] = CLIP_MEAN
    clip_std: tuple[float, float, float] = CLIP_STD
    residual_decode: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GenFusionModelConfig:
    """Everything needed to build GenFusion's networks and scheduler, plus :class:`GenFusionModelSettings`.

    ``unet`` → ``GenFusionUNet`` kwargs, ``image_proj`` → ``GenFusionResampler`` kwargs, ``image_encoder`` →
    ``transformers.CLIPVisionConfig`` kwargs, ``vae`` → ``diffusers.AutoencoderKL`` kwargs, ``scheduler`` →
    ``GenFusionDDIMScheduler`` kwargs (training schedule + the reconstruction loop's spacing).
    """

    name: str
    unet: dict[str, Any]
    image_proj: dict[str, Any]
    image_encoder: dict[str, Any]
    vae: dict[str, Any]
    scheduler: dict[str, Any]
    settings: GenFusionModelSettings

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def vae_downsample_factor(vae_config: Mapping[str, Any]) -> int:
    """Pixel → latent downsampling of an ``AutoencoderKL`` (one ×2 per block except the last)."""
    return 2 ** (len(vae_config["block_out_channels"]) - 1)


def _params(section: Mapping[str, Any], what: str) -> dict[str, Any]:
    """The ``params`` of an lvdm ``{target, params}`` section (or the section itself when it is flat)."""
    if not isinstance(section, Mapping):
        raise TypeError(f"{what} must be a mapping, got {type(section).__name__}")
    params = section.get("params", section)
    return dict(params)


def _require(params: Mapping[str, Any], key: str, what: str) -> Any:
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
    model_channels = int(_require(unet, "model_channels", what))
    channel_mult = [int(m) for m in _require(unet, "channel_mult", what)]
    attention_resolutions = {int(r) for r in _require(unet, "attention_resolutions", what)}
    has_attention = [2**level in attention_resolutions for level in range(len(channel_mult))]
    down = ["CrossAttnDownBlock3D" if a else "DownBlock3D" for a in has_attention]
    up = ["CrossAttnUpBlock3D" if a else "UpBlock3D" for a in reversed(has_attention)]
    image_cross_attention = bool(unet.get("image_cross_attention", False))
    return {
        "in_channels": int(_require(unet, "in_channels", what)),
        "out_channels": int(_require(unet, "out_channels", what)),
        "down_block_types": down,
        "up_block_types": up,
        "block_out_channels": [model_channels * m for m in channel_mult],
        "layers_per_block": int(_require(unet, "num_res_blocks", what)),
        "cross_attention_dim": int(_require(unet, "context_dim", what)),
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
        "embed_dims": int(_require(resampler, "embedding_dim", what)),
        "output_dims": int(_require(resampler, "output_dim", what)),
        "hidden_dims": int(_require(resampler, "dim", what)),
        "depth": int(_require(resampler, "depth", what)),
        "dim_head": int(_require(resampler, "dim_head", what)),
        "heads": int(_require(resampler, "heads", what)),
        # The authors' queries are num_queries per frame × video_length frames, all used for one reference image.
        "num_queries": int(_require(resampler, "num_queries", what)) * int(resampler.get("video_length", 1)),
        "ffn_ratio": float(resampler.get("ff_mult", 4)),
    }


def clip_vision_kwargs_from_openclip(architecture: Mapping[str, Any]) -> dict[str, Any]:
    """``transformers.CLIPVisionConfig`` kwargs from an OpenCLIP model config (``embed_dim`` + ``vision_cfg``)."""
    vision = _params(_require(architecture, "vision_cfg", "OpenCLIP architecture"), "vision_cfg")
    width = int(_require(vision, "width", "vision_cfg"))
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
        "num_hidden_layers": int(_require(vision, "layers", "vision_cfg")),
        "num_attention_heads": width // head_width,
        "patch_size": int(_require(vision, "patch_size", "vision_cfg")),
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


def config_from_lvdm(
    model_config: Mapping[str, Any],
    *,
    name: str = "custom",
    openclip_architecture: Mapping[str, Any] | None = None,
    vae_config: Mapping[str, Any] | None = None,
    text_context_len: int = 77,
    image_cross_attention_scale: float = 1.0,
    turning_step: int = 400,
    fps: int = 30,
) -> GenFusionModelConfig:
    """Translate an authors'-style lvdm model config into a :class:`GenFusionModelConfig`.

    Args:
        model_config: the ``model:`` section (``{target, params}``) or its ``params``.
        openclip_architecture: OpenCLIP model config of the image tower; default: looked up by the embedder's
            ``arch`` in :data:`OPENCLIP_ARCHITECTURES`.
        vae_config: diffusers ``AutoencoderKL`` kwargs; default LDM3D-4c (the authors hard-code that VAE).
        text_context_len, image_cross_attention_scale, turning_step: constants of the authors' code that are not
            in their YAML (77, 1.0, 400).
        fps: frame-rate condition used at inference (the authors pass 30).
    """
    params = _params(model_config, "model config")
    unet = _params(_require(params, "unet_config", "model params"), "unet_config")
    embedder = _params(
        params.get("img_cond_stage_config", {"params": {"arch": "ViT-H-14"}}), "img_cond_stage_config"
    )
    resampler = _params(
        _require(params, "image_proj_stage_config", "model params"), "image_proj_stage_config"
    )

    if openclip_architecture is None:
        arch = embedder.get("arch", "ViT-H-14")
        if arch not in OPENCLIP_ARCHITECTURES:
            raise ValueError(
                f"unknown OpenCLIP architecture {arch!r}; pass its OpenCLIP model config "
                f"(embed_dim + vision_cfg) as openclip_architecture. Known: {sorted(OPENCLIP_ARCHITECTURES)}"
            )
        openclip_architecture = OPENCLIP_ARCHITECTURES[arch]
    vae = dict(vae_config if vae_config is not None else LDM3D_4C_VAE_CONFIG)
    if int(vae.get("in_channels", 3)) != int(params.get("channels", 4)):
        raise ValueError(
            f"VAE in_channels {vae.get('in_channels')} != model channels {params.get('channels')}: GenFusion encodes "
            "RGB-D (4 channels) in one VAE pass"
        )
    latent_size = _require(params, "image_size", "model params")
    latent_h, latent_w = (latent_size, latent_size) if isinstance(latent_size, int) else latent_size
    down = vae_downsample_factor(vae)
    settings = GenFusionModelSettings(
        num_frames=int(_require(unet, "temporal_length", "unet_config.params")),
        height=int(latent_h) * down,
        width=int(latent_w) * down,
        fps=int(fps),
        latent_scale_factor=float(params.get("scale_factor", 1.0)),
        use_dynamic_rescale=bool(params.get("use_dynamic_rescale", False)),
        dynamic_rescale_base_scale=float(params.get("base_scale", 0.7)),
        dynamic_rescale_turning_step=int(params.get("turning_step", turning_step)),
        clip_image_size=int(
            _params(openclip_architecture["vision_cfg"], "vision_cfg").get("image_size", 224)
        ),
    )
    return GenFusionModelConfig(
        name=name,
        unet=unet_kwargs_from_lvdm(unet, text_context_len, image_cross_attention_scale),
        image_proj=resampler_kwargs_from_lvdm(resampler),
        image_encoder=clip_vision_kwargs_from_openclip(openclip_architecture),
        vae=vae,
        scheduler=scheduler_kwargs_from_lvdm(params),
        settings=settings,
    )


def config_from_fixture_json(data: Mapping[str, Any], name: str = "fixture") -> GenFusionModelConfig:
    """Config of a golden-fixture ``config.json`` (lvdm config + OpenCLIP architecture + diffusers VAE config)."""
    official = _require(data, "official", "fixture config.json")
    constants = official.get("not_in_yaml_but_used", {})
    sampling = data.get("sampling", {})
    return config_from_lvdm(
        _require(official, "lvdm_model_config", "fixture config.json 'official'"),
        name=name,
        openclip_architecture=_require(
            _require(official, "openclip_architecture", "fixture 'official'"),
            "open_clip_model_config",
            "arch",
        ),
        vae_config=_require(
            official["first_stage_model"], "diffusers_AutoencoderKL_config", "first_stage_model"
        )
        if "first_stage_model" in official
        else None,
        text_context_len=int(constants.get("text_context_len", 77)),
        image_cross_attention_scale=float(constants.get("image_cross_attention_scale", 1.0)),
        turning_step=int(constants.get("turning_step", 400)),
        fps=int(sampling.get("fps", 30)),
    )


NAMED_CONFIGS = ("full", "small", "tiny")


def named_config(name: str) -> GenFusionModelConfig:
    """``"full"``: the released model (UNet 320/640/1280/1280, CLIP ViT-H/14, LDM3D-4c VAE, 16 × 512 × 960).
    ``"small"``: the shipped default model's architecture (8 × 96 × 96, 2x VAE), trained on CPU by this package.
    ``"tiny"``: the same family with a few thousand times fewer weights (4 × 64 × 96), for tests and experiments."""
    if name == "full":
        return config_from_lvdm(AUTHORS_FULL_LVDM_CONFIG, name="full")
    if name == "small":
        config = config_from_lvdm(
            SMALL_LVDM_CONFIG,
            name="small",
            openclip_architecture=TINY_OPENCLIP_ARCHITECTURE,
            vae_config=SMALL_VAE_CONFIG,
        )
        # Its VAE, trained from scratch on CPU, blurs what it reconstructs: add the model's change to the render
        # instead of replacing the render (measured in docs/benchmarks.md, "Fusion gain").
        return replace(config, settings=replace(config.settings, residual_decode=True))
    if name == "tiny":
        return config_from_lvdm(
            TINY_LVDM_CONFIG,
            name="tiny",
            openclip_architecture=TINY_OPENCLIP_ARCHITECTURE,
            vae_config=TINY_VAE_CONFIG,
        )
    raise ValueError(f"unknown GenFusion model config {name!r}; named configs: {NAMED_CONFIGS}")


def load_model_config(source: str | Path | Mapping[str, Any]) -> GenFusionModelConfig:
    """A config by name (``"full"``, ``"tiny"``), from a file (authors' YAML, fixture ``config.json``, a YAML/JSON
    holding an lvdm ``model:`` section) or from an already parsed mapping of one of those."""
    if isinstance(source, Mapping):
        data, name = source, "custom"
    elif isinstance(source, str) and source in NAMED_CONFIGS:
        return named_config(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"model config {str(source)!r} is neither a named config {NAMED_CONFIGS} nor an existing file"
            )
        data, name = _read_config_file(path), path.stem
    if "official" in data:
        return config_from_fixture_json(data, name=name)
    if "model" in data:
        return config_from_lvdm(data["model"], name=name)
    if "unet_config" in data or "unet_config" in data.get("params", {}):
        return config_from_lvdm(data, name=name)
    raise ValueError(
        "unrecognised model config: expected an authors' lvdm YAML (with a 'model:' section) or a fixture "
        f"config.json (with 'official'); top-level keys are {sorted(data)}"
    )


def model_settings(config: GenFusionModelConfig | str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline's model-setting kwargs (``num_frames``, ``height``, ``width``, ``fps``, ...) of a config."""
    if not isinstance(config, GenFusionModelConfig):
        config = load_model_config(config)
    return config.settings.to_dict()


def _read_config_file(path: Path) -> Mapping[str, Any]:
    text = path.read_text()
    if path.suffix == ".json":
        return json.loads(text)
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(
            f"cannot parse {path} as YAML ({err}). The authors' training_960_v1.0/config_interp.yaml has a "
            "malformed line 2 ('pretrained_checkpoint:./...' needs a space after the colon); fix it or pass "
            "Reconstruction/generation_infer.yaml"
        ) from err
    if not isinstance(data, Mapping):
        raise TypeError(f"{path} does not hold a mapping")
    return data
