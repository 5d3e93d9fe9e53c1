"""The GenFusion video UNet: diffusers' ``UNet3DConditionModel`` plus the two things the authors' network adds.

The authors' VideoCrafter/DynamiCrafter ``UNetModel`` has exactly the block recipe of ``UNet3DConditionModel``
(2-D resnets + 4-conv temporal blocks, spatial + temporal transformers, ``transformer_in`` after ``conv_in``), so this
is a thin subclass that adds

* an **fps embedding**: a second MLP on the sinusoidal embedding of the frame rate, added to the timestep embedding
  before it is repeated over frames (``UNet3DConditionModel`` has no slot for it; its ``time_cond_proj_dim`` adds a
  projection *inside* the first linear layer, which is not equivalent);
* the **split-context cross-attention** on every spatial ``attn2`` (see :mod:`.attention`).

Both are configuration knobs (``register_to_config``), so ``from_pretrained`` rebuilds the exact module tree.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding

# DiffusionPipeline.from_pretrained finds the load method of a component from outside diffusers by looking up
# ``getattr(<defining module>, "ModelMixin")``, so the base class must be importable from this module.
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.unets.unet_3d_condition import UNet3DConditionModel, UNet3DConditionOutput

from .attention import SplitContextCrossAttnProcessor


class TimestepAndFpsEmbedding(TimestepEmbedding):
    """Timestep MLP whose output is shifted by an fps MLP (both on sinusoidal embeddings of the same width).

    The fps sinusoid arrives through the ``condition`` argument that ``UNet3DConditionModel.forward`` already passes
    to its time embedding (``timestep_cond``), so the base forward needs no change.
    """

    def __init__(self, in_channels: int, time_embed_dim: int, act_fn: str = "silu"):
        super().__init__(in_channels, time_embed_dim, act_fn)
        self.fps_embedding = TimestepEmbedding(in_channels, time_embed_dim, act_fn)

    def forward(self, sample: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        if condition is None:
            raise ValueError("the fps-conditioned time embedding needs the fps sinusoid as `condition`")
        return super().forward(sample) + self.fps_embedding(condition)


class GenFusionUNet(UNet3DConditionModel):
    """Video UNet of GenFusion / DynamiCrafter on diffusers building blocks.

    Called as ``unet(sample [B, C_in, T, h, w], timestep, encoder_hidden_states [B, L, D], fps=30).sample`` →
    ``[B, C_out, T, h, w]``; for GenFusion ``C_in = 8`` (noisy latent ⊕ artifact-video latent), ``C_out = 4`` (v).

    Extra configuration (the rest is ``UNet3DConditionModel``'s):
        fps_conditioning: add the fps embedding to the timestep embedding.
        default_fps: fps used when ``forward`` gets none (the authors' ``default_fs``).
        context_split_index: context tokens ``[0, i)`` use ``to_k``/``to_v``, ``[i, L)`` use ``to_k_ip``/``to_v_ip``
            in every spatial cross-attention; ``None`` keeps plain cross-attention over all tokens.
        image_cross_attention_scale: weight of the ``[i, L)`` attention in the sum.
        resnet_dropout: dropout inside the 2-D resnets (0.1 in the authors' training; the base class has no knob).
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 8,
        out_channels: int = 4,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "DownBlock3D",
        ),
        up_block_types: tuple[str, ...] = (
            "UpBlock3D",
            "CrossAttnUpBlock3D",
            "CrossAttnUpBlock3D",
            "CrossAttnUpBlock3D",
        ),
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1,
        act_fn: str = "silu",
        norm_num_groups: int | None = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 1024,
        attention_head_dim: int | tuple[int, ...] = 64,
        num_attention_heads: int | tuple[int, ...] | None = None,
        time_cond_proj_dim: int | None = None,
        fps_conditioning: bool = True,
        default_fps: int = 30,
        context_split_index: int | None = 77,
        image_cross_attention_scale: float = 1.0,
        resnet_dropout: float = 0.0,
    ):
        if fps_conditioning and time_cond_proj_dim is not None:
            raise ValueError(
                "fps_conditioning uses the timestep-condition slot; time_cond_proj_dim must be None"
            )
        super().__init__(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=down_block_types,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            downsample_padding=downsample_padding,
            mid_block_scale_factor=mid_block_scale_factor,
            act_fn=act_fn,
            norm_num_groups=norm_num_groups,
            norm_eps=norm_eps,
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads,
            time_cond_proj_dim=time_cond_proj_dim,
        )
        if fps_conditioning:
            self.time_embedding = TimestepAndFpsEmbedding(
                block_out_channels[0], block_out_channels[0] * 4, act_fn=act_fn
            )
        if context_split_index is not None:
            self._install_split_context_processors(context_split_index, image_cross_attention_scale)
        for module in self.modules():
            if isinstance(module, ResnetBlock2D):
                module.dropout.p = resnet_dropout

    def _install_split_context_processors(self, split_index: int, scale: float) -> None:
        """Give every cross-attention (the spatial ``attn2``; temporal ones are self-attention) its own processor."""
        processors = {}
        for name, processor in self.attn_processors.items():
            attn = self.get_submodule(name.removesuffix(".processor"))
            if isinstance(attn, Attention) and attn.is_cross_attention:
                processor = SplitContextCrossAttnProcessor(
                    hidden_size=attn.to_k.out_features,
                    cross_attention_dim=attn.to_k.in_features,
                    split_index=split_index,
                    scale=scale,
                )
            processors[name] = processor
        self.set_attn_processor(processors)

    def fps_tensor(
        self, fps: float | torch.Tensor | None, batch_size: int, device: torch.device
    ) -> torch.Tensor:
        """fps as a ``[B]`` tensor (scalar broadcast; ``None`` → ``config.default_fps``). A Python number is
        filled on the device rather than copied from the host, so a sampling step does not synchronise."""
        if fps is None:
            fps = self.config.default_fps
        if not isinstance(fps, torch.Tensor):
            return torch.full((batch_size,), fps, device=device)
        fps = fps.to(device)
        if fps.ndim == 0:
            fps = fps.expand(batch_size)
        if fps.shape != (batch_size,):
            raise ValueError(f"fps must be a scalar or have shape [{batch_size}], got {tuple(fps.shape)}")
        return fps

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        fps: float | torch.Tensor | None = None,
        **kwargs: Any,
    ) -> UNet3DConditionOutput | tuple[torch.Tensor]:
        """``UNet3DConditionModel.forward`` with an ``fps`` condition (ignored when fps conditioning is off)."""
        if sample.ndim != 5:
            raise ValueError(f"sample must be [B, C, T, h, w], got shape {tuple(sample.shape)}")
        if sample.shape[1] != self.config.in_channels:
            raise ValueError(
                f"sample has {sample.shape[1]} channels, the UNet expects {self.config.in_channels} "
                "(noisy latent concatenated with the condition latent)"
            )
        if (
            encoder_hidden_states.ndim != 3
            or encoder_hidden_states.shape[-1] != self.config.cross_attention_dim
        ):
            raise ValueError(
                f"encoder_hidden_states must be [B, L, {self.config.cross_attention_dim}], "
                f"got shape {tuple(encoder_hidden_states.shape)}"
            )
        if self.config.fps_conditioning:
            if kwargs.get("timestep_cond") is not None:
                raise ValueError(
                    "timestep_cond carries the fps embedding in GenFusionUNet; pass `fps` instead"
                )
            fps = self.fps_tensor(fps, sample.shape[0], sample.device)
            kwargs["timestep_cond"] = self.time_proj(fps).to(dtype=self.dtype)
        return super().forward(sample, timestep, encoder_hidden_states, **kwargs)
