"""Convert the authors' GenFusion checkpoint into a diffusers ``GenFusionVideoPipeline`` folder.

The released file is a PyTorch Lightning checkpoint ``{"state_dict": ...}`` of the authors' ``LatentVisualDiffusion``:
UNet (``model.diffusion_model.*``), LDM3D-4c VAE (``first_stage_model.*``, already diffusers names), OpenCLIP image
tower (``embedder.model.visual.*``), resampler (``image_proj_model.*``), an unused OpenCLIP text tower and the
noise-schedule buffers. Conversion

1. loads the file memory-mapped (``mmap=True, weights_only=True``) and maps every key through the config-generated
   tables of :mod:`genfusion_ns.video.models.keymap`, refusing with a full list any key it does not expect and any
   weight it is missing (in the authors' naming);
2. checks the schedule buffers against the configured scheduler and reads DynamiCrafter's dynamic-rescale
   parameters from ``scale_arr`` (the authors' sampler uses the checkpoint's buffers);
3. builds each network without parameter storage and assigns the checkpoint tensors (peak memory ≈ one copy);
4. takes the VAE / CLIP tower from the hub or a local folder only when the checkpoint lacks them;
5. saves the pipeline with ``save_pretrained`` (``model_index.json`` + one safetensors folder per component).

CLI: ``genfusion-convert CKPT --out DIR [--config full|tiny|PATH] [--overwrite]``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import tyro
from torch import nn

from .models.build import COMPONENT_NAMES, build_component
from .models.configs import (
    CLIP_VIT_H_14_HUB_ID,
    LDM3D_4C_HUB_ID,
    GenFusionModelConfig,
    load_model_config,
)
from .models.keymap import (
    CLIP_PREFIX,
    SCHEDULE_BUFFERS,
    VAE_PREFIX,
    KeyMapping,
    clip_vision_key_mapping,
    is_unused_key,
    resampler_key_mapping,
    unet_key_mapping,
    vae_key_mapping,
)

# Components the authors' checkpoint must always contain (GenFusion's own weights); the VAE and the CLIP tower are
# stock models and may come from their public repositories instead.
REQUIRED_COMPONENTS = ("unet", "image_proj")
DEEPSPEED_PREFIX = "_forward_module."
MAX_LISTED_KEYS = 40
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class CheckpointKeyError(ValueError):
    """The checkpoint does not match the configured model; lists every offending key."""

    def __init__(self, missing: list[str], unexpected: list[str], mismatched: list[str], hint: str = ""):
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        parts = ["the checkpoint does not match the GenFusion model config:"]
        for title, keys in (
            ("missing weights (authors' names)", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ):
            if keys:
                listed = "\n    ".join(keys[:MAX_LISTED_KEYS])
                more = (
                    f"\n    ... and {len(keys) - MAX_LISTED_KEYS} more" if len(keys) > MAX_LISTED_KEYS else ""
                )
                parts.append(f"  {len(keys)} {title}:\n    {listed}{more}")
        if hint:
            parts.append(hint)
        super().__init__("\n".join(parts))


# ----------------------------------------------------------------------------------------------- reading


def load_authors_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The flat state dict of an authors'-format checkpoint, memory-mapped where the file format allows.

    Accepts a Lightning checkpoint (``{"state_dict": ...}``), a DeepSpeed-style ``{"module": ...}`` whose keys start
    with ``_forward_module.``, or a bare state dict; renames ``framestride_embed`` to ``fps_embedding`` like the
    authors' loader does.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
        data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        state = data["state_dict"]
    elif isinstance(data, dict) and isinstance(data.get("module"), dict):
        state = {k.removeprefix(DEEPSPEED_PREFIX): v for k, v in data["module"].items()}
    elif isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        state = data
    else:
        top = sorted(data)[:10] if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path} is not a GenFusion checkpoint (no 'state_dict'; top level: {top})")
    return {k.replace("framestride_embed", "fps_embedding"): v for k, v in state.items()}


def key_mappings(config: GenFusionModelConfig, clip_module_prefix: str = "") -> dict[str, KeyMapping]:
    """Per component, the mapping from the authors' keys (generated from ``config``)."""
    return {
        "unet": unet_key_mapping(config.unet),
        "image_proj": resampler_key_mapping(int(config.image_proj["depth"])),
        "image_encoder": clip_vision_key_mapping(
            int(config.image_encoder["num_hidden_layers"]), clip_module_prefix
        ),
        "vae": vae_key_mapping(),
    }


