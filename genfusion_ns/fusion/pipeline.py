"""``GenFusionPipeline``: nerfstudio's ``VanillaPipeline`` plus cyclic fusion.

Every ``fusion_every`` steps from ``fusion_start`` until ``fusion_until`` a repair round renders the current scene
along a novel trajectory, repairs the RGB-D clips with the video model and adds the repaired frames to the training
set (replacing the previous round's, as the authors do, or accumulating). Each training step then uses one real
view (nerfstudio's usual step) and ``repaired_views_per_step`` repaired views, weighted by the authors' sine
schedule. The video model is loaded on the first round, lives outside the nerfstudio model (never in checkpoints)
and is moved off the GPU between rounds. Repaired frames are written under the run folder and listed in the
pipeline's checkpoint state, so resume, ``ns-viewer`` and ``ns-eval`` restore them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Type

import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from genfusion_ns.fusion import trajectories
from genfusion_ns.fusion import viewer as fusion_viewer
from genfusion_ns.fusion.datamanager import REPAIRED_DEPTH_KEY, GenFusionDatamanagerConfig
from genfusion_ns.fusion.repair import RepairFailed, run_repair_round
from genfusion_ns.fusion.schedule import repair_round_steps, repaired_view_weight
from genfusion_ns.fusion.video_model import (
    NONE,
    check_video_model_spec,
    load_video_pipeline,
    release_from_accelerator,
)
from genfusion_ns.fusion.views import RepairedViews
from genfusion_ns.model.config import GenFusionModelConfig
from genfusion_ns.model.genfusion_model import FEEDS_DENSIFICATION_KEY, LOSS_WEIGHT_KEY
from genfusion_ns.model.losses import resize_nearest, scale_shift_invariant_depth_loss

REPAIRED_FOLDER = "genfusion_repaired"


@dataclass
class GenFusionPipelineConfig(VanillaPipelineConfig):
    """Reconstruction + cyclic fusion with an RGB-D video diffusion model."""

    _target: Type = field(default_factory=lambda: GenFusionPipeline)
    datamanager: GenFusionDatamanagerConfig = field(default_factory=GenFusionDatamanagerConfig)
    model: GenFusionModelConfig = field(default_factory=GenFusionModelConfig)
    video_model: str = "default"
    """'default' (shipped model), 'random-tiny', 'none' (fusion off), a local model folder or a cached hub id."""
    fusion_start: int = 1000
    """First repair round (the warm-up before it trains on real views only)."""
    fusion_every: int = 1000
    """Steps between repair rounds."""
    fusion_until: int = 7000
    """No round at or after this step; repaired views weigh 0 from here on."""
    trajectory: Literal["sparse", "crop", "rotation", "path"] = "sparse"
    """Novel views: ellipse around the capture (sparse views), the training path full-frame (masked / narrow
    field of view), the ellipse yawed sideways (scene completion), or a viewer camera path."""
    trajectory_frames: int = 85
    """Frames per round for the 'sparse', 'rotation' and 'path' trajectories."""
    camera_path: Optional[Path] = None
    """Camera path JSON saved by the nerfstudio viewer (trajectory 'path')."""
    rotation_angle: float = 90.0
    """Yaw of the 'rotation' trajectory, in degrees."""
    accumulate_repaired: bool = False
    """Keep earlier rounds' repaired views (the authors replace them every round)."""
    lambda_reg: float = 1.0
    """Peak weight of the repaired-view loss (sine schedule between fusion_start and fusion_until)."""
    repaired_views_per_step: int = 1
    """Repaired views rendered per training step, next to the one real view."""
    repaired_every: int = 1
    """Train on repaired views every N-th step only (1: every step, as the authors do; CPU budgets use more)."""
    repaired_depth_weight: float = 1.0
    """Weight of the scale-and-shift-invariant depth term inside the repaired-view loss."""
    repaired_feed_densification: bool = False
    """Let repaired views' screen-space gradients drive densification (the authors' code does not)."""
    num_inference_steps: int = 25
    timestep_spacing: str = "uniform"
    """DDIM spacing: the authors' "uniform" / "uniform_trailing", or diffusers' "leading" / "trailing" / "linspace"."""
    guidance_scale: float = 3.2
    guidance_rescale: float = 0.7
    repair_strength: float = 1.0
    """1: repair from pure noise (the authors). Below 1: start from the render's latent noised to that fraction of
    the schedule (SDEdit; fewer steps, output closer to the render; suits small models)."""
    keep_video_model_on_device: bool = False
    """Keep the video model on the GPU between rounds (faster, but holds its memory during reconstruction)."""
    seed: int = 0
    """Seed of trajectory phases, render windows and diffusion noise."""


