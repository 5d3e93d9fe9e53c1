"""Masked or sparse-view reconstruction in-process with a nerfstudio method, and its full-frame RGB-D renders along the capture.

Training goes through nerfstudio's own ``train_loop`` (as ``genfusion-demo`` does); the trained pipeline is loaded
back with ``eval_setup`` and rendered with :func:`genfusion_ns.fusion.repair.render_rgbd`, the same renderer that
produces the video model's inputs during fusion, so training data and inference inputs share one convention.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch


class ReconstructionError(RuntimeError):
    """The reconstruction method is unknown or its dataset cannot be used; the message says what to change."""


@dataclass
class CaptureRenders:
    """Full-frame renders and ground truth of every frame, in capture (file-name) order."""

    artifact_rgb: torch.Tensor  # [N, H, W, 3] float in [0, 1], colour on black
    artifact_depth: torch.Tensor  # [N, H, W] z-depth in pose units, 0 = nothing rendered
    target_rgb: torch.Tensor  # [N, H, W, 3] float in [0, 1]
    target_depth: torch.Tensor | None  # [N, H, W] from the dataset's depth files (pose units), or None
    image_filenames: list[str]


def train_reconstruction(dataset: Path, run_dir: Path, method: str, max_steps: int | None,
                         device: Literal["auto", "cpu", "cuda"], seed: int) -> Path:
    """Train ``method`` on ``dataset`` with nerfstudio's ``train_loop``; returns the run's ``config.yml``."""
    from genfusion_ns.runner import RunError, train_in_process, trainer_config

    try:
        trainer = trainer_config(method, dataset, run_dir, "reconstruction", "run", device=device, max_steps=max_steps)
    except RunError as error:
        raise ReconstructionError(str(error)) from error
    trainer.machine.seed = seed
    trainer.steps_per_save = trainer.max_num_iterations
    return train_in_process(trainer)


def _dataset_depths(outputs, heights: list[int], widths: list[int]) -> torch.Tensor | None:
    """The dataset's depth files in pose units (file value x depth_unit_scale_factor), or None without files."""
    from nerfstudio.data.utils.data_utils import get_depth_image_from_path

    files = outputs.metadata.get("depth_filenames")
    if not files:
        return None
    scale = float(outputs.metadata.get("depth_unit_scale_factor", 1e-3))
    depths = [get_depth_image_from_path(filepath=Path(f), height=h, width=w, scale_factor=scale)[..., 0]
              for f, h, w in zip(files, heights, widths)]
    return torch.stack(depths).float()


def render_capture(config_path: Path, include_eval: bool = False) -> CaptureRenders:
    """Load a trained run and render its frames full-frame, in file-name order (the capture trajectory).

    ``include_eval``: also the evaluation split (sparse-view reconstructions, whose held-out frames are the ones with
    artifacts); otherwise the training split only (masked reconstructions train on every frame).
    """
    from nerfstudio.utils.eval_utils import eval_setup

    from genfusion_ns.fusion.repair import render_rgbd

    _, pipeline, _, _ = eval_setup(config_path, test_mode="test")
    datamanager = pipeline.datamanager
    datasets = [datamanager.train_dataset] + ([datamanager.eval_dataset] if include_eval else [])
    rgbs, depths, targets, target_depths, names = [], [], [], [], []
    for dataset in datasets:
        outputs = dataset._dataparser_outputs
        cameras = dataset.cameras
        heights = [int(h) for h in cameras.height[:, 0]]
        widths = [int(w) for w in cameras.width[:, 0]]
        rgb, depth = render_rgbd(pipeline.model, cameras)
        rgbs.append(rgb)
        # Rendered depth is in the dataparser's normalised world; divide its scale out to get back to pose units.
        depths.append(depth / float(outputs.dataparser_scale))
        targets.append(torch.stack([dataset.get_image_float32(i)[..., :3] for i in range(len(dataset))]).float())
        target_depths.append(_dataset_depths(outputs, heights, widths))
        names.extend(str(p) for p in outputs.image_filenames)
    if len({tuple(t.shape[1:3]) for t in targets}) != 1 or len({tuple(r.shape[1:3]) for r in rgbs}) != 1:
        raise ReconstructionError("all frames of a scene must have the same resolution to form video clips")
    order = sorted(range(len(names)), key=lambda i: Path(names[i]).name)
    index = torch.tensor(order, dtype=torch.long)
    has_depth = all(d is not None for d in target_depths)
    return CaptureRenders(
        artifact_rgb=torch.cat(rgbs)[index].clamp(0.0, 1.0),
        artifact_depth=torch.cat(depths)[index].clamp_min(0.0),
        target_rgb=torch.cat(targets)[index],
        target_depth=torch.cat(target_depths)[index] if has_depth else None,
        image_filenames=[names[i] for i in order],
    )
