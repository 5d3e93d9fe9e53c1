"""What the fusion rounds need from a video model, as a ``typing.Protocol``.

``GenFusionVideoPipeline`` (``default``, ``random-tiny``, converted or trained folders) and the ``identity``
stand-in (:class:`~genfusion_ns.fusion.video_model.IdentityRepair`) all satisfy :class:`VideoRepairModel`, so
code that runs a repair round is written, and checked, against this contract instead of the diffusers class.
Imports nothing heavy: annotating with it does not load diffusers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class VideoClipConfig(Protocol):
    """The model settings a caller plans clips with: clip length and model resolution."""

    num_frames: int
    height: int
    width: int


@runtime_checkable
class VideoRepairOutput(Protocol):
    """A repaired clip: ``rgb`` ``[T, H, W, 3]`` in [0, 1], metric ``depth`` ``[T, H, W]``, at the input
    size."""

    rgb: Any
    depth: Any


@runtime_checkable
class VideoRepairModel(Protocol):
    """A video model a repair round can use: clip settings, placement, and the repair call.

    The call takes the rendered clip ``[T, H, W, 3]`` / ``[T, H, W]`` and a reference image ``[H_r, W_r, 3]``
    positionally and the sampling settings by keyword; an implementation may ignore settings it has no use
    for.
    """

    @property
    def config(self) -> VideoClipConfig: ...

    @property
    def device(self) -> torch.device: ...

    def to(self, *args: Any, **kwargs: Any) -> VideoRepairModel: ...

    def set_progress_bar_config(self, **kwargs: Any) -> None: ...

    def __call__(
        self,
        artifact_rgb: torch.Tensor,
        artifact_depth: torch.Tensor,
        reference_image: torch.Tensor,
        /,
        *,
        num_inference_steps: int = ...,
        timestep_spacing: str = ...,
        guidance_scale: float = ...,
        guidance_rescale: float = ...,
        generator: torch.Generator | None = ...,
        output_type: str = ...,
        strength: float = ...,
    ) -> VideoRepairOutput: ...


@dataclass
class ClipGeometry:
    """A plain :class:`VideoClipConfig`, for stand-ins that have no diffusers config."""

    num_frames: int
    height: int
    width: int


@dataclass
class RepairedRGBD:
    """A plain :class:`VideoRepairOutput`, for stand-ins that have no diffusers output type."""

    rgb: torch.Tensor
    depth: torch.Tensor