@dataclass
class SplitCheckpoint:
    """An authors' state dict sorted into the parts conversion needs.

    Attributes:
        components: component name → state dict in the component's own naming (only components present).
        schedule: the root schedule buffers (``alphas_cumprod``, ``scale_arr``, ...).
        dropped: keys intentionally discarded (unused text tower, CLIP text leftovers and projection).
        unrecognised: keys no rule covers (refused).
    """

    components: dict[str, dict[str, torch.Tensor]]
    schedule: dict[str, torch.Tensor]
    dropped: list[str]
    unrecognised: list[str]


def split_checkpoint(state: dict[str, torch.Tensor], mappings: dict[str, KeyMapping]) -> SplitCheckpoint:
    """Sort every entry of ``state`` (emptied on the way, so no tensor is referenced twice)."""
    components: dict[str, dict[str, torch.Tensor]] = {}
    schedule, dropped, unrecognised = {}, [], []
    for key in list(state):
        tensor = state.pop(key)
        if key in SCHEDULE_BUFFERS:
            schedule[key] = tensor
            continue
        if is_unused_key(key):
            dropped.append(key)
            continue
        for name, mapping in mappings.items():
            if mapping.handles(key):
                components.setdefault(name, {}).update(mapping.convert(key, tensor))
                break
        else:
            unrecognised.append(key)
    return SplitCheckpoint(components, schedule, sorted(dropped), sorted(unrecognised))


def check_component_keys(
    split: SplitCheckpoint,
    expected: dict[str, dict[str, torch.Size]],
    mappings: dict[str, KeyMapping],
) -> None:
    """Raise :class:`CheckpointKeyError` unless every present component matches its module exactly."""
    missing, unexpected, mismatched = [], list(split.unrecognised), []
    for name in REQUIRED_COMPONENTS:
        if name not in split.components:
            missing.append(f"(every {name} weight: no key of the authors' {name} is in the checkpoint)")
    for name, state in split.components.items():
        shapes = expected[name]
        for key in sorted(shapes.keys() - state.keys()):
            missing.append(mappings[name].authors_name(key))
        for key in sorted(state.keys() - shapes.keys()):
            unexpected.append(f"{mappings[name].authors_name(key)} (-> {name}.{key})")
        for key in sorted(state.keys() & shapes.keys()):
            if tuple(state[key].shape) != tuple(shapes[key]):
                mismatched.append(
                    f"{mappings[name].authors_name(key)}: checkpoint {tuple(state[key].shape)}, "
                    f"{name}.{key} expects {tuple(shapes[key])}"
                )
    if missing or unexpected or mismatched:
        hint = (
            "A shape mismatch or a block-index offset usually means the checkpoint belongs to another model "
            "size: pass the matching --config (the authors' YAML or a fixture config.json)."
        )
        raise CheckpointKeyError(missing, unexpected, mismatched, hint if mismatched or unexpected else "")


# ----------------------------------------------------------------------------------------------- schedule


def settings_from_schedule(
    schedule: dict[str, torch.Tensor], config: GenFusionModelConfig
) -> GenFusionModelConfig:
    """Check the checkpoint's schedule against ``config``; return ``config`` with the checkpoint's dynamic rescale.

    The authors' sampler reads ``alphas_cumprod`` and ``scale_arr`` from the checkpoint, so these win over the YAML:
    a different beta schedule is refused (the scheduler would silently sample another process), dynamic-rescale
    parameters are re-derived from ``scale_arr`` (with a warning when they differ from the config).
    """
    from .scheduling import GenFusionDDIMScheduler, dynamic_rescale_table

    if "alphas_cumprod" in schedule:
        ours = GenFusionDDIMScheduler(**config.scheduler).alphas_cumprod.float()
        theirs = schedule["alphas_cumprod"].float()
        if theirs.shape != ours.shape or (theirs - ours).abs().max() > 1e-5:
            raise ValueError(
                "the checkpoint's alphas_cumprod does not match the configured schedule "
                f"{config.scheduler}; pass the model's own YAML/config.json with --config"
            )
    scale_arr = schedule.get("scale_arr")
    if scale_arr is None:
        if config.settings.use_dynamic_rescale:
            warnings.warn(
                "checkpoint has no scale_arr; using the config's dynamic-rescale parameters", stacklevel=2
            )
        return config
    scale_arr = scale_arr.float()
    base = round(float(scale_arr[-1]), 6)
    turning = int((scale_arr > scale_arr[-1] + 1e-7).sum()) + 1
    table = dynamic_rescale_table(base, turning, scale_arr.numel() - turning)
    if table.shape != scale_arr.shape or (table - scale_arr).abs().max() > 1e-6:
        raise ValueError(
            "the checkpoint's scale_arr is not a DynamiCrafter dynamic-rescale table (linear ramp + flat)"
        )
    settings = config.settings
    derived = {
        "use_dynamic_rescale": True,
        "dynamic_rescale_base_scale": base,
        "dynamic_rescale_turning_step": turning,
    }
    differs = {k: (getattr(settings, k), v) for k, v in derived.items() if getattr(settings, k) != v}
    if differs:
        warnings.warn(
            f"dynamic rescale from the checkpoint's scale_arr overrides the config: {differs}", stacklevel=2
        )
    return dataclasses.replace(config, settings=dataclasses.replace(settings, **derived))


