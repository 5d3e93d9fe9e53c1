"""The video model's training objective: v-prediction MSE on RGB-D latents (reference notes §1.9, §2.3).

* target latent and condition latent: VAE posterior *samples* x 0.18215 of the target / artifact RGB-D clips, made
  by the pipeline's own :meth:`GenFusionVideoPipeline.encode_condition` (one 4-channel VAE pass per frame);
* reference dropout: with probability 0.1 the reference becomes the null reference (all zeros in [-1, 1],
  mid-grey, :func:`~genfusion_ns.video.preprocess.null_reference_like`) -- the same image the pipeline's
  unconditional CFG branch encodes -- so guidance at inference matches training; the CLIP tokens come from the
  pipeline's own :meth:`reference_tokens`;
* noise: t ~ U{0..T-1}; x0 is first multiplied by DynamiCrafter's dynamic-rescale factor s(t) when the model uses it
  (the sampler undoes exactly this; the table is the pipeline's ``dynamic_rescale_scales``); then the
  scheduler's ``add_noise`` / ``get_velocity`` (zero-terminal-SNR, v-prediction config of the pipeline) give
  the noisy latent and the v target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genfusion_ns.video.preprocess import null_reference_like
from genfusion_ns.video.scheduling import GenFusionDDIMScheduler


class VideoDenoiser(nn.Module):
    """The trainable part as one module (one DDP wrapper): resampler (image tokens -> context) + UNet."""

    def __init__(self, unet: nn.Module, image_proj: nn.Module, fps: int):
        super().__init__()
        self.unet = unet
        self.image_proj = image_proj
        self.fps = fps

    def forward(self, noisy: torch.Tensor, condition: torch.Tensor, clip_tokens: torch.Tensor,
                timesteps: torch.Tensor) -> torch.Tensor:
        """v prediction ``[B, 4, F, h, w]`` for noisy latents given the artifact latent and the reference tokens."""
        context = self.image_proj(clip_tokens)
        sample = torch.cat([noisy, condition.to(noisy.dtype)], dim=1)
        return self.unet(sample, timesteps, encoder_hidden_states=context, fps=self.fps).sample


@dataclass
class EncodedBatch:
    """Frozen-encoder outputs of one batch (no gradients)."""

    target: torch.Tensor  # [B, 4, F, h, w] scaled latent of the clean RGB-D clip
    condition: torch.Tensor  # [B, 4, F, h, w] scaled latent of the artifact RGB-D clip
    clip_tokens: torch.Tensor  # [B, L, D] CLIP tokens of the (possibly dropped) reference
    dropped: torch.Tensor  # [B] bool, reference replaced by the grey image


class PosteriorCache:
    """VAE posteriors ``(mean, std)`` of each dataset window, computed once (the VAE is frozen and a window's RGB-D
    codes are fixed), so training pays for a fresh posterior *sample* only, not for a VAE pass per step."""

    def __init__(self):
        self._entries: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, pipe, index: int, kind: str, rgb: torch.Tensor, depth: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
        key = (index, kind)
        if key not in self._entries:
            mean, std = pipe.encode_posterior(rgb, depth)
            self._entries[key] = (mean.cpu(), std.cpu())
        mean, std = self._entries[key]
        device = pipe._execution_device
        return mean.to(device), std.to(device)


@torch.no_grad()
def encode_batch(pipe, batch: dict[str, torch.Tensor], reference_dropout: float,
                 generator: torch.Generator | None = None, cache: PosteriorCache | None = None) -> EncodedBatch:
    """Latents of target and artifact clips and the reference's CLIP tokens, with reference dropout.

    With ``cache`` (and the dataset's ``index`` in the batch) each window's VAE posterior is computed only once."""
    latents: dict[str, list[torch.Tensor]] = {"target": [], "artifact": []}
    for i in range(batch["target_rgb"].shape[0]):
        for kind in ("target", "artifact"):
            rgb, depth = batch[f"{kind}_rgb"][i], batch[f"{kind}_depth"][i]
            if cache is not None and "index" in batch:
                mean, std = cache.get(pipe, int(batch["index"][i]), kind, rgb, depth)
            else:
                mean, std = pipe.encode_posterior(rgb, depth)
            latents[kind].append(pipe.sample_posterior(mean, std, generator=generator)[0])
    device = pipe._execution_device
    reference = batch["reference"].to(device)
    dropped = torch.rand(reference.shape[0], generator=generator, device=generator.device if generator else "cpu")
    dropped = (dropped < reference_dropout).to(device)
    reference = torch.where(dropped[:, None, None, None], null_reference_like(reference), reference)
    tokens = pipe.reference_tokens(reference)
    return EncodedBatch(torch.stack(latents["target"]), torch.stack(latents["artifact"]), tokens.float(), dropped)


class VPredictionObjective:
    """Noising and the v target under the pipeline's training schedule (+ dynamic rescale of x0)."""

    def __init__(self, pipe):
        self.scheduler = GenFusionDDIMScheduler.from_config(pipe.scheduler.config)
        if self.scheduler.config.prediction_type != "v_prediction":
            raise ValueError("the GenFusion video model is trained with v-prediction; the scheduler config says "
                             f"{self.scheduler.config.prediction_type!r}")
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)
        self.scale_table = pipe.dynamic_rescale_scales(self.num_train_timesteps)

    def sample_timesteps(self, batch_size: int, device: torch.device,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randint(0, self.num_train_timesteps, (batch_size,), generator=generator,
                             device=generator.device if generator else "cpu").to(device)

    def noisy_and_target(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_t, v)`` for clean latents ``x0`` (rescaled by s(t) first when dynamic rescale is on)."""
        if self.scale_table is not None:
            scale = self.scale_table.to(x0.device)[timesteps.long()].view(-1, *([1] * (x0.ndim - 1)))
            x0 = x0 * scale
        noisy = self.scheduler.add_noise(x0, noise, timesteps)
        velocity = self.scheduler.get_velocity(x0, noise, timesteps)
        return noisy, velocity

    def loss(self, denoiser: nn.Module, encoded: EncodedBatch, noise: torch.Tensor, timesteps: torch.Tensor
             ) -> torch.Tensor:
        """Mean squared error between predicted and true v over all latent channels, frames and pixels."""
        noisy, velocity = self.noisy_and_target(encoded.target, noise, timesteps)
        prediction = denoiser(noisy, encoded.condition, encoded.clip_tokens, timesteps)
        return F.mse_loss(prediction.float(), velocity.float())
