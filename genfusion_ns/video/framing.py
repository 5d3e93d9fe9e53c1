"""Frames of any size and aspect ratio in a model trained at one size: letterboxing.

A frame is scaled, aspect kept, to the largest size that fits the model's ``height x width``, centred, and the
rest is padded with the model's "nothing here" codes (black, disparity code -1: what empty render pixels look
like in training). The model's output is cropped back to that window and resized to the input size, so a portrait
phone frame goes through a landscape or square model without being squashed, and nothing of it is cut away.
Training (``diffusion_train``) frames its clips with the same function, so the model is trained on what it is
given. When the input's aspect ratio is within :data:`MAX_SQUASH` of the model's, the window is the whole frame and
this is a plain resize: the authors squash their 16:9 frames into the 1.6:1 model this way, and the released model
was trained so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

EMPTY_CODE = -1.0
"""Pad value of both the RGB code (black) and the disparity code (empty / far)."""
MAX_SQUASH = 0.12
"""Largest relative aspect-ratio change that is resized instead of letterboxed (16:9 into 1.6:1 is 11 %)."""


@dataclass(frozen=True)
class Letterbox:
    """Where an ``in_height x in_width`` frame sits inside the model's ``height x width`` frame."""

    in_height: int
    in_width: int
    height: int
    width: int
    top: int
    left: int
    inner_height: int
    inner_width: int

    @classmethod
    def fit(cls, in_height: int, in_width: int, height: int, width: int, max_squash: float = MAX_SQUASH) -> Letterbox:
        """Largest centred window of the model's frame with the input's aspect ratio (the whole frame when the
        aspect ratios differ by at most ``max_squash``)."""
        if min(in_height, in_width, height, width) < 1:
            raise ValueError(
                f"frame sizes must be positive, got {in_height}x{in_width} into {height}x{width}"
            )
        squash = (in_width / in_height) / (width / height)
        if max(squash, 1.0 / squash) <= 1.0 + max_squash:
            return cls(in_height, in_width, height, width, 0, 0, height, width)
        scale = min(height / in_height, width / in_width)
        inner_height = max(1, min(height, round(in_height * scale)))
        inner_width = max(1, min(width, round(in_width * scale)))
        return cls(in_height, in_width, height, width, (height - inner_height) // 2, (width - inner_width) // 2,
                   inner_height, inner_width)

    @property
    def is_full_frame(self) -> bool:
        """True when the frame fills the model's frame (no padding: the authors' plain resize)."""
        return (self.inner_height, self.inner_width) == (self.height, self.width)

    def pad(self, video: torch.Tensor, value: float = EMPTY_CODE) -> torch.Tensor:
        """``[..., inner_height, inner_width]`` -> ``[..., height, width]``, the border filled with ``value``."""
        if tuple(video.shape[-2:]) != (self.inner_height, self.inner_width):
            raise ValueError(
                f"expected frames of {self.inner_height}x{self.inner_width}, got {tuple(video.shape[-2:])}"
            )
        if self.is_full_frame:
            return video
        bottom = self.height - self.inner_height - self.top
        right = self.width - self.inner_width - self.left
        return F.pad(video, (self.left, right, self.top, bottom), value=value)

    def crop(self, video: torch.Tensor) -> torch.Tensor:
        """``[..., height, width]`` -> the frame's window ``[..., inner_height, inner_width]``."""
        return video[..., self.top : self.top + self.inner_height, self.left : self.left + self.inner_width]
