"""Reading the authors' GenFusion checkpoint: the file, its keys sorted per component, and the key check.

Apart from the conversion (:mod:`.convert`) because these steps only read and judge the file: they refuse,
with the full list of offending keys in the authors' naming, a checkpoint that does not fit the configured
model, before anything is built or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .models.configs import VideoModelConfig
from .models.keymap import (
    SCHEDULE_BUFFERS,
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

EXAMPLE = "a Lightning .ckpt such as epoch=59-step=34000.ckpt"


class CheckpointFormatError(ValueError):
    """The file is not a (safely loadable) PyTorch checkpoint at all; the message says what was read."""


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


def _load_failure(error: BaseException) -> str:
    """A one-line reason from torch.load's error (its weights-only message is a page long; the cause is inside)."""
    inner = error.__context__ if "Weights only load failed" in str(error) and error.__context__ else error
    text = (str(inner).strip().splitlines() or [""])[0][:120]
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__


def load_authors_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The flat state dict of an authors'-format checkpoint, memory-mapped where the file format allows.

    Accepts a Lightning checkpoint (``{"state_dict": ...}``), a DeepSpeed-style ``{"module": ...}`` whose keys start
    with ``_forward_module.``, or a bare state dict; renames ``framestride_embed`` to ``fps_embedding`` like the
    authors' loader does.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointFormatError(f"checkpoint {path} is a folder; pass the checkpoint file itself ({EXAMPLE}).")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass the authors' checkpoint file ({EXAMPLE}).")
    try:
        try:
            data = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds of error for a file that is no checkpoint
        raise CheckpointFormatError(
            f"{path} is not a PyTorch checkpoint that can be loaded safely (torch.load with weights_only=True "
            f"failed: {_load_failure(error)}); pass the authors' checkpoint file ({EXAMPLE}).") from error
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


def key_mappings(config: VideoModelConfig, clip_module_prefix: str = "") -> dict[str, KeyMapping]:
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