class GenFusionPipeline(VanillaPipeline):
    config: GenFusionPipelineConfig

    def __init__(self, config: GenFusionPipelineConfig, device: str, test_mode: Literal["test", "val", "inference"] = "val",
                 world_size: int = 1, local_rank: int = 0, grad_scaler: Optional[Any] = None) -> None:
        super().__init__(config, device, test_mode=test_mode, world_size=world_size, local_rank=local_rank,
                         grad_scaler=grad_scaler)
        self._video: List[Any] = []  # a plain holder: the video model must never become a submodule
        self.repaired_round_folders: List[str] = []
        self.completed_rounds = 0
        self.repair_seconds = 0.0  # wall time spent in repair rounds (rendering + video model), for reports
        self.output_dir: Optional[Path] = None
        self._viewer: Optional[Any] = None  # the trainer's live viewer, to show repaired views as they arrive
        self._viewer_handles: List[Any] = []  # frustums of the repaired views drawn there
        self._generator = torch.Generator().manual_seed(config.seed)
        self._round_steps = frozenset(repair_round_steps(config.fusion_start, config.fusion_every,
                                                         config.fusion_until, config.fusion_until))
        if test_mode == "val" and self.fusion_enabled:
            self._check_fusion_settings()

    def _check_fusion_settings(self) -> None:
        """Fail at start-up, not at the first round, when the video model or the DDIM settings cannot work."""
        from genfusion_ns.video.scheduling import authors_timesteps

        cfg = self.config
        check_video_model_spec(cfg.video_model)
        if cfg.timestep_spacing in ("uniform", "uniform_trailing"):
            authors_timesteps(cfg.timestep_spacing, cfg.num_inference_steps)
        elif cfg.timestep_spacing not in ("leading", "trailing", "linspace"):
            raise ValueError(f"--pipeline.timestep-spacing {cfg.timestep_spacing!r} is not one of uniform, "
                             "uniform_trailing, leading, trailing, linspace.")
        if not 0.0 < cfg.repair_strength <= 1.0:
            raise ValueError(f"--pipeline.repair-strength must be in (0, 1], got {cfg.repair_strength}.")
        if cfg.repaired_every < 1 or cfg.repaired_views_per_step < 1:
            raise ValueError(f"--pipeline.repaired-every ({cfg.repaired_every}) and --pipeline.repaired-views-per-step "
                             f"({cfg.repaired_views_per_step}) must be at least 1.")

    # ---------------------------------------------------------------- checkpoint state (plain types: weights_only)
    def get_extra_state(self) -> Dict[str, Any]:
        return {"repaired_round_folders": list(self.repaired_round_folders), "completed_rounds": self.completed_rounds,
                "repair_seconds": self.repair_seconds}

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        self.completed_rounds = int(state.get("completed_rounds", 0))
        self.repair_seconds = float(state.get("repair_seconds", 0.0))
        self.datamanager.remove_repaired_views()
        fusion_viewer.remove_repaired_views(self._viewer_handles)
        self.repaired_round_folders = []
        for folder in state.get("repaired_round_folders", []):
            if not (Path(folder) / "manifest.json").exists():
                CONSOLE.print(f"[yellow]GenFusion: repaired frames at {folder} are missing; continuing without them.")
                continue
            self._add_round(RepairedViews.load(Path(folder)), Path(folder))

    # ---------------------------------------------------------------- training
    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        trainer = training_callback_attributes.trainer
        if trainer is not None:
            self.output_dir = Path(trainer.base_dir) / REPAIRED_FOLDER
            self._viewer = getattr(trainer, "viewer_state", None)
        return super().get_training_callbacks(training_callback_attributes)

    @property
    def fusion_enabled(self) -> bool:
        return self.config.video_model != NONE

    def get_train_loss_dict(self, step: int):
        if self.fusion_enabled and step in self._round_steps:
            self.run_round(step)
        # Repaired views render first: the real view's render is the one the model keeps for densification.
        repaired = self._repaired_losses(step)
        model_outputs, loss_dict, metrics_dict = super().get_train_loss_dict(step)
        loss_dict.update(repaired)
        metrics_dict["num_repaired_views"] = len(self.datamanager.repaired_indices)
        return model_outputs, loss_dict, metrics_dict

    def _repaired_losses(self, step: int) -> Dict[str, torch.Tensor]:
        cfg = self.config
        weight = repaired_view_weight(step, cfg.fusion_start, cfg.fusion_until, cfg.lambda_reg)
        if weight <= 0.0 or not self.datamanager.repaired_indices or step % cfg.repaired_every:
            return {}
        totals: Dict[str, torch.Tensor] = {}
        for _ in range(cfg.repaired_views_per_step):
            camera, batch = self.datamanager.next_repaired(step)
            camera.metadata[FEEDS_DENSIFICATION_KEY] = cfg.repaired_feed_densification
            batch[LOSS_WEIGHT_KEY] = weight
            outputs = self.model(camera)
            losses = self.model.get_loss_dict(outputs, batch)
            losses.pop("camera_opt_regularizer", None)
            target = batch[REPAIRED_DEPTH_KEY].to(self.device)
            target = resize_nearest(target, *outputs["depth"].shape[:2])
            covered = (outputs["accumulation"] > 0.5) & (target > 0)
            losses["depth_loss"] = weight * cfg.repaired_depth_weight * scale_shift_invariant_depth_loss(
                outputs["depth"], target, covered)
            for key, value in losses.items():
                totals[f"repaired_{key}"] = totals.get(f"repaired_{key}", 0.0) + value / cfg.repaired_views_per_step
        return totals

    # ---------------------------------------------------------------- repair rounds
    def video_pipeline(self):
        """The video model, loaded on first use and moved to this pipeline's device."""
        if not self._video:
            self._video.append(load_video_pipeline(self.config.video_model, self.device, seed=self.config.seed))
        pipe = self._video[0]
        if pipe is not None and pipe.device != torch.device(self.device):
            pipe.to(self.device)
        return pipe

    def trajectory(self, round_index: int) -> torch.Tensor:
        cfg = self.config
        real = self.datamanager.train_dataset.cameras[: self.datamanager.num_real_views].camera_to_worlds.float()
        if cfg.trajectory == "sparse":
            return trajectories.sparse_ellipse(real, cfg.trajectory_frames, round_index, self._generator)
        if cfg.trajectory == "crop":
            return trajectories.crop_trajectory(real)
        if cfg.trajectory == "rotation":
            return trajectories.rotation_trajectory(real, cfg.trajectory_frames, cfg.rotation_angle)
        if cfg.camera_path is None:
            raise ValueError("trajectory 'path' needs --pipeline.camera-path pointing to a viewer camera path JSON.")
        return trajectories.load_viewer_camera_path(cfg.camera_path, cfg.trajectory_frames)

    def run_round(self, step: int) -> bool:
        """One repair round at ``step``; a failed round is logged and skipped (training goes on)."""
        started = time.perf_counter()
        try:
            return self._run_round(step)
        finally:
            self.repair_seconds += time.perf_counter() - started

    def _run_round(self, step: int) -> bool:
        cfg, round_index = self.config, self.completed_rounds
        pipe = self.video_pipeline()
        if pipe is None:
            return False
        poses = self.trajectory(round_index)
        real_cameras = self.datamanager.train_dataset.cameras[: self.datamanager.num_real_views]
        try:
            with Progress(TextColumn(f"GenFusion round {round_index} (step {step}): repairing"), BarColumn(),
                          TextColumn("{task.completed}/{task.total} clips"), TimeElapsedColumn(),
                          console=CONSOLE, transient=True) as progress:
                task = progress.add_task("repair", total=None)
                views = run_repair_round(
                    self.model, pipe, poses, real_cameras, self._train_image, round_index, step, self._generator,
                    num_inference_steps=cfg.num_inference_steps, timestep_spacing=cfg.timestep_spacing,
                    guidance_scale=cfg.guidance_scale, guidance_rescale=cfg.guidance_rescale,
                    strength=cfg.repair_strength, on_clip_done=lambda done, total: progress.update(task, completed=done, total=total))
        except (RepairFailed, torch.cuda.OutOfMemoryError) as error:
            CONSOLE.print(f"[bold yellow]GenFusion: repair round {round_index} at step {step} skipped: {error}")
            return False
        finally:
            if not cfg.keep_video_model_on_device:
                release_from_accelerator(pipe)
        if not cfg.accumulate_repaired:
            self.datamanager.remove_repaired_views()
            fusion_viewer.remove_repaired_views(self._viewer_handles)
            self.repaired_round_folders = []
        folder = (self.output_dir or Path("outputs") / REPAIRED_FOLDER) / f"round_{round_index:02d}_step_{step:06d}"
        self._add_round(views, folder, save=True)
        self.completed_rounds += 1
        CONSOLE.print(f"GenFusion: round {round_index} added {len(views)} repaired views ({folder}).")
        return True

    def _add_round(self, views: RepairedViews, folder: Path, save: bool = False) -> None:
        if save:
            image_paths, depth_paths = views.save(folder, self.datamanager.scene_to_file_depth)
        else:
            image_paths = [folder / f"frame_{i:04d}.png" for i in range(len(views))]
            depth_paths = [folder / f"depth_{i:04d}.npy" for i in range(len(views))]
        self.datamanager.add_repaired_views(views, image_paths, depth_paths)
        self.repaired_round_folders.append(str(Path(folder).resolve()))
        self._viewer_handles += fusion_viewer.show_repaired_views(self._viewer, views)

    def _train_image(self, index: int) -> torch.Tensor:
        image = self.datamanager.cached_train[index]["image"][..., :3]
        return (image.float() / 255.0 if image.dtype == torch.uint8 else image.float()).cpu()
