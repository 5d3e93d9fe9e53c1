"""The reference-image resampler: diffusers' IP-Adapter-Plus perceiver made a saveable diffusers model.

The authors' ``Resampler`` (learned latent queries cross-attending to CLIP tokens) is exactly diffusers'
``IPAdapterPlusImageProjection``; that class is a bare ``nn.Module``, so a pipeline could not ``save_pretrained`` it.
This subclass only adds ``ModelMixin``/``ConfigMixin`` so it gets ``config.json`` + safetensors like the other parts.
"""

from __future__ import annotations

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import IPAdapterPlusImageProjection
from diffusers.models.modeling_utils import (
    ModelMixin,  # also what DiffusionPipeline looks up to load this module
)


class GenFusionResampler(IPAdapterPlusImageProjection, ModelMixin, ConfigMixin):
    """CLIP tokens ``[B, N, embed_dims]`` → ``num_queries`` context tokens ``[B, num_queries, output_dims]``.

    For GenFusion: 257 ViT-H/14 tokens (1280 wide, before ``post_layernorm``) → 256 tokens × 1024.
    """

    @register_to_config
    def __init__(
        self,
        embed_dims: int = 1280,
        output_dims: int = 1024,
        hidden_dims: int = 1024,
        depth: int = 4,
        dim_head: int = 64,
        heads: int = 12,
        num_queries: int = 256,
        ffn_ratio: float = 4,
    ):
        super().__init__(
            embed_dims=embed_dims,
            output_dims=output_dims,
            hidden_dims=hidden_dims,
            depth=depth,
            dim_head=dim_head,
            heads=heads,
            num_queries=num_queries,
            ffn_ratio=ffn_ratio,
        )
