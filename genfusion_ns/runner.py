"""Train a registered nerfstudio method in-process and evaluate it as ``ns-eval`` does.

Shared by ``genfusion-demo``, ``genfusion-bench``, ``genfusion-make-data``, the benchmarks and the tests:
they run nerfstudio's own ``train_loop`` on a dataset folder and score the held-out views with
``eval_setup`` + ``get_average_eval_image_metrics``, so the numbers are the ones ``ns-train`` / ``ns-eval``
would give. A module of its own, so that training does not depend on the bench.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

if TYPE_CHECKING:
    from nerfstudio.engine.trainer import TrainerConfig

REPORTED_METRICS = ("psnr", "ssim", "lpips", "num_rays_per_sec", "fps")


class RunError(RuntimeError):
    """A method cannot be trained or evaluated as asked; the message says what to change."""


@dataclass
class RunEvaluation:
    """What ``ns-eval`` reports for a run, plus the size of the trained model and the fusion pipeline's repair
    time."""

    metrics: dict[str, float]
    """Means over the held-out views (``lpips`` absent when its weights are not available offline)."""
    num_surfels: int | None
    """Gaussians / surfels in the checkpoint (None for models without ``num_points``)."""
    repair_seconds: float | None
    """Wall time of the repair rounds recorded in the checkpoint (None: the method has no repair rounds)."""


def trainer_config(
    method: str,
    data: Path,
    output_dir: Path,
    experiment_name: str,
    timestamp: str,
    device: Literal["auto", "cpu", "cuda"] = "auto",
    max_steps: int | None = None,
    video_model: str | None = None,
    trajectory: str | None = None,
) -> TrainerConfig:
    """The registered ``method``'s ``TrainerConfig`` on ``data``, set up for an unattended in-process run.

    ``video_model`` / ``trajectory`` apply to the fusion methods only (others have no repair rounds).
    """
    from nerfstudio.configs.method_configs import all_methods

    if method not in all_methods:
        raise RunError(
            f"unknown method {method!r}; installed GenFusion methods: "
            f"{sorted(m for m in all_methods if m.startswith('genfusion'))} (and nerfstudio's, e.g. "
            "splatfacto)."
        )
    config = copy.deepcopy(all_methods[method])
    config.pipeline.datamanager.data = data
    config.output_dir = output_dir
    config.experiment_name = experiment_name
    config.timestamp = timestamp
    config.vis = "tensorboard"
    config.viewer.quit_on_train_completion = True
    if device != "auto":
        config.machine.device_type = device
    if max_steps is not None:  # the fusion rounds are fractions of the run: they move with it
        config.max_num_iterations = max_steps
        config.steps_per_save = min(config.steps_per_save, max_steps)
    # Evaluated once at the end, by evaluate_run.
    config.steps_per_eval_image = config.steps_per_eval_batch = config.steps_per_eval_all_images = 10**9
    if video_model is not None and hasattr(config.pipeline, "video_model"):
        config.pipeline.video_model = video_model
    if trajectory is not None and hasattr(config.pipeline, "trajectory"):
        config.pipeline.trajectory = trajectory
    return config


def apply_overrides(config: TrainerConfig, overrides: Sequence[str]) -> TrainerConfig:
    """Set ``dotted.field=value`` entries on ``config`` (e.g. ``pipeline.repair_strength_last=0.25``) for the
    benchmark scripts; values are JSON (numbers, ``true``, ``null``) or else plain strings. Unknown fields raise
    :class:`RunError`, so a misspelt option cannot silently run the default."""
    for override in overrides:
        path, sep, text = override.partition("=")
        if not sep or not path:
            raise RunError(f"override {override!r} is not of the form field.path=value.")
        *parents, name = path.replace("-", "_").split(".")
        target = config
        for part in parents:
            target = getattr(target, part, None)
        if target is None or not hasattr(target, name):
            raise RunError(f"override {override!r}: the config has no field {path!r}.")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        setattr(target, name, value)
    return config


def train_in_process(config: TrainerConfig) -> Path:
    """Run nerfstudio's ``train_loop`` on ``config``; returns the run's ``config.yml`` (what ``ns-eval``
    loads)."""
    from nerfstudio.scripts.train import train_loop

    from genfusion_ns.errors import UserExit
    from genfusion_ns.nerfstudio_compat import close_event_writers
    from genfusion_ns.trainer import INTERRUPTED_EXIT_CODE

    config.save_config()
    close_event_writers()  # nerfstudio assumes one training per process; the bench and the demo run several
    try:
        train_loop(local_rank=0, world_size=1, config=config)
    except UserExit as error:  # the trainer printed the message
        if error.code == INTERRUPTED_EXIT_CODE:
            raise KeyboardInterrupt from None
        raise RunError(error.message) from None
    finally:
        close_event_writers()
    return config.get_base_dir() / "config.yml"


def evaluate_run(config_path: Path, render_dir: Path | None = None) -> RunEvaluation:
    """``ns-eval`` on the run's latest checkpoint; writes nerfstudio's ``eval_img_XXXX.png`` (ground truth |
    render) into ``render_dir`` when given."""
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(config_path, test_mode="test")
    if render_dir is not None:
        render_dir.mkdir(parents=True, exist_ok=True)
    metrics = pipeline.get_average_eval_image_metrics(output_path=render_dir, get_std=False)
    num_points = getattr(pipeline.model, "num_points", None)
    repair = getattr(pipeline, "repair_seconds", None)
    return RunEvaluation(
        metrics={k: float(v) for k, v in metrics.items() if k in REPORTED_METRICS},
        num_surfels=int(num_points) if num_points is not None else None,
        repair_seconds=float(repair) if repair is not None else None,
    )
