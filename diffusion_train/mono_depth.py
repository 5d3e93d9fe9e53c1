"""Target depth for captures without depth files: a local transformers depth-estimation model, aligned to the scene.

The paper's ground-truth depth comes from a monocular video-depth model. Any ``transformers`` depth-estimation
checkpoint works here (``pipeline("depth-estimation", model=...)``); it must already be on disk (a folder or a
cached hub id) because nothing is downloaded at run time. Relative models (Depth Anything, DPT) predict affine-
invariant *disparity*; metric ones (ZoeDepth, Depth Anything metric) predict depth in metres. Either way the
prediction is aligned to the masked reconstruction's rendered depth where that render is valid, so the target depth
is in the same pose units as the artifact depth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

MIN_ALIGNMENT_PIXELS = 16


class MonoDepthUnavailable(RuntimeError):
    """The requested depth model is not available offline; the message says how to provide it."""


def local_model_folder(model: str) -> str:
    """A local folder as is; a hub id resolved from the local cache only (no network access)."""
    if Path(model).is_dir():
        return model
    from huggingface_hub import snapshot_download

    return snapshot_download(model, local_files_only=True)


class MonocularDepth:
    """Per-frame monocular predictions from a local transformers depth-estimation model."""

    def __init__(self, model: str, device: str | torch.device = "cpu"):
        from transformers import pipeline

        try:
            self.estimator = pipeline("depth-estimation", model=local_model_folder(model), device=torch.device(device))
        except (OSError, ValueError) as error:
            raise MonoDepthUnavailable(
                f"could not load the depth-estimation model {model!r} offline ({error}). Download it once on a "
                "machine with internet access (e.g. `huggingface-cli download depth-anything/Depth-Anything-V2-"
                "Small-hf --local-dir <folder>`) and pass --mono-depth-model <folder>, or use scenes with depth "
                "files (transforms.json `depth_file_path`).") from error
        self.model = model

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, H, W, 3]`` in [0, 1] -> raw predictions ``[N, H, W]`` (the model's own units)."""
        from PIL import Image

        predictions = []
        for image in images:
            pil = Image.fromarray((image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
            raw = torch.as_tensor(self.estimator(pil)["predicted_depth"]).float()
            raw = raw.reshape(1, 1, *raw.shape[-2:])
            predictions.append(F.interpolate(raw, size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0])
        return torch.stack(predictions).cpu()


def _least_squares(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    design = torch.stack([x, torch.ones_like(x)], dim=1).double()
    solution = torch.linalg.lstsq(design, y.double()[:, None]).solution[:, 0]
    return float(solution[0]), float(solution[1])


def align_to_render(prediction: torch.Tensor, kind: Literal["disparity", "depth"], render_depth: torch.Tensor
                    ) -> torch.Tensor:
    """Monocular prediction ``[N, H, W]`` -> z-depth in the render's units (0 where the alignment gives none).

    ``"disparity"``: per frame, least-squares scale + shift of the prediction onto the render's disparity ``1/z``
    over the pixels the render covers (the sequence-wide fit when a frame has too few valid pixels or a non-positive
    scale). ``"depth"``: one sequence-wide scale (median ratio). Raises when the render covers nothing to align to.
    """
    valid = render_depth > 0
    if int(valid.sum()) < MIN_ALIGNMENT_PIXELS:
        raise ValueError("the reconstruction renders (almost) nothing, so the monocular depth cannot be aligned")
    if kind == "depth":
        scale = float(torch.median(render_depth[valid] / prediction[valid].clamp_min(1e-8)))
        return (prediction * scale).clamp_min(0.0)
    fits: list[tuple[float, float] | None] = []
    for frame, frame_valid, frame_render in zip(prediction, valid, render_depth):
        fit = None
        if int(frame_valid.sum()) >= MIN_ALIGNMENT_PIXELS:
            fit = _least_squares(frame[frame_valid], 1.0 / frame_render[frame_valid])
        fits.append(fit if fit is not None and fit[0] > 0 else None)
    if any(fit is None for fit in fits):
        global_fit = _least_squares(prediction[valid], 1.0 / render_depth[valid])
        if global_fit[0] <= 0:
            raise ValueError("the monocular prediction anti-correlates with the render's disparity; is it metric "
                             "depth? use --mono-depth-kind depth")
        fits = [fit if fit is not None else global_fit for fit in fits]
    depths = []
    for frame, (scale, shift) in zip(prediction, fits):
        disparity = scale * frame + shift
        depths.append(torch.where(disparity > 1e-8, 1.0 / disparity.clamp_min(1e-8), torch.zeros_like(frame)))
    return torch.stack(depths).float()


def monocular_target_depth(model: str | None, kind: Literal["disparity", "depth"], images: torch.Tensor,
                           render_depth: torch.Tensor, device: str) -> torch.Tensor:
    """Target depth for a scene without depth files (error with instructions when no model is given)."""
    if model is None:
        raise MonoDepthUnavailable(
            "this scene has no depth files; pass --mono-depth-model <local folder of a transformers "
            "depth-estimation model> (e.g. Depth Anything V2) to estimate target depth.")
    estimator = MonocularDepth(model, device)
    return align_to_render(estimator(images), kind, render_depth)
