"""What a GenFusion model configuration is, and how to get one: by name, from a file or from an lvdm config.

One path builds every configuration: an authors'-style lvdm model config (the ``model:`` section of
``generation_infer.yaml``, or the ``official.lvdm_model_config`` of a fixture ``config.json``) is translated into
the kwargs of the diffusers/transformers components by :func:`config_from_lvdm` (section by section in
:mod:`.lvdm`). The named configs are lvdm configs written out as Python dicts in :mod:`.architectures`:
``"full"`` is the released model, ``"small"`` the shipped default's, ``"tiny"`` one for tests and for starting
training from scratch. Nothing here hard-codes a size that could be read from the config instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..preprocess import CLIP_IMAGE_SIZE, CLIP_MEAN, CLIP_STD
from .architectures import (
    AUTHORS_FULL_LVDM_CONFIG,
    LDM3D_4C_VAE_CONFIG,
    OPENCLIP_ARCHITECTURES,
    SMALL_LVDM_CONFIG,
    SMALL_VAE_CONFIG,
    TINY_LVDM_CONFIG,
    TINY_OPENCLIP_ARCHITECTURE,
    TINY_VAE_CONFIG,
)
from .lvdm import (
    clip_vision_kwargs_from_openclip,
    require_key,
    resampler_kwargs_from_lvdm,
    scheduler_kwargs_from_lvdm,
    section_params,
    unet_kwargs_from_lvdm,
    vae_downsample_factor,
)


@dataclass(frozen=True)
class VideoModelSettings:
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
    clip_image_size: int = CLIP_IMAGE_SIZE
    clip_mean: tuple[float, float, float] = CLIP_MEAN
    clip_std: tuple[float, float, float] = CLIP_STD
    residual_decode: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VideoModelConfig:
    """Everything needed to build GenFusion's networks and scheduler, plus :class:`VideoModelSettings`.

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
    settings: VideoModelSettings

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
) -> VideoModelConfig:
    """Translate an authors'-style lvdm model config into a :class:`VideoModelConfig`.

    Args:
        model_config: the ``model:`` section (``{target, params}``) or its ``params``.
        openclip_architecture: OpenCLIP model config of the image tower; default: looked up by the embedder's
            ``arch`` in :data:`OPENCLIP_ARCHITECTURES`.
        vae_config: diffusers ``AutoencoderKL`` kwargs; default LDM3D-4c (the authors hard-code that VAE).
        text_context_len, image_cross_attention_scale, turning_step: constants of the authors' code that are not
            in their YAML (77, 1.0, 400).
        fps: frame-rate condition used at inference (the authors pass 30).
    """
    params = section_params(model_config, "model config")
    unet = section_params(require_key(params, "unet_config", "model params"), "unet_config")
    embedder = section_params(
        params.get("img_cond_stage_config", {"params": {"arch": "ViT-H-14"}}), "img_cond_stage_config"
    )
    resampler = section_params(
        require_key(params, "image_proj_stage_config", "model params"), "image_proj_stage_config"
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
    latent_size = require_key(params, "image_size", "model params")
    latent_h, latent_w = (latent_size, latent_size) if isinstance(latent_size, int) else latent_size
    down = vae_downsample_factor(vae)
    settings = VideoModelSettings(
        num_frames=int(require_key(unet, "temporal_length", "unet_config.params")),
        height=int(latent_h) * down,
        width=int(latent_w) * down,
        fps=int(fps),
        latent_scale_factor=float(params.get("scale_factor", 1.0)),
        use_dynamic_rescale=bool(params.get("use_dynamic_rescale", False)),
        dynamic_rescale_base_scale=float(params.get("base_scale", 0.7)),
        dynamic_rescale_turning_step=int(params.get("turning_step", turning_step)),
        clip_image_size=int(
            section_params(openclip_architecture["vision_cfg"], "vision_cfg").get("image_size", 224)
        ),
    )
    return VideoModelConfig(
        name=name,
        unet=unet_kwargs_from_lvdm(unet, text_context_len, image_cross_attention_scale),
        image_proj=resampler_kwargs_from_lvdm(resampler),
        image_encoder=clip_vision_kwargs_from_openclip(openclip_architecture),
        vae=vae,
        scheduler=scheduler_kwargs_from_lvdm(params),
        settings=settings,
    )


def config_from_fixture_json(data: Mapping[str, Any], name: str = "fixture") -> VideoModelConfig:
    """Config of a golden-fixture ``config.json`` (lvdm config + OpenCLIP architecture + diffusers VAE config)."""
    official = require_key(data, "official", "fixture config.json")
    constants = official.get("not_in_yaml_but_used", {})
    sampling = data.get("sampling", {})
    return config_from_lvdm(
        require_key(official, "lvdm_model_config", "fixture config.json 'official'"),
        name=name,
        openclip_architecture=require_key(
            require_key(official, "openclip_architecture", "fixture 'official'"),
            "open_clip_model_config",
            "arch",
        ),
        vae_config=require_key(
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


def named_config(name: str) -> VideoModelConfig:
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


def load_model_config(source: str | Path | Mapping[str, Any]) -> VideoModelConfig:
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


def model_settings(config: VideoModelConfig | str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline's model-setting kwargs (``num_frames``, ``height``, ``width``, ``fps``, ...) of a config."""
    if not isinstance(config, VideoModelConfig):
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
