"""Pixel-space conventions of the GenFusion video model: RGB-D packing, depth <-> disparity code, CLIP input.

The model sees RGB in [-1, 1] and depth as a *disparity code*: disparity ``1 / depth`` min-max normalised over
the valid pixels of the whole clip (all frames jointly), mapped to [-1, 1], with empty pixels (depth 0) at -1
("far"). The authors return ``1 / n`` of the decoded normalised disparity ``n``, which has no metric meaning;
we keep the per-clip (min, max) disparity and undo it, so the returned depth is on the input depth's scale.

Layouts: user-facing videos are frames-last ``[T, H, W, 3]`` / ``[T, H, W]``; model-side videos are
channel-first ``[C, T, H, W]`` like the authors' code.

These functions are the only implementation of the conventions: the pipeline and ``diffusion_train`` (training
data, reference dropout, VAE frames) both call them, so what the model is trained on is what it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_IMAGE_SIZE = 224
DISPARITY_EPS = 1e-10


@dataclass(frozen=True)
class DisparityRange:
    """Per-clip disparity normalisation: ``code = 2 * (disp - low) / (high - low) - 1`` on valid pixels."""

    low: float
    high: float

    def normalize(self, disparity: torch.Tensor) -> torch.Tensor:
        """Normalised disparity in [0, 1]; a degenerate range (one depth value in the clip) maps to 1."""
        span = self.high - self.low
        if span <= 0:
            return torch.ones_like(disparity)
        return (disparity - self.low) / span

    def denormalize(self, normalized: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`: normalised disparity in [0, 1] back to disparity."""
        return self.low + normalized * (self.high - self.low)


def _check_video(name: str, video: torch.Tensor, channels: int | None) -> None:
    expected = "[T, H, W]" if channels is None else f"[T, H, W, {channels}]"
    ndim = 3 if channels is None else 4
    if video.ndim != ndim or (channels is not None and video.shape[-1] != channels):
        raise ValueError(f"{name} must have shape {expected}, got {tuple(video.shape)}")
    if not torch.is_floating_point(video):
        raise ValueError(f"{name} must be a floating-point tensor, got {video.dtype}")


