"""``GenFusionVideoPipeline``: repair an artifact-prone RGB-D rendering video given one clean reference image.

The sampler is the authors' (reference notes §3.3-3.5, §5.4) expressed with diffusers parts: DDIM
(:class:`GenFusionDDIMScheduler`) on v-predictions, classifier-free guidance over the reference image only
(the unconditional branch is the CLIP tokens of a grey image; the artifact latent is shared), guidance
rescale, and DynamiCrafter's dynamic x0 rescale. Differences from the authors, on purpose:

* the returned depth is metric (the per-clip disparity normalisation is undone) instead of ``1 / n``;
* both CFG branches run as one batch-2 UNet call;
* the scheduler arithmetic stays in float32 whatever the components' dtype (fp16/bf16 only inside the
  networks);
* videos longer than the model's clip length are repaired clip by clip (see :func:`clip_windows`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPVisionModel

from .models import GenFusionResampler, GenFusionUNet
from .preprocess import (
    CLIP_IMAGE_SIZE,
    CLIP_MEAN,
    CLIP_STD,
    DisparityRange,
    clip_preprocess,
    clip_windows,
    depth_to_disparity_code,
    disparity_code_to_depth,
    rgb_from_model,
    rgb_to_model,
)
from .scheduling import GenFusionDDIMScheduler, dynamic_rescale_table

ArrayLike = np.ndarray | torch.Tensor
OUTPUT_TYPES = ("np", "pt", "latent")
RELEASED_WEIGHTS_HINT = (
    "GenFusion weights are not downloaded at run time. Get the authors' checkpoint "
    "(Hugging Face 'Sibo2rr/GenFusion-GenerationModel', file 'epoch=59-step=34000.ckpt'), the LDM3D-4c VAE "
    "('Intel/ldm3d-4c', subfolder 'vae') and the OpenCLIP ViT-H/14 image tower "
    "('laion/CLIP-ViT-H-14-laion2B-s32B-b79K') on a machine with internet access, convert them once with "
    "`genfusion-convert` into a local folder, and pass that folder to GenFusionVideoPipeline.from_pretrained "
    "(or pre-populate the Hugging Face cache, HF_HOME, with a converted pipeline repository)."
)


@dataclass
class GenFusionVideoPipelineOutput(BaseOutput):
    """Result of a repair call.

    Attributes:
        rgb: repaired video ``[T, H, W, 3]`` in [0, 1] at the input resolution (``None`` for
            ``output_type="latent"``).
        depth: repaired metric depth ``[T, H, W]`` on the input depth's scale (``None`` for ``"latent"``).
        latents: final latents ``[num_clips, 4, F, h, w]`` (F = the model's clip length), before decoding.
        depth_code: decoded disparity code ``[T, h', w']`` in [-1, 1] at the model resolution (the authors'
            ``out_depth_pm1``), for consumers that work in normalised disparity (``None`` for ``"latent"``).
    """

    rgb: ArrayLike | None
    depth: ArrayLike | None
    latents: ArrayLike
    depth_code: ArrayLike | None = None


@dataclass
class _PreparedClip:
    """One model-length window of the input, in the model's conventions."""

    start: int
    first_new: int
    num_valid: int
    rgb_code: torch.Tensor  # [3, F, h, w] in [-1, 1]
    depth_code: torch.Tensor  # [1, F, h, w] in [-1, 1]
    disparity_range: DisparityRange | None


def _as_float_tensor(name: str, value: ArrayLike) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")
    return value.float()


class GenFusionVideoPipeline(DiffusionPipeline):
    """RGB-D video repair with the GenFusion video model.

    Components (diffusers names): ``unet`` (:class:`~genfusion_ns.video.models.unet.GenFusionUNet`),
    ``image_proj`` (resampler from CLIP tokens to the 256-token context), ``image_encoder``
    (``transformers.CLIPVisionModel``; its ``last_hidden_state`` is used), ``vae`` (4-channel RGB-D
    ``AutoencoderKL``) and ``scheduler`` (:class:`GenFusionDDIMScheduler`). Model settings (stored in
    ``model_index.json``): clip length ``num_frames``, model resolution ``height`` x ``width``, the fps
    condition, and the dynamic-rescale parameters.

    Example::

        pipe = GenFusionVideoPipeline.from_pretrained("converted/", torch_dtype=torch.float16).to("cuda")
        out = pipe(render_rgb, render_depth, reference_image)  # out.rgb [T,H,W,3]; out.depth [T,H,W] metric
    """

    model_cpu_offload_seq = "image_encoder->image_proj->unet->vae"

    def __init__(
        self,
        unet: GenFusionUNet,
        image_proj: GenFusionResampler,
        image_encoder: CLIPVisionModel,
        vae: AutoencoderKL,
        scheduler: GenFusionDDIMScheduler,
        num_frames: int = 16,
        height: int = 512,
        width: int = 960,
        fps: int = 30,
        latent_scale_factor: float = 0.18215,
        use_dynamic_rescale: bool = True,
        dynamic_rescale_base_scale: float = 0.7,
        dynamic_rescale_turning_step: int = 400,
        clip_image_size: int = CLIP_IMAGE_SIZE,
        clip_mean: list[float] | tuple[float, ...] = CLIP_MEAN,
        clip_std: list[float] | tuple[float, ...] = CLIP_STD,
        residual_decode: bool = False,
    ):
        super().__init__()
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.register_modules(
            unet=unet, image_proj=image_proj, image_encoder=image_encoder, vae=vae, scheduler=scheduler
        )
        self.register_to_config(
            num_frames=num_frames,
            height=height,
            width=width,
            fps=fps,
            latent_scale_factor=latent_scale_factor,
            use_dynamic_rescale=use_dynamic_rescale,
            dynamic_rescale_base_scale=dynamic_rescale_base_scale,
            dynamic_rescale_turning_step=dynamic_rescale_turning_step,
            clip_image_size=clip_image_size,
            clip_mean=list(clip_mean),
            clip_std=list(clip_std),
            residual_decode=residual_decode,
        )
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 8
        for name, size in (("height", height), ("width", width)):
            if size % self.vae_scale_factor != 0:
                raise ValueError(
                    f"model {name} {size} must be a multiple of the VAE factor {self.vae_scale_factor}"
                )

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config_name(
        cls, name: str, seed: int = 0, device: str | torch.device | None = None, **settings: Any
    ) -> GenFusionVideoPipeline:
        """Randomly initialised pipeline of a named architecture ("tiny" for tests, "full" = released shape).

        ``device="meta"`` builds the structure without weight storage (the "full" model holds 2.2 B
        parameters, ~9 GB in float32). ``settings`` override the named model settings (e.g.
        ``use_dynamic_rescale=False``).
        """
        from .models import build_components, load_model_config

        config = load_model_config(name)
        components = build_components(config, seed=seed, device=device)
        scheduler = GenFusionDDIMScheduler(**config.scheduler)
        return cls(**components, scheduler=scheduler, **{**config.settings.to_dict(), **settings})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any):
        """diffusers ``from_pretrained``; a hub id that is not available offline gets an actionable error."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except (OSError, ValueError) as error:
            if os.path.isdir(str(pretrained_model_name_or_path)):
                raise
            raise OSError(
                f"Could not load GenFusion pipeline {str(pretrained_model_name_or_path)!r}: {error}\n"
                "If this was meant to be a local folder, it does not exist. "
                f"{RELEASED_WEIGHTS_HINT}"
            ) from error

    # ------------------------------------------------------------------ memory knobs

    def enable_vae_slicing(self) -> None:
        """Encode/decode one frame at a time inside each VAE chunk (lower peak memory)."""
        self.vae.enable_slicing()

    def disable_vae_slicing(self) -> None:
        self.vae.disable_slicing()

    def enable_vae_tiling(self) -> None:
        """Encode/decode each frame in overlapping spatial tiles (for resolutions above the model's)."""
        self.vae.enable_tiling()

    def disable_vae_tiling(self) -> None:
        self.vae.disable_tiling()

    # ------------------------------------------------------------------ stages

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """``(channels, frames, h, w)`` of one clip's latent."""
        channels = self.vae.config.latent_channels
        return (
            channels,
            self.config.num_frames,
            self.config.height // self.vae_scale_factor,
            self.config.width // self.vae_scale_factor,
        )

    def encode_reference(self, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference ``[3, h, w]`` in [-1, 1] -> (conditional, unconditional) contexts ``[1, L, D]`` each.

        The unconditional context is the resampled CLIP tokens of an all-zero image in [-1, 1] (mid-grey),
        exactly the image the model saw with the reference dropped in training; both go through CLIP as one
        batch.
        """
        device = self._execution_device
        images = torch.stack([reference, torch.zeros_like(reference)]).to(device)
        pixels = clip_preprocess(
            images, self.config.clip_image_size, self.config.clip_mean, self.config.clip_std
        ).to(dtype=self.image_encoder.dtype)
        tokens = self.image_encoder(pixel_values=pixels).last_hidden_state
        context = self.image_proj(tokens.to(self.image_proj.dtype))
        return context[:1], context[1:]

    def encode_posterior(
        self, rgb_code: torch.Tensor, depth_code: torch.Tensor, chunk_size: int = 8
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB-D codes ``[3|1, F, h, w]`` -> the VAE posterior's ``(mean, std)``, each ``[F, 4, h', w']`` float32
        and unscaled (one 4-channel VAE pass per frame, ``chunk_size`` frames at a time)."""
        device = self._execution_device
        rgbd = torch.cat([rgb_code, depth_code], dim=0)  # one 4-channel VAE pass for RGB + depth
        frames = rgbd.transpose(0, 1).to(device, self.vae.dtype)  # [F, 4, h, w]: frames as the batch
        means, stds = [], []
        for chunk in frames.split(max(1, chunk_size)):
            posterior = self.vae.encode(chunk).latent_dist
            means.append(posterior.mean.float())
            stds.append(posterior.std.float())
        return torch.cat(means), torch.cat(stds)

    def sample_posterior(
        self,
        mean: torch.Tensor,
        std: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scaled posterior sample ``[1, 4, F, h', w']`` from :meth:`encode_posterior`'s ``(mean, std)``;
        ``noise`` ``[4, F, h', w']`` replaces the draw."""
        device = mean.device
        if noise is None:
            noise = randn_tensor(mean.shape, generator=generator, device=device, dtype=torch.float32)
        else:
            noise = noise.to(device, torch.float32).transpose(0, 1)
            if noise.shape != mean.shape:
                raise ValueError(
                    f"condition noise for one clip must have shape {tuple(mean.transpose(0, 1).shape)}, "
                    f"got {tuple(noise.transpose(0, 1).shape)}"
                )
        sample = (mean + std * noise) * self.config.latent_scale_factor
        return sample.transpose(0, 1)[None]

    def encode_condition(
        self,
        rgb_code: torch.Tensor,
        depth_code: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        chunk_size: int = 8,
    ) -> torch.Tensor:
        """Artifact RGB-D ``[3|1, F, h, w]`` -> scaled posterior *sample* ``[1, 4, F, h', w']`` (float32).

        The authors sample the posterior (not its mean), also at inference; ``noise`` ``[4, F, h', w']``
        replaces that draw.
        """
        mean, std = self.encode_posterior(rgb_code, depth_code, chunk_size)
        return self.sample_posterior(mean, std, generator, noise)

    def denoise(
        self,
        latents: torch.Tensor,
        condition_latents: torch.Tensor,
        context: torch.Tensor,
        uncond_context: torch.Tensor,
        scheduler: GenFusionDDIMScheduler,
        guidance_scale: float,
        guidance_rescale: float,
        eta: float,
        generator: torch.Generator | None = None,
        step_noises: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """DDIM from ``latents`` (x_T) to the final latent, with CFG, guidance rescale and dynamic x0 rescale.

        ``scheduler`` must already hold its timesteps. ``step_noises`` ``[S, 1, 4, F, h', w']`` replaces the
        per-step DDIM noise drawn from ``generator`` (only used for ``eta > 0``).
        """
        timesteps = scheduler.timesteps
        if step_noises is not None and len(step_noises) != len(timesteps):
            raise ValueError(
                f"step_noises has {len(step_noises)} entries but the schedule runs {len(timesteps)} steps"
            )
        do_cfg = guidance_scale > 1.0
        unet_dtype = self.unet.dtype
        if do_cfg:
            context = torch.cat([uncond_context, context])
            condition_latents = torch.cat([condition_latents, condition_latents])
        context = context.to(unet_dtype)
        condition_latents = condition_latents.to(unet_dtype)
        scale_table = (
            dynamic_rescale_table(
                self.config.dynamic_rescale_base_scale,
                self.config.dynamic_rescale_turning_step,
                scheduler.config.num_train_timesteps,
            )
            if self.config.use_dynamic_rescale
            else None
        )
        latents = latents.float()
        with self.progress_bar(total=len(timesteps)) as progress:
            for index, t in enumerate(timesteps):
                model_latents = torch.cat([latents, latents]) if do_cfg else latents
                model_input = torch.cat([model_latents.to(unet_dtype), condition_latents], dim=1)
                step_t = t.to(latents.device).expand(model_input.shape[0])
                v = self.unet(
                    model_input, step_t, encoder_hidden_states=context, fps=self.config.fps
                ).sample.float()
                if do_cfg:
                    v_uncond, v_cond = v.chunk(2)
                    v = v_uncond + guidance_scale * (v_cond - v_uncond)
                    if guidance_rescale > 0:
                        v = rescale_noise_cfg(v, v_cond, guidance_rescale=guidance_rescale)
                noise = step_noises[index].to(latents) if step_noises is not None and eta > 0 else None
                out = scheduler.step(
                    v,
                    t,
                    latents,
                    eta=eta,
                    generator=None if noise is not None else generator,
                    variance_noise=noise,
                )
                latents = out.prev_sample + self._dynamic_rescale_correction(
                    scheduler, int(t), scale_table, out.pred_original_sample
                )
                progress.update()
        return latents

    @staticmethod
    def _dynamic_rescale_correction(
        scheduler: GenFusionDDIMScheduler,
        timestep: int,
        scale_table: torch.Tensor | None,
        pred_x0: torch.Tensor,
    ) -> torch.Tensor | float:
        """``sqrt(a_prev) * (s(t_prev) / s(t) - 1) * x0``: turns the plain DDIM update into the rescaled-x0
        one."""
        previous = scheduler.previous_timestep(timestep)
        # The authors use ratio 1 at the last step, leaving the final latent at scale s(t_last).
        if scale_table is None or previous < 0:
            return 0.0
        ratio = float(scale_table[previous] / scale_table[timestep])
        if ratio == 1.0:
            return 0.0
        return math.sqrt(scheduler.alpha_cumprod_at(previous)) * (ratio - 1.0) * pred_x0

    def decode_latents(self, latents: torch.Tensor, chunk_size: int = 8) -> torch.Tensor:
        """Latent ``[1, 4, F, h', w']`` -> RGB-D ``[4, F, h, w]`` (unclamped); each frame decoded alone."""
        frames = latents[0].transpose(0, 1) / self.config.latent_scale_factor
        frames = frames.to(self._execution_device, self.vae.dtype)
        decoded = [self.vae.decode(chunk).sample.float() for chunk in frames.split(max(1, chunk_size))]
        return torch.cat(decoded).transpose(0, 1)

    def prepare_clips(self, artifact_rgb: torch.Tensor, artifact_depth: torch.Tensor) -> list[_PreparedClip]:
        """Cut the video into model-length windows and convert each to the model's RGB / disparity codes.

        A video shorter than the clip length is padded by repeating its last frame (the padded frames are
        dropped from the output); the depth normalisation is per window, as the authors normalise per 16-frame
        window.
        """
        length = self.config.num_frames
        clips = []
        for start, first_new in clip_windows(artifact_rgb.shape[0], length):
            rgb = artifact_rgb[start : start + length]
            depth = artifact_depth[start : start + length]
            num_valid = rgb.shape[0]
            if num_valid < length:
                pad = length - num_valid
                rgb = torch.cat([rgb, rgb[-1:].expand(pad, *rgb.shape[1:])])
                depth = torch.cat([depth, depth[-1:].expand(pad, *depth.shape[1:])])
            depth_code, disparity_range = depth_to_disparity_code(
                depth, self.config.height, self.config.width
            )
            clips.append(
                _PreparedClip(
                    start=start,
                    first_new=first_new,
                    num_valid=num_valid,
                    rgb_code=rgb_to_model(rgb, self.config.height, self.config.width),
                    depth_code=depth_code,
                    disparity_range=disparity_range,
                )
            )
        return clips

    # ------------------------------------------------------------------ call

    def _check_inputs(
        self, rgb: torch.Tensor, depth: torch.Tensor, reference: torch.Tensor, output_type: str
    ) -> None:
        if rgb.ndim != 4 or rgb.shape[-1] != 3:
            raise ValueError(f"artifact_rgb must have shape [T, H, W, 3] in [0, 1], got {tuple(rgb.shape)}")
        if depth.shape != rgb.shape[:3]:
            raise ValueError(
                f"artifact_depth must have shape [T, H, W] = {tuple(rgb.shape[:3])}, got {tuple(depth.shape)}"
            )
        if reference.ndim != 3 or reference.shape[-1] != 3:
            raise ValueError(
                f"reference_image must have shape [H, W, 3] in [0, 1], got {tuple(reference.shape)}"
            )
        for name, image in (("artifact_rgb", rgb), ("reference_image", reference)):
            low, high = float(image.min()), float(image.max())
            if low < -1e-3 or high > 1.0 + 1e-3:
                raise ValueError(
                    f"{name} must hold values in [0, 1], got [{low:.3g}, {high:.3g}] "
                    "(divide 8-bit images by 255)"
                )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")

    @staticmethod
    def _per_clip(name: str, value: torch.Tensor | None, clip: int, count: int, dims: int):
        """Clip ``clip`` of an explicit per-clip tensor whose leading axis indexes the clips."""
        if value is None:
            return None
        if value.ndim != dims or value.shape[0] != count:
            raise ValueError(
                f"{name} must have {dims} dims with {count} clip(s) on its leading axis, "
                f"got {tuple(value.shape)}"
            )
        return value[clip]

    def noised_condition(
        self, condition: torch.Tensor, noise: torch.Tensor, timestep: int, scheduler: GenFusionDDIMScheduler
    ) -> torch.Tensor:
        """The start of partial sampling: the artifact latent as a clean sample at ``timestep`` (times the dynamic
        rescale s(t), as in training), noised with ``noise``."""
        x0 = condition.float()
        if self.config.use_dynamic_rescale:
            table = dynamic_rescale_table(
                self.config.dynamic_rescale_base_scale,
                self.config.dynamic_rescale_turning_step,
                scheduler.config.num_train_timesteps,
            )
            x0 = x0 * float(table[timestep])
        return scheduler.add_noise(x0, noise.float(), torch.tensor([timestep], device=x0.device))

    def _clip_start(
        self,
        clip: _PreparedClip,
        index: int,
        count: int,
        generator: torch.Generator | None,
        latents: torch.Tensor | None,
        condition_latents: torch.Tensor | None,
        condition_noise: torch.Tensor | None,
        step_noises: torch.Tensor | None,
        vae_chunk_size: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """x_T, the condition latent and the per-step noise of one clip: given explicitly, or drawn in this
        order: condition posterior noise, x_T (the step noise is drawn during denoising)."""
        device = self._execution_device
        condition = self._per_clip("condition_latents", condition_latents, index, count, 5)
        if condition is None:
            condition = self.encode_condition(
                clip.rgb_code,
                clip.depth_code,
                generator=generator,
                noise=self._per_clip("condition_noise", condition_noise, index, count, 5),
                chunk_size=vae_chunk_size,
            )
        else:
            condition = condition[None].to(device, torch.float32)
        x_t = self._per_clip("latents", latents, index, count, 5)
        if x_t is None:
            x_t = randn_tensor(
                (1, *self.latent_shape), generator=generator, device=device, dtype=torch.float32
            )
        else:
            x_t = x_t[None].to(device, torch.float32)
        if tuple(condition.shape[1:]) != self.latent_shape or tuple(x_t.shape[1:]) != self.latent_shape:
            raise ValueError(
                f"latents and condition latents of one clip must have shape {self.latent_shape}, got "
                f"{tuple(x_t.shape[1:])} and {tuple(condition.shape[1:])}"
            )
        if step_noises is None:
            return x_t, condition, None
        if step_noises.ndim != 6 or step_noises.shape[1] != count:
            raise ValueError(
                f"step_noises must have shape [S, {count}, *{self.latent_shape}], "
                f"got {tuple(step_noises.shape)}"
            )
        return x_t, condition, step_noises[:, index : index + 1]

    @staticmethod
    def _clip_outputs(
        decoded: torch.Tensor, clip: _PreparedClip, height: int, width: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """RGB, metric depth (input resolution), disparity code (model resolution) of a clip's new frames."""
        keep = slice(clip.first_new - clip.start, clip.num_valid)
        code = decoded[3, keep].clamp(-1.0, 1.0)
        rgb = rgb_from_model(decoded[:3, keep], height, width)
        return rgb, disparity_code_to_depth(code, clip.disparity_range, height, width), code

    @torch.no_grad()
    def __call__(
        self,
        artifact_rgb: ArrayLike,
        artifact_depth: ArrayLike,
        reference_image: ArrayLike,
        num_inference_steps: int = 25,
        guidance_scale: float = 3.2,
        guidance_rescale: float = 0.7,
        eta: float = 1.0,
        timestep_spacing: str = "uniform",
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        condition_latents: torch.Tensor | None = None,
        condition_noise: torch.Tensor | None = None,
        step_noises: torch.Tensor | None = None,
        output_type: str = "np",
        vae_chunk_size: int = 8,
        return_dict: bool = True,
        strength: float = 1.0,
        residual_decode: bool | None = None,
    ) -> GenFusionVideoPipelineOutput | tuple:
        """Repair a rendered RGB-D video.

        Inputs are resized to the model resolution (trilinear RGB, nearest depth) and the outputs back to the
        input resolution. The video is repaired in windows of ``num_frames`` frames (each with its own depth
        normalisation and random draws): windows start at 0, F, 2F, ...; if T is not a multiple of F, the last
        window is moved back to end on frame T-1 and only its frames not produced yet are kept. A video
        shorter than F is padded by repeating its last frame, and the padding is dropped from the outputs.

        Args:
            artifact_rgb: rendered video ``[T, H, W, 3]`` in [0, 1] (any resolution; black where nothing
                renders).
            artifact_depth: rendered metric depth ``[T, H, W]``, 0 where nothing renders.
            reference_image: a clean image ``[H_r, W_r, 3]`` in [0, 1] of the same scene.
            num_inference_steps: DDIM steps requested ("uniform" may run more, see :mod:`.scheduling`).
            guidance_scale: CFG weight over the reference image; <= 1 disables CFG (one UNet branch).
            guidance_rescale: std-matching rescale of the guided v (0 disables it).
            eta: DDIM stochasticity (1 = the authors' setting).
            timestep_spacing: "uniform" (authors' reconstruction loop), "uniform_trailing" (authors' training
                logs), or diffusers' "leading" / "trailing" / "linspace".
            generator: source of every random draw: per clip, the condition posterior noise, then x_T, then
                the per-step DDIM noise.
            latents: explicit x_T ``[num_clips, 4, F, h', w']`` (float32 recommended).
            condition_latents: precomputed scaled artifact latents ``[num_clips, 4, F, h', w']`` (skips the
                VAE encode; the artifact depth is still used for the depth scale and the output size).
            condition_noise: explicit posterior noise of the condition ``[num_clips, 4, F, h', w']``.
            step_noises: explicit DDIM noise ``[S, num_clips, 4, F, h', w']`` (S = steps actually run).
            output_type: "np" (numpy), "pt" (torch, on the execution device) or "latent" (no decoding).
            vae_chunk_size: frames per VAE encode/decode call (the authors decode one frame at a time).
            return_dict: return a :class:`GenFusionVideoPipelineOutput` instead of a tuple.
            strength: 1 (the authors) starts from pure noise. Below 1, sampling starts from the artifact latent
                noised to timestep ``strength * T`` and runs only the schedule's steps below it (SDEdit, diffusers'
                img2img ``strength``): the output keeps the render's low frequencies, which suits small or
                briefly trained models. ``latents`` then holds the noise that is added.
            residual_decode: output = input + decode(repaired latent) - decode(input latent), so the model's
                change is added to the render instead of replacing it by a VAE reconstruction (keeps detail a weak
                VAE would blur). ``None``: the model's ``residual_decode`` setting (off for the authors' model).
        """
        rgb = _as_float_tensor("artifact_rgb", artifact_rgb)
        depth = _as_float_tensor("artifact_depth", artifact_depth)
        reference = _as_float_tensor("reference_image", reference_image)
        self._check_inputs(rgb, depth, reference, output_type)
        if condition_latents is not None and condition_noise is not None:
            raise ValueError(
                "condition_noise is only used to encode the condition; drop it with condition_latents"
            )
        in_height, in_width = rgb.shape[1:3]

        scheduler = GenFusionDDIMScheduler.from_config(
            self.scheduler.config, timestep_spacing=timestep_spacing
        )
        scheduler.set_timesteps(num_inference_steps, device="cpu")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if strength < 1.0:
            limit = strength * (scheduler.config.num_train_timesteps - 1)
            kept = scheduler.timesteps[scheduler.timesteps <= limit]
            scheduler.timesteps = kept if len(kept) else scheduler.timesteps[-1:]
        height, width = self.config.height, self.config.width
        reference_code = rgb_to_model(reference[None], height, width)[:, 0]
        context, uncond_context = self.encode_reference(reference_code)

        clips = self.prepare_clips(rgb, depth)
        count = len(clips)
        final_latents = []
        rgb_frames, depth_frames, code_frames = [], [], []
        for k, clip in enumerate(clips):
            x_t, condition, clip_step_noises = self._clip_start(
                clip,
                k,
                count,
                generator,
                latents,
                condition_latents,
                condition_noise,
                step_noises,
                vae_chunk_size,
            )
            if strength < 1.0:
                x_t = self.noised_condition(condition, x_t, int(scheduler.timesteps[0]), scheduler)
            final = self.denoise(
                x_t,
                condition,
                context,
                uncond_context,
                scheduler,
                guidance_scale,
                guidance_rescale,
                eta,
                generator=generator,
                step_noises=clip_step_noises,
            )
            final_latents.append(final[0])
            if output_type != "latent":
                decoded = self.decode_latents(final, chunk_size=vae_chunk_size)
                if self.config.residual_decode if residual_decode is None else residual_decode:
                    unchanged = self.decode_latents(condition, chunk_size=vae_chunk_size)
                    decoded = torch.cat([clip.rgb_code, clip.depth_code]).to(decoded) + decoded - unchanged
                for frames, value in zip(
                    (rgb_frames, depth_frames, code_frames),
                    self._clip_outputs(decoded, clip, in_height, in_width),
                ):
                    frames.append(value)

        self.maybe_free_model_hooks()
        latents_out = torch.stack(final_latents)
        if output_type == "latent":
            outputs = (None, None, latents_out, None)
        else:
            outputs = (torch.cat(rgb_frames), torch.cat(depth_frames), latents_out, torch.cat(code_frames))
        if output_type == "np":
            outputs = tuple(value.cpu().numpy() if value is not None else None for value in outputs)
        if not return_dict:
            return outputs
        return GenFusionVideoPipelineOutput(*outputs)