# ----------------------------------------------------------------------------------------------- stock parts


def load_stock_vae(source: str, config: GenFusionModelConfig) -> nn.Module:
    """The LDM3D-4c VAE from a hub id (subfolder ``vae``) or a local folder, when the checkpoint lacks it."""
    from diffusers import AutoencoderKL

    path = Path(source)
    try:
        if path.is_dir() and (path / "config.json").is_file():
            vae = AutoencoderKL.from_pretrained(path)
        else:
            vae = AutoencoderKL.from_pretrained(source, subfolder="vae")
    except (OSError, ValueError) as err:
        raise OSError(
            f"the checkpoint has no {VAE_PREFIX}* weights and the VAE could not be loaded from {source!r} "
            f"({err}). On a machine with internet run `huggingface-cli download {LDM3D_4C_HUB_ID} --include "
            "'vae/*' --local-dir LDM3D`, copy LDM3D/vae here and pass --vae-source PATH/TO/vae"
        ) from err
    for key in ("in_channels", "out_channels", "latent_channels", "block_out_channels"):
        if list(_as_list(vae.config[key])) != list(_as_list(config.vae[key])):
            raise ValueError(
                f"VAE from {source!r} has {key}={vae.config[key]}, the model needs {config.vae[key]}"
            )
    return vae


def load_stock_clip(source: str, config: GenFusionModelConfig) -> nn.Module:
    """The OpenCLIP ViT-H/14 image tower in transformers format, when the checkpoint lacks it."""
    from transformers import CLIPVisionModel

    try:
        clip = CLIPVisionModel.from_pretrained(source, attn_implementation="sdpa")
    except (OSError, ValueError) as err:
        raise OSError(
            f"the checkpoint has no {CLIP_PREFIX}* weights and the CLIP image tower could not be loaded from "
            f"{source!r} ({err}). On a machine with internet run `huggingface-cli download "
            f"{CLIP_VIT_H_14_HUB_ID} --local-dir CLIP-ViT-H-14`, copy the folder here and pass --clip-source PATH"
        ) from err
    for key in ("hidden_size", "num_hidden_layers", "patch_size", "image_size"):
        if getattr(clip.config, key) != config.image_encoder[key]:
            raise ValueError(
                f"CLIP tower from {source!r} has {key}={getattr(clip.config, key)}, the model needs "
                f"{config.image_encoder[key]}"
            )
    return clip


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


# ----------------------------------------------------------------------------------------------- conversion


def _clip_module_prefix(clip: nn.Module) -> str:
    """Where ``embeddings`` sits in ``CLIPVisionModel``'s state dict (``""`` or ``"vision_model."`` by version)."""
    marker = "embeddings.class_embedding"
    for key in clip.state_dict():
        if key.endswith(marker):
            return key[: -len(marker)]
    raise RuntimeError("CLIPVisionModel state dict has no embeddings.class_embedding")


