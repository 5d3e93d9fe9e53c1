"""The pipeline's encoders and decoder: reference image -> CLIP context, RGB-D clip <-> scaled VAE latent.

A mixin of :class:`~genfusion_ns.video.pipeline.GenFusionVideoPipeline` (it uses the pipeline's ``vae``,
``image_encoder``, ``image_proj`` and ``config``), kept apart from the sampler because training
(``diffusion_train``) calls these same methods to make its latents and CLIP tokens.
"""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from .preprocess import clip_preprocess, null_reference_like, rgbd_frames


class EncodingMixin:
    """Encode references and RGB-D clips, decode latents, and the VAE's memory knobs."""

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

    def reference_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Reference images ``[B, 3, h, w]`` in [-1, 1] (on the execution device) -> CLIP tokens ``[B, L, D]``
        (``last_hidden_state``, before the resampler)."""
        pixels = clip_preprocess(
            images, self.config.clip_image_size, self.config.clip_mean, self.config.clip_std
        ).to(dtype=self.image_encoder.dtype)
        with self.network_autocast():
            return self.image_encoder(pixel_values=pixels).last_hidden_state

    def encode_reference(self, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference ``[3, h, w]`` in [-1, 1] -> (conditional, unconditional) contexts ``[1, L, D]`` each.

        The unconditional context is the resampled CLIP tokens of the null reference (mid-grey), exactly the
        image the model saw with the reference dropped in training; both go through CLIP as one batch.
        """
        device = self._execution_device
        images = torch.stack([reference, null_reference_like(reference)]).to(device)
        tokens = self.reference_tokens(images)
        with self.network_autocast():
            context = self.image_proj(tokens.to(self.image_proj.dtype))
        return context[:1], context[1:]

    def encode_posterior(
        self, rgb_code: torch.Tensor, depth_code: torch.Tensor, chunk_size: int = 8
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB-D codes ``[3|1, F, h, w]`` -> the VAE posterior's ``(mean, std)``, each ``[F, 4, h', w']`` float32
        and unscaled (one 4-channel VAE pass per frame, ``chunk_size`` frames at a time)."""
        device = self._execution_device
        frames = rgbd_frames(rgb_code, depth_code).to(device, self.vae.dtype)  # [F, 4, h, w]
        means, stds = [], []
        for chunk in frames.split(max(1, chunk_size)):
            with self.network_autocast():
                posterior = self.vae.encode(chunk).latent_dist
            means.append(posterior.mean.float())
            stds.append(posterior.std.float())
        return torch.cat(means), torch.cat(stds)

    def sample_posterior(
        self, mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None,
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

    def decode_latents(self, latents: torch.Tensor, chunk_size: int = 8) -> torch.Tensor:
        """Latent ``[1, 4, F, h', w']`` -> RGB-D ``[4, F, h, w]`` float32 (unclamped); each frame decoded alone,
        ``chunk_size`` frames per VAE call, so the decoder's activations stay bounded whatever the clip length."""
        frames = latents[0].transpose(0, 1) / self.config.latent_scale_factor
        frames = frames.to(self._execution_device, self.vae.dtype)
        decoded = []
        for chunk in frames.split(max(1, chunk_size)):
            with self.network_autocast():
                decoded.append(self.vae.decode(chunk).sample.float())
        return torch.cat(decoded).transpose(0, 1)
