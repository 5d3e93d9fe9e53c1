"""Convert the authors' GenFusion checkpoint into a diffusers ``GenFusionVideoPipeline`` folder.

The released file is a PyTorch Lightning checkpoint ``{"state_dict": ...}`` of the authors' ``LatentVisualDiffusion``:
UNet (``model.diffusion_model.*``), LDM3D-4c VAE (``first_stage_model.*``, already diffusers names), OpenCLIP image
tower (``embedder.model.visual.*``), resampler (``image_proj_model.*``), an unused OpenCLIP text tower and the
noise-schedule buffers. Conversion

1. loads the file memory-mapped (``mmap=True, weights_only=True``) and maps every key through the config-generated
   tables of :mod:`genfusion_ns.video.models.keymap`, refusing with a full list any key it does not expect and any
   weight it is missing (in the authors' naming) -- these reading steps live in :mod:`.checkpoint`;
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import tyro
from torch import nn

from genfusion_ns.outputs import check_output_folder, exit_with_error, staged_output_folder

from .checkpoint import check_component_keys, key_mappings, load_authors_checkpoint, split_checkpoint
from .models.architectures import CLIP_VIT_H_14_HUB_ID, LDM3D_4C_HUB_ID
from .models.build import COMPONENT_NAMES, build_component
from .models.configs import VideoModelConfig, load_model_config
from .models.keymap import CLIP_PREFIX, VAE_PREFIX

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
COMMAND = "genfusion-convert"


# ----------------------------------------------------------------------------------------------- schedule


def settings_from_schedule(
    schedule: dict[str, torch.Tensor], config: VideoModelConfig
) -> VideoModelConfig:
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


def load_stock_vae(source: str, config: VideoModelConfig) -> nn.Module:
    """The LDM3D-4c VAE from a hub id (subfolder ``vae``) or a local folder, when the checkpoint lacks it."""
    from diffusers import AutoencoderKL

    path = Path(source)

    def load() -> nn.Module:
        if path.is_dir() and (path / "config.json").is_file():
            return AutoencoderKL.from_pretrained(path)
        return AutoencoderKL.from_pretrained(source, subfolder="vae")

    download = (f"`huggingface-cli download {LDM3D_4C_HUB_ID} --include 'vae/*' --local-dir LDM3D`, copy "
                "LDM3D/vae here and pass --vae-source PATH/TO/vae")
    keys = ("in_channels", "out_channels", "latent_channels", "block_out_channels")
    return _load_stock(load, source, VAE_PREFIX, ("VAE", "VAE"), download, config.vae, keys)


def load_stock_clip(source: str, config: VideoModelConfig) -> nn.Module:
    """The OpenCLIP ViT-H/14 image tower in transformers format, when the checkpoint lacks it."""
    from transformers import CLIPVisionModel

    download = (f"`huggingface-cli download {CLIP_VIT_H_14_HUB_ID} --local-dir CLIP-ViT-H-14`, copy the folder "
                "here and pass --clip-source PATH")
    keys = ("hidden_size", "num_hidden_layers", "patch_size", "image_size")
    return _load_stock(lambda: CLIPVisionModel.from_pretrained(source, attn_implementation="sdpa"), source,
                       CLIP_PREFIX, ("CLIP image tower", "CLIP tower"), download, config.image_encoder, keys)


def _load_stock(
    load: Callable[[], nn.Module],
    source: str,
    prefix: str,
    names: tuple[str, str],
    download: str,
    needed: dict[str, Any],
    keys: tuple[str, ...],
) -> nn.Module:
    """A stock part the checkpoint lacks, from ``source``: an error that says how to fetch it when it cannot be
    loaded, and a refusal when its shape (``keys`` of its config) is not the model's."""
    try:
        part = load()
    except (OSError, ValueError) as err:
        raise OSError(
            f"the checkpoint has no {prefix}* weights and the {names[0]} could not be loaded from {source!r} "
            f"({err}). On a machine with internet run {download}"
        ) from err
    for key in keys:
        have = getattr(part.config, key)
        if _as_list(have) != _as_list(needed[key]):
            raise ValueError(f"{names[1]} from {source!r} has {key}={have}, the model needs {needed[key]}")
    return part


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
    config: VideoModelConfig | str | Path = "full",
    *,
    vae_source: str = LDM3D_4C_HUB_ID,
    clip_source: str = CLIP_VIT_H_14_HUB_ID,
    dtype: torch.dtype = torch.float32,
) -> tuple[dict[str, nn.Module], VideoModelConfig]:
    """The four networks with the checkpoint's weights, and the config updated from the checkpoint's schedule.

    ``checkpoint`` is a path or an already loaded authors' state dict (which is emptied).
    """
    if not isinstance(config, VideoModelConfig):
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


def build_pipeline(components: dict[str, nn.Module], config: VideoModelConfig) -> Any:
    """``GenFusionVideoPipeline`` from converted components and the config's scheduler + model settings."""
    from .pipeline import GenFusionVideoPipeline
    from .scheduling import GenFusionDDIMScheduler

    return GenFusionVideoPipeline(
        **components, scheduler=GenFusionDDIMScheduler(**config.scheduler), **config.settings.to_dict()
    )


def convert_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    config: VideoModelConfig | str | Path = "full",
    *,
    overwrite: bool = False,
    vae_source: str = LDM3D_4C_HUB_ID,
    clip_source: str = CLIP_VIT_H_14_HUB_ID,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Convert an authors' checkpoint and ``save_pretrained`` the pipeline into ``out_dir``; returns ``out_dir``.

    ``out_dir`` follows :mod:`genfusion_ns.outputs` (checked before the slow part; a converted model is several GB):
    absent, empty, or an earlier genfusion-convert output with ``overwrite``; it is written next to its place and
    renamed when complete. Refusals raise ``FileExistsError``.
    """
    out_dir = Path(out_dir)
    is_file = isinstance(checkpoint, (str, Path)) and Path(checkpoint).is_file()  # a folder: load explains it
    inputs = {"the checkpoint": checkpoint if is_file else None,
              "--config": config if isinstance(config, (str, Path)) else None,
              "--vae-source": vae_source, "--clip-source": clip_source}
    check_output_folder(out_dir, overwrite, COMMAND, inputs, flag="--out", error=FileExistsError)
    components, config = load_components(
        checkpoint, config, vae_source=vae_source, clip_source=clip_source, dtype=dtype
    )
    pipeline = build_pipeline(components, config)
    with staged_output_folder(out_dir, overwrite, COMMAND, inputs, flag="--out", error=FileExistsError) as staged:
        pipeline.save_pretrained(staged, safe_serialization=True)
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
    """replace an earlier genfusion-convert output in --out (never a folder this command did not write)"""
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
    try:
        out = convert_checkpoint(
            args.checkpoint,
            args.out,
            args.config,
            overwrite=args.overwrite,
            vae_source=args.vae_source,
            clip_source=args.clip_source,
            dtype=DTYPES[args.dtype],
        )
    except (ValueError, OSError) as error:  # bad checkpoint / config / --out, missing stock model: all say what to do
        exit_with_error(COMMAND, error)
    print(f"saved GenFusion pipeline to {out}")


if __name__ == "__main__":
    entrypoint()
