"""Exposure compensation: a colour affine per training photo (gain and offset per channel), applied to the render
before the photometric loss.

Why: phones change exposure and white balance from photo to photo; without it the surfels average those changes
into view-dependent colour and floaters. The scene itself keeps one appearance: the affines' mean over the photos is
held at identity, so views rendered without one (held-out photos, the viewer, repair rounds) see the average
exposure, and views that are not training photos (repaired frames) are left as rendered.
"""

from __future__ import annotations

import torch
from torch import Tensor


class ExposureCompensation(torch.nn.Module):
    """``num_images`` colour affines, identity at start; index ``>= num_images`` means "no photo": unchanged. With
    one photo the mean is that photo's affine, so there is nothing to compensate."""

    def __init__(self, num_images: int):
        super().__init__()
        self.num_images = int(num_images)
        self.log_gain = torch.nn.Parameter(torch.zeros(self.num_images, 3))
        self.offset = torch.nn.Parameter(torch.zeros(self.num_images, 3))

    def affine(self) -> tuple[Tensor, Tensor]:
        """Per-photo ``(gain [N,3], offset [N,3])`` with the mean log-gain and mean offset removed."""
        gain = torch.exp(self.log_gain - self.log_gain.mean(dim=0, keepdim=True))
        offset = self.offset - self.offset.mean(dim=0, keepdim=True)
        return gain, offset

    def forward(self, rgb: Tensor, image_index: int) -> Tensor:
        """``rgb [..., 3]`` as photo ``image_index`` would have recorded it."""
        if not 0 <= image_index < self.num_images or self.num_images < 2:
            return rgb
        gain, offset = self.affine()
        return rgb * gain[image_index].to(rgb.dtype) + offset[image_index].to(rgb.dtype)
