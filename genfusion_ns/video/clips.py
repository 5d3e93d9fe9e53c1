"""A repair call's video as model-length clips: input checks, each window in the model's codes, and back.

Apart from the sampler so that the windowing (which frames each clip produces, how short videos are padded)
and the input contract can be read, and tested, without the networks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .framing import Letterbox
from .output import OUTPUT_TYPES, ArrayLike
from .preprocess import (
    DisparityRange,
    clip_windows,
    depth_to_disparity_code,
    disparity_code_to_depth,
    pack_rgbd,
    pad_frames,
    rgb_from_model,
    rgb_to_model,
)


@dataclass
class PreparedClip:
    """One model-length window of the input, in the model's conventions (letterboxed to the model's size)."""

    start: int
    first_new: int
    num_valid: int
    rgb_code: torch.Tensor  # [3, F, h, w] in [-1, 1]
    depth_code: torch.Tensor  # [1, F, h, w] in [-1, 1]
    disparity_range: DisparityRange | None
    letterbox: Letterbox
    rgb: torch.Tensor  # [F, H, W, 3] the input frames (padded to F), for residual decoding at the input size
    depth: torch.Tensor  # [F, H, W]


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


def frame_codes(
    rgb: torch.Tensor, depth: torch.Tensor, letterbox: Letterbox, disparity_range: DisparityRange | None = None
) -> tuple[torch.Tensor, torch.Tensor, DisparityRange | None]:
    """Frames ``[T, H, W, 3]`` / ``[T, H, W]`` -> letterboxed RGB and disparity codes ``[3|1, T, h, w]`` and the
    disparity range used (the clip's own unless one is given; see :func:`.preprocess.depth_to_disparity_code`).

    The one implementation of "frames of any size to what the model sees": training data goes through it too.
    """
    depth_code, disparity_range = depth_to_disparity_code(
        depth, letterbox.inner_height, letterbox.inner_width, disparity_range
    )
    rgb_code = rgb_to_model(rgb, letterbox.inner_height, letterbox.inner_width)
    return letterbox.pad(rgb_code), letterbox.pad(depth_code), disparity_range


def prepare_clips(
    artifact_rgb: torch.Tensor, artifact_depth: torch.Tensor, length: int, height: int, width: int
) -> list[PreparedClip]:
    """Cut the video into windows of ``length`` frames and convert each to the model's RGB / disparity codes,
    letterboxed into ``height`` x ``width`` (see :mod:`.framing`).

    A video shorter than the clip length is padded by repeating its last frame (the padded frames are
    dropped from the output); the depth normalisation is per window, as the authors normalise per 16-frame
    window.
    """
    letterbox = Letterbox.fit(artifact_rgb.shape[1], artifact_rgb.shape[2], height, width)
    clips = []
    for start, first_new in clip_windows(artifact_rgb.shape[0], length):
        rgb = artifact_rgb[start : start + length]
        depth = artifact_depth[start : start + length]
        num_valid = rgb.shape[0]
        rgb, depth = pad_frames(rgb, length), pad_frames(depth, length)
        rgb_code, depth_code, disparity_range = frame_codes(rgb, depth, letterbox)
        clips.append(
            PreparedClip(
                start=start,
                first_new=first_new,
                num_valid=num_valid,
                rgb_code=rgb_code,
                depth_code=depth_code,
                disparity_range=disparity_range,
                letterbox=letterbox,
                rgb=rgb,
                depth=depth,
            )
        )
    return clips


def smooth_change(change: torch.Tensor, sigma: float) -> torch.Tensor:
    """``change`` ``[C, F, h, w]`` blurred over ``h, w`` by a Gaussian of ``sigma`` pixels (reflected at the edges).

    A small model's change to a render it has never seen is information at low frequencies (colour, shading, what
    fills an empty region) and mostly noise at high ones (its training textures' speckle); this keeps the former
    (measured in docs/benchmarks.md, "Where masked-2 loses")."""
    from torchvision.transforms.functional import gaussian_blur

    radius = min(int(np.ceil(3.0 * sigma)), min(change.shape[-2:]) - 1)  # reflection needs radius < size
    if sigma <= 0 or radius < 1:
        return change
    size = 2 * radius + 1
    return gaussian_blur(change, kernel_size=[size, size], sigma=[float(sigma), float(sigma)])


def clip_outputs(
    decoded: torch.Tensor, clip: PreparedClip, unchanged: torch.Tensor | None = None, change_sigma: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RGB and metric depth (input size), disparity code (the model-resolution window) of a clip's new frames.

    ``decoded`` is the decoded repaired latent ``[4, F, h, w]``. With ``unchanged`` (the decode of the clip's own
    input latent) the output is residual: the input frames at their own size plus the model's change
    ``decoded - unchanged`` resized to it, so a weak VAE's blur never replaces the render's detail; ``change_sigma``
    (model pixels) keeps only the change's low frequencies (:func:`smooth_change`).
    """
    keep = slice(clip.first_new - clip.start, clip.num_valid)
    window = clip.letterbox.crop(decoded[:, keep])
    height, width = clip.letterbox.in_height, clip.letterbox.in_width
    if unchanged is None:
        if change_sigma > 0:
            raise ValueError("change_sigma smooths the model's change to the render: it needs residual decoding")
        code = window[3].clamp(-1.0, 1.0)
        rgb = rgb_from_model(window[:3], height, width)
        return rgb, disparity_code_to_depth(code, clip.disparity_range, height, width), code
    change = smooth_change(window - clip.letterbox.crop(unchanged[:, keep]), change_sigma)
    model_code = (clip.letterbox.crop(pack_rgbd(clip.rgb_code, clip.depth_code)[:, keep]).to(change)
                  + change)[3].clamp(-1.0, 1.0)
    if change.shape[-2:] != (height, width):
        frames = change.shape[1]
        change = torch.cat([
            F.interpolate(change[None, :3], size=(frames, height, width), mode="trilinear", align_corners=False)[0],
            F.interpolate(change[None, 3:], size=(frames, height, width), mode="nearest")[0],
        ])
    input_rgb = rgb_to_model(clip.rgb[keep], height, width).to(change)
    input_depth, _ = depth_to_disparity_code(clip.depth[keep], height, width, clip.disparity_range)
    rgb = rgb_from_model(input_rgb + change[:3], height, width)
    depth_code = (input_depth.to(change) + change[3:])[0]
    return rgb, disparity_code_to_depth(depth_code, clip.disparity_range, height, width), model_code
