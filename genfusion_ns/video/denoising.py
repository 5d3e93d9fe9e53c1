"""The pipeline's sampler: DDIM on v-predictions with CFG, guidance rescale and DynamiCrafter's x0 rescale.

A mixin of :class:`~genfusion_ns.video.pipeline.GenFusionVideoPipeline` (it uses the pipeline's ``unet`` and
``config``); the dynamic-rescale table it samples with is also what training noises with
(:meth:`DenoisingMixin.dynamic_rescale_scales`), so the two cannot drift apart.
"""

from __future__ import annotations

import math

import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg
from diffusers.utils.torch_utils import randn_tensor

from .scheduling import GenFusionDDIMScheduler, dynamic_rescale_table


def dynamic_rescale_coefficients(
    scheduler: GenFusionDDIMScheduler, timesteps: list[int], scale_table: torch.Tensor | None
) -> list[float]:
    """Per step, ``c = sqrt(a_prev) * (s(t_prev) / s(t) - 1)``: ``x_prev + c * x0`` turns the plain DDIM update
    into the rescaled-x0 one. Computed before the loop so that the loop reads no tensor; 0 means no correction.
    """
    if scale_table is None:
        return [0.0] * len(timesteps)
    previous = [scheduler.previous_timestep(t) for t in timesteps]
    # The authors use ratio 1 at the last step, leaving the final latent at scale s(t_last).
    kept = [p if p >= 0 else t for t, p in zip(timesteps, previous)]
    ratios = (scale_table[kept] / scale_table[timesteps]).tolist()  # float32 division, as the authors'
    return [
        0.0 if ratio == 1.0 else math.sqrt(scheduler.alpha_cumprod_at(p)) * (ratio - 1.0)
        for p, ratio in zip(previous, ratios)
    ]


class DenoisingMixin:
    """Sampling schedules and the denoising loop of one clip."""

    def dynamic_rescale_scales(self, num_train_timesteps: int) -> torch.Tensor | None:
        """The model's x0 scale ``s(t)`` per training timestep (``None``: the model does not rescale)."""
        if not self.config.use_dynamic_rescale:
            return None
        return dynamic_rescale_table(
            self.config.dynamic_rescale_base_scale,
            self.config.dynamic_rescale_turning_step,
            num_train_timesteps,
        )

    def sampling_scheduler(
        self, num_inference_steps: int, timestep_spacing: str, strength: float
    ) -> GenFusionDDIMScheduler:
        """A fresh scheduler holding the timesteps of one call; ``strength < 1`` keeps only those at or below
        ``strength * T`` (at least the last one)."""
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
        return scheduler

    def noised_condition(
        self, condition: torch.Tensor, noise: torch.Tensor, timestep: int, scheduler: GenFusionDDIMScheduler
    ) -> torch.Tensor:
        """The start of partial sampling: the artifact latent as a clean sample at ``timestep`` (times the dynamic
        rescale s(t), as in training), noised with ``noise``."""
        x0 = condition.float()
        table = self.dynamic_rescale_scales(scheduler.config.num_train_timesteps)
        if table is not None:
            x0 = x0 * float(table[timestep])
        return scheduler.add_noise(x0, noise.float(), torch.tensor([timestep], device=x0.device))

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

        The loop (the block of the progress bar) never synchronises with the device: the timesteps, the DDIM and
        dynamic-rescale coefficients (Python floats) and the step noise are all prepared before it, so the host
        can queue the steps ahead of the GPU. Both CFG branches run as one batch-2 UNet call.
        """
        timesteps: list[int] = scheduler.timesteps.tolist()
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
        latents = latents.float()
        # Everything the loop needs from the host is moved or computed here, so no step waits on the device.
        batch = condition_latents.shape[0]
        model_timesteps = scheduler.timesteps.to(latents.device)
        rescale = dynamic_rescale_coefficients(
            scheduler, timesteps, self.dynamic_rescale_scales(scheduler.config.num_train_timesteps)
        )
        noises = self._step_noises(latents, len(timesteps), eta, generator, step_noises)
        with self.progress_bar(total=len(timesteps)) as progress:
            for index, t in enumerate(timesteps):
                model_latents = torch.cat([latents, latents]) if do_cfg else latents
                model_input = torch.cat([model_latents.to(unet_dtype), condition_latents], dim=1)
                with self.network_autocast():
                    v = self.unet(
                        model_input,
                        model_timesteps[index].expand(batch),
                        encoder_hidden_states=context,
                        fps=self.config.fps,
                    ).sample
                v = v.float()
                if do_cfg:
                    v_uncond, v_cond = v.chunk(2)
                    v = v_uncond + guidance_scale * (v_cond - v_uncond)
                    if guidance_rescale > 0:
                        v = rescale_noise_cfg(v, v_cond, guidance_rescale=guidance_rescale)
                out = scheduler.step(
                    v, t, latents, eta=eta, variance_noise=noises[index] if noises is not None else None
                )
                latents = out.prev_sample
                if rescale[index] != 0.0:
                    latents = latents + rescale[index] * out.pred_original_sample
                progress.update()
        return latents

    @staticmethod
    def _step_noises(
        latents: torch.Tensor,
        steps: int,
        eta: float,
        generator: torch.Generator | None,
        step_noises: torch.Tensor | None,
    ) -> torch.Tensor | list[torch.Tensor] | None:
        """The DDIM noise of every step on the latents' device before the loop (``None`` at ``eta == 0``):
        a CPU generator would otherwise copy to the device at every step. Drawn one step at a time, in step
        order, so the values are those the scheduler would have drawn."""
        if eta <= 0:
            return None
        if step_noises is not None:
            return step_noises.to(latents)
        return [
            randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
            for _ in range(steps)
        ]
