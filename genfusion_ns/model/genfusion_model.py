"""GenFusion's 2DGS reconstruction model as a nerfstudio ``SplatfactoModel`` subclass.

Subclassing splatfacto keeps everything nerfstudio keys on ``isinstance(model, SplatfactoModel)`` working: the
viewer's background / depth handling and point cloud, and ``ns-export gaussian-splat``. What changes:

* rendering goes through :func:`genfusion_ns.rasterize.rasterize_surfels` (2D surfels; pure-PyTorch on CPU, gsplat
  kernels on CUDA) and never calls ``.cuda()``;
* surfels are seeded from the dataset's sparse points (random cube when there are none), with no downloads;
* losses are the GenFusion/2DGS recipe (:mod:`genfusion_ns.model.losses`) and densification is a
  :class:`~genfusion_ns.model.densification.SurfelStrategy`;
* checkpoints resize the surfel tensors *in place*, so Adam keeps pointing at the live parameters on resume with a
  different surfel count (nerfstudio#3554 breaks splatfacto there);
* LPIPS is reported only when its backbone weights are already on disk.

Hooks for the fusion stage: ``batch[LOSS_WEIGHT_KEY]`` scales every loss term of a view, and
``camera.metadata[FEEDS_DENSIFICATION_KEY] = False`` keeps a view's gradients out of the densification statistics.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.splatfacto import RGB2SH, SplatfactoModel, num_sh_bases, random_quat_tensor
from nerfstudio.utils.colors import get_color
from nerfstudio.utils.rich_utils import CONSOLE
from pytorch_msssim import SSIM
from torch import Tensor
from torchmetrics.image import PeakSignalNoiseRatio

from genfusion_ns.axes import flip_camera_axes
from genfusion_ns.model import losses
from genfusion_ns.model.config import GenFusionModelConfig
from genfusion_ns.model.exposure import ExposureCompensation
from genfusion_ns.model.metrics import load_lpips_if_available
from genfusion_ns.rasterize import rasterize_surfels

LOSS_WEIGHT_KEY = "loss_weight"
"""Optional batch entry (float or 0-d tensor): multiplies all loss terms of that view (default 1)."""
FEEDS_DENSIFICATION_KEY = "feeds_densification"
"""Optional camera-metadata entry (bool): False keeps the view out of the densification statistics."""
EXPOSURE_PARAM_GROUP = "exposure"
"""Optimizer group of the per-photo exposure affines (present only with ``exposure_compensation``)."""

SURFEL_PARAMS = ("means", "scales", "quats", "features_dc", "features_rest", "opacities")


def opengl_c2w_to_opencv_w2c(camera_to_worlds: Tensor) -> Tensor:
    """nerfstudio camera-to-world ``[C, 3, 4]`` (OpenGL axes: y up, z back) -> world-to-camera ``[C, 4, 4]`` OpenCV.

    Same maths as nerfstudio's ``get_viewmat`` without its ``torch.compile`` (which needs a C++ toolchain at run time).
    """
    rotation = flip_camera_axes(camera_to_worlds[:, :3, :3])
    translation = camera_to_worlds[:, :3, 3:4]
    rotation_inv = rotation.transpose(1, 2)
    viewmats = torch.zeros(camera_to_worlds.shape[0], 4, 4, device=camera_to_worlds.device)
    viewmats[:, :3, :3] = rotation_inv
    viewmats[:, :3, 3:4] = -rotation_inv @ translation
    viewmats[:, 3, 3] = 1.0
    return viewmats


LPIPS_MIN_SIZE = 32
"""Smallest image side LPIPS is computed on (AlexNet's feature maps vanish below ~31 pixels)."""


def box_downsample(image: Tensor, factor: int) -> Tensor:
    """Mean over ``factor`` x ``factor`` pixel blocks of an ``[H, W, D]`` image (the pixel-area filter of SSAA)."""
    if factor == 1:
        return image
    return torch.nn.functional.avg_pool2d(image.permute(2, 0, 1)[None], factor)[0].permute(1, 2, 0)


def camera_extent(positions: Tensor) -> float:
    """The authors' scene extent: 1.1 x the largest distance of a camera from the cameras' mean (1.0 if degenerate)."""
    radius = (positions - positions.mean(dim=0, keepdim=True)).norm(dim=-1).max().item() if len(positions) else 0.0
    return 1.1 * radius if radius > 1e-6 and math.isfinite(radius) else 1.0


class GenFusionModel(SplatfactoModel):
    """2D Gaussian surfel model of GenFusion (reconstruction stage, no diffusion)."""

    config: GenFusionModelConfig

    # ------------------------------------------------------------------ construction
    def populate_modules(self) -> None:
        means, colors = self._initial_points()
        num = means.shape[0]
        distances, _ = self.k_nearest_sklearn(means, 3)
        # The authors use sqrt(mean squared distance to the 3 nearest neighbours) for both in-plane axes.
        in_plane = torch.from_numpy(distances).pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(1e-7)
        log_scales = torch.log(in_plane).repeat(1, 3)
        log_scales[:, 2] += math.log(self.config.surfel_thickness)
        dim_sh = num_sh_bases(self.config.sh_degree)
        shs = torch.zeros(num, dim_sh, 3)
        if self.config.sh_degree > 0:
            shs[:, 0] = RGB2SH(colors)
        else:
            shs[:, 0] = torch.logit(colors, eps=1e-10)
        self.gauss_params = torch.nn.ParameterDict(
            {
                "means": torch.nn.Parameter(means),
                "scales": torch.nn.Parameter(log_scales),
                "quats": torch.nn.Parameter(random_quat_tensor(num)),
                "features_dc": torch.nn.Parameter(shs[:, 0].contiguous()),
                "features_rest": torch.nn.Parameter(shs[:, 1:].contiguous()),
                "opacities": torch.nn.Parameter(torch.logit(torch.full((num, 1), 0.1))),
            }
        )
        self.camera_optimizer = self.config.camera_optimizer.setup(num_cameras=self.num_train_data, device="cpu")
        self.exposure = ExposureCompensation(self.num_train_data) if self.config.exposure_compensation else None
        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.ssim = SSIM(data_range=1.0, size_average=True, channel=3)
        # LPIPS is built on first evaluation and kept outside the module tree (never in checkpoints).
        self._lpips_cache: list[torch.nn.Module | None] = []
        self.step = 0
        self.crop_box = None
        if self.config.background_color == "random":
            self.background_color = torch.tensor([0.1490, 0.1647, 0.2157])  # viser's default, as splatfacto
        else:
            self.background_color = get_color(self.config.background_color)
        if self.config.use_bilateral_grid:
            raise ValueError("GenFusionModel does not support splatfacto's bilateral grid; leave it off.")
        self.strategy = self.config.densification
        self.strategy_state = self.strategy.initialize_state(self.config.scene_extent or 1.0)
        # Every training render of the current step: (info for the strategy, whether it feeds densification).
        self._step_renders: list[tuple[dict[str, Tensor | int], bool]] = []

    def get_param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        groups = super().get_param_groups()
        if self.exposure is not None:
            groups[EXPOSURE_PARAM_GROUP] = list(self.exposure.parameters())
        return groups

    def supersample_factor(self, width: int, height: int) -> int:
        """Rays per pixel and axis for a ``width x height`` frame (see ``supersample_max_side``)."""
        limit = self.config.supersample_max_side
        return self.config.supersample if limit is None or max(width, height) <= limit else 1

    def _initial_points(self) -> tuple[Tensor, Tensor]:
        """Seed positions ``[N, 3]`` and colours in [0, 1] from the dataset's points; random cube when there are none."""
        points = self.seed_points
        if points is not None and not self.config.random_init and points[0].shape[0] >= 4:
            means = points[0].detach().float().cpu()
            colors = points[1].detach().float().cpu() / 255.0
            if colors.shape[0] != means.shape[0]:
                colors = torch.full_like(means, 0.5)
            limit = self.config.max_init_points
            if limit is not None and means.shape[0] > limit:
                keep = torch.randperm(means.shape[0], generator=torch.Generator().manual_seed(0))[:limit]
                means, colors = means[keep], colors[keep]
            return means, colors.clamp(0.0, 1.0)
        if points is not None and not self.config.random_init:
            CONSOLE.log(f"[yellow]Only {points[0].shape[0]} seed points: initialising surfels at random instead.")
        num = self.config.num_random
        if num < 4:
            raise ValueError(f"num_random must be >= 4 for the nearest-neighbour scale init, got {num}.")
        means = (torch.rand(num, 3) - 0.5) * self.config.random_scale
        return means, torch.rand(num, 3)

    # ------------------------------------------------------------------ checkpoints
    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):  # type: ignore[override]
        """Load a checkpoint with any surfel count, resizing the parameters *in place*.

        Keeping the same ``Parameter`` objects matters for resume: nerfstudio builds the optimizers before loading the
        checkpoint, so replacing the parameters (what splatfacto does) leaves Adam updating stale tensors.
        """
        self.step = 30000  # like splatfacto: full SH degree when viewing / evaluating; training callbacks reset it
        if "gauss_params.means" not in state_dict:
            raise KeyError("Checkpoint has no 'gauss_params.means': it was not written by a splatfacto-style model.")
        num = state_dict["gauss_params.means"].shape[0]
        for param in self.gauss_params.values():
            param.data = torch.zeros((num, *param.shape[1:]), device=param.device, dtype=param.dtype)
        self.strategy_state = self.strategy.initialize_state(self.strategy_state["scene_extent"])
        if "_extra_state" not in state_dict:  # checkpoints written before the densification state was saved
            state_dict = {**state_dict, "_extra_state": None}
        return torch.nn.Module.load_state_dict(self, state_dict, strict=strict, **kwargs)

    def get_extra_state(self) -> dict[str, Any]:
        """The densification statistics, so that a resumed run densifies exactly as the uninterrupted one."""
        return dict(self.strategy_state)

    def set_extra_state(self, state: dict[str, Any] | None) -> None:
        if state:
            self.strategy_state.update(state)

    # ------------------------------------------------------------------ training callbacks
    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> list[TrainingCallback]:
        if self.config.scene_extent is None:
            self.strategy_state["scene_extent"] = self._training_camera_extent(training_callback_attributes)
        return [
            TrainingCallback(
                [TrainingCallbackLocation.BEFORE_TRAIN_ITERATION],
                self.step_cb,
                args=[training_callback_attributes.optimizers],
            ),
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self.step_post_backward),
        ]

    @staticmethod
    def _training_camera_extent(attributes: TrainingCallbackAttributes) -> float:
        dataset = getattr(getattr(attributes.pipeline, "datamanager", None), "train_dataset", None)
        if dataset is None:
            return 1.0
        return camera_extent(dataset.cameras.camera_to_worlds[:, :3, 3].float())

    def step_post_backward(self, step: int) -> None:
        """Densification bookkeeping after the optimizer step of ``step``.

        Statistics come from every view rendered for training in this step whose camera did not opt out
        (``FEEDS_DENSIFICATION_KEY``); the densify / prune schedule runs once.
        """
        feeding = [info for info, feeds in self._step_renders if feeds]
        for info in feeding[:-1]:
            self.strategy.update_statistics(self.strategy_state, info, len(self.gauss_params["means"]))
        self.strategy.step_post_backward(
            params=self.gauss_params,
            optimizers=self.optimizers,
            state=self.strategy_state,
            step=step,
            info=feeding[-1] if feeding else None,
            update_statistics=bool(feeding),
        )
        self._step_renders = []

    # ------------------------------------------------------------------ rendering
    def _sh_degree_now(self) -> int | None:
        if self.config.sh_degree == 0:
            return None
        return min(self.step // self.config.sh_degree_interval, self.config.sh_degree)

    def get_outputs(self, camera: Cameras) -> dict[str, Tensor | list]:
        """Render one camera (training) or any camera batch of size 1 (viewer / eval).

        Outputs: ``rgb`` [H,W,3], ``depth`` (expected z-depth, empty pixels set to the farthest rendered depth as in
        splatfacto), ``accumulation``, ``background``, ``normal`` and ``surf_normal`` (world space, alpha weighted),
        ``distortion``; in eval also ``normal_image`` ([0,1] colours for the viewer).
        """
        if not isinstance(camera, Cameras):
            raise TypeError(f"GenFusionModel renders Cameras, got {type(camera).__name__}.")
        if camera.shape[0] != 1:
            raise ValueError(f"GenFusionModel renders one camera at a time, got {camera.shape[0]}.")
        if self.training:
            camera_to_worlds = self.camera_optimizer.apply_to_camera(camera)
        else:
            camera_to_worlds = camera.camera_to_worlds

        crop_ids = None
        if self.crop_box is not None and not self.training:
            crop_ids = self.crop_box.within(self.means).reshape(-1)
            if crop_ids.sum() == 0:
                return self.get_empty_outputs(
                    int(camera.width.item()), int(camera.height.item()), self.background_color.to(self.device)
                )
        params = {name: (p if crop_ids is None else p[crop_ids]) for name, p in self.gauss_params.items()}

        scale_factor = self._get_downscale_factor()
        camera.rescale_output_resolution(1 / scale_factor)
        intrinsics = camera.get_intrinsics_matrices().to(self.device)
        width, height = int(camera.width.item()), int(camera.height.item())
        camera.rescale_output_resolution(scale_factor)
        self.last_size = (height, width)
        ss = self.supersample_factor(width, height)
        intrinsics[:, :2] *= ss  # fx, fy, cx, cy: sub-pixel centres fall at (k + 0.5) / ss inside each pixel

        if self.config.sh_degree > 0:
            colors = torch.cat([params["features_dc"][:, None, :], params["features_rest"]], dim=1)
        else:
            colors = torch.sigmoid(params["features_dc"])
        background = self._get_background_color()
        out = rasterize_surfels(
            means=params["means"],
            quats=params["quats"],
            scales=torch.exp(params["scales"]),
            opacities=torch.sigmoid(params["opacities"]).squeeze(-1),
            colors=colors,
            viewmats=opengl_c2w_to_opencv_w2c(camera_to_worlds.to(self.device)),
            Ks=intrinsics,
            width=width * ss,
            height=height * ss,
            backgrounds=background[None],
            sh_degree=self._sh_degree_now(),
            backend=self.config.rasterizer_backend,
            depth_mode=self.config.depth_mode,
        )
        if self.training and crop_ids is None and out.means2d.requires_grad:
            out.means2d.retain_grad()
            # Gradients and radii are per rendered (sub-)pixel; densification normalises by the rendered size, and
            # screen-size pruning reads radii in output pixels.
            radii = out.radii / ss
            info = {**out.info, "radii": radii}
            metadata = camera.metadata or {}
            self._step_renders.append((info, bool(metadata.get(FEEDS_DENSIFICATION_KEY, True))))

        alpha = box_downsample(out.alpha[0], ss)
        # Alpha-weighted mean depth over the sub-pixels the surface covers (the rasterizer's expected depth at ss=1).
        depth = box_downsample(out.depth_accumulated[0], ss) / alpha.clamp_min(1e-10)
        depth = torch.where(alpha > 0, depth, depth.detach().max())
        # The 2DGS regularisers are defined per ray: in training they stay at the rendered resolution.
        regulariser_factor = 1 if self.training else ss
        outputs: dict[str, Tensor | list] = {
            "rgb": box_downsample(out.rgb[0], ss).clamp(0.0, 1.0),
            "depth": depth,
            "accumulation": alpha,
            "background": background if self.training else background.expand(height, width, 3),
            "normal": box_downsample(out.normals[0], regulariser_factor),
            "surf_normal": box_downsample(out.surf_normals[0], regulariser_factor),
            "distortion": box_downsample(out.distortion[0], regulariser_factor),
        }
        if not self.training:
            outputs["normal_image"] = (outputs["normal"] * 0.5 + 0.5).clamp(0.0, 1.0)
        return outputs

    # ------------------------------------------------------------------ losses and metrics
    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> dict[str, Tensor]:
        """Photometric + 2DGS regularisers + optional depth, each scaled by the view's ``LOSS_WEIGHT_KEY`` weight."""
        cfg = self.config
        gt_rgb = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])
        pred_rgb = outputs["rgb"]
        if self.exposure is not None and self.training and "image_idx" in batch:
            pred_rgb = self.exposure(pred_rgb, int(batch["image_idx"]))
        if "mask" in batch:
            mask = self._downscale_if_required(batch["mask"]).to(self.device)
            gt_rgb, pred_rgb = gt_rgb * mask, pred_rgb * mask
        weight = batch.get(LOSS_WEIGHT_KEY, 1.0)
        weight = weight.to(self.device) if isinstance(weight, Tensor) else float(weight)

        loss_dict = {"main_loss": weight * losses.photometric_loss(pred_rgb, gt_rgb, cfg.lambda_dssim)}
        if cfg.lambda_dist > 0 and self.step > cfg.dist_start_step:
            loss_dict["distortion_loss"] = weight * cfg.lambda_dist * losses.depth_distortion_loss(outputs["distortion"])
        if cfg.lambda_normal > 0 and self.step > cfg.normal_start_step:
            loss_dict["normal_loss"] = weight * cfg.lambda_normal * losses.normal_consistency_loss(
                outputs["normal"], outputs["surf_normal"]
            )
        if cfg.depth_loss != "none" and self.step >= cfg.depth_start_step and cfg.depth_key in batch:
            loss_dict["depth_loss"] = weight * cfg.lambda_depth * self._depth_loss(outputs, batch[cfg.depth_key])
        if self.training:
            self.camera_optimizer.get_loss_dict(loss_dict)
        return loss_dict

    def _depth_loss(self, outputs: dict[str, Tensor], target: Tensor) -> Tensor:
        height, width = outputs["depth"].shape[:2]
        target = losses.resize_nearest(target.to(self.device).float(), height, width)
        covered = outputs["accumulation"] > 0.5  # pixels the rendered surface actually covers
        if self.config.depth_loss == "metric-l1":
            return losses.metric_depth_l1(outputs["depth"], target, covered)
        return losses.scale_shift_invariant_depth_loss(
            outputs["depth"],
            target,
            covered,
            num_bands=self.config.ssi_num_bands,
            gradient_weight=self.config.ssi_gradient_weight,
        )

    def get_image_metrics_and_images(
        self, outputs: dict[str, Tensor], batch: dict[str, Tensor]
    ) -> tuple[dict[str, float], dict[str, Tensor]]:
        """PSNR, SSIM and -- when its weights are available offline -- LPIPS of one evaluation image."""
        gt_rgb = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])
        pred_rgb = outputs["rgb"]
        gt = gt_rgb.permute(2, 0, 1)[None]
        pred = pred_rgb.permute(2, 0, 1)[None]
        metrics = {"psnr": float(self.psnr(pred, gt).item()), "ssim": float(self.ssim(gt, pred).item())}
        lpips = self._lpips()
        if lpips is not None and min(gt.shape[-2:]) >= LPIPS_MIN_SIZE:  # AlexNet's pooling needs >= 31 pixels
            metrics["lpips"] = float(lpips(pred.clamp(0, 1), gt.clamp(0, 1)).item())
        images = {"img": torch.cat([gt_rgb, pred_rgb], dim=1)}
        if "normal_image" in outputs:
            images["normal"] = outputs["normal_image"]
        return metrics, images

    def _lpips(self) -> torch.nn.Module | None:
        if not self.config.compute_lpips:
            return None
        if not self._lpips_cache:
            self._lpips_cache.append(load_lpips_if_available(self.device))
        return self._lpips_cache[0]
