"""``GenFusionPipeline``: nerfstudio's ``VanillaPipeline`` plus cyclic fusion.

Repair rounds start, repeat and stop at fractions of ``--max-num-iterations`` (``fusion_*_fraction``, or absolute
``fusion_start`` / ``fusion_every`` / ``fusion_until``). Each round runs from a before-step training callback: it
renders the current scene along a novel trajectory, repairs the RGB-D clips with the video model and adds the repaired frames to the training
set (replacing the previous round's, as the authors do, or accumulating). Each training step then uses one real
view (nerfstudio's usual step) and ``repaired_views_per_step`` repaired views, weighted by the authors' sine
schedule. The video model is loaded on the first round, lives outside the nerfstudio model (never in checkpoints)
and is moved off the GPU between rounds. Repaired frames are written under the run folder and listed in the
pipeline's checkpoint state, so resume, ``ns-viewer`` and ``ns-eval`` restore them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Optional, Type

import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.viewer.viewer_elements import ViewerControl
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from genfusion_ns.errors import UserError
from genfusion_ns.fusion import agreement, trajectories
from genfusion_ns.fusion import viewer as fusion_viewer
from genfusion_ns.fusion.datamanager import REPAIRED_DEPTH_KEY, REPAIRED_WEIGHT_KEY, GenFusionDatamanagerConfig
from genfusion_ns.fusion.repair import RepairFailed, RepairSettings, render_rgbd, run_repair_round
from genfusion_ns.fusion.schedule import FusionSchedule, resolve_schedule
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


class FusionSettingsError(UserError, ValueError):
    """A fusion option that cannot work; raised at start-up, before step 0."""


class RepairedViewsViewerHook(ViewerControl):
    """Gives the pipeline nerfstudio's viewer as soon as the viewer starts: nerfstudio sets up every public
    ``ViewerControl`` attribute of the pipeline, in ``ns-train`` and ``ns-viewer`` alike, so the rounds restored
    from a checkpoint are drawn in ``ns-viewer`` too (the trainer's callbacks, which exist only while training,
    are not needed)."""

    def __init__(self, on_setup: Callable[[Any], None]) -> None:
        self._on_setup = on_setup

    def _setup(self, viewer: Any) -> None:
        super()._setup(viewer)
        self._on_setup(viewer)


@dataclass
class GenFusionPipelineConfig(VanillaPipelineConfig):
    """Reconstruction + cyclic fusion with an RGB-D video diffusion model."""

    _target: Type = field(default_factory=lambda: GenFusionPipeline)
    datamanager: GenFusionDatamanagerConfig = field(default_factory=GenFusionDatamanagerConfig)
    model: GenFusionModelConfig = field(default_factory=GenFusionModelConfig)
    video_model: str = "default"
    """'default' (shipped model), 'random-tiny', 'none' (fusion off), a local model folder or a cached hub id."""
    fusion_start_fraction: float = 1 / 7
    """First repair round, as a fraction of --max-num-iterations (the warm-up before it trains on real views
    only; the authors' 1000 of 7000 steps)."""
    fusion_every_fraction: float = 1 / 7
    """Steps between repair rounds, as a fraction of --max-num-iterations."""
    fusion_until_fraction: float = 1.0
    """No round from this fraction of --max-num-iterations on; repaired views weigh 0 from there."""
    fusion_start: Optional[int] = None
    """First repair round in steps (overrides fusion_start_fraction)."""
    fusion_every: Optional[int] = None
    """Steps between repair rounds (overrides fusion_every_fraction)."""
    fusion_until: Optional[int] = None
    """End of the rounds and of the repaired-view weight in steps (overrides fusion_until_fraction)."""
    trajectory: Literal["auto", "sparse", "walk", "crop", "rotation", "path"] = "auto"
    """Novel views: 'auto' picks 'sparse' for inward-facing captures and 'walk' for forward-facing / walking ones;
    'sparse' is the authors' ellipse around the capture, 'walk' moves along the training cameras (see walk_sway),
    'crop' renders the training path full-frame (masked / narrow field of view), 'rotation' yaws the ellipse
    sideways (scene completion), 'path' follows a viewer camera path."""
    trajectory_frames: int = 85
    """Frames per round for the 'sparse', 'walk', 'rotation' and 'path' trajectories."""
    camera_path: Optional[Path] = None
    """Camera path JSON saved by the nerfstudio viewer (trajectory 'path')."""
    rotation_angle: float = 90.0
    """Yaw of the 'rotation' trajectory, in degrees."""
    walk_sway: float = 0.0
    """Sideways sway of the 'walk' trajectory, as a fraction of the median spacing of neighbouring training cameras
    (0: along the path through the training cameras, only turning; 0.25 scored 0.3 dB lower on the lund street,
    docs/benchmarks.md)."""
    accumulate_repaired: bool = False
    """Keep earlier rounds' repaired views (the authors replace them every round)."""
    lambda_reg: float = 1.0
    """Peak weight of the repaired-view loss (sine schedule between fusion_start and fusion_until)."""
    crop_lambda_reg: Optional[float] = 0.5
    """lambda_reg when the trajectory is 'crop' (frames at the training poses, for masked / narrow field-of-view input,
    where the photos already supervise part of every repaired frame): the authors' masked recipe uses 0.5 where their
    sparse-view recipe uses 1. None: lambda_reg for every trajectory."""
    repaired_views_per_step: int = 1
    """Repaired views rendered per training step, next to the one real view."""
    repaired_every: int = 1
    """Train on repaired views every N-th step only (1: every step, as the authors do; CPU budgets use more)."""
    repaired_depth_weight: float = 1.0
    """Weight of the scale-and-shift-invariant depth term inside the repaired-view loss."""
    repaired_feed_densification: bool = False
    """Let repaired views' screen-space gradients drive densification (the authors' code does not)."""
    keep_confirmed_render: bool = False
    """In every repaired frame, keep the render's colour and depth at the pixels where one of the nearest training
    photos (warped through the rendered depth, as the frame check does) sees the same surface and agrees with the
    render within confirmed_render_tolerance: the model's output is used only where the photos do not already say
    what is there (fusion/agreement.py ``confirmed_pixels``)."""
    confirmed_render_tolerance: float = 0.1
    """Mean absolute colour difference (colours in [0, 1]) up to which a photo confirms the render at a pixel."""
    repaired_pixels: Literal["all", "unobserved"] = "all"
    """Which pixels of a repaired frame train the scene. 'all': every pixel (the authors). 'unobserved': only those
    that no training photo sees (warped through the rendered depth, as the frame check does: in front of the photo's
    camera, inside its image and mask, not occluded), colour and depth alike; where a photo sees the surface, the
    photo alone supervises it, and the video model only fills what no photo shows."""
    unobserved_views: Optional[int] = None
    """'unobserved': the training photos that decide whether a pixel is seen, the nearest N to each frame (None:
    every training photo; each costs a depth render and a warp per frame). A few nearest photos miss much of what
    the others photographed: a masked capture's frames then train on pixels the photos already supervise."""
    repaired_covered_weight: float = 1.0
    """Weight of the repaired-frame pixels where the render already showed a surface, relative to the pixels it left
    empty (colour; the depth term keeps every pixel with a weight above 0). Where the render is empty the model's fill
    can only add; where it shows a surface the model's change competes with the photos. 1: every pixel alike (the
    authors)."""
    repaired_frame_check: agreement.CheckMode = "measure"
    """Trust in each repaired frame, from training data only (fusion/agreement.py): each frame is compared with the
    nearest training photos warped into it through the rendered depth, by PSNR(repair, photos) - PSNR(render,
    photos). 'training-views' skips (weight 0) frames below repaired_frame_min_gain_db; 'render-fallback' trains on
    the render (colour and depth) instead of those frames' repairs, so every novel pose still constrains the scene;
    'weigh' ranks the round's
    frames by it and down-weights those below the round's median linearly in rank, to
    repaired_frame_weight_floor for the worst (no threshold, nothing skipped); 'measure' (default) records the
    'training-views' decision in the round's manifest and the log but trains on every frame at weight 1; 'off' checks
    nothing. The check ranks frames well but skipping them cost 1.3 dB on one of two unseen rooms
    (docs/benchmarks.md), hence not the default."""
    repaired_frame_min_gain_db: float = -2.0
    """A frame is kept when PSNR(repair, warped photos) - PSNR(render, warped photos) is at least this (dB). Below 0:
    the render matches the photos by construction, the video model pays a reproduction cost even where it is right
    (-2 dB: the shipped model, tuned on room seed 310)."""
    repaired_frame_min_valid_fraction: float = 0.1
    """Frames with fewer pixels seen by the training views are judged by the size of the change instead."""
    repaired_frame_check_views: int = 2
    """Nearest training views warped into each repaired frame."""
    repaired_frame_weight_floor: float = 0.25
    """Mode 'weigh': the loss weight of the round's worst frame (in (0, 1]); frames at or above the round's median
    keep 1."""
    num_inference_steps: int = 25
    timestep_spacing: str = "uniform"
    """DDIM spacing: the authors' "uniform" / "uniform_trailing", or diffusers' "leading" / "trailing" / "linspace"."""
    guidance_scale: float = 3.2
    guidance_rescale: float = 0.7
    repair_strength: float = 1.0
    """1: repair from pure noise (the authors). Below 1: start from the render's latent noised to that fraction of
    the schedule (SDEdit; fewer steps, output closer to the render; suits small models)."""
    repair_strength_last: Optional[float] = None
    """Strength of the run's last round; the rounds between interpolate linearly from repair_strength (None: every
    round uses repair_strength). Later rounds get better renders, which a weaker repair changes less."""
    repair_change_sigma: float = 0.0
    """Smooth the video model's change to each render by a Gaussian of this many pixels (model resolution) before
    training on it: the change's low frequencies (colour, what fills empty regions) carry what the model knows, its
    high frequencies on an unseen scene are mostly its training textures' speckle. Needs a model that decodes
    residually (the shipped one does); 0: the change as it is (the authors)."""
    keep_video_model_on_device: bool = False
    """Keep the video model on the GPU between rounds (faster, but holds its memory during reconstruction)."""
    compile_video_unet: bool = False
    """Compile the video model's UNet with torch.compile on CUDA (GenFusionVideoPipeline.enable_torch_compile): the
    first round spends minutes compiling and later rounds run faster, so it pays off only for runs with many rounds.
    Needs a C++ toolchain and TORCHDYNAMO_DISABLE unset; ignored on CPU."""
    seed: int = 0
    """Seed of trajectory phases and diffusion noise."""

    def repaired_view_peak_weight(self) -> float:
        """``crop_lambda_reg`` with the 'crop' trajectory (when set), else ``lambda_reg``."""
        if self.crop_lambda_reg is not None and self.trajectory == "crop":
            return self.crop_lambda_reg
        return self.lambda_reg


def _record_pixel_fraction(views: RepairedViews, pixels: torch.Tensor, key: str, what: str) -> None:
    """Each frame's fraction of ``pixels`` ``[N,H,W]`` into its manifest ``check`` entry under ``key``, and the
    round's mean in the log ("round N <what>: X % of the repaired pixels")."""
    fractions = pixels.double().mean(dim=(1, 2)).tolist()
    for entry, fraction in zip(views.checks or [], fractions):
        entry[key] = round(fraction, 4)
    CONSOLE.print(f"GenFusion: round {views.round_index} {what}: "
                  f"{100 * sum(fractions) / max(len(fractions), 1):.1f} % of the repaired pixels.", highlight=False)


class GenFusionPipeline(VanillaPipeline):
    config: GenFusionPipelineConfig

    def __init__(self, config: GenFusionPipelineConfig, device: str, test_mode: Literal["test", "val", "inference"] = "val",
                 world_size: int = 1, local_rank: int = 0, grad_scaler: Optional[Any] = None) -> None:
        super().__init__(config, device, test_mode=test_mode, world_size=world_size, local_rank=local_rank,
                         grad_scaler=grad_scaler)
        self._video: List[Any] = []  # a plain holder: the video model must never become a submodule
        self.repaired_round_folders: List[str] = []
        self._round_views: List[RepairedViews] = []  # the rounds in the training set, as loaded (for the viewer)
        self.completed_rounds = 0
        self.repair_seconds = 0.0  # wall time spent in repair rounds (rendering + video model), for reports
        self.frame_checks: List[Dict[str, Any]] = []  # per round: what the repaired-frame check decided
        self.output_dir: Optional[Path] = None
        self._viewer: Optional[Any] = None  # the trainer's live viewer, to show repaired views as they arrive
        self._viewer_handles: List[Any] = []  # frustums of the repaired views drawn there
        self.repaired_views_viewer = RepairedViewsViewerHook(self._attach_viewer)
        self.repair_settings = RepairSettings(
            num_inference_steps=config.num_inference_steps, timestep_spacing=config.timestep_spacing,
            guidance_scale=config.guidance_scale, guidance_rescale=config.guidance_rescale,
            strength=config.repair_strength, change_sigma=config.repair_change_sigma, seed=config.seed)
        self._generator = torch.Generator().manual_seed(self.repair_settings.seed)
        self.in_repair_round = False  # read by the trainer's Ctrl+C handler: a round is abandoned, not waited for
        self.round_interrupted = False
        self.schedule: Optional[FusionSchedule] = None
        self._round_steps: frozenset[int] = frozenset()
        if config.fusion_until is not None:  # fully absolute: known without the trainer
            self.set_schedule(config.fusion_until)
        if test_mode == "val" and self.fusion_enabled:
            self._check_fusion_settings()

    def set_schedule(self, max_num_iterations: int) -> FusionSchedule:
        """Resolve the round steps for a run of ``max_num_iterations`` steps (the trainer's, at set-up)."""
        cfg = self.config
        self.schedule = resolve_schedule(max_num_iterations, cfg.fusion_start_fraction, cfg.fusion_every_fraction,
                                         cfg.fusion_until_fraction, cfg.fusion_start, cfg.fusion_every,
                                         cfg.fusion_until)
        self._round_steps = frozenset(self.schedule.round_steps(max_num_iterations))
        return self.schedule

    def _check_fusion_settings(self) -> None:
        """Fail at start-up, not at the first round, when the video model or the DDIM settings cannot work."""
        cfg = self.config
        check_video_model_spec(cfg.video_model)
        if cfg.trajectory == "path":
            if cfg.camera_path is None:
                raise FusionSettingsError("--pipeline.trajectory path needs --pipeline.camera-path: a camera path JSON "
                                          "saved from the nerfstudio viewer's Render tab.")
            try:
                trajectories.load_viewer_camera_path(cfg.camera_path, cfg.trajectory_frames)
            except (OSError, ValueError) as error:
                raise FusionSettingsError(f"--pipeline.camera-path: {error}") from None
        try:
            self.repair_settings.validate()
        except ValueError as error:
            raise FusionSettingsError(str(error)) from None
        if cfg.repair_strength_last is not None and not 0.0 < cfg.repair_strength_last <= 1.0:
            raise FusionSettingsError(f"--pipeline.repair-strength-last must be in (0, 1], got "
                                      f"{cfg.repair_strength_last}.")
        if not 0.0 <= cfg.repaired_frame_min_valid_fraction <= 1.0 or cfg.repaired_frame_check_views < 1:
            raise FusionSettingsError(f"--pipeline.repaired-frame-min-valid-fraction "
                                      f"({cfg.repaired_frame_min_valid_fraction}) must be in [0, 1] and "
                                      f"--pipeline.repaired-frame-check-views ({cfg.repaired_frame_check_views}) "
                                      "at least 1.")
        if cfg.unobserved_views is not None and cfg.unobserved_views < 1:
            raise FusionSettingsError(f"--pipeline.unobserved-views must be at least 1 (or None for every training "
                                      f"photo), got {cfg.unobserved_views}.")
        if not 0.0 < cfg.repaired_frame_weight_floor <= 1.0:
            raise FusionSettingsError(f"--pipeline.repaired-frame-weight-floor must be in (0, 1] (0 would skip the "
                                      f"worst frame), got {cfg.repaired_frame_weight_floor}.")
        if not cfg.walk_sway >= 0.0:
            raise FusionSettingsError(f"--pipeline.walk-sway must be >= 0 (a fraction of the training cameras' "
                                      f"spacing), got {cfg.walk_sway}.")
        if not 0.0 <= cfg.repaired_covered_weight <= 1.0:
            raise FusionSettingsError(f"--pipeline.repaired-covered-weight must be in [0, 1] (relative to the empty "
                                      f"pixels' 1), got {cfg.repaired_covered_weight}.")
        for flag, value in (("lambda-reg", cfg.lambda_reg), ("crop-lambda-reg", cfg.crop_lambda_reg)):
            if value is not None and not value >= 0.0:
                raise FusionSettingsError(f"--pipeline.{flag} is a loss weight and must be >= 0, got {value}.")
        if cfg.repaired_every < 1 or cfg.repaired_views_per_step < 1:
            raise FusionSettingsError(f"--pipeline.repaired-every ({cfg.repaired_every}) and "
                                      f"--pipeline.repaired-views-per-step ({cfg.repaired_views_per_step}) must "
                                      "be at least 1.")

    # ---------------------------------------------------------------- checkpoint state (plain types: weights_only)
    def get_extra_state(self) -> Dict[str, Any]:
        return {"repaired_round_folders": list(self.repaired_round_folders), "completed_rounds": self.completed_rounds,
                "repair_seconds": self.repair_seconds, "generator": self._generator.get_state(),
                "repaired_sampling": self.datamanager.repaired_sampling_state(),
                "frame_checks": [dict(record) for record in self.frame_checks]}

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        self.completed_rounds = int(state.get("completed_rounds", 0))
        self.repair_seconds = float(state.get("repair_seconds", 0.0))
        self.frame_checks = [dict(record) for record in state.get("frame_checks", [])]
        if "generator" in state:  # the next round draws the poses and noise the uninterrupted run would
            self._generator.set_state(state["generator"])
        self._clear_rounds()
        for folder in state.get("repaired_round_folders", []):
            try:  # ns-viewer shows them; ns-eval scores only real views, so a damaged round must not stop it
                views = RepairedViews.load(Path(folder))
            except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
                CONSOLE.print(f"[bold yellow]GenFusion: skipping the repaired frames at {folder}: they are missing or "
                              f"damaged ({type(error).__name__}: {error}); continuing without them.")
                continue
            self._add_round(views, Path(folder))
        if "repaired_sampling" in state:
            self.datamanager.set_repaired_sampling_state(state["repaired_sampling"])

    # ---------------------------------------------------------------- training
    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        trainer = training_callback_attributes.trainer
        if trainer is not None:
            self.output_dir = Path(trainer.base_dir) / REPAIRED_FOLDER
            self._viewer = getattr(trainer, "viewer_state", None)
            self.set_schedule(trainer.config.max_num_iterations)
            if self.fusion_enabled:
                self._report_schedule(trainer.config.max_num_iterations, getattr(trainer, "_start_step", 0))
        if self.schedule is None:
            raise FusionSettingsError("the fusion schedule needs the run's step count: pass --pipeline.fusion-until.")
        callbacks = super().get_training_callbacks(training_callback_attributes)
        # Last of the before-step callbacks: the round sees the model as this step's training will.
        callbacks.append(TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], self._round_callback))
        return callbacks

    def _attach_viewer(self, viewer: Any) -> None:
        """Draw the rounds already in the training set (restored from a checkpoint) in a viewer that just started."""
        self._viewer = viewer
        fusion_viewer.remove_repaired_views(self._viewer_handles)
        for views in self._round_views:
            self._viewer_handles += fusion_viewer.show_repaired_views(viewer, views)

    def _report_schedule(self, max_num_iterations: int, start_step: int) -> None:
        rounds = sorted(self._round_steps)
        pending = [s for s in rounds if s >= start_step]
        if not rounds:
            CONSOLE.print(f"[bold yellow]GenFusion: no repair round fits in {max_num_iterations} steps (first round "
                          f"at {self.schedule.start}, every {self.schedule.every}, until {self.schedule.until}): this "
                          "run trains like genfusion-2dgs. Raise --max-num-iterations or lower "
                          "--pipeline.fusion-start.", highlight=False, soft_wrap=True)
        else:
            CONSOLE.print(f"GenFusion: repair rounds at steps {pending or 'none left'} of {max_num_iterations}.",
                          highlight=False)

    def _round_callback(self, step: int) -> None:
        if self.fusion_enabled and step in self._round_steps:
            self.run_round(step)

    @property
    def fusion_enabled(self) -> bool:
        return self.config.video_model != NONE

    def get_train_loss_dict(self, step: int):
        # Repaired views render first: the real view's render is the one the model keeps for densification.
        repaired = self._repaired_losses(step)
        model_outputs, loss_dict, metrics_dict = super().get_train_loss_dict(step)
        loss_dict.update(repaired)
        metrics_dict["num_repaired_views"] = len(self.datamanager.repaired_indices)
        return model_outputs, loss_dict, metrics_dict

    def _repaired_losses(self, step: int) -> Dict[str, torch.Tensor]:
        cfg = self.config
        weight = self.schedule.weight(step, cfg.repaired_view_peak_weight()) if self.schedule is not None else 0.0
        if weight <= 0.0 or not self.datamanager.repaired_indices or step % cfg.repaired_every:
            return {}
        totals: Dict[str, torch.Tensor] = {}
        for _ in range(cfg.repaired_views_per_step):
            drawn = self.datamanager.next_repaired(step)
            if drawn is None:  # the frame check skipped every repaired view of the round
                break
            camera, batch = drawn
            camera.metadata[FEEDS_DENSIFICATION_KEY] = cfg.repaired_feed_densification
            batch[LOSS_WEIGHT_KEY] = weight * float(batch.get(REPAIRED_WEIGHT_KEY, 1.0))
            outputs = self.model(camera)
            losses = self.model.get_loss_dict(outputs, batch)
            losses.pop("camera_opt_regularizer", None)
            target = batch[REPAIRED_DEPTH_KEY].to(self.device)
            target = resize_nearest(target, *outputs["depth"].shape[:2])
            covered = (outputs["accumulation"] > 0.5) & (target > 0)
            if "mask" in batch:  # per-pixel weights (repaired_pixels, repaired_covered_weight): depth where > 0
                covered = covered & (resize_nearest(batch["mask"].float().to(self.device),
                                                    *outputs["depth"].shape[:2]) > 0)
            # the frame weight scales the depth term too (batch[LOSS_WEIGHT_KEY] = schedule weight * frame weight)
            losses["depth_loss"] = batch[LOSS_WEIGHT_KEY] * cfg.repaired_depth_weight * \
                scale_shift_invariant_depth_loss(outputs["depth"], target, covered)
            for key, value in losses.items():
                totals[f"repaired_{key}"] = totals.get(f"repaired_{key}", 0.0) + value / cfg.repaired_views_per_step
        return totals

    # ---------------------------------------------------------------- repair rounds
    def video_pipeline(self):
        """The video model, loaded on first use and moved to this pipeline's device."""
        if not self._video:
            self._video.append(load_video_pipeline(self.config.video_model, self.device, seed=self.config.seed,
                                                   compile_unet=self.config.compile_video_unet))
        pipe = self._video[0]
        if pipe is not None and pipe.device != torch.device(self.device):
            pipe.to(self.device)
        return pipe

    def trajectory_mode(self) -> str:
        """The configured trajectory, with 'auto' resolved from the training cameras."""
        if self.config.trajectory != "auto":
            return self.config.trajectory
        inward = trajectories.is_inward_facing(self._real_camera_to_worlds())
        return "sparse" if inward else "walk"

    def _real_camera_to_worlds(self) -> torch.Tensor:
        return self.datamanager.train_dataset.cameras[: self.datamanager.num_real_views].camera_to_worlds.float()

    def trajectory(self, round_index: int) -> torch.Tensor:
        cfg = self.config
        real = self._real_camera_to_worlds()
        mode = self.trajectory_mode()
        if mode == "sparse":
            return trajectories.sparse_ellipse(real, cfg.trajectory_frames, round_index, self._generator)
        if mode == "walk":
            return trajectories.walk_trajectory(real, cfg.trajectory_frames, round_index, self._generator,
                                                sway=cfg.walk_sway)
        if mode == "crop":
            return trajectories.crop_trajectory(real)
        if mode == "rotation":
            return trajectories.rotation_trajectory(real, cfg.trajectory_frames, cfg.rotation_angle)
        if cfg.camera_path is None:
            raise ValueError("trajectory 'path' needs --pipeline.camera-path pointing to a viewer camera path JSON.")
        return trajectories.load_viewer_camera_path(cfg.camera_path, cfg.trajectory_frames)

    def run_round(self, step: int) -> bool:
        """One repair round at ``step``; a failed round is logged and skipped (training goes on).

        Ctrl+C during a round abandons it: nothing of it is kept (no folder, no views, the random generator as before
        the round), so the checkpoint the trainer then saves resumes into the same round.
        """
        started = time.perf_counter()
        generator_state = self._generator.get_state()
        self.in_repair_round = True
        try:
            return self._run_round(step)
        except KeyboardInterrupt:
            self._generator.set_state(generator_state)
            self.round_interrupted = True
            CONSOLE.print(f"[bold yellow]GenFusion: repair round at step {step} abandoned; it runs again on resume.")
            raise
        finally:
            self.in_repair_round = False
            self.repair_seconds += time.perf_counter() - started

    def round_settings(self, step: int) -> RepairSettings:
        """The repair settings of the round at ``step``: ``repair_strength`` moving linearly to
        ``repair_strength_last`` over the run's rounds."""
        last = self.config.repair_strength_last
        rounds = sorted(self._round_steps)
        if last is None or step not in rounds or len(rounds) < 2:
            return self.repair_settings
        position = rounds.index(step) / (len(rounds) - 1)
        first = self.repair_settings.strength
        return replace(self.repair_settings, strength=first + (last - first) * position)

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
                    self.round_settings(step), on_clip_done=lambda done, total: progress.update(task, completed=done, total=total))
        except (RepairFailed, torch.cuda.OutOfMemoryError) as error:
            CONSOLE.print(f"[bold yellow]GenFusion: repair round {round_index} at step {step} skipped: {error}")
            return False
        finally:
            if not cfg.keep_video_model_on_device:
                release_from_accelerator(pipe)
        self._check_repaired_frames(views, real_cameras)
        folder = (self.output_dir or Path("outputs") / REPAIRED_FOLDER) / f"round_{round_index:02d}_step_{step:06d}"
        paths = views.save(folder, self.datamanager.scene_to_file_depth)  # complete on disk, or not there at all
        if not cfg.accumulate_repaired:
            self._clear_rounds()
        self._add_round(views, folder, paths)
        self.completed_rounds += 1
        CONSOLE.print(f"GenFusion: round {round_index} added {len(views)} repaired views ({folder}).")
        return True

    def _check_repaired_frames(self, views: RepairedViews, real_cameras: Any) -> None:
        """Judge the round's frames against the training photos (``fusion/agreement.py``), set their weights (modes
        'training-views' and 'weigh'), record the decision in ``views.checks`` (written to the manifest) and in
        ``frame_checks`` (checkpoint state), and log it; then keep the render where the photos confirm it
        (``keep_confirmed_render``) and mask out of training the pixels they see (``repaired_pixels``
        'unobserved'); last, weigh down the pixels where the render showed a surface (``repaired_covered_weight``).
        The check judges the model's own output, before that."""
        cfg = self.config
        check = cfg.repaired_frame_check != "off"
        unobserved = cfg.repaired_pixels == "unobserved"
        if views.input_rgb is None or views.input_depth is None:
            return
        if check or cfg.keep_confirmed_render or unobserved:  # what the training photos say (renders their depth)
            settings = agreement.CheckSettings(min_gain_db=cfg.repaired_frame_min_gain_db,
                                               min_valid_fraction=cfg.repaired_frame_min_valid_fraction,
                                               num_views=cfg.repaired_frame_check_views,
                                               by_rank=cfg.repaired_frame_check == "weigh",
                                               rank_floor=cfg.repaired_frame_weight_floor)
            cameras = agreement.pinholes(views.camera_to_worlds, views.fx, views.fy, views.cx, views.cy)
            train_cameras = agreement.pinholes(real_cameras.camera_to_worlds, real_cameras.fx, real_cameras.fy,
                                               real_cameras.cx, real_cameras.cy)
            render = views.input_rgb.float() / 255.0
            num_views = settings.num_views
            if unobserved:  # one set of warps, nearest first: the check and the kept render use its first views
                num_views = max(num_views, cfg.unobserved_views or len(train_cameras))
            all_warps = agreement.warp_neighbours(views.input_depth, cameras, train_cameras,
                                                  lambda i: self._training_evidence(real_cameras, i),
                                                  replace(settings, num_views=num_views))
            warps = agreement.nearest_warps(all_warps, settings.num_views)
            if check:
                self._judge_frames(views, agreement.check_frames(views.rgb.float() / 255.0, render, warps, settings))
            if cfg.keep_confirmed_render:
                confirmed = agreement.confirmed_pixels(render, warps, cfg.confirmed_render_tolerance)
                views.use_renders(confirmed)
                _record_pixel_fraction(views, confirmed, "render_kept_fraction",
                                       "keeps the render where the training photos confirm it")
            if unobserved:
                views.loss_masks = ~agreement.observed_pixels(all_warps, views.depth.shape)
                _record_pixel_fraction(views, views.loss_masks, "trained_fraction",
                                       "trains on the pixels no training photo sees")
        if cfg.repaired_covered_weight < 1.0:  # needs only the render's own depth, no photo
            empty = views.input_depth <= 0
            weights = torch.where(empty, 1.0, cfg.repaired_covered_weight)
            views.loss_masks = weights if views.loss_masks is None else views.loss_masks.float() * weights
            _record_pixel_fraction(views, empty, "empty_fraction", "weighs fully the pixels the render left empty")

    def _judge_frames(self, views: RepairedViews, verdicts: List[agreement.FrameVerdict]) -> None:
        """Apply and record the frame check's verdicts (``repaired_frame_check``)."""
        cfg = self.config
        views.checks = [v.as_dict() for v in verdicts]
        if cfg.repaired_frame_check in ("training-views", "weigh"):
            views.weights = torch.tensor([v.weight for v in verdicts], dtype=torch.float32)
        elif cfg.repaired_frame_check == "render-fallback":
            fallen_back = torch.tensor([v.weight <= 0 for v in verdicts])
            views.use_renders(fallen_back)
            for entry, used_render in zip(views.checks, fallen_back.tolist()):
                entry["trained_on"] = "render" if used_render else "repair"
        record = {"round": views.round_index, "step": views.step, "mode": cfg.repaired_frame_check,
                  **agreement.summarize(verdicts)}
        self.frame_checks.append(record)
        rules = ", ".join(f"{rule} {count}" for rule, count in sorted(record["by_rule"].items()))
        action = {"measure": "would train on (measure only)",
                  "render-fallback": "keeps the repair of (the render for the rest)"}.get(cfg.repaired_frame_check,
                                                                                          "trains on")
        CONSOLE.print(f"GenFusion: round {views.round_index} frame check {action} {record['kept']} of "
                      f"{record['frames']} repaired frames, mean weight {record['mean_weight']} ({rules}; mean gain "
                      f"over the renders against the training photos {record['mean_gain_db']} dB).", highlight=False)

    def _training_evidence(self, real_cameras: Any, index: int):
        """Training photo ``index``, the model's depth rendered at its camera and its mask (None without one)."""
        _, depth = render_rgbd(self.model, real_cameras[index : index + 1])
        mask = self.datamanager.cached_train[index].get("mask")
        return self._train_image(index), depth[0], None if mask is None else mask.float().cpu()

    def _add_round(self, views: RepairedViews, folder: Path,
                   paths: Optional[tuple[List[Path], List[Path]]] = None) -> None:
        image_paths, depth_paths = paths if paths is not None else views.file_paths(folder)
        self.datamanager.add_repaired_views(views, image_paths, depth_paths)
        self.repaired_round_folders.append(str(Path(folder).resolve()))
        self._round_views.append(views)
        self._viewer_handles += fusion_viewer.show_repaired_views(self._viewer, views)

    def _clear_rounds(self) -> None:
        """Drop every repaired round from the training set and the viewer (the next round replaces them)."""
        self.datamanager.remove_repaired_views()
        fusion_viewer.remove_repaired_views(self._viewer_handles)
        self.repaired_round_folders = []
        self._round_views = []

    def _train_image(self, index: int) -> torch.Tensor:
        image = self.datamanager.cached_train[index]["image"][..., :3]
        return (image.float() / 255.0 if image.dtype == torch.uint8 else image.float()).cpu()
