"""A repair call's video as model-length clips: input checks, each window in the model's codes, and back.

Apart from the sampler so that the windowing (which frames each clip produces, how short videos are padded)
and the input contract can be read, and tested, without the networks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .output import OUTPUT_TYPES, ArrayLike
from .preprocess import (
    DisparityRange,
    clip_windows,
    depth_to_disparity_code,
    disparity_code_to_depth,
    pad_frames,
    rgb_from_model,
    rgb_to_model,
)


@dataclass
class PreparedClip:
    """One model-length window of the input, in the model's conventions."""

    start: int
    first_new: int
    num_valid: int
    rgb_code: torch.Tensor  # [3, F, h, w] in [-1, 1]
    depth_code: torch.Tensor  # [1, F, h, w] in [-1, 1]
    disparity_range: DisparityRange | None


def as_float_tensor(name: str, value: ArrayLike) -> torch.Tensor:
    """Accept numpy or torch inputs; everything downstream is float torch."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")
    return value.float()


def check_inputs(rgb: torch.Tensor, depth: torch.Tensor, reference: torch.Tensor, output_type: str) -> None:
    """Refuse shapes and value ranges the model would silently misread (e.g. 8-bit images)."""
    if rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise ValueError(f"artifact_rgb must have shape [T, H, W, 3] in [0, 1], got {tuple(rgb.shape)}")
    if depth.shape != rgb.shape[:3]:
        raise ValueError(
            f"artifact_depth must have shape [T, H, W] = {tuple(rgb.shape[:3])}, got {tuple(depth.shape)}"
        )
    if reference.ndim != 3 or reference.shape[-1] != 3:
        raise ValueError(
            f"reference_image must have shape [H, W, 3] in [0, 1], got {tuple(reference.shape)}"
        )
    for name, image in (("artifact_rgb", rgb), ("reference_image", reference)):
        low, high = float(image.min()), float(image.max())
        if low < -1e-3 or high > 1.0 + 1e-3:
            raise ValueError(
                f"{name} must hold values in [0, 1], got [{low:.3g}, {high:.3g}] "
                "(divide 8-bit images by 255)"
            )
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")


def per_clip(name: str, value: torch.Tensor | None, clip: int, count: int, dims: int) -> torch.Tensor | None:
    """Clip ``clip`` of an explicit per-clip tensor whose leading axis indexes the clips."""
    if value is None:
        return None
    if value.ndim != dims or value.shape[0] != count:
        raise ValueError(
            f"{name} must have {dims} dims with {count} clip(s) on its leading axis, "
            f"got {tuple(value.shape)}"
        )
    return value[clip]


def prepare_clips(
    artifact_rgb: torch.Tensor, artifact_depth: torch.Tensor, length: int, height: int, width: int
) -> list[PreparedClip]:
    """Cut the video into windows of ``length`` frames and convert each to the model's RGB / disparity codes
    at ``height`` x ``width``.

    A video shorter than the clip length is padded by repeating its last frame (the padded frames are
    dropped from the output); the depth normalisation is per window, as the authors normalise per 16-frame
    window.
    """
    clips = []
    for start, first_new in clip_windows(artifact_rgb.shape[0], length):
        rgb = artifact_rgb[start : start + length]
        depth = artifact_depth[start : start + length]
        num_valid = rgb.shape[0]
        rgb, depth = pad_frames(rgb, length), pad_frames(depth, length)
        depth_code, disparity_range = depth_to_disparity_code(depth, height, width)
        clips.append(
            PreparedClip(
                start=start,
                first_new=first_new,
                num_valid=num_valid,
                rgb_code=rgb_to_model(rgb, height, width),
                depth_code=depth_code,
                disparity_range=disparity_range,
            )
        )
    return clips


def clip_outputs(
    decoded: torch.Tensor, clip: PreparedClip, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RGB, metric depth (input resolution), disparity code (model resolution) of a clip's new frames."""
    keep = slice(clip.first_new - clip.start, clip.num_valid)
    code = decoded[3, keep].clamp(-1.0, 1.0)
    rgb = rgb_from_model(decoded[:3, keep], height, width)
    return rgb, disparity_code_to_depth(code, clip.disparity_range, height, width), code