def _own_storage(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copy tensors that share storage with another one (split fused projections): safetensors refuses those."""
    seen: dict[tuple[int, int], int] = {}
    for tensor in state.values():
        key = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        seen[key] = seen.get(key, 0) + 1
    return {
        k: v.clone()
        if seen[(v.untyped_storage().data_ptr(), v.untyped_storage().nbytes())] > 1 or not v.is_contiguous()
        else v
        for k, v in state.items()
    }


def load_components(
    checkpoint: str | Path | dict[str, torch.Tensor],
    config: GenFusionModelConfig | str | Path = "full",
    *,
    vae_source: str = LDM3D_4C_HUB_ID,
    clip_source: str = CLIP_VIT_H_14_HUB_ID,
    dtype: torch.dtype = torch.float32,
) -> tuple[dict[str, nn.Module], GenFusionModelConfig]:
    """The four networks with the checkpoint's weights, and the config updated from the checkpoint's schedule.

    ``checkpoint`` is a path or an already loaded authors' state dict (which is emptied).
    """
    if not isinstance(config, GenFusionModelConfig):
        config = load_model_config(config)
    state = load_authors_checkpoint(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint

    modules = {name: build_component(name, config, device="meta") for name in COMPONENT_NAMES}
    mappings = key_mappings(config, _clip_module_prefix(modules["image_encoder"]))
    split = split_checkpoint(state, mappings)
    expected = {name: {k: v.shape for k, v in m.state_dict().items()} for name, m in modules.items()}
    check_component_keys(split, expected, mappings)
    config = settings_from_schedule(split.schedule, config)

    for name in COMPONENT_NAMES:
        if name in split.components:
            modules[name].load_state_dict(_own_storage(split.components.pop(name)), strict=True, assign=True)
        elif name == "vae":
            modules[name] = load_stock_vae(vae_source, config)
        else:
            modules[name] = load_stock_clip(clip_source, config)
        if any(p.dtype != dtype for p in modules[name].parameters()):
            modules[name] = modules[name].to(dtype)
        modules[name].eval()
    return modules, config


def build_pipeline(components: dict[str, nn.Module], config: GenFusionModelConfig) -> Any:
    """``GenFusionVideoPipeline`` from converted components and the config's scheduler + model settings."""
    from .pipeline import GenFusionVideoPipeline
    from .scheduling import GenFusionDDIMScheduler

    return GenFusionVideoPipeline(
        **components, scheduler=GenFusionDDIMScheduler(**config.scheduler), **config.settings.to_dict()
    )


def prepare_output_dir(out_dir: str | Path, overwrite: bool) -> Path:
    """Refuse to write into a non-empty folder unless asked to (a converted model is several GB)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} is not empty; choose another --out or pass --overwrite")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def convert_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    config: GenFusionModelConfig | str | Path = "full",
    *,
    overwrite: bool = False,
    vae_source: str = LDM3D_4C_HUB_ID,
    clip_source: str = CLIP_VIT_H_14_HUB_ID,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Convert an authors' checkpoint and ``save_pretrained`` the pipeline into ``out_dir``; returns ``out_dir``."""
    out_dir = Path(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:  # fail before the slow part
        raise FileExistsError(f"{out_dir} is not empty; choose another --out or pass --overwrite")
    components, config = load_components(
        checkpoint, config, vae_source=vae_source, clip_source=clip_source, dtype=dtype
    )
    pipeline = build_pipeline(components, config)
    pipeline.save_pretrained(prepare_output_dir(out_dir, overwrite), safe_serialization=True)
    return out_dir


# ----------------------------------------------------------------------------------------------- CLI


@dataclass
class ConvertArgs:
    """Convert the authors' GenFusion checkpoint (e.g. epoch=59-step=34000.ckpt) into a diffusers pipeline folder."""

    checkpoint: tyro.conf.Positional[Path]
    """authors'-format checkpoint (Lightning .ckpt with a state_dict)"""
    out: Path
    """output folder (model_index.json + one safetensors folder per component)"""
    config: str = "full"
    """model config: "full" (the released model), "tiny", the authors' YAML or a fixture config.json"""
    overwrite: bool = False
    """write into a non-empty output folder"""
    vae_source: str = LDM3D_4C_HUB_ID
    """hub id or local folder of the LDM3D-4c VAE, used only when the checkpoint has no first_stage_model.*"""
    clip_source: str = CLIP_VIT_H_14_HUB_ID
    """hub id or local folder of the CLIP ViT-H/14 tower, used only when the checkpoint has no embedder weights"""
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """dtype of the saved weights"""


def entrypoint(argv: Sequence[str] | None = None) -> None:
    """``genfusion-convert CKPT --out DIR [--config CONFIG] [--overwrite]`` (returns None: console scripts pass the
    return value to ``sys.exit``)."""
    args = tyro.cli(ConvertArgs, args=argv)
    out = convert_checkpoint(
        args.checkpoint,
        args.out,
        args.config,
        overwrite=args.overwrite,
        vae_source=args.vae_source,
        clip_source=args.clip_source,
        dtype=DTYPES[args.dtype],
    )
    print(f"saved GenFusion pipeline to {out}")


if __name__ == "__main__":
    entrypoint()
