"""Dual cross-attention of the GenFusion UNet ("text" and "image" key/value pairs over one context).

The authors inherit DynamiCrafter's cross-attention, which splits the context at a fixed token index: tokens
``[0, split)`` go through the attention's own ``to_k``/``to_v`` (pre-trained on text), tokens ``[split, L)`` through
an extra ``to_k_ip``/``to_v_ip`` pair. Both parts are attended with the same queries and separate softmaxes and the
results are summed. GenFusion feeds 256 image tokens and no text, so the split silently sends the first 77 image
tokens through the text projections; reproducing that is required to use the released weights.

diffusers' ``IPAdapterAttnProcessor2_0`` can express this only through its deprecated "concatenated tensor" input
path (the tuple form cannot pass through ``UNet3DConditionModel``, which ``repeat_interleave``s the context), so this
small processor does the split itself. It is an ``nn.Module`` so that its projections are registered parameters of
the UNet (``...attn2.processor.to_k_ip.weight``) and travel with ``save_pretrained``/``from_pretrained``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import nn


class SplitContextCrossAttnProcessor(nn.Module):
    """SDPA cross-attention with a second key/value projection for context tokens from ``split_index`` on.

    Args:
        hidden_size: inner width of the attention (``heads * dim_head``), the output width of ``to_k``.
        cross_attention_dim: width of the context tokens.
        split_index: first context token that goes through ``to_k_ip``/``to_v_ip`` (77 in the authors' code).
        scale: weight of the image-token attention in the sum (1.0, not learnable, in the authors' code).
    """

    def __init__(self, hidden_size: int, cross_attention_dim: int, split_index: int = 77, scale: float = 1.0):
        super().__init__()
        if split_index < 0:
            raise ValueError(f"split_index must be >= 0, got {split_index}")
        self.split_index = split_index
        self.scale = scale
        self.to_k_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.to_v_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)

    @staticmethod
    def _heads(attn: Attention, x: torch.Tensor) -> torch.Tensor:
        """[B, L, heads*d] -> [B, heads, L, d]."""
        batch, length, inner = x.shape
        return x.view(batch, length, attn.heads, inner // attn.heads).transpose(1, 2)

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is None:
            raise ValueError(
                "SplitContextCrossAttnProcessor is a cross-attention processor: pass a context tensor"
            )
        if attention_mask is not None:
            raise NotImplementedError(
                "attention masks are not supported by the split-context cross-attention"
            )
        if hidden_states.ndim != 3:
            raise ValueError(f"expected hidden states [B, N, C], got shape {tuple(hidden_states.shape)}")
        residual = hidden_states
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        text_tokens = encoder_hidden_states[:, : self.split_index]
        image_tokens = encoder_hidden_states[:, self.split_index :]

        query = self._heads(attn, attn.to_q(hidden_states))
        key = self._heads(attn, attn.to_k(text_tokens))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, self._heads(attn, attn.to_v(text_tokens)))

        if image_tokens.shape[1] > 0:  # an empty key set would make SDPA return NaNs
            ip_key = self._heads(attn, self.to_k_ip(image_tokens))
            ip_value = self._heads(attn, self.to_v_ip(image_tokens))
            out = out + self.scale * F.scaled_dot_product_attention(query, ip_key, ip_value)

        batch = out.shape[0]
        out = out.transpose(1, 2).reshape(batch, -1, out.shape[1] * out.shape[3]).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor
