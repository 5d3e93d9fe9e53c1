"""Instantiate the four GenFusion networks from a :class:`~.configs.VideoModelConfig` (random weights).

Used for tests, for starting training, and (with ``device="meta"``) by the converter, which then assigns the
checkpoint tensors directly so the weights are never held twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from diffusers import AutoencoderKL
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from .configs import VideoModelConfig, load_model_config
from .image_proj import GenFusionResampler
from .unet import GenFusionUNet

COMPONENT_NAMES = ("unet", "image_proj", "image_encoder", "vae")


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Seed torch's CPU RNG for the block without disturbing the caller's RNG stream."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _placement(device: str | torch.device | None) -> Iterator[None]:
    """``"meta"``: parameters without storage (buffers stay real, so a later ``assign`` load leaves no meta
    tensor behind); otherwise the usual torch default-device context."""
    if device is None:
        yield
    elif torch.device(device).type == "meta":
        from accelerate import init_empty_weights

        with init_empty_weights(include_buffers=False):
            yield
    else:
        with torch.device(device):
            yield


def clip_vision_config(kwargs: dict) -> CLIPVisionConfig:
    """CLIP vision config with SDPA attention (the authors' tower is queried only for ``last_hidden_state``)."""
    return CLIPVisionConfig(**kwargs, attn_implementation="sdpa")


def build_component(
    name: str, config: VideoModelConfig, device: str | torch.device | None = None
) -> nn.Module:
    """One network by component name (``unet``, ``image_proj``, ``image_encoder`` or ``vae``), in eval mode."""
    with _placement(device):
        if name == "unet":
            module = GenFusionUNet(**config.unet)
        elif name == "image_proj":
            module = GenFusionResampler(**config.image_proj)
        elif name == "image_encoder":
            module = CLIPVisionModel(clip_vision_config(config.image_encoder))
        elif name == "vae":
            module = AutoencoderKL(**config.vae)
        else:
            raise ValueError(f"unknown component {name!r}; expected one of {COMPONENT_NAMES}")
    return module.eval()


def build_components(
    config: VideoModelConfig | str,
    seed: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, nn.Module]:
    """``{"unet", "image_proj", "image_encoder", "vae"}`` with random weights (deterministic for a given seed).

    ``config`` is a :class:`VideoModelConfig` or anything :func:`load_model_config` accepts (``"tiny"``,
    ``"full"``, a config file). ``device="meta"`` allocates no parameter storage (full-size structure checks,
    conversion).
    """
    if not isinstance(config, VideoModelConfig):
        config = load_model_config(config)
    with _seeded(seed):
        return {name: build_component(name, config, device) for name in COMPONENT_NAMES}
