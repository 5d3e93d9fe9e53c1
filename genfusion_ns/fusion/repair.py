"""One repair round: render RGB-D clips along a novel trajectory, repair them with the video model, collect the
repaired frames (colour + metric depth) with their cameras."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, List, Optional

import torch
from nerfstudio.cameras.cameras import Cameras, CameraType

from genfusion_ns.fusion.trajectories import nearest_training_view
from genfusion_ns.fusion.views import RepairedViews

if TYPE_CHECKING:
    from genfusion_ns.model.genfusion_model import GenFusionModel
    from genfusion_ns.video import VideoRepairModel


class RepairFailed(RuntimeError):
    """A round produced unusable output (NaN / inf) or ran out of memory; the round is skipped."""


TIMESTEP_SPACINGS = ("uniform", "uniform_trailing", "leading", "trailing", "linspace")


@dataclass(frozen=True)
class RepairSettings:
    """How the video model samples one repair; the defaults are the authors' (25 DDIM steps, uniform spacing, CFG 3.2
    with rescale 0.7, from pure noise). ``seed`` seeds the round's generator (trajectory phases, diffusion noise)."""

    num_inference_steps: int = 25
    timestep_spacing: str = "uniform"
    """The authors' "uniform" / "uniform_trailing", or diffusers' "leading" / "trailing" / "linspace"."""
    guidance_scale: float = 3.2
    guidance_rescale: float = 0.7
    strength: float = 1.0
    """1: from pure noise. Below 1: from the render's latent noised to that fraction of the schedule (SDEdit)."""
    change_sigma: float = 0.0
    """Models that decode residually: blur their change to the render by a Gaussian of this many pixels (model
    resolution), keeping what they change at low frequencies only. 0: the change as it is."""
    seed: int = 0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the ``--pipeline.*`` flag of a setting that cannot work."""
        from genfusion_ns.video.scheduling import authors_timesteps

        if self.timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"--pipeline.timestep-spacing {self.timestep_spacing!r} is not one of "
                             f"{', '.join(TIMESTEP_SPACINGS)}.")
        if self.num_inference_steps < 1:
            raise ValueError(f"--pipeline.num-inference-steps must be at least 1, got {self.num_inference_steps}.")
        if self.timestep_spacing.startswith("uniform"):
            authors_timesteps(self.timestep_spacing, self.num_inference_steps)
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"--pipeline.repair-strength must be in (0, 1], got {self.strength}.")
        if self.guidance_scale < 0:
            raise ValueError(f"--pipeline.guidance-scale must be >= 0, got {self.guidance_scale}.")
        if self.change_sigma < 0:
            raise ValueError(f"--pipeline.repair-change-sigma must be >= 0, got {self.change_sigma}.")

    def sampling_kwargs(self) -> dict:
        """Keyword arguments of the video pipeline's ``__call__`` (``change_sigma`` only when set, so models that
        do not decode residually never see it)."""
        kwargs = {"num_inference_steps": self.num_inference_steps, "timestep_spacing": self.timestep_spacing,
                  "guidance_scale": self.guidance_scale, "guidance_rescale": self.guidance_rescale,
                  "strength": self.strength}
        if self.change_sigma > 0:
            kwargs["change_sigma"] = self.change_sigma
        return kwargs


@dataclass
class RenderWindow:
    """Intrinsics of the rendered frames: the training camera's, full frame (the video model letterboxes frames of
    any aspect ratio itself, so nothing of the view is cropped away)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def of_camera(cls, camera: Cameras) -> "RenderWindow":
        return cls(float(camera.fx), float(camera.fy), float(camera.cx), float(camera.cy), int(camera.width),
                   int(camera.height))


def make_cameras(poses: torch.Tensor, window: RenderWindow) -> Cameras:
    n = poses.shape[0]
    full = lambda v: torch.full((n, 1), float(v))  # noqa: E731
    return Cameras(camera_to_worlds=poses.float(), fx=full(window.fx), fy=full(window.fy), cx=full(window.cx),
                   cy=full(window.cy), width=torch.full((n, 1), window.width, dtype=torch.long),
                   height=torch.full((n, 1), window.height, dtype=torch.long), camera_type=CameraType.PERSPECTIVE)


