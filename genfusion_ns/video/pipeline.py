"""``GenFusionVideoPipeline``: repair an artifact-prone RGB-D rendering video given one clean reference image.

The sampler is the authors' (reference notes §3.3-3.5, §5.4) expressed with diffusers parts: DDIM
(:class:`GenFusionDDIMScheduler`) on v-predictions, classifier-free guidance over the reference image only
(the unconditional branch is the CLIP tokens of a grey image; the artifact latent is shared), guidance
rescale, and DynamiCrafter's dynamic x0 rescale. Differences from the authors, on purpose:

* the returned depth is metric (the per-clip disparity normalisation is undone) instead of ``1 / n``;
* both CFG branches run as one batch-2 UNet call;
* the scheduler arithmetic stays in float32 whatever the components' dtype (fp16/bf16 only inside the
  networks);
* videos longer than the model's clip length are repaired clip by clip (see :func:`.preprocess.clip_windows`).

This module holds the class and its call; the parts live by job: :mod:`.encoding` (CLIP context, VAE encode /
decode), :mod:`.denoising` (the DDIM loop), :mod:`.clips` (input checks and windows), :mod:`.output` (the
result type), :mod:`.preprocess` (pixel conventions). Saved folders name only this class and the component
classes in :mod:`.models` / :mod:`.scheduling`, so folders of earlier versions load unchanged.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPVisionModel

from .clips import PreparedClip, as_float_tensor, check_inputs, clip_outputs, per_clip, prepare_clips
from .denoising import DenoisingMixin
from .encoding import EncodingMixin
from .fast_path import FastPathMixin
from .models import GenFusionResampler, GenFusionUNet
from .output import ArrayLike, GenFusionVideoPipelineOutput
from .preprocess import CLIP_IMAGE_SIZE, CLIP_MEAN, CLIP_STD, rgb_to_model
from .scheduling import GenFusionDDIMScheduler

__all__ = ["RELEASED_WEIGHTS_HINT", "GenFusionVideoPipeline", "GenFusionVideoPipelineOutput"]

RELEASED_WEIGHTS_HINT = (
    "GenFusion weights are not downloaded at run time. Get the authors' checkpoint "
    "(Hugging Face 'Sibo2rr/GenFusion-GenerationModel', file 'epoch=59-step=34000.ckpt'), the LDM3D-4c VAE "
    "('Intel/ldm3d-4c', subfolder 'vae') and the OpenCLIP ViT-H/14 image tower "
    "('laion/CLIP-ViT-H-14-laion2B-s32B-b79K') on a machine with internet access, convert them once with "
    "`genfusion-convert` into a local folder, and pass that folder to GenFusionVideoPipeline.from_pretrained "
    "(or pre-populate the Hugging Face cache, HF_HOME, with a converted pipeline repository)."
)


class GenFusionVideoPipeline(EncodingMixin, DenoisingMixin, FastPathMixin, DiffusionPipeline):
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

    # ------------------------------------------------------------------ call

    def prepare_clips(self, artifact_rgb: torch.Tensor, artifact_depth: torch.Tensor) -> list[PreparedClip]:
        """The video as model-length windows in the model's codes (see :func:`.clips.prepare_clips`)."""
        return prepare_clips(artifact_rgb, artifact_depth, self.config.num_frames, self.config.height,
                             self.config.width)

    def _clip_start(
        self,
        clip: PreparedClip,
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
        condition = per_clip("condition_latents", condition_latents, index, count, 5)
        if condition is None:
            condition = self.encode_condition(
                clip.rgb_code,
                clip.depth_code,
                generator=generator,
                noise=per_clip("condition_noise", condition_noise, index, count, 5),
                chunk_size=vae_chunk_size,
            )
        else:
            condition = condition[None].to(device, torch.float32)
        x_t = per_clip("latents", latents, index, count, 5)
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
        change_sigma: float = 0.0,
    ) -> GenFusionVideoPipelineOutput | tuple:
        """Repair a rendered RGB-D video.

        Frames of any size and aspect ratio are letterboxed into the model resolution (scaled without distortion,
        trilinear RGB, nearest depth, centred and padded; see :mod:`.framing`) and the outputs cropped and resized
        back to the input resolution. The video is repaired in windows of ``num_frames`` frames (each with its own depth
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
            residual_decode: output = input + decode(repaired latent) - decode(input latent), the change resized to
                the input size, so the model's change is added to the render instead of replacing it by a VAE
                reconstruction (keeps detail a weak VAE or a downscale would blur). ``None``: the model's ``residual_decode`` setting (off for the authors' model).
            change_sigma: with residual decoding, blur the model's change by a Gaussian of this many pixels (model
                resolution) before adding it, keeping its low frequencies only; 0 (default) adds it as it is.
        """
        rgb = as_float_tensor("artifact_rgb", artifact_rgb)
        depth = as_float_tensor("artifact_depth", artifact_depth)
        reference = as_float_tensor("reference_image", reference_image)
        check_inputs(rgb, depth, reference, output_type)
        if condition_latents is not None and condition_noise is not None:
            raise ValueError(
                "condition_noise is only used to encode the condition; drop it with condition_latents"
            )

        residual = self.config.residual_decode if residual_decode is None else residual_decode
        if change_sigma < 0 or (change_sigma > 0 and not residual):
            raise ValueError(f"change_sigma ({change_sigma}) must be >= 0 and needs residual decoding (the model "
                             "decodes its output alone otherwise): pass residual_decode=True or change_sigma=0")
        scheduler = self.sampling_scheduler(num_inference_steps, timestep_spacing, strength)
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
                unchanged = None
                if residual:
                    unchanged = self.decode_latents(condition, chunk_size=vae_chunk_size)
                for frames, value in zip(
                    (rgb_frames, depth_frames, code_frames), clip_outputs(decoded, clip, unchanged, change_sigma)
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
