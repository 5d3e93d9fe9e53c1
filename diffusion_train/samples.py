"""Sample logging during training: repair one fixed clip with the current weights and show it as an image grid.

Rows: artifact RGB, repaired RGB, target RGB, artifact depth, repaired depth, target depth (depths as disparity
normalised per row, black = nothing); columns: frames. Written to tensorboard (``samples/repair``) and to
``<output>/samples/step-N.png``.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def _disparity_rows(depths: list[torch.Tensor]) -> list[torch.Tensor]:
    """Depth videos ``[F, H, W]`` -> grey RGB videos in [0, 1] (near = bright), one shared range for comparability."""
    disparities = [torch.where(d > 0, 1.0 / d.clamp_min(1e-8), torch.zeros_like(d)) for d in depths]
    valid = torch.cat([d[d > 0] for d in disparities]) if any((d > 0).any() for d in disparities) else None
    low, high = (float(valid.min()), float(valid.max())) if valid is not None else (0.0, 1.0)
    span = max(high - low, 1e-8)
    rows = []
    for disparity in disparities:
        grey = torch.where(disparity > 0, 0.1 + 0.9 * (disparity - low) / span, torch.zeros_like(disparity))
        rows.append(grey.clamp(0, 1)[..., None].expand(*grey.shape, 3))
    return rows


def sample_grid(rows: list[torch.Tensor]) -> np.ndarray:
    """Videos ``[F, H, W, 3]`` in [0, 1] -> uint8 image ``[rows*H, F*W, 3]``."""
    grid = torch.cat([torch.cat(list(video), dim=1) for video in rows], dim=0)
    return (grid.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


@torch.no_grad()
def repair_sample(pipe, raw: dict[str, torch.Tensor], steps: int, guidance_scale: float, seed: int) -> np.ndarray:
    """Repair ``raw`` (a :meth:`ClipDataset.raw` window) and return the comparison grid."""
    unet_was_training = pipe.unet.training
    pipe.unet.eval()
    try:
        generator = torch.Generator(device="cpu").manual_seed(seed)
        out = pipe(raw["artifact_rgb"], raw["artifact_depth"], raw["target_rgb"][0], num_inference_steps=steps,
                   guidance_scale=guidance_scale, timestep_spacing="uniform_trailing", generator=generator,
                   output_type="pt")
    finally:
        pipe.unet.train(unet_was_training)
    rgb_rows = [raw["artifact_rgb"], out.rgb.float().cpu(), raw["target_rgb"]]
    depth_rows = _disparity_rows([raw["artifact_depth"], out.depth.float().cpu(), raw["target_depth"]])
    return sample_grid(rgb_rows + depth_rows)


def log_sample(accelerator, pipe, dataset, config, step: int) -> np.ndarray:
    """Repair the dataset's first clip, log it to tensorboard and save it as a PNG (main process only)."""
    grid = repair_sample(pipe, dataset.raw(0), config.sample_steps, config.sample_guidance_scale, config.seed)
    folder = config.output / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(folder / f"step-{step:07d}.png")
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("samples/repair", grid, step, dataformats="HWC")
    return grid
