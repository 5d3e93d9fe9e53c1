"""What a repair call returns, apart from the pipeline so that callers can name the type and its layouts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils import BaseOutput

ArrayLike = np.ndarray | torch.Tensor
OUTPUT_TYPES = ("np", "pt", "latent")


@dataclass
class GenFusionVideoPipelineOutput(BaseOutput):
    """Result of a repair call.

    Attributes:
        rgb: repaired video ``[T, H, W, 3]`` in [0, 1] at the input resolution (``None`` for
            ``output_type="latent"``).
        depth: repaired metric depth ``[T, H, W]`` on the input depth's scale (``None`` for ``"latent"``).
        latents: final latents ``[num_clips, 4, F, h, w]`` (F = the model's clip length), before decoding.
        depth_code: decoded disparity code ``[T, h', w']`` in [-1, 1] at the model resolution (the authors'
            ``out_depth_pm1``), for consumers that work in normalised disparity (``None`` for ``"latent"``).
    """

    rgb: ArrayLike | None
    depth: ArrayLike | None
    latents: ArrayLike
    depth_code: ArrayLike | None = None