@torch.no_grad()
def render_rgbd(model: GenFusionModel, cameras: Cameras, min_alpha: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Render ``[T,H,W,3]`` colour on black and ``[T,H,W]`` z-depth (0 where the surfels cover < ``min_alpha``),
    the artifact-video convention of the video model."""
    was_training = model.training
    model.eval()
    rgbs, depths = [], []
    try:
        for i in range(cameras.shape[0]):
            out = model.get_outputs(cameras[i : i + 1].to(model.device))
            alpha = out["accumulation"]
            background = out["background"]
            rgb = (out["rgb"] - (1.0 - alpha) * background).clamp(0.0, 1.0)  # composite on black instead
            depth = torch.where(alpha > min_alpha, out["depth"], torch.zeros_like(out["depth"]))
            rgbs.append(rgb.float().cpu())
            depths.append(depth[..., 0].float().cpu())
    finally:
        model.train(was_training)
    return torch.stack(rgbs), torch.stack(depths)


def run_repair_round(
    model: GenFusionModel,
    pipe: VideoRepairModel,
    poses: torch.Tensor,
    train_cameras: Cameras,
    train_image: Callable[[int], torch.Tensor],
    round_index: int,
    step: int,
    generator: torch.Generator,
    settings: RepairSettings = RepairSettings(),
    on_clip_done: Optional[Callable[[int, int], None]] = None,
) -> RepairedViews:
    """Repair the video rendered along ``poses`` clip by clip (one CLIP reference, the nearest training view, per
    clip). ``train_image(i)`` returns training image ``i`` as float ``[H,W,3]`` in [0,1]."""
    from genfusion_ns.video.preprocess import clip_windows

    clip_length = int(pipe.config.num_frames)
    window = RenderWindow.of_camera(train_cameras[0:1])
    windows = clip_windows(poses.shape[0], clip_length)
    train_c2w = train_cameras.camera_to_worlds
    collected: List[dict] = []
    for k, (start, first_new) in enumerate(windows):
        clip_poses = poses[start : start + clip_length]
        rgb, depth = render_rgbd(model, make_cameras(clip_poses, window))
        reference = train_image(nearest_training_view(clip_poses, train_c2w))
        try:
            out = pipe(rgb, depth, reference, generator=generator, output_type="pt", **settings.sampling_kwargs())
        except torch.cuda.OutOfMemoryError as error:
            raise RepairFailed(f"out of GPU memory while repairing clip {k}: {error}") from error
        repaired_rgb, repaired_depth = out.rgb.float().cpu(), out.depth.float().cpu()
        if not (torch.isfinite(repaired_rgb).all() and torch.isfinite(repaired_depth).all()):
            raise RepairFailed(f"the video model returned non-finite values for clip {k}")
        keep = range(first_new - start, clip_poses.shape[0])
        for j in keep:
            collected.append({"pose": clip_poses[j], "window": window, "rgb": repaired_rgb[j],
                              "depth": repaired_depth[j], "input_rgb": rgb[j], "input_depth": depth[j]})
        if on_clip_done is not None:
            on_clip_done(k + 1, len(windows))
    return _stack(collected, round_index, step)


def _stack(frames: List[dict], round_index: int, step: int) -> RepairedViews:
    """Frames of one round share a size only if every clip used the same window size (true: same base camera)."""
    column = lambda key: torch.tensor([getattr(f["window"], key) for f in frames], dtype=torch.float32)  # noqa: E731
    as_uint8 = lambda key: (torch.stack([f[key] for f in frames]).clamp(0, 1) * 255).round().to(torch.uint8)  # noqa: E731
    return RepairedViews(
        camera_to_worlds=torch.stack([f["pose"] for f in frames]).float(),
        fx=column("fx"), fy=column("fy"), cx=column("cx"), cy=column("cy"),
        rgb=as_uint8("rgb"),
        depth=torch.stack([f["depth"] for f in frames]).float(),
        round_index=round_index, step=step,
        input_rgb=as_uint8("input_rgb"),
        input_depth=torch.stack([f["input_depth"] for f in frames]).float(),  # for the training-view check
    )