def rgb_to_model(rgb: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[T, H, W, 3]`` in [0, 1] -> ``[3, T, height, width]`` in [-1, 1] (trilinear, T kept) as the
    authors do."""
    _check_video("rgb", rgb, 3)
    video = (rgb * 2.0 - 1.0).permute(3, 0, 1, 2)[None]
    if video.shape[-2:] != (height, width):
        video = F.interpolate(
            video, size=(video.shape[2], height, width), mode="trilinear", align_corners=False
        )
    return video[0]


def rgb_from_model(rgb_code: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[3, T, h, w]`` in [-1, 1] -> ``[T, height, width, 3]`` in [0, 1] (clamped; bilinear per frame)."""
    video = rgb_code.clamp(-1.0, 1.0)[None]
    if video.shape[-2:] != (height, width):
        video = F.interpolate(
            video, size=(video.shape[2], height, width), mode="trilinear", align_corners=False
        )
        video = video.clamp(-1.0, 1.0)
    return ((video[0] + 1.0) / 2.0).permute(1, 2, 3, 0)


def depth_to_disparity_code(
    depth: torch.Tensor, height: int, width: int, disparity_range: DisparityRange | None = None
) -> tuple[torch.Tensor, DisparityRange | None]:
    """Metric depth ``[T, H, W]`` (0 = empty) -> disparity code ``[1, T, height, width]`` + the clip range.

    Min and max are taken over the valid pixels of the whole clip at the input resolution, then the code is
    resized with nearest neighbour (no mixing across depth edges). A clip without any valid pixel is all -1
    and has no range (``None``). A given ``disparity_range`` is used instead of the clip's own (codes outside
    it are clamped to [-1, 1]): training codes a target clip in its artifact clip's range, which is the range
    the pipeline maps the repaired code back with.
    """
    _check_video("depth", depth, None)
    if bool((depth < 0).any()) or not bool(torch.isfinite(depth).all()):
        raise ValueError("depth must be finite and >= 0 (0 marks empty pixels)")
    valid = depth > 0
    disparity = torch.where(valid, 1.0 / (depth + DISPARITY_EPS), torch.zeros_like(depth))
    given = disparity_range is not None
    if not given and bool(valid.any()):
        valid_disparity = disparity[valid]
        disparity_range = DisparityRange(float(valid_disparity.min()), float(valid_disparity.max()))
    if disparity_range is None:
        normalized = torch.zeros_like(disparity)
    else:
        normalized = disparity_range.normalize(disparity)
        if given:
            normalized = normalized.clamp(0.0, 1.0)
        normalized = torch.where(valid, normalized, torch.zeros_like(disparity))
    code = (normalized * 2.0 - 1.0)[None, None]
    if code.shape[-2:] != (height, width):
        code = F.interpolate(code, size=(code.shape[2], height, width), mode="nearest")
    return code[0], disparity_range


def pack_rgbd(rgb_code: torch.Tensor, depth_code: torch.Tensor) -> torch.Tensor:
    """RGB codes ``[..., 3, F, h, w]`` + disparity codes ``[..., 1, F, h, w]`` -> RGB-D ``[..., 4, F, h, w]``:
    the 4-channel image the VAE encodes and decodes in one pass (depth is the last channel)."""
    return torch.cat([rgb_code, depth_code], dim=-4)


def rgbd_frames(rgb_code: torch.Tensor, depth_code: torch.Tensor) -> torch.Tensor:
    """RGB and disparity codes of one clip ``[3|1, F, h, w]`` (or a batch ``[B, 3|1, F, h, w]``) -> the frames
    ``[N, 4, h, w]`` the per-frame VAE sees (N = F, or B x F clip by clip)."""
    return pack_rgbd(rgb_code, depth_code).transpose(-4, -3).flatten(0, -4)


def null_reference_like(reference: torch.Tensor) -> torch.Tensor:
    """The "no reference" image: all zeros in [-1, 1] (mid-grey). Training drops the reference to it and the
    pipeline's unconditional guidance branch encodes it, so both must use this one image."""
    return torch.zeros_like(reference)


def disparity_code_to_depth(
    depth_code: torch.Tensor, disparity_range: DisparityRange | None, height: int, width: int
) -> torch.Tensor:
    """Disparity code ``[T, h, w]`` -> metric depth ``[T, height, width]`` on the input clip's scale.

    The code is clamped to [-1, 1], so the result lies between the clip's nearest and farthest input depths
    (regions the model marks as "far", e.g. sky, come back at the farthest depth). Without a range (no valid
    input depth) the output is all 0 = empty. Resized back with nearest neighbour.
    """
    code = depth_code.clamp(-1.0, 1.0)
    if code.shape[-2:] != (height, width):
        code = F.interpolate(code[None, None], size=(code.shape[0], height, width), mode="nearest")[0, 0]
    if disparity_range is None:
        return torch.zeros_like(code)
    disparity = disparity_range.denormalize((code + 1.0) / 2.0)
    return 1.0 / disparity.clamp_min(torch.finfo(disparity.dtype).tiny)


def _gaussian_kernel1d(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    offsets = torch.arange(size, dtype=dtype, device=device) - size // 2
    weights = torch.exp(-offsets.pow(2) / (2.0 * sigma**2))
    return weights / weights.sum()


def _blur_axis(images: torch.Tensor, sigma: float, axis: int) -> torch.Tensor:
    """Gaussian blur along H (axis=2) or W (axis=3) with reflect borders; kernel size rule of kornia 0.7."""
    size = int(max(4.0 * sigma, 3.0))
    size += 1 - size % 2
    kernel = _gaussian_kernel1d(size, sigma, images.dtype, images.device)
    channels = images.shape[1]
    pad = size // 2
    if axis == 3:
        weight = kernel.view(1, 1, 1, size).expand(channels, 1, 1, size)
        padded = F.pad(images, (pad, pad, 0, 0), mode="reflect")
    else:
        weight = kernel.view(1, 1, size, 1).expand(channels, 1, size, 1)
        padded = F.pad(images, (0, 0, pad, pad), mode="reflect")
    return F.conv2d(padded, weight, groups=channels)


def antialiased_squash_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``[B, C, H, W]`` to ``size x size`` ignoring the aspect ratio, like the authors' kornia call.

    Bicubic with ``align_corners=True``; when either axis shrinks, each shrinking axis is first
    Gaussian-blurred with ``sigma = (in / out - 1) / 2`` (an axis that does not shrink gets kornia's sigma
    0.001, an exact identity).
    """
    height, width = images.shape[-2:]
    factors = (height / size, width / size)
    if max(factors) > 1.0:
        if factors[1] > 1.0:
            images = _blur_axis(images, (factors[1] - 1.0) / 2.0, axis=3)
        if factors[0] > 1.0:
            images = _blur_axis(images, (factors[0] - 1.0) / 2.0, axis=2)
    return F.interpolate(images, size=(size, size), mode="bicubic", align_corners=True)


def clip_preprocess(
    images: torch.Tensor,
    size: int = CLIP_IMAGE_SIZE,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> torch.Tensor:
    """Reference images ``[B, 3, H, W]`` in [-1, 1] -> CLIP pixel values ``[B, 3, size, size]``.

    Squash resize (no centre crop, unlike ``CLIPImageProcessor``), then [0, 1], then CLIP mean/std; this is
    the input the released image tower was used with.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"reference images must have shape [B, 3, H, W], got {tuple(images.shape)}")
    resized = (antialiased_squash_resize(images, size) + 1.0) / 2.0
    mean_t = torch.tensor(mean, dtype=resized.dtype, device=resized.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=resized.dtype, device=resized.device).view(1, 3, 1, 1)
    return (resized - mean_t) / std_t


def clip_windows(num_frames: int, clip_length: int) -> list[tuple[int, int]]:
    """Split ``num_frames`` into windows ``(start, first_new)`` of ``clip_length`` frames covering all.

    Windows start at 0, L, 2L, ...; when ``num_frames`` is not a multiple of L the tail window is moved back
    to end on the last frame, so it overlaps the previous window; its frames before ``first_new`` are already
    produced by earlier windows and are dropped (the earlier result is kept, as in the authors' overlapping
    windows). Videos shorter than L are one window that the caller pads.
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    if clip_length < 1:
        raise ValueError(f"clip_length must be >= 1, got {clip_length}")
    if num_frames <= clip_length:
        return [(0, 0)]
    windows = [(start, start) for start in range(0, num_frames - clip_length + 1, clip_length)]
    covered = windows[-1][0] + clip_length
    if covered < num_frames:
        windows.append((num_frames - clip_length, covered))
    return windows


def pad_frames(video: torch.Tensor, length: int) -> torch.Tensor:
    """Repeat the last frame of ``video`` ``[T, ...]`` up to ``length`` frames: how a video shorter than the
    clip length becomes one clip (the pipeline drops the padded frames from its outputs again)."""
    if video.shape[0] >= length:
        return video
    return torch.cat([video, video[-1:].expand(length - video.shape[0], *video.shape[1:])])
